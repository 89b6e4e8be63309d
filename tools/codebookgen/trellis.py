"""The trellis-coded types' tables: the union codebook, trained for the encoder that uses it,
and the candidate scale factors (docs/FORMAT.md, section 12).

Trellis. A rate-1/2 shift-register code of memory m (2^m states, the state being the last
m branch bits, the latest in bit 0) deals the union codebook's 2^(b+1) levels, sorted and
dealt in turn to four subsets D0..D3 (level k to D(k mod 4)), to the branches: from
state s the branch bit u takes subset parity(a & s) + 2 * (u ^ parity(g & s)), and the
next state is ((s << 1) | u) mod 2^m. Each value stores u and its level's rank in the
subset, b bits in all.

Training (float64 NumPy, deterministic: a fixed seed, a fixed number of rounds):

* start: the 2^(b+1) quantiles (k + 1/2) / 2^(b+1) of N(0, 1/64), the law of one rotated
  coordinate of a unit block;
* TRAIN_BLOCKS unit-norm Gaussian blocks drawn from TRAIN_SEED;
* PLAIN_ROUNDS Lloyd rounds with the encoder at one scale: a Viterbi from state 0 to
  state 0 for the least squared error, then each level moves to the mean of the values
  its paths sent to it;
* SEARCHED_ROUNDS rounds with the encoder that searches the candidate factors F: each
  block runs the Viterbi on x / F for every F and keeps the least F^2 * (path error),
  and each level moves to the mean of the scaled values x / F its winning paths sent it;
* after every round the codebook is made symmetric, (L - reverse(L)) / 2, and sorted;
* the result is rounded to float32.

Candidate factors: `scales` factors centred on 1 and 2^(1/6) apart (2^(1/12) apart for
more than four), F[t] = f32(2^((t - (n - 1)/2) * step)); 1/F[t] is F reversed. The
measurements behind every choice are in docs/FORMAT.md 11.5 (tools/studies/sptcq_study.py,
which uses these functions).
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from .layout import DIM, Trellis

TRAIN_SEED = 11        # the training blocks' generator
TRAIN_BLOCKS = 384     # unit-norm Gaussian blocks the codebook is fitted on
PLAIN_ROUNDS = 3       # Lloyd rounds with one scale
SEARCHED_ROUNDS = 6    # then rounds with the scale search
# A subnormal product u = x * s must act as zero: every comparison with a midpoint and every
# difference with a level then gives the same float32 result (FORMAT.md 12, numerics). That
# holds when no level and no midpoint is anywhere near the subnormal range.
SMALLEST_TABLE_VALUE = 2.0**-16


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


def union_codebook(b: int) -> np.ndarray:
    """The training's start: 2^(b+1) Gaussian quantile levels for coordinate std 1/8."""
    inv = NormalDist().inv_cdf
    n = 1 << (b + 1)
    return np.array([inv((k + 0.5) / n) for k in range(n)]) / np.sqrt(DIM)


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


def training_blocks(n: int = TRAIN_BLOCKS) -> np.ndarray:
    train = np.random.default_rng(TRAIN_SEED).standard_normal((n, DIM))
    return train / np.linalg.norm(train, axis=1, keepdims=True)


def _refit(book: np.ndarray, lev: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Each level to the mean of the values sent to it (unused levels stay), kept symmetric."""
    num = np.bincount(lev.ravel(), target.ravel(), len(book))
    cnt = np.bincount(lev.ravel(), minlength=len(book))
    new = np.where(cnt > 0, num / np.maximum(cnt, 1), book)
    return np.sort((new - new[::-1]) / 2)


def lloyd(book: np.ndarray, code: Code, rounds: int, n: int = TRAIN_BLOCKS) -> np.ndarray:
    """Refit the union codebook to its own encoder (one scale) on unit-norm Gaussian blocks."""
    train = training_blocks(n)
    for _ in range(rounds):
        book = _refit(book, viterbi(train, book, code), train)
    return book


def lloyd_searched(book: np.ndarray, code: Code, factors: np.ndarray, rounds: int, n: int = TRAIN_BLOCKS) -> np.ndarray:
    """Refit the union codebook to the encoder that searches `factors`: each level moves to the
    mean of the scaled values x/(F|x|) its winning paths sent to it."""
    train = training_blocks(n)
    for _ in range(rounds):
        win, lev = best_paths(train, book, code, factors)
        book = _refit(book, lev, train / factors[win][:, None])
    return book


def searched_codebook(b: int, code: Code, factors: np.ndarray) -> np.ndarray:
    """The union codebook for the searching encoder: plain Lloyd rounds, then rounds with the search."""
    return lloyd_searched(lloyd(union_codebook(b), code, PLAIN_ROUNDS), code, factors, SEARCHED_ROUNDS)


def exact_midpoints(levels: np.ndarray) -> np.ndarray:
    """f32 of the exact midpoint of neighbouring float32 levels (the float64 sum of two float32 is exact)."""
    wide = levels.astype(np.float64)
    return ((wide[:-1] + wide[1:]) / 2).astype(np.float32)


def build_trellis_tables(types: list[Trellis]) -> list[dict]:
    tables = []
    for t in types:
        code = Code(t.memory, t.pair_taps, t.branch_taps)
        f64 = grid(t.scales)
        factors = f64.astype(np.float32)
        inverse = (1.0 / f64).astype(np.float32)
        if not np.array_equal(inverse, factors[::-1]):
            raise SystemExit(f"{t.name}: the inverse factors are not the factors reversed in float32")
        levels = searched_codebook(t.bits, code, f64).astype(np.float32)
        if not (np.array_equal(levels, -levels[::-1]) and np.all(np.diff(levels) > 0)):
            raise SystemExit(f"{t.name}: the union codebook is not sorted and symmetric in float32")
        subset_levels = levels.reshape(-1, 4).T                    # [j][r] = level j + 4r
        mids = np.array([exact_midpoints(row) for row in subset_levels], dtype=np.float32).reshape(4, -1)
        if min(np.abs(levels).min(), np.abs(mids).min(initial=np.inf)) < SMALLEST_TABLE_VALUE:
            raise SystemExit(f"{t.name}: a level or subset midpoint is below {SMALLEST_TABLE_VALUE} in magnitude")
        wide = factors.astype(np.float64)
        tables.append({
            "type": t,
            "levels": levels,
            "subset_midpoints": mids,
            "factors": factors,
            "inv_factors": inverse,
            "factors_sq": (wide * wide).astype(np.float32),   # correctly rounded products
            "subset": code.subset.astype(np.uint8),
        })
    return tables
