#!/usr/bin/env python3
"""Model-level KL divergence of a candidate quantizer, before any kernel is written for it.

A candidate K or V quantizer is emulated inside the real llama.cpp graph: the context
keeps an f32 cache on that side, and an eval callback stops the graph right after each
layer's SET_ROWS into it. The callback takes the float rows the graph fed in, rotates
each 64-value group as the turbo types do (tq_gguf.reference.rotation), quantizes and
dequantizes the blocks with the candidate (NumPy), rotates back, and overwrites the
cache rows just written with the result. Attention then reads those rows, so the model
sees the candidate's reconstruction where a turbo cache would hold its own.

The control: "emu:q8_0/emu:turbo3" (K through gguf.quants' q8_0, V through the format's own
NumPy reference) against the real q8_0/turbo3 cache in the same harness: on SmolLM2, 4
chunks, 0.02770 against 0.02767 (FORMAT.md 11.5). An earlier q8_0 of its own, which divided
by the fp16-rounded scale where ggml divides by the exact one, read 0.02832 there, 2% high.

Scoring: the text (git's release notes) is cut into chunks of --ctx tokens, each decoded
from an empty cache in one batch; the second half of every chunk is scored, as
llama-perplexity does: KL(f16 cache || config) per token, its mean and standard error,
and how often the most likely token stays f16's.

Configs are `K/V`, each side a real cache type (f16, q8_0, q4_0, turbo2..4, tcq2, tcq3) or
`emu:NAME`, a candidate from CANDIDATES below (`emu:turbo3` and `emu:tcq3` are the shipped
types through their NumPy references, so an emulated config and its real cache can be read
side by side), e.g.

    python tools/kv_emulate.py smollm2-135m --configs q8_0/turbo3,q8_0/emu:turbo3,q8_0/emu:tcq3-L8

`emu:q8_0` and `emu:q4_0` quantize the rows as given; `emu:q8_0h` and `emu:q4_0h` rotate them
first as llama.cpp rotates its own quantized caches (attn_rot_k/attn_rot_v): the plain
orthonormal Walsh-Hadamard matrix, over each K slice of the largest power of two that divides
the head size (64 for SmolLM2, 128 for Qwen2.5, 256 for Gemma 3) and over each 64-value V
slice. What still differs from the real cache: its quantized K meets a query that the CPU
kernel has quantized to q8_0, the emulated K a float query.

A candidate may be followed by transforms, applied to the rows before the rotation and
undone after the reconstruction, e.g. `emu:turbo4+sk/emu:turbo3+sv`, `emu:turbo4+sk64x+eq`.
Each is fixed per layer and KV head from a window of the chunk's first cells (a chunk is
decoded from an empty cache in one batch, so its first rows are cells 0, 1, ...):

* `sk` key smoothing: store k - mu, read back + mu, mu the mean of the window's post-RoPE K
  rows. Exact for attention: q.mu is the same for every key of a query, and softmax does not
  see a constant added to all of a query's logits.
* `sv` value smoothing: store v - mu_v, read back + mu_v. Exact because each query's
  softmax weights sum to 1, so the output gains exactly mu_v, which is added back.
* `eq` key equalization: store k / s, read back s * k_hat, with the query multiplied by s
  (here: the reconstruction multiplied back), so q.k is unchanged. s is one factor per RoPE
  pair (the pair RoPE turns together: (2i, 2i+1) for llama.cpp's NORM RoPE, e.g. SmolLM2's
  llama arch; (i, i + d/2) for NEOX, e.g. Qwen2 and Gemma 3), so it commutes with RoPE and
  could be folded into the K and Q weights. `eq`: s^2 = sqrt(E[k^2] / E[q^2]) over the pair,
  from the window's K rows (after smoothing, if any) and its post-RoPE Q rows (the tensor
  `Qcur-<il>`, the heads of the KV head's group together), which minimises the logit error
  of an error that is even over the rotated values; `eqk`: s^2 = sqrt(E[k^2]), the same
  with a flat query; `eqw`: s^2 = E[k^2], K whitened per pair. s is scaled to a geometric
  mean of 1 per head.

A window is the suffix's digits (cells [0, N); default 64), `x` leaves cell 0 (the attention
sink) out ([1, N)), `ub` takes every row of the first write (the first ubatch: the whole
chunk here): `sk64`, `sk64x`, `sk16`, `skub`, `sv64x`, `eq64`.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from gguf import GGMLQuantizationType
from gguf import quants as gguf_quants

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "studies"))  # sptcq_study, tcq_study

import sptcq_study  # noqa: E402
import tcq_study  # noqa: E402
from tq_gguf.analysis import cachewrites  # noqa: E402
from tq_gguf.analysis.evaltext import git_release_notes  # noqa: E402
from tq_gguf.gguf import models  # noqa: E402
from tq_gguf.native import ggml, llamacpp  # noqa: E402
from tq_gguf.reference import quants, rotation, trellis  # noqa: E402
from tq_gguf.runtime.lowlevel import Context  # noqa: E402

Quantizer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (blocks (B, 64) rotated, cells (B,)) -> reconstruction
_CACHE = re.compile(r"^cache_([kv])_l(\d+)")


def _reference(module, qtype: str) -> Quantizer:
    """A shipped type through its own NumPy reference: quants (turbo2..4) or trellis (tcq2, tcq3)."""
    def q(blocks: np.ndarray, cells: np.ndarray) -> np.ndarray:
        return module.dequantize(module.quantize(blocks.reshape(-1), qtype), qtype).reshape(blocks.shape)
    return q


def _tcq(b: int, L: int, scales: int, start: str = "tail") -> Quantizer:
    table = tcq_study.gauss_table(L)
    factors = tcq_study.FACTORS if scales == 8 else np.ones(1)

    def q(blocks: np.ndarray, cells: np.ndarray) -> np.ndarray:
        x = blocks.astype(np.float64)
        path, amp = tcq_study.tcq_encode(x, table, b, L, start, factors)["np"]
        return (amp[:, None] * table[path]).astype(np.float32)
    return q


def _trellis(fit: Callable[[], np.ndarray], encode, code, factors: np.ndarray) -> Quantizer:
    """A set-partition trellis candidate; its codebook is fitted on first use (a fit takes seconds)."""
    book: list[np.ndarray] = []

    def q(blocks: np.ndarray, cells: np.ndarray) -> np.ndarray:
        if not book:
            book.append(fit())
        return encode(blocks.astype(np.float64), book[0], code, factors).astype(np.float32)
    return q


def _sptcq(b: int, m: int, scales: int) -> Quantizer:
    """The first design: the format's factor grid, the codebook fitted to one scale, the best real error."""
    code = sptcq_study.CODES[m]
    return _trellis(lambda: sptcq_study.lloyd(sptcq_study.union_codebook(b), code, 3), sptcq_study.encode, code,
                    tcq_study.FACTORS if scales == 8 else np.ones(1))


def _sptcq_searched(b: int, m: int, scales: int) -> Quantizer:
    """The searched design: `scales` factors centred on 1, the codebook refitted to that search,
    the scale chosen by the path metric (sptcq_study.encode_by_metric)."""
    code, factors = sptcq_study.CODES[m], sptcq_study.grid(scales)
    return _trellis(lambda: sptcq_study.searched_codebook(b, code, factors), sptcq_study.encode_by_metric,
                    code, factors)


def _ggml(qtype: GGMLQuantizationType) -> Quantizer:
    """One of ggml's own types (gguf.quants, bit-exact with ggml-quants.c), on the rows as given."""
    def q(blocks: np.ndarray, cells: np.ndarray) -> np.ndarray:
        flat = blocks.astype(np.float32).reshape(-1, 32)
        return gguf_quants.dequantize(gguf_quants.quantize(flat, qtype), qtype).reshape(blocks.shape)
    return q


def _keep_first(inner: Quantizer, n_cells: int) -> Quantizer:
    """`inner`, except that the first `n_cells` cache cells keep their float rows."""
    def q(blocks: np.ndarray, cells: np.ndarray) -> np.ndarray:
        out = inner(blocks, cells)
        keep = cells < n_cells
        out[keep] = blocks[keep]
        return out
    return q


# How a candidate's rows are rotated before it: "turbo" (the format's rotation, the default),
# "none", or "hadamard" (llama.cpp's rotation of its own quantized caches; module docstring).
ROTATION = {"q8_0": "none", "q4_0": "none", "q8_0h": "hadamard", "q4_0h": "hadamard"}
CANDIDATES: dict[str, Quantizer] = {
    "q8_0": _ggml(GGMLQuantizationType.Q8_0),
    "q4_0": _ggml(GGMLQuantizationType.Q4_0),
    "q8_0h": _ggml(GGMLQuantizationType.Q8_0),   # llama.cpp's rotated q8_0 cache
    "q4_0h": _ggml(GGMLQuantizationType.Q4_0),   # llama.cpp's rotated q4_0 cache
    "q4_0r": _ggml(GGMLQuantizationType.Q4_0),   # q4_0 of the turbo-rotated rows
    **{f"turbo{b}": _reference(quants, f"turbo{b}") for b in (2, 3, 4)},
    **{f"turbo{b}+first4": _keep_first(_reference(quants, f"turbo{b}"), 4) for b in (2, 3, 4)},
    **{q: _reference(trellis, q) for q in trellis.QTYPES},   # tcq2, tcq3: the shipped trellis types
    # bitshift trellis (tools/tcq_study.py): b bits per value, window L, tail-biting, 8 scales or 1
    **{f"tcq{b}-L{L}": _tcq(b, L, 8) for b, L in ((2, 6), (2, 8), (2, 10), (3, 7), (3, 9), (3, 11), (4, 8), (4, 10))},
    **{f"tcq{b}-L{L}x1": _tcq(b, L, 1) for b, L in ((2, 6), (3, 5), (3, 6), (3, 7), (4, 6), (4, 8))},
    # set-partition trellis (tools/sptcq_study.py): b bits per value, 2^m states, 8 scales or 1
    **{f"sptcq{b}-m{m}{x}": _sptcq(b, m, n) for b in (2, 3, 4) for m in (2, 3, 4) for x, n in (("", 8), ("x1", 1))},
    # the same, searched: n centred scales, codebook refitted to the search, scale chosen by path metric
    **{f"sptcq{b}-m{m}s{n}": _sptcq_searched(b, m, n) for b in (2, 3, 4) for m in (2, 3) for n in (2, 4, 8)},
}

# Which dimensions RoPE turns together, by GGUF architecture (llama.cpp's llama_model_rope_type:
# LLM_ARCH_LLAMA is LLAMA_ROPE_TYPE_NORM, LLM_ARCH_QWEN2 and LLM_ARCH_GEMMA3 LLAMA_ROPE_TYPE_NEOX).
ROPE_PAIRS = {"llama": "norm", "qwen2": "neox", "gemma3": "neox"}
DEFAULT_WINDOW = 64
_TRANSFORM = re.compile(r"^(sk|sv|eqk|eqw|eq)(\d+|ub)?(x)?$")
_Q = re.compile(r"^Qcur-(\d+)$")


@dataclass(frozen=True)
class Window:
    """Cells [start, stop) of a chunk; stop None: every row of the first write."""
    start: int = 0
    stop: int | None = DEFAULT_WINDOW

    def mask(self, cells: np.ndarray) -> np.ndarray:
        return (cells >= self.start) & (cells < (self.stop if self.stop is not None else np.inf))


@dataclass(frozen=True)
class Side:
    """How one side is emulated: a candidate, its rotation and the transforms around it."""
    quantizer: Quantizer
    rotation: str
    smooth: Window | None = None               # sk / sv
    equalize: tuple[str, Window] | None = None  # ("eq" | "eqk" | "eqw", window), K only


def parse_side(side: str, spec: str) -> Side:
    """'turbo4+sk64x+eq' on side 'k' -> Side."""
    name, *suffixes = spec.split("+")
    if name in ("turbo2", "turbo3", "turbo4") and suffixes[:1] == ["first4"]:
        name, suffixes = name + "+first4", suffixes[1:]
    if name not in CANDIDATES:
        raise SystemExit(f"error: unknown candidate {name!r}; known: {', '.join(CANDIDATES)}")
    smooth, equalize = None, None
    for suffix in suffixes:
        m = _TRANSFORM.match(suffix)
        if m is None:
            raise SystemExit(f"error: unknown transform {suffix!r} (sk, sv, eq, eqk, eqw, each with an "
                             f"optional window N, Nx or ub)")
        kind, n, x = m[1], m[2], m[3]
        window = Window(1 if x else 0, None if n == "ub" else int(n) if n else DEFAULT_WINDOW)
        if kind in ("sk", "sv"):
            if kind != "s" + side:
                raise SystemExit(f"error: {kind} smooths the {kind[1].upper()} side, not {side.upper()}")
            smooth = window
        elif side != "k":
            raise SystemExit(f"error: {kind} equalizes keys; it has no meaning on the V side")
        else:
            equalize = (kind, window)
    return Side(CANDIDATES[name], ROTATION.get(name, "turbo"), smooth, equalize)


def hadamard_slice(head_dim: int, side: str) -> int:
    """llama.cpp's rotation size for its quantized caches: 64 for V; for K the largest power of
    two that divides the head size (llama_kv_cache::build_input_k_rot)."""
    if side == "v":
        return 64
    n = 64
    while head_dim % (2 * n) == 0:
        n *= 2
    return n


def _hadamard(x: np.ndarray, n: int) -> np.ndarray:
    """The orthonormal Sylvester-Hadamard matrix over each n-slice of the rows; it is its own inverse."""
    h = rotation.hadamard(n)
    return (x.reshape(*x.shape[:-1], -1, n).astype(np.float64) @ h).reshape(x.shape).astype(np.float32)


def pair_sum(e: np.ndarray, pairs: str) -> np.ndarray:
    """(H, d) per-dimension energies -> each dimension holding the sum over its RoPE pair."""
    H, d = e.shape
    if pairs == "norm":
        return np.repeat(e.reshape(H, d // 2, 2).sum(-1), 2, axis=-1)
    p = e[:, :d // 2] + e[:, d // 2:]
    return np.concatenate([p, p], axis=-1)


def equalizer(kind: str, ek: np.ndarray, eq: np.ndarray | None, pairs: str) -> np.ndarray:
    """The per-dimension factor s (H, d) from pair energies of K (and Q), geometric mean 1 per head."""
    ek = pair_sum(ek, pairs)
    ek = np.maximum(ek, 1e-6 * ek.mean(-1, keepdims=True))
    if kind == "eq":
        eq = pair_sum(eq, pairs)
        eq = np.maximum(eq, 1e-6 * eq.mean(-1, keepdims=True))
        s2 = np.sqrt(ek / eq)
    else:
        s2 = np.sqrt(ek) if kind == "eqk" else ek
    s = np.sqrt(s2)
    return s / np.exp(np.log(s).mean(-1, keepdims=True))


class Emulator:
    """The eval callback: rewrites each SET_ROWS into an emulated side's cache.

    A side's transforms are fixed at each layer's first write of a chunk (the one that holds
    cell 0) and kept for the chunk's later writes. For `eq` the callback also keeps each
    layer's post-RoPE query: the ROPE node named Qcur-<il>, which the graph computes before
    that layer's K write."""

    def __init__(self, sides: dict[str, Side], info):
        self.sides = sides
        self.head = {"k": info.head_dim_k, "v": info.head_dim_v}
        self.pairs = ROPE_PAIRS.get(info.arch)
        self.want_q = any(side.equalize and side.equalize[0] == "eq" for side in sides.values())
        if any(side.equalize for side in sides.values()) and self.pairs is None:
            raise SystemExit(f"error: the RoPE pairing of arch {info.arch!r} is not known (ROPE_PAIRS)")
        self.queries: dict[int, np.ndarray] = {}
        self.stats: dict[tuple[str, int], tuple] = {}  # (side, layer) -> (mu, s) of the current chunk
        self.lib = ggml.lib()
        self.seconds = 0.0
        self.error: BaseException | None = None  # an exception would vanish inside ctypes
        llama_cpp = llamacpp.load()
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_eval)

    def _on_eval(self, tensor, ask, user_data):
        ffi, lib = ggml.ffi, self.lib
        t = ffi.cast("struct ggml_tensor *", tensor)
        name = ffi.string(t.name).decode(errors="replace")
        m, mq = _CACHE.match(name), (_Q.match(name) if self.want_q else None)
        if m is not None and m[1] in self.sides:
            wanted = "SET_ROWS"
        elif mq is not None:
            wanted = "ROPE"
        else:
            return False
        if ffi.string(lib.ggml_op_desc(t)).decode() != wanted:
            return False
        if ask:
            return True
        t0 = time.perf_counter()
        try:
            if m is not None:
                self._rewrite(t, m[1], int(m[2]))
            else:
                self.queries[int(mq[1])] = _tensor3(lib, t)
        except BaseException as e:  # noqa: BLE001 - re-raised by check()
            self.error = self.error or e
        self.seconds += time.perf_counter() - t0
        return True

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def _rewrite(self, t, name: str, il: int) -> None:
        ffi, lib = ggml.ffi, self.lib
        side = self.sides[name]
        src, idx = t.src[0], t.src[1]
        store = {"f32": np.float32, "f16": np.float16}[ffi.string(lib.ggml_type_name(t.type)).decode()]
        fed = cachewrites._matrix(lib, src, np.float32)  # the rows fed in, following their strides
        idx_t = np.int64 if ffi.string(lib.ggml_type_name(idx.type)).decode() == "i64" else np.int32
        cells = cachewrites._matrix(lib, idx, idx_t).reshape(-1).astype(np.int64)
        rows, n = fed.shape
        d = self.head[name]
        x = fed.reshape(rows, n // d, d)
        mu, s = self._transform(name, il, side, x, cells)
        rec = self._reconstruct(side, name, ((x - mu) / s).reshape(rows, n), cells)
        out = (rec.reshape(x.shape) * s + mu).reshape(rows, n).astype(store)
        base = int(ffi.cast("uintptr_t", t.data))
        for r, cell in enumerate(cells):
            ffi.memmove(ffi.cast("char *", base + int(cell) * int(t.nb[1])), out[r].tobytes(), out[r].nbytes)

    def _reconstruct(self, side: Side, name: str, y: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """Rotate the rows as the side's candidate is rotated, quantize, dequantize, rotate back."""
        rows, n = y.shape
        if side.rotation == "turbo":
            y = rotation.rotate(y)
        elif side.rotation == "hadamard":
            y = _hadamard(y, hadamard_slice(self.head[name], name))
        blocks = y.reshape(-1, rotation.GROUP)
        rec = side.quantizer(blocks, np.repeat(cells, n // rotation.GROUP)).reshape(rows, n)
        if side.rotation == "turbo":
            return rotation.unrotate(rec)
        if side.rotation == "hadamard":
            return _hadamard(rec, hadamard_slice(self.head[name], name))
        return rec

    def _transform(self, name: str, il: int, side: Side, x: np.ndarray, cells: np.ndarray) -> tuple:
        """(mu, s) of this layer and chunk, per KV head and dimension: store (x - mu) / s."""
        if side.smooth is None and side.equalize is None:
            return np.float32(0), np.float32(1)
        key = (name, il)
        if cells.min() == 0:  # a chunk's first write
            mu, s = np.zeros(x.shape[1:], np.float32), np.ones(x.shape[1:], np.float32)
            if side.smooth is not None:
                mu = x[side.smooth.mask(cells)].astype(np.float64).mean(0).astype(np.float32)
            if side.equalize is not None:
                kind, window = side.equalize
                w = window.mask(cells)
                ek = ((x[w] - mu).astype(np.float64) ** 2).mean(0)
                eq = None
                if kind == "eq":
                    q = self.queries.pop(il)  # (tokens, query heads, d), the rows' order
                    if q.shape[0] != x.shape[0]:
                        raise RuntimeError(f"layer {il}: {q.shape[0]} query rows for {x.shape[0]} key rows")
                    q = q[w].astype(np.float64).reshape(int(w.sum()), x.shape[1], -1, x.shape[2])
                    eq = (q ** 2).mean(axis=(0, 2))  # a KV head's query heads together
                s = equalizer(kind, ek, eq, self.pairs).astype(np.float32)
            self.stats[key] = (mu, s)
        elif key not in self.stats:
            raise RuntimeError(f"layer {il}: a write without cell 0 before any with it")
        return self.stats[key]


def _tensor3(lib, t) -> np.ndarray:
    """A float32 tensor [d, heads, tokens] (following its strides) as an array (tokens, heads, d)."""
    ffi = ggml.ffi
    if ffi.string(lib.ggml_type_name(t.type)).decode() != "f32":
        raise RuntimeError("the query is not f32")
    ne = [int(t.ne[i]) for i in range(3)]
    nb = [int(t.nb[i]) for i in range(3)]
    span = sum((e - 1) * b for e, b in zip(ne, nb)) + 4
    raw = np.frombuffer(ffi.buffer(ffi.cast("char *", t.data), span), dtype=np.float32)  # nb are whole floats
    return np.lib.stride_tricks.as_strided(raw, shape=(ne[2], ne[1], ne[0]), strides=(nb[2], nb[1], nb[0])).copy()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def chunk_logprobs(ctx: Context, tokens: list[int]) -> np.ndarray:
    """Decode `tokens` from an empty cache in one batch; log-probs of the second half's positions."""
    ll = llamacpp.load()
    ctx.clear()
    n = len(tokens)
    batch = ll.llama_batch_init(n, 0, 1)
    try:
        for i, tok in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1
        batch.n_tokens = n
        if ll.llama_decode(ctx.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        ptr = ll.llama_get_logits(ctx.ctx)
        logits = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n, ctx.n_vocab))
        return _log_softmax(logits[n // 2: n - 1])
    finally:
        ll.llama_batch_free(batch)


def split(config: str) -> tuple[str, dict[str, Side]]:
    """'q8_0/emu:turbo3+sv' -> ('q8_0/f32', {'v': Side})."""
    k, v = config.split("/")
    real, sides = [], {}
    for side, name in (("k", k), ("v", v)):
        if name.startswith("emu:"):
            sides[side] = parse_side(side, name[4:])
            real.append("f32")
        else:
            real.append(name)
    return "/".join(real), sides


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="smollm2-135m")
    ap.add_argument("--configs", required=True, help="comma-separated K/V, each side a cache type or emu:NAME")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--append", metavar="FILE", help="also append each result to FILE as a markdown row "
                    "(model, chunks, config, KLD, ±, top-1, the command)")
    args = ap.parse_args()

    path = models.fetch(args.model)
    text = git_release_notes(args.chunks * args.ctx * 8)
    configs = args.configs.split(",")
    plans = [(c, *split(c)) for c in configs]
    command = "python tools/kv_emulate.py " + " ".join(sys.argv[1:])

    with Context(path, "f16", "f16", n_ctx=args.ctx, n_threads=args.threads) as base_ctx:
        info = base_ctx.info
        bos = base_ctx.tokenize("", add_bos=True)
        body = base_ctx.tokenize(text, add_bos=False)
        per = args.ctx - len(bos)
        chunks = [bos + body[i * per:(i + 1) * per] for i in range(min(args.chunks, len(body) // per))]
        base = [chunk_logprobs(base_ctx, c) for c in chunks]
    print(f"{Path(path).name}: {len(chunks)} chunks of {args.ctx} tokens, second halves scored, "
          f"{args.threads} threads", flush=True)
    print("| config | mean KLD | ± | top-1 same % | quantizer s |")
    print("|---|---|---|---|---|")
    for config, real, sides in plans:
        emu = Emulator(sides, info) if sides else None
        kld, same = [], []
        with Context(path, cache=real, n_ctx=args.ctx, n_threads=args.threads,
                     cb_eval=emu.callback if emu else None) as ctx:
            for c, lp0 in zip(chunks, base):
                lp = chunk_logprobs(ctx, c)
                if emu:
                    emu.check()
                p0 = np.exp(lp0)
                kld.append((p0 * (lp0 - lp)).sum(axis=-1))
                same.append(lp0.argmax(-1) == lp.argmax(-1))
        k = np.concatenate(kld)
        s = np.concatenate(same)
        mean, se = k.mean(), k.std(ddof=1) / math.sqrt(len(k))
        print(f"| {config} | {mean:.5f} | {se:.5f} | {100 * s.mean():.2f} | "
              f"{emu.seconds if emu else 0:.0f} |", flush=True)
        if args.append:
            with open(args.append, "a") as f:
                f.write(f"| {args.model} | {len(chunks)} | {config} | {mean:.5f} | {se:.5f} | "
                        f"{100 * s.mean():.2f} | `{command}` |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
