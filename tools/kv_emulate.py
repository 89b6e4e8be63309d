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

Configs are `K/V`, each side a real cache type (f16, q8_0, q4_0, turbo2..4) or
`emu:NAME`, a candidate from CANDIDATES below, e.g.

    python tools/kv_emulate.py smollm2-135m --configs q8_0/turbo3,q8_0/emu:turbo3,q8_0/emu:tcq3-L8
"""

from __future__ import annotations

import argparse
import ctypes
import math
import re
import sys
import time
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
from tq_gguf.reference import quants, rotation  # noqa: E402
from tq_gguf.runtime.lowlevel import Context  # noqa: E402

Quantizer = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (blocks (B, 64) rotated, cells (B,)) -> reconstruction
_CACHE = re.compile(r"^cache_([kv])_l(\d+)")


def _turbo(qtype: str) -> Quantizer:
    def q(blocks: np.ndarray, cells: np.ndarray) -> np.ndarray:
        return quants.dequantize(quants.quantize(blocks.reshape(-1), qtype), qtype).reshape(blocks.shape)
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


# Candidates that quantize the rows as stored, without the turbo rotation.
UNROTATED = {"q8_0", "q4_0"}
CANDIDATES: dict[str, Quantizer] = {
    "q8_0": _ggml(GGMLQuantizationType.Q8_0),
    "q4_0": _ggml(GGMLQuantizationType.Q4_0),
    "q4_0r": _ggml(GGMLQuantizationType.Q4_0),   # q4_0 of the rotated rows: upstream's rotated q4_0 cache
    **{f"turbo{b}": _turbo(f"turbo{b}") for b in (2, 3, 4)},
    **{f"turbo{b}+first4": _keep_first(_turbo(f"turbo{b}"), 4) for b in (2, 3, 4)},
    # bitshift trellis (tools/tcq_study.py): b bits per value, window L, tail-biting, 8 scales or 1
    **{f"tcq{b}-L{L}": _tcq(b, L, 8) for b, L in ((2, 6), (2, 8), (2, 10), (3, 7), (3, 9), (3, 11), (4, 8), (4, 10))},
    **{f"tcq{b}-L{L}x1": _tcq(b, L, 1) for b, L in ((2, 6), (3, 5), (3, 6), (3, 7), (4, 6), (4, 8))},
    # set-partition trellis (tools/sptcq_study.py): b bits per value, 2^m states, 8 scales or 1
    **{f"sptcq{b}-m{m}{x}": _sptcq(b, m, n) for b in (2, 3, 4) for m in (2, 3, 4) for x, n in (("", 8), ("x1", 1))},
    # the same, searched: n centred scales, codebook refitted to the search, scale chosen by path metric
    **{f"sptcq{b}-m{m}s{n}": _sptcq_searched(b, m, n) for b in (2, 3, 4) for m in (2, 3) for n in (2, 4, 8)},
}


class Emulator:
    """The eval callback: rewrites each SET_ROWS into an emulated side's cache."""

    def __init__(self, sides: dict[str, Quantizer]):
        self.sides = sides  # side -> (quantizer, rotate)
        self.lib = ggml.lib()
        self.seconds = 0.0
        self.error: BaseException | None = None  # an exception would vanish inside ctypes
        llama_cpp = llamacpp.load()
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._on_eval)

    def _on_eval(self, tensor, ask, user_data):
        ffi, lib = ggml.ffi, self.lib
        t = ffi.cast("struct ggml_tensor *", tensor)
        m = _CACHE.match(ffi.string(t.name).decode(errors="replace"))
        if m is None or m[1] not in self.sides or ffi.string(lib.ggml_op_desc(t)).decode() != "SET_ROWS":
            return False
        if ask:
            return True
        t0 = time.perf_counter()
        try:
            self._rewrite(t, *self.sides[m[1]])
        except BaseException as e:  # noqa: BLE001 - re-raised by check()
            self.error = self.error or e
        self.seconds += time.perf_counter() - t0
        return True

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def _rewrite(self, t, quantizer: Quantizer, rotate: bool) -> None:
        ffi, lib = ggml.ffi, self.lib
        src, idx = t.src[0], t.src[1]
        store = {"f32": np.float32, "f16": np.float16}[ffi.string(lib.ggml_type_name(t.type)).decode()]
        fed = cachewrites._matrix(lib, src, np.float32)  # the rows fed in, following their strides
        idx_t = np.int64 if ffi.string(lib.ggml_type_name(idx.type)).decode() == "i64" else np.int32
        cells = cachewrites._matrix(lib, idx, idx_t).reshape(-1).astype(np.int64)
        rows, n = fed.shape
        blocks = (rotation.rotate(fed) if rotate else fed).reshape(-1, rotation.GROUP)
        cell_of_block = np.repeat(cells, n // rotation.GROUP)
        rec = quantizer(blocks, cell_of_block).reshape(rows, n)
        out = (rotation.unrotate(rec) if rotate else rec).astype(store)
        base = int(ffi.cast("uintptr_t", t.data))
        for r, cell in enumerate(cells):
            ffi.memmove(ffi.cast("char *", base + int(cell) * int(t.nb[1])), out[r].tobytes(), out[r].nbytes)


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


def split(config: str) -> tuple[str, dict[str, tuple[Quantizer, bool]]]:
    """'q8_0/emu:tcq3-L8' -> ('q8_0/f32', {'v': quantizer})."""
    k, v = config.split("/")
    real, sides = [], {}
    for side, name in (("k", k), ("v", v)):
        if name.startswith("emu:"):
            if name[4:] not in CANDIDATES:
                raise SystemExit(f"error: unknown candidate {name[4:]!r}; known: {', '.join(CANDIDATES)}")
            sides[side] = (CANDIDATES[name[4:]], name[4:] not in UNROTATED)
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
    args = ap.parse_args()

    path = models.fetch(args.model)
    text = git_release_notes(args.chunks * args.ctx * 8)
    configs = args.configs.split(",")
    plans = [(c, *split(c)) for c in configs]

    with Context(path, "f16", "f16", n_ctx=args.ctx, n_threads=args.threads) as base_ctx:
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
        emu = Emulator(sides) if sides else None
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
        print(f"| {config} | {k.mean():.5f} | {k.std(ddof=1) / math.sqrt(len(k)):.5f} | {100 * s.mean():.2f} | "
              f"{emu.seconds if emu else 0:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
