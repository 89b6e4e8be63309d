#!/usr/bin/env python3
"""Backs docs/FORMAT.md 11.5 "The scale search", "A set-partition trellis": `python tools/studies/sptcq_study.py`.

Set-partition trellis-coded quantization (Marcellin-Fischer TCQ) at the format's bits: float64 study.

tools/studies/tcq_study.py measured a "bitshift" trellis, whose table has no structure: it
needs 2^9 states or more before it beats the scalar codebook, and its encoder then
costs some 60x the SET_ROWS budget (FORMAT.md 11.5). The classical construction gets
its gain from the codebook's structure instead, with 4 to 8 states:

  * a union codebook of 2^(b+1) levels (twice the scalar one), sorted and dealt in
    turn to four subsets D0 D1 D2 D3 (level k goes to D(k mod 4)), 2^(b-1) levels each;
  * a rate-1/2 shift-register code of memory m (2^m states): the state is the last m
    branch bits u, the state alone chooses the pair D0/D2 or D1/D3 (bit c0 = parity of
    a & s), and the branch bit picks within the pair (c1 = u ^ parity(g & s));
  * a value stores b bits: its branch bit u and the index of its level in the subset.
    Decoding value i needs the branch bits of values i-m..i, so it is O(1) from the
    stored bits (tail-biting: the state before value 0 is the block's last m branch bits).

Encoder: Viterbi over 2^m states, 2 branches each, per value; per branch the nearest
level of a subset (4 nearest-level searches per value). Every block starts and ends in
state 0, so its last m branch bits are 0 and the start is also the tail-biting one.
Amplitude as tcq_study: the candidate scales F·‖x‖ and the norm-preserving fp16 rule.
The trellis, its float64 Viterbi and the codebook training live in
tools/codebookgen/trellis.py, which trains the format's tables (FORMAT.md 12) with them.

    python tools/studies/sptcq_study.py [--blocks N]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # codebookgen: the format's trainer
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tcq_study  # noqa: E402
from codebookgen.trellis import (Code, best_paths, grid, lloyd, searched_codebook,  # noqa: E402
                                 union_codebook, viterbi)
from tq_gguf import reference as ref  # noqa: E402

N = 64


# The best code of each memory on Gaussian blocks at b = 3 (`--search` ranks them all).
CODES = {2: Code(2, 1, 2), 3: Code(3, 2, 5), 4: Code(4, 6, 14)}


def encode(blocks: np.ndarray, book: np.ndarray, code: Code, factors: np.ndarray) -> np.ndarray:
    """Reconstruction of each block: best of the candidate scales, norm-preserving fp16 amplitude."""
    norm = np.linalg.norm(blocks, axis=1)
    safe = np.where(norm == 0, 1.0, norm)
    best_err = np.full(len(blocks), np.inf)
    best = np.zeros_like(blocks)
    for f in factors:
        lev = viterbi(blocks / (f * safe)[:, None], book, code)
        c = book[lev]
        amp = tcq_study.fp16(norm / np.sqrt(np.maximum((c * c).sum(1), 1e-30)))
        rec = amp[:, None] * c
        err = ((blocks - rec) ** 2).sum(1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best[better] = rec[better]
    return best


def encode_by_metric(blocks: np.ndarray, book: np.ndarray, code: Code, factors: np.ndarray) -> np.ndarray:
    """As encode, but the candidate scale is chosen by the Viterbi's own path metric (best_paths), so
    only the winner's path is traced back; a C encoder then keeps one set of decisions per
    candidate and traces back once. The amplitude is the norm-preserving fp16 rule."""
    norm = np.linalg.norm(blocks, axis=1)
    safe = np.where(norm == 0, 1.0, norm)
    _, lev = best_paths(blocks / safe[:, None], book, code, factors)
    c = book[lev]
    amp = tcq_study.fp16(norm / np.sqrt(np.maximum((c * c).sum(1), 1e-30)))
    return amp[:, None] * c


def rel_mse(x: np.ndarray, y: np.ndarray) -> float:
    return float(((x - y) ** 2).sum() / (x ** 2).sum())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=96, help="blocks per set, drawn at random")
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--search", action="store_true", help="rank every code of memory 2, 3 and 4 on Gaussian blocks")
    args = ap.parse_args()

    rng = np.random.default_rng(3)
    data = np.load(tcq_study.KV_ROWS)
    sets = {k: ref.rotate(data[k]).reshape(-1, N) for k in sorted(data.files)}
    sets["gauss"] = np.random.default_rng(0).standard_normal((args.blocks, N)).astype(np.float32)
    sets = {k: v[np.sort(rng.choice(len(v), min(args.blocks, len(v)), replace=False))].astype(np.float64)
            for k, v in sets.items()}

    bits = [int(b) for b in args.bits.split(",")]
    if args.search:
        g = sets["gauss"][:48]
        for m in (2, 3, 4):
            ranked = []
            for a, gg in itertools.product(range(1, 1 << m), range(1 << m)):
                code = Code(m, a, gg)
                e = rel_mse(g, encode(g, union_codebook(3), code, np.ones(1)))
                ranked.append((e, repr(code)))
            ranked.sort()
            print(f"memory {m}, b = 3, best five:", ", ".join(f"{c} {e:.5f}" for e, c in ranked[:5]))
        return 0

    codes = list(CODES.values())
    for b in bits:
        qtype = f"turbo{b}"
        base = {k: rel_mse(v, ref.dequantize(ref.quantize(v.astype(np.float32), qtype), qtype).astype(np.float64))
                for k, v in sets.items()}
        print(f"\n{qtype}: " + ", ".join(f"{k} {e:.5f}" for k, e in base.items()))
        for code in codes:
            book = lloyd(union_codebook(b), code, 3)
            for label, factors in (("1 scale", np.ones(1)), ("8 scales", tcq_study.FACTORS)):
                res = {k: rel_mse(v, encode(v, book, code, factors)) for k, v in sets.items()}
                r = np.exp(np.mean([np.log(res[k] / base[k]) for k in sets]))
                print(f"  {code!r} {label}: ratio {r:.3f}  " + ", ".join(f"{k} {e:.5f}" for k, e in res.items()),
                      flush=True)
            for n in (4, 8):
                factors = grid(n)
                sbook = searched_codebook(b, code, factors)
                res = {k: rel_mse(v, encode_by_metric(v, sbook, code, factors)) for k, v in sets.items()}
                r = np.exp(np.mean([np.log(res[k] / base[k]) for k in sets]))
                print(f"  {code!r} {n} centred scales, refitted, chosen by metric: ratio {r:.3f}  "
                      + ", ".join(f"{k} {e:.5f}" for k, e in res.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
