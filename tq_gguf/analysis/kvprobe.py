"""Capture every layer's attention inputs Q, K and V while a model reads a short text.

The advisor measures what a cache type would do to the rows llama.cpp really
stores, so it needs those rows: `Qcur-L`, `Kcur-L` and `Vcur-L` as the graph
hands them to build_attn, i.e. after RoPE (the cache stores post-RoPE K) and
before the cache's own rotation. Several graph nodes carry each of these names
(the projection, its bias, the reshape, RoPE); they are computed in that order,
so the last one seen per name is the attention input.

The text is fixed and built in, so the advice for a model is reproducible; it is
ordinary workshop-notice prose written for this purpose (not a famous or
licence text, which models may have memorised and then read unusually).
"""

from __future__ import annotations

import ctypes
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError, TqError
from ..gguf import ggufinfo
from ..native import ggml, llamacpp
from ..runtime.lowlevel import Context

PROBE_TEXT = """\
The community workshop on Alder Street opens at eight on weekdays and at ten on \
Saturdays. Members sign in at the front desk, collect a key card for the tool room, \
and note which bench they plan to use. Heavy machines such as the band saw and the \
drill press may only be used after a short safety session, which is offered every \
second Tuesday evening and lasts about forty minutes.

Last spring the volunteers rearranged the storage shelves so that clamps, files and \
hand planes sit next to the benches where they are most often needed. The change cut \
down on walking back and forth, but it also meant that several labels were wrong for \
a few weeks. If you find a tool in the wrong place, please return it to the shelf \
marked with the matching colour rather than to the bin by the door.

Repairs are logged in a paper notebook beside the sharpening station. Each entry \
records the date, the tool, what went wrong and who fixed it. Items that cannot be \
mended on site are set aside in a crate for the monthly visit from the technician, \
who also replaces worn belts and checks the dust extraction system.
"""

# Enough tokens for attention patterns to form (and for a few hundred K/V rows per
# layer), few enough that a 1.5B model reads them in seconds on two cores.
MAX_TOKENS = 256

@dataclass(frozen=True)
class LayerQKV:
    """One layer's attention inputs: q (T, n_head, d_k), k (T, n_head_kv, d_k), v (T, n_head_kv, d_v)."""

    q: np.ndarray
    k: np.ndarray
    v: np.ndarray


@dataclass(frozen=True)
class Probe:
    info: ggufinfo.ModelInfo
    n_tokens: int
    attention_scale: float  # the factor on q·k in softmax(scale · q·k)
    layers: list[LayerQKV]
    source_ops: dict[str, str]  # the graph op that produced layer 0's captured Q, K and V (e.g. K: "ROPE")


_NAME = re.compile(r"^([QKV])cur-(\d+)$")


def _meta(llama_cpp, model, key: str) -> str | None:
    buf = ctypes.create_string_buffer(128)
    n = llama_cpp.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode() if n >= 0 else None


def _attention_scale(llama_cpp, model, info: ggufinfo.ModelInfo) -> float:
    """The GGUF's attention.scale when it has one, else 1/sqrt(head size), as llama.cpp's graphs use.

    (Gemma 3 scales Q by query_pre_attn_scalar^-1/2 instead, which is the same
    1/sqrt(head size) for every size but 27B.)"""
    raw = _meta(llama_cpp, model, f"{info.arch}.attention.scale")
    value = float(raw) if raw else 0.0
    return value if value > 0 else 1.0 / math.sqrt(info.head_dim_k)


def capture(model_path: str | Path, text: str = PROBE_TEXT, max_tokens: int = MAX_TOKENS, n_threads: int = 2,
            check: Callable[[ggufinfo.ModelInfo], None] | None = None) -> Probe:
    """Run the model over `text` with an f16 cache and return every layer's Q, K and V.

    `check` sees the model's description once it is loaded and before it reads the text
    (reading a GGUF's header takes seconds for large vocabularies; this avoids a second read)."""
    llama_cpp = llamacpp.load()
    base, ffi = ggml.lib(), ggml.ffi
    seen: dict[tuple[str, int], np.ndarray | str] = {}
    ops: dict[str, str] = {}

    @llama_cpp.ggml_backend_sched_eval_callback
    def on_eval(tensor, ask, user_data):
        t = ffi.cast("struct ggml_tensor *", tensor)
        m = _NAME.match(ffi.string(base.ggml_get_name(t)).decode(errors="replace"))
        if m is None:
            return False
        if ask:
            return True
        key = (m[1], int(m[2]))
        if key[1] == 0:
            ops[key[0]] = ffi.string(base.ggml_op_desc(t)).decode()
        n = base.ggml_nelements(t)
        # Later nodes of the same name overwrite earlier ones: the last is the attention input.
        if base.ggml_nbytes(t) != 4 * n:
            seen[key] = "not float32"
        elif not base.ggml_is_contiguous(t):
            seen[key] = "a strided view"
        else:
            buf = ffi.buffer(ffi.cast("float *", base.ggml_get_data(t)), 4 * n)
            seen[key] = np.frombuffer(buf, dtype=np.float32).copy()
        return True

    # n_ctx covers the prompt in one micro-batch, so each layer runs once over all tokens.
    with Context(model_path, n_ctx=max(2 * max_tokens, 64), n_threads=n_threads, cb_eval=on_eval) as ctx:
        info = ctx.info
        if info.n_layer <= 0 or info.n_head <= 0 or info.n_head_kv <= 0:
            raise ModelError(f"{model_path} does not describe its attention (layers {info.n_layer}, "
                             f"heads {info.n_head}, KV heads {info.n_head_kv})")
        if check is not None:
            check(info)
        scale = _attention_scale(llama_cpp, ctx.model, info)
        tokens = ctx.tokenize(text)[:max_tokens]
        if len(tokens) < 16:
            raise TqError(f"the probe text is only {len(tokens)} tokens for this model; need at least 16")
        ctx.decode(tokens)

    n = len(tokens)
    layers = []
    for il in range(info.n_layer):
        parts = []
        for kind, heads, dim in (("Q", info.n_head, info.head_dim_k), ("K", info.n_head_kv, info.head_dim_k),
                                 ("V", info.n_head_kv, info.head_dim_v)):
            got = seen.get((kind, il))
            if got is None:
                raise ModelError(f"the {info.arch} graph has no {kind}cur-{il} tensor; the advisor reads the attention "
                                 f"inputs llama.cpp names Qcur/Kcur/Vcur, which this architecture does not expose")
            if isinstance(got, str):
                raise ModelError(f"{kind}cur-{il} of this {info.arch} model is {got}; the advisor cannot read it")
            if got.size != n * heads * dim:
                raise ModelError(f"{kind}cur-{il} has {got.size} values, expected {n} tokens x {heads} heads x {dim}")
            parts.append(got.reshape(n, heads, dim))
        layers.append(LayerQKV(*parts))
    return Probe(info=info, n_tokens=n, attention_scale=scale, layers=layers, source_ops=ops)
