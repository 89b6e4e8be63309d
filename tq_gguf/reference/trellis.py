"""Bit-exact NumPy reference of the trellis-coded value types tcq2 and tcq3 (docs/FORMAT.md, section 12).

A block of 64 values stores an fp16 scale and, per value, a branch bit and the rank of its
level in one of four subsets of a union codebook; the trellis state (the last m branch
bits) says which subset a branch takes. The encoder runs a Viterbi through the trellis
for each candidate scale and keeps the path of least metric. Every float32 operation here
is the spec's, in the spec's order (NumPy never fuses or reassociates elementwise float32
arithmetic), so these bytes are the bytes every backend must produce.

    quantize(x, qtype)      float32 (..., k*64) -> uint8 (..., k*TYPE_SIZE[qtype]), ggml row layout
    dequantize(raw, qtype)  uint8 -> float32

Like the turbo types, the quantizer does not rotate: a V row reaches it already rotated
(rotation.py) and a block quantizes the 64 values it is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kv.cachetypes import TRELLIS_TYPES
from .quants import FP16_NAN_BITS, condition, fp16_bits, pack2, scale_bytes, scale_from_bytes, sum_squares, unpack2
from .trellistables import FACTORS_SQ, INV_FACTORS, LEVELS, SUBSET, SUBSET_MIDPOINTS

QType = str  # a name in QTYPES

QTYPES: tuple[QType, ...] = tuple(sorted(TRELLIS_TYPES, key=lambda n: TRELLIS_TYPES[n].index_bits))
BLOCK_SIZE = TRELLIS_TYPES[QTYPES[0]].block_size
TYPE_SIZE: dict[str, int] = {q: TRELLIS_TYPES[q].type_size for q in QTYPES}
SUBSETS = 4  # the union codebook is dealt to four subsets


@dataclass(frozen=True)
class Trellis:
    """One type: its code and tables, as the encoder and decoder read them."""
    qtype: QType
    bits: int                  # per value: the branch bit and bits - 1 bits of rank
    memory: int                # 2^memory states; a block's last `memory` branch bits are 0
    levels: np.ndarray         # union codebook (2^(bits+1),), ascending
    midpoints: np.ndarray      # (4, ranks - 1): between neighbouring levels of each subset
    inv_factors: np.ndarray    # (scales,): 1/F[t]
    factors_sq: np.ndarray     # (scales,): F[t]^2
    subset: np.ndarray         # (states, 2): the subset of branch (state, branch bit)

    @property
    def states(self) -> int:
        return 1 << self.memory

    @property
    def ranks(self) -> int:
        return len(self.levels) // SUBSETS

    @property
    def type_size(self) -> int:
        return TYPE_SIZE[self.qtype]

    def level(self, subset: np.ndarray, rank: np.ndarray) -> np.ndarray:
        """Index into `levels` of rank r of subset j: subset j holds levels j, j + 4, j + 8, ..."""
        return subset.astype(np.int64) + SUBSETS * rank.astype(np.int64)


def trellis(qtype: QType) -> Trellis:
    try:
        t = TRELLIS_TYPES[str(qtype)]
    except KeyError:
        raise ValueError(f"unknown trellis-coded type {qtype!r}; expected one of {', '.join(QTYPES)}") from None
    return Trellis(t.name, t.index_bits, t.memory, LEVELS[t.name], SUBSET_MIDPOINTS[t.name], INV_FACTORS[t.name],
                   FACTORS_SQ[t.name], SUBSET[t.name])


def subset_ranks(v: np.ndarray, tr: Trellis) -> np.ndarray:
    """(4, *v.shape): the rank of the nearest level of each subset, counted against its midpoints
    (strict: a value on a midpoint takes the lower level)."""
    return np.stack([(v[..., None] > tr.midpoints[j]).sum(axis=-1) for j in range(SUBSETS)])


@dataclass(frozen=True)
class Paths:
    """One candidate's Viterbi over n blocks."""
    metric: np.ndarray     # (n,) float32: cost of the best path into state 0, times F^2
    ranks: np.ndarray      # (4, n, 64): each value's rank in each subset
    took_p1: np.ndarray    # (64, n, states) bool: the state came from its second predecessor
    tied: np.ndarray       # (64, n, states) bool: both predecessors' costs were equal and finite


def viterbi(x: np.ndarray, s: np.ndarray, tr: Trellis, factor_sq: np.float32) -> Paths:
    """The trellis search of one candidate: x (n, 64) conditioned, s (n,) its scale inv * 1/F."""
    v = x * s[:, None]                                   # one product per value
    ranks = subset_ranks(v, tr)
    sub_levels = tr.levels[tr.level(np.arange(SUBSETS)[:, None, None], ranks)]
    diff = v[None] - sub_levels
    err = diff * diff                                    # (4, n, 64): squared error of each subset

    S = tr.states
    state = np.arange(S)
    p0, branch = state >> 1, state & 1                   # a state's predecessors: p0 and p0 + S/2,
    p1 = p0 | (S >> 1)                                   # which differ in the branch bit shifted out
    sub0, sub1 = tr.subset[p0, branch], tr.subset[p1, branch]
    cost = np.full((len(x), S), np.inf, np.float32)
    cost[:, 0] = 0                                       # every block starts in state 0
    took_p1 = np.empty((BLOCK_SIZE, len(x), S), bool)
    tied = np.empty_like(took_p1)
    for i in range(BLOCK_SIZE):
        c0 = cost[:, p0] + err[sub0, :, i].T
        c1 = cost[:, p1] + err[sub1, :, i].T
        took_p1[i] = c1 < c0                             # a tie keeps p0
        tied[i] = (c1 == c0) & np.isfinite(c0)
        cost = np.where(took_p1[i], c1, c0)
    return Paths(cost[:, 0] * factor_sq, ranks, took_p1, tied)  # every block ends in state 0


@dataclass(frozen=True)
class Encoded:
    """The stored content of n blocks, before packing."""
    d: np.ndarray          # (n,) uint16: fp16 bits of the scale
    branch: np.ndarray     # (n, 64) uint8
    rank: np.ndarray       # (n, 64) uint8
    candidate: np.ndarray  # (n,) int: the winning candidate scale t (0 where the block is special)
    tied: np.ndarray       # (n,) int: exact ties of two predecessors that the tie rule decided on the stored path


def encode(blocks: np.ndarray, qtype: QType) -> Encoded:
    """The normative per-block computation (FORMAT.md 12.5)."""
    tr = trellis(qtype)
    x, finite = condition(blocks)
    n = len(x)
    ss = sum_squares(x)
    zero = ss == 0
    norm = np.sqrt(ss)
    inv = np.float32(1) / np.where(zero, np.float32(1), norm)

    candidates = [viterbi(x, inv * inv_factor, tr, factor_sq)
                  for inv_factor, factor_sq in zip(tr.inv_factors, tr.factors_sq)]
    # the least metric wins; a later candidate replaces the best only when strictly less
    best, win = candidates[0].metric, np.zeros(n, np.int64)
    for t, paths in enumerate(candidates[1:], start=1):
        better = paths.metric < best
        best, win = np.where(better, paths.metric, best), np.where(better, t, win)

    # trace the winner's path back from state 0; value i's branch bit is the low bit of the
    # state it leads to, its subset that of the branch, its rank the one the search used
    rows = np.arange(n)
    state = np.zeros(n, np.int64)
    branch = np.zeros((n, BLOCK_SIZE), np.uint8)
    rank = np.zeros((n, BLOCK_SIZE), np.uint8)
    subset = np.zeros((n, BLOCK_SIZE), np.int64)
    tied = np.zeros(n, np.int64)
    took_p1 = np.stack([c.took_p1 for c in candidates])[win, :, rows]    # (n, 64, states)
    ties = np.stack([c.tied for c in candidates])[win, :, rows]
    ranks = np.stack([c.ranks for c in candidates])[win, :, rows]        # (n, 4, 64)
    for i in range(BLOCK_SIZE - 1, -1, -1):
        prev = (state >> 1) | (took_p1[rows, i, state].astype(np.int64) * (tr.states >> 1))
        tied += ties[rows, i, state]
        branch[:, i] = state & 1
        subset[:, i] = tr.subset[prev, state & 1]
        rank[:, i] = ranks[rows, subset[:, i], i]
        state = prev

    c = tr.levels[tr.level(subset, rank)]
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = norm / np.sqrt(sum_squares(c))
    d = np.where(zero, np.uint16(0), fp16_bits(np.where(zero, np.float32(0), scale)))
    special = zero | ~finite                     # every bit but the scale's is 0
    d = np.where(finite, d, np.uint16(FP16_NAN_BITS)).astype(np.uint16)
    return Encoded(d, np.where(special[:, None], 0, branch).astype(np.uint8),
                   np.where(special[:, None], 0, rank).astype(np.uint8), np.where(special, 0, win),
                   np.where(special, 0, tied))


def decode_subsets(branch: np.ndarray, tr: Trellis) -> np.ndarray:
    """(n, 64): the subset each value's branch takes, walking the states from 0."""
    state = np.zeros(len(branch), np.int64)
    out = np.empty(branch.shape, np.int64)
    for i in range(BLOCK_SIZE):
        u = branch[:, i].astype(np.int64)
        out[:, i] = tr.subset[state, u]
        state = ((state << 1) | u) & (tr.states - 1)
    return out


def pack(enc: Encoded, tr: Trellis) -> np.ndarray:
    """uint8 (n, type_size): d, the rank plane, the branch plane (FORMAT.md 12.4)."""
    ranks = pack2(enc.rank) if tr.bits == 3 else np.packbits(enc.rank, axis=-1, bitorder="little")
    return np.concatenate([scale_bytes(enc.d), ranks, np.packbits(enc.branch, axis=-1, bitorder="little")], axis=-1)


def unpack(raw: np.ndarray, tr: Trellis) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 (n, type_size) -> (scale float32 (n,), branch (n, 64), rank (n, 64))."""
    rank_bytes = BLOCK_SIZE * (tr.bits - 1) // 8
    planes = raw[:, 2:]
    qs, qb = planes[:, :rank_bytes], planes[:, rank_bytes:]
    rank = unpack2(qs) if tr.bits == 3 else np.unpackbits(qs, axis=-1, bitorder="little")
    return scale_from_bytes(raw), np.unpackbits(qb, axis=-1, bitorder="little"), rank


def quantize_blocks(blocks: np.ndarray, qtype: QType) -> np.ndarray:
    """float32 (n, 64) -> uint8 (n, type_size), exactly the stored bytes."""
    return pack(encode(blocks, qtype), trellis(qtype))


def dequantize_blocks(raw: np.ndarray, qtype: QType) -> np.ndarray:
    """uint8 (n, type_size) -> float32 (n, 64): y[i] = f32(d) * L[level of value i], one multiply."""
    tr = trellis(qtype)
    d, branch, rank = unpack(np.asarray(raw, dtype=np.uint8).reshape(-1, tr.type_size), tr)
    with np.errstate(invalid="ignore"):   # a NaN scale decodes to NaN, quietly
        return d[:, None] * tr.levels[tr.level(decode_subsets(branch, tr), rank)]


def quantize(data: np.ndarray, qtype: QType) -> np.ndarray:
    """float32 (..., k*64) -> uint8 (..., k*type_size): each row becomes k contiguous blocks."""
    size = trellis(qtype).type_size
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 0 or data.shape[-1] % BLOCK_SIZE:
        raise ValueError(f"row length must be a multiple of {BLOCK_SIZE}, got shape {data.shape}")
    out = quantize_blocks(data.reshape(-1, BLOCK_SIZE), qtype)
    return out.reshape(*data.shape[:-1], data.shape[-1] // BLOCK_SIZE * size)


def dequantize(data: np.ndarray, qtype: QType) -> np.ndarray:
    """uint8 (..., k*type_size) -> float32 (..., k*64)."""
    size = trellis(qtype).type_size
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim == 0 or data.shape[-1] % size:
        raise ValueError(f"row size must be a multiple of {size} bytes for {qtype}, got shape {data.shape}")
    out = dequantize_blocks(data.reshape(-1, size), qtype)
    return out.reshape(*data.shape[:-1], data.shape[-1] // size * BLOCK_SIZE)
