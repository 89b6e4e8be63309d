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

    python tools/studies/sptcq_study.py [--blocks N]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tcq_study  # noqa: E402
from tq_gguf import reference as ref  # noqa: E402

N = 64


def parity(v: np.ndarray | int) -> np.ndarray:
    v = np.asarray(v)
    out = np.zeros_like(v)
    while np.any(v):
        out ^= v & 1
        v = v >> 1
    return out


class Code:
    """A memory-m shift-register code: subset(s, u) and next(s, u) for every state s and bit u."""

    def __init__(self, m: int, a: int, g: int):
        self.m, self.a, self.g = m, a, g
        S = 1 << m
        s = np.arange(S)[:, None]
        u = np.arange(2)[None, :]
        self.subset = (parity(a & s) + 2 * (u ^ parity(g & s))).astype(np.int64)  # (S, 2)
        self.next = ((s << 1) | u) & (S - 1)                                       # (S, 2)

    def __repr__(self) -> str:
        return f"m{self.m}a{self.a}g{self.g}"


# The best code of each memory on Gaussian blocks at b = 3 (`--search` ranks them all).
CODES = {2: Code(2, 1, 2), 3: Code(3, 2, 5), 4: Code(4, 6, 14)}


def union_codebook(b: int) -> np.ndarray:
    """Lloyd-Max-like start: 2^(b+1) Gaussian quantile levels for coordinate std 1/8."""
    inv = NormalDist().inv_cdf
    n = 1 << (b + 1)
    return np.array([inv((k + 0.5) / n) for k in range(n)]) / 8.0


def nearest_in_subsets(x: np.ndarray, book: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For x (B, n): per subset j, the squared error and level index (into book) of the nearest level."""
    lv = np.arange(len(book))
    err = np.empty((4,) + x.shape)
    idx = np.empty((4,) + x.shape, np.int64)
    for j in range(4):
        levels = lv[lv % 4 == j]
        d = (x[..., None] - book[levels]) ** 2
        k = d.argmin(-1)
        err[j] = np.take_along_axis(d, k[..., None], -1)[..., 0]
        idx[j] = levels[k]
    return err, idx


def viterbi(x: np.ndarray, book: np.ndarray, code: Code) -> np.ndarray:
    """Least-squares level indices (B, n) of x through the trellis, starting and ending in
    state 0 (so the last m branch bits are 0, and the block is also a valid tail-biting one)."""
    B, n = x.shape
    S = 1 << code.m
    err, idx = nearest_in_subsets(x, book)
    cost = np.full((B, S), np.inf)
    cost[:, 0] = 0.0
    back = np.empty((n, B, S), np.int64)   # predecessor state of each state
    for i in range(n):
        new = np.full((B, S), np.inf)
        pred = np.zeros((B, S), np.int64)
        for s in range(S):
            for u in range(2):
                t = code.next[s, u]
                c = cost[:, s] + err[code.subset[s, u], :, i]
                better = c < new[:, t]
                new[:, t] = np.where(better, c, new[:, t])
                pred[:, t] = np.where(better, s, pred[:, t])
        cost, back[i] = new, pred
    rows = np.arange(B)
    states = np.zeros((B, n + 1), np.int64)
    for i in range(n - 1, -1, -1):
        states[:, i] = back[i, rows, states[:, i + 1]]
    # the level of each value: the subset of the branch taken from states[i] into states[i+1]
    sub = code.subset[states[:, :-1], states[:, 1:] & 1]
    return np.take_along_axis(idx.transpose(1, 2, 0), sub[..., None], -1)[..., 0]


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


def grid(n: int) -> np.ndarray:
    """n candidate factors centred on 1, 2^(1/12) apart for 8 and 2^(1/6) apart for 4 or fewer."""
    step = 1 / 12 if n > 4 else 1 / 6
    return 2.0 ** ((np.arange(n) - (n - 1) / 2) * step)


def best_paths(unit: np.ndarray, book: np.ndarray, code: Code, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For unit-norm blocks: the winning candidate of each block and its path's level indices. Each
    candidate F runs the Viterbi on unit/F; the winner has the least path metric, F^2 times the
    squared error of unit/F against its path (ties: the first)."""
    paths, metrics = [], []
    for f in factors:
        lev = viterbi(unit / f, book, code)
        paths.append(lev)
        metrics.append(f * f * ((unit / f - book[lev]) ** 2).sum(1))
    win = np.argmin(np.array(metrics), axis=0)
    return win, np.array(paths)[win, np.arange(len(unit))]


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


def lloyd_searched(book: np.ndarray, code: Code, factors: np.ndarray, rounds: int, n: int = 384) -> np.ndarray:
    """Refit the union codebook to the encoder that searches `factors` (kept symmetric): each level
    moves to the mean of the scaled values x/(F|x|) its winning paths sent to it."""
    train = np.random.default_rng(11).standard_normal((n, N))
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    for _ in range(rounds):
        win, lev = best_paths(train, book, code, factors)
        target = train / factors[win][:, None]
        num = np.bincount(lev.ravel(), target.ravel(), len(book))
        cnt = np.bincount(lev.ravel(), minlength=len(book))
        new = np.where(cnt > 0, num / np.maximum(cnt, 1), book)
        book = np.sort((new - new[::-1]) / 2)
    return book


def searched_codebook(b: int, code: Code, factors: np.ndarray) -> np.ndarray:
    """The union codebook for the searching encoder: three plain Lloyd rounds, then six with the search."""
    return lloyd_searched(lloyd(union_codebook(b), code, 3), code, factors, 6)


def lloyd(book: np.ndarray, code: Code, rounds: int, n: int = 384) -> np.ndarray:
    """Refit the union codebook to its own encoder on unit-norm Gaussian blocks (kept symmetric)."""
    train = np.random.default_rng(11).standard_normal((n, N))
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    for _ in range(rounds):
        lev = viterbi(train, book, code)
        num = np.bincount(lev.ravel(), train.ravel(), len(book))
        cnt = np.bincount(lev.ravel(), minlength=len(book))
        new = np.where(cnt > 0, num / np.maximum(cnt, 1), book)
        book = np.sort((new - new[::-1]) / 2)
    return book


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
