"""What a real llama.cpp graph writes into its KV cache, captured as it happens.

Every token's K and V rows reach the cache through one SET_ROWS node per layer and
side. An eval callback stops the graph at each of them and reads, straight from the
node: the float rows it is fed (post-RoPE, and rotated when the cache rotates), the
cache rows it wrote (the stored bytes, in the cache's own type) and that type. The
callback also keeps the last `Kcur-L`/`Vcur-L` tensor before each write: the same rows
before the cache's rotation. With key smoothing the rows fed are `k - mu`: the node that
subtracts mu is SET_ROWS' source, and its second operand is mu as this write used it.

This is the evidence that the graph, not only the kernels, does what docs/FORMAT.md
says: the stored bytes are the reference quantization of the rows fed in, and those
rows are the reference rotation of the attention inputs (tests/model/test_graph_conformance.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..kv.cacheconfig import CacheConfig
from ..native import ggml, llamacpp
from ..runtime.lowlevel import Context

_CACHE = re.compile(r"^cache_([kv])_l(\d+)")
_INPUT = re.compile(r"^([KV])cur-(\d+)$")
_F32, _I64 = "f32", "i64"


@dataclass
class LayerWrite:
    """One layer's rows for one side ('k' or 'v'), as the graph wrote them."""
    type_name: str
    fed: list[np.ndarray] = field(default_factory=list)     # float32 rows fed to SET_ROWS
    stored: list[np.ndarray] = field(default_factory=list)  # uint8 rows the cache holds after it
    before: list[np.ndarray] = field(default_factory=list)  # Kcur/Vcur rows before the cache's rotation
    mu: list[np.ndarray] = field(default_factory=list)      # key smoothing: the mu (one row) each write subtracted

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.concatenate(self.fed), np.concatenate(self.stored), np.concatenate(self.before)


def _matrix(lib, t, dtype: np.dtype) -> np.ndarray:
    """A 2-D tensor's rows as an array, following its strides."""
    ne0, ne1 = int(t.ne[0]), int(t.ne[1])
    row = lib.ggml_row_size(t.type, ne0)
    base = int(ggml.ffi.cast("uintptr_t", t.data))
    out = np.empty((ne1, row), dtype=np.uint8)
    for r in range(ne1):
        out[r] = np.frombuffer(ggml.ffi.buffer(ggml.ffi.cast("char *", base + r * int(t.nb[1])), row), dtype=np.uint8)
    return out.view(dtype) if dtype != np.uint8 else out


def context_size(n_tokens: int, n_each: int = 0) -> int:
    """The context capture() opens for a batch of n_tokens and n_each single tokens after it."""
    return max(256, 2 * (n_tokens + n_each))


def capture(model_path: str | Path, cache: str | CacheConfig, tokens_text: str, n_tokens: int,
            n_threads: int = 2, n_each: int = 0) -> dict[tuple[str, int], LayerWrite]:
    """Decode the first `n_tokens` tokens of `tokens_text` in one batch, then the next `n_each` one
    at a time; (side, layer) -> what was written, one entry per write in order."""
    llama_cpp = llamacpp.load()
    lib = ggml.lib()
    writes: dict[tuple[str, int], LayerWrite] = {}
    inputs: dict[tuple[str, int], np.ndarray] = {}

    @llama_cpp.ggml_backend_sched_eval_callback
    def on_eval(tensor, ask, user_data):
        t = ggml.ffi.cast("struct ggml_tensor *", tensor)
        name = ggml.ffi.string(t.name).decode(errors="replace")
        op = ggml.ffi.string(lib.ggml_op_desc(t)).decode()
        m_in = _INPUT.match(name)
        m_cache = _CACHE.match(name) if op == "SET_ROWS" else None
        if m_in is None and m_cache is None:
            return False
        if ask:
            return True
        if m_in is not None:  # the last one before the write is the attention input
            if ggml.ffi.string(lib.ggml_type_name(t.type)).decode() == _F32:
                n = int(t.ne[0]) * int(t.ne[1]) * int(t.ne[2]) * int(t.ne[3])
                buf = ggml.ffi.buffer(ggml.ffi.cast("float *", t.data), 4 * n)
                inputs[(m_in[1].lower(), int(m_in[2]))] = np.frombuffer(buf, dtype=np.float32).copy()
            return True
        side, il = m_cache[1], int(m_cache[2])
        src, idx = t.src[0], t.src[1]
        type_name = ggml.ffi.string(lib.ggml_type_name(t.type)).decode()
        fed = _matrix(lib, src, np.float32)
        idx_type = ggml.ffi.string(lib.ggml_type_name(idx.type)).decode()
        rows = _matrix(lib, idx, np.int64 if idx_type == _I64 else np.int32).reshape(-1)
        w = writes.setdefault((side, il), LayerWrite(type_name))
        w.fed.append(fed)
        w.stored.append(_matrix(lib, t, np.uint8)[rows])
        before = inputs.pop((side, il), None)  # (an exception here would vanish inside ctypes)
        w.before.append(before.reshape(fed.shape) if before is not None and before.size == fed.size
                        else np.full(fed.shape, np.nan, dtype=np.float32))
        node = src
        while ggml.ffi.string(lib.ggml_op_desc(node)).decode() in ("VIEW", "RESHAPE"):
            node = node.src[0]  # the cache merges K's head dimensions with a view
        if side == "k" and ggml.ffi.string(lib.ggml_op_desc(node)).decode() == "SUB":
            mu = node.src[1]  # [head, n_head_kv]: one row of the cache's width
            n = int(mu.ne[0]) * int(mu.ne[1])
            w.mu.append(np.frombuffer(ggml.ffi.buffer(ggml.ffi.cast("float *", mu.data), 4 * n), dtype=np.float32).copy())
        return True

    with Context(model_path, cache=cache, n_ctx=context_size(n_tokens, n_each), n_threads=n_threads,
                 cb_eval=on_eval) as ctx:
        tokens = ctx.tokenize(tokens_text)[:n_tokens + n_each]
        ctx.decode(tokens[:n_tokens])
        if n_each:
            ctx.decode_each(tokens[n_tokens:])
    return writes
