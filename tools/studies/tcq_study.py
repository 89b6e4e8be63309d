#!/usr/bin/env python3
"""Backs docs/FORMAT.md 11.5 "The scale search", "Trellis-coded quantization": `python tools/studies/tcq_study.py`.

Would trellis-coded quantization (TCQ) pay for itself as a turbo type? float64 study.

Same bits per value as the format: 64·b index bits + one fp16 scale per 64-value block
(turbo2: b = 2, turbo3: b = 3), on the same rows as tools/studies/kv_mse.py (each key of
tests/data/kv_rows.npz after the format's rotation, plus Gaussian rows).

The trellis is a "bitshift" trellis (the decoder of QTIP-style TCQ):

  * a block is a circular bit stream of 64·b bits, cut into 64 groups v[0..63] of b bits;
  * the state of value i is the window of the last L bits ending with v[i]:
        s[i] = ((s[i-1] << b) | v[i]) mod 2^L
    so any value decodes on its own from L consecutive bits of the stream (O(1));
  * value i reconstructs as  y[i] = f32(d) · T[s[i]],  T a table of 2^L entries.

Block start, tail-biting: the stream is circular, s[-1] is the last L bits of the stream,
so the first windows wrap round to the end and no bit is spent on a start state. The
encoder is the usual two-pass approximation to the tail-biting Viterbi: pass 1 runs a
free-start, free-end Viterbi on the block rotated by 32 values, so that the wrap point
sits in the middle of the trellis, and reads there the L-b bits that the end and the
start share; pass 2 runs a Viterbi on the block in order with s[-1] fixed to them and
the end state forced to agree. ("zero" start, s[-1] = 0 with the stream not circular,
is measured too: the first values then see only 2^b, 2^2b, ... table entries.)

Table T (unit-norm blocks, coordinate std 1/8):
  gauss   the 2^L Gaussian quantiles Φ^-1((k + 1/2)/2^L)/8, dealt to the states by a
          fixed random permutation (seed 7): no training;
  lloyd   that table after a few Lloyd rounds on training blocks (unit Gaussian blocks,
          seed 11, disjoint from the Gaussian test rows): encode with the current table,
          then T[s] = Σ d·x / Σ d² over the values decoded from state s (kept symmetric
          by averaging T[s] with -T[~s]).

Per block scale: for each of the format's 8 candidates d_t = F[t]·‖x‖ (F =
SEARCH_FACTORS) the Viterbi finds the least-squares path for x ≈ d_t·T[s]; the path
keeps an amplitude chosen after the fact, either
  np    the norm-preserving ‖x‖/‖T[s]‖ (the format's rule, FORMAT.md 5.7), or
  lsq   the least-squares <x, T[s]>/‖T[s]‖²,
rounded to fp16; the block keeps the candidate of least error after rounding. "1 scale"
runs the Viterbi at F = 1 only (one eighth of the encoder's work).

Baseline: the format's turbo2/turbo3 from the NumPy reference (quantize → dequantize).

Subsampling: by default 160 blocks per set, drawn at random (seed 3) from each rotated
real set (144 to 384 blocks) and from 256 Gaussian rows × 128 (kv_mse.py uses 2000 rows);
the format's column is measured on the same blocks. --blocks 0 takes every block (about
twice the time). The Lloyd tables are fitted on 512 training blocks (2 rounds). Run time
about 2-3 minutes on one core at the default, about 5 with --big (adds L = 12); --four adds
4 bits (turbo4) at L = 8 and 10 (about a minute more).

    python tools/studies/tcq_study.py [--quick] [--blocks N] [--big] [--four]
"""

from __future__ import annotations

import argparse
import sys
from statistics import NormalDist
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tq_gguf import paths  # noqa: E402
from tq_gguf import reference as ref  # noqa: E402
from tq_gguf.reference.codebooks import SEARCH_FACTORS  # noqa: E402

KV_ROWS = paths.KV_ROWS
N = 64
FACTORS = SEARCH_FACTORS.astype(np.float64)


def fp16(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, np.float64).astype(np.float16).astype(np.float64)


def gauss_table(L: int, seed: int = 7) -> np.ndarray:
    inv = NormalDist().inv_cdf
    q = np.array([inv((k + 0.5) / (1 << L)) for k in range(1 << L)]) / 8.0
    perm = np.random.default_rng(seed).permutation(1 << L)
    t = q[perm]
    # symmetric: T[~s] = -T[s] (the complement state decodes to the negated value)
    low = np.arange(1 << (L - 1))
    t[(1 << L) - 1 - low] = -t[low]
    return fp16(t)   # the decoder would hold an fp16 table


def viterbi(x: np.ndarray, table: np.ndarray, b: int, L: int, start: np.ndarray | None,
            end_low: np.ndarray | None) -> np.ndarray:
    """Least-squares state path of x (B, n) through the bitshift trellis; returns states (B, n).

    start: s[-1] per block (B,) or None for a free start (s[0] any state).
    end_low: required value of s[n-1] mod 2^(L-b) per block, or None for a free end.
    """
    B, n = x.shape
    S, R, K = 1 << L, 1 << (L - b), 1 << b
    back = np.empty((n, B, R), np.uint8)   # for the states r·K + v: the dropped top bits k
    states = np.arange(S)
    err0 = (x[:, :1] - table[None, :]) ** 2
    if start is None:
        cost = err0
    else:
        allowed = ((start[:, None] << b) & (S - 1)) == (states[None, :] & ~(K - 1) & (S - 1))
        cost = np.where(allowed, err0, np.inf)
    for i in range(1, n):
        c3 = cost.reshape(B, K, R)            # predecessor index = k·R + r, successor = r·K + v
        k = c3.argmin(axis=1)
        m = np.take_along_axis(c3, k[:, None, :], axis=1)[:, 0, :]
        back[i] = k
        cost = np.repeat(m, K, axis=1) + (x[:, i:i + 1] - table[None, :]) ** 2
    if end_low is not None:
        cost = np.where((states[None, :] & (R - 1)) == end_low[:, None], cost, np.inf)
    s = cost.argmin(axis=1)
    path = np.empty((B, n), np.int64)
    path[:, n - 1] = s
    rows = np.arange(B)
    for i in range(n - 1, 0, -1):
        r = s >> b
        s = back[i, rows, r].astype(np.int64) * R + r
        path[:, i - 1] = s
    return path


def tcq_paths(u: np.ndarray, table: np.ndarray, b: int, L: int, start_mode: str) -> np.ndarray:
    """States (B, 64) for the unit-scaled block u ≈ T[s]."""
    R = 1 << (L - b)
    if start_mode == "zero":
        return viterbi(u, table, b, L, np.zeros(len(u), np.int64), None)
    h = N // 2
    rot = np.concatenate([u[:, h:], u[:, :h]], axis=1)
    p1 = viterbi(rot, table, b, L, None, None)
    shared = p1[:, N - h - 1] & (R - 1)     # s[63] mod 2^(L-b) in the original order = s[-1]
    return viterbi(u, table, b, L, shared, shared)


def check_tailbiting(path: np.ndarray, b: int, L: int) -> None:
    """The path is a valid circular stream: every state is (previous << b | v) mod 2^L."""
    S = 1 << L
    prev = np.roll(path, 1, axis=1)
    assert np.all((path >> b) == (prev & ((S - 1) >> b))), "not a bitshift path"


def tcq_encode(blocks: np.ndarray, table: np.ndarray, b: int, L: int,
               start_mode: str = "tail", factors: np.ndarray = FACTORS) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per amplitude rule ("np", "lsq"): (states (B, 64), fp16 amplitude (B,)) of the best of
    the 8 candidate scales. Both rules share the Viterbi paths; each picks its own winner."""
    norm = np.linalg.norm(blocks, axis=1)
    safe = np.where(norm == 0, 1.0, norm)
    best = {rule: [np.full(len(blocks), np.inf), np.zeros(blocks.shape, np.int64), np.zeros(len(blocks))]
            for rule in ("np", "lsq")}
    for f in factors:
        u = blocks / (f * safe)[:, None]
        path = tcq_paths(u, table, b, L, start_mode)
        if start_mode == "tail":
            check_tailbiting(path, b, L)
        c = table[path]
        cc = (c * c).sum(1)
        for rule, (err_b, path_b, amp_b) in best.items():
            amp = fp16(norm / np.sqrt(cc) if rule == "np" else (blocks * c).sum(1) / cc)
            err = ((blocks - amp[:, None] * c) ** 2).sum(1)
            better = err < err_b
            best[rule][0] = np.where(better, err, err_b)
            path_b[better] = path[better]
            best[rule][2] = np.where(better, amp, amp_b)
    return {rule: (v[1], v[2]) for rule, v in best.items()}


def tcq_mse(blocks: np.ndarray, table: np.ndarray, b: int, L: int, start_mode: str = "tail",
            factors: np.ndarray = FACTORS) -> dict[str, float]:
    out = {}
    for rule, (path, amp) in tcq_encode(blocks, table, b, L, start_mode, factors).items():
        rec = amp[:, None] * table[path]
        out[rule] = float(((blocks - rec) ** 2).sum() / (blocks**2).sum())
    return out


def lloyd_table(table: np.ndarray, b: int, L: int, rounds: int, n: int = 512) -> np.ndarray:
    train = np.random.default_rng(11).standard_normal((n, N))
    S = 1 << L
    for _ in range(rounds):
        path, amp = tcq_encode(train, table, b, L)["lsq"]
        num = np.bincount(path.ravel(), (amp[:, None] * train).ravel(), S)
        den = np.bincount(path.ravel(), np.broadcast_to((amp * amp)[:, None], train.shape).ravel(), S)
        new = np.where(den > 0, num / np.where(den > 0, den, 1), table)
        table = (new - new[::-1]) / 2   # state ~s = S-1-s decodes to -T[s]
        table = fp16(table * (1 / 8) / np.sqrt((table**2).mean()))   # unit-block coordinate scale, fp16
    return table


def turbo_mse(x: np.ndarray, qtype: str) -> float:
    y = ref.dequantize(ref.quantize(x, qtype), qtype)
    return float(((y.astype(np.float64) - x.astype(np.float64)) ** 2).sum() / (x.astype(np.float64) ** 2).sum())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="L = b+4 only, 32 blocks per set (a smoke test)")
    ap.add_argument("--blocks", type=int, default=160, help="blocks per set, drawn at random (0: all)")
    ap.add_argument("--big", action="store_true", help="also L = 12 (about 4x the time of L = 10)")
    ap.add_argument("--four", action="store_true", help="also 4 bits (turbo4), L = 8 and 10")
    args = ap.parse_args()

    data = np.load(KV_ROWS)
    sets = {k: ref.rotate(data[k]) for k in sorted(data.files)}
    sets["gauss"] = np.random.default_rng(0).standard_normal((256, 128)).astype(np.float32)
    per_set = 32 if args.quick else args.blocks
    blocks32 = {}
    for k, v in sets.items():
        bl = v.reshape(-1, N)
        if per_set and len(bl) > per_set:
            bl = bl[np.sort(np.random.default_rng(3).choice(len(bl), per_set, replace=False))]
        blocks32[k] = bl
    blocks = {k: v.astype(np.float64) for k, v in blocks32.items()}
    print("Blocks per set: " + ", ".join(f"{k} {len(v)}" for k, v in blocks.items()) + "\n")

    Ls = {2: (6, 8, 10), 3: (7, 9, 11)} if not args.quick else {2: (6,), 3: (7,)}
    if args.four:
        Ls[4] = (8, 10) if not args.quick else (8,)
    top = {b: Ls[b][-1] for b in Ls}   # the L of the variant columns (lsq, zero, lloyd)
    if args.big:
        Ls = {b: Ls[b] + (12,) for b in Ls}
    cols: list[tuple[str, dict[str, float]]] = []
    timing: list[tuple[int, int, float]] = []
    nb = sum(len(v) for v in blocks.values())
    for b in Ls:
        qtype = f"turbo{b}"
        cols.append((f"{qtype}", {k: turbo_mse(v, qtype) for k, v in blocks32.items()}))
        for L in Ls[b]:
            table = gauss_table(L)
            t0 = time.perf_counter()
            res = {k: tcq_mse(v, table, b, L) for k, v in blocks.items()}
            timing.append((b, L, (time.perf_counter() - t0) / nb))
            cols.append((f"tcq{b} L{L}", {k: r["np"] for k, r in res.items()}))
            print(f"done b={b} L={L}", file=sys.stderr, flush=True)
            if L == top[b]:
                lsq, table_v = {k: r["lsq"] for k, r in res.items()}, table
        L = top[b]
        cols.append((f"tcq{b} L{L} lsq", lsq))
        table = table_v
        one = {k: tcq_mse(v, table, b, L, factors=np.ones(1)) for k, v in blocks.items()}
        cols.append((f"tcq{b} L{L} 1 scale", {k: r["np"] for k, r in one.items()}))
        cols.append((f"tcq{b} L{L} 1 scale lsq", {k: r["lsq"] for k, r in one.items()}))
        cols.append((f"tcq{b} L{L} zero", {k: tcq_mse(v, table, b, L, "zero")["np"] for k, v in blocks.items()}))
        fitted = lloyd_table(table, b, L, rounds=2 if not args.quick else 1)
        cols.append((f"tcq{b} L{L} lloyd", {k: tcq_mse(v, fitted, b, L)["np"] for k, v in blocks.items()}))
        print(f"done b={b} variants", file=sys.stderr, flush=True)

    print("Relative MSE (sum of squared error / sum of squares), float64; tcq = tail-biting,")
    print("gauss table, 8 candidate scales, norm-preserving fp16 amplitude unless marked: lsq =")
    print("least-squares amplitude, 1 scale = the Viterbi at F = 1 only, zero = start in state 0,")
    print("lloyd = table after 2 Lloyd rounds.\n")
    print("| rows | " + " | ".join(name for name, _ in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for k in sets:
        print(f"| {k} | " + " | ".join(f"{c[k]:.5f}" for _, c in cols) + " |")
    print()
    print("Ratio TCQ / format (geometric mean over the sets):\n")
    print("| column | ratio |")
    print("|---|---|")
    base = {}
    for name, c in cols:
        if name.startswith("turbo"):
            base = c
            continue
        r = np.exp(np.mean([np.log(c[k] / base[k]) for k in sets]))
        print(f"| {name} | {r:.3f} |")
    print()
    print("Decoder and encoder cost. Decoding one value: read L bits at bit offset b·i of the")
    print("circular stream (one 16- or 32-bit load, a shift and a mask), one table load, one")
    print("multiply by the block scale. Encoder: per value, per Viterbi pass, 2^(L+b) add-compares")
    print("(2^L states × 2^b predecessors); tail-biting = 2 passes, × 8 candidate scales.")
    print("Encoder time is NumPy float64 on one core, vectorised over blocks, all 8 scales.\n")
    print("| b | L | table bytes (fp16) | table bytes (f32) | encoder add-compares/value | encoder ms/block |")
    print("|---|---|---|---|---|---|")
    for b, L, sec in timing:
        print(f"| {b} | {L} | {2 << L} | {4 << L} | {(1 << (L + b)) * 2 * 8} | {sec * 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
