"""Bit-exact NumPy reference of the turbo2/turbo3/turbo4 block formats.

Every arithmetic step follows docs/FORMAT.md in float32, in the spec's order,
so that the bytes produced here are the bytes every backend must produce. The
layout mirrors gguf-py's quants.py: one class per type with `quantize_blocks`
and `dequantize_blocks` on arrays of blocks, plus module-level `quantize`,
`dequantize` and `dot` working on ggml-style rows of contiguous blocks.

The quantizer does not rotate: rotation is a graph-level transform
(rotation.py); a block quantizes the 64 values it is given.
"""

from __future__ import annotations

import numpy as np

from ..kv.cachetypes import CACHE_TYPES, TURBO_TYPES
from .codebooks import CENTROIDS, MIDPOINTS, SEARCH_MIDPOINTS

QType = str  # a name in TURBO_TYPES

# The format facts come from the one type table (tq_gguf.kv.cachetypes).
QTYPES: tuple[QType, ...] = TURBO_TYPES
BLOCK_SIZE = CACHE_TYPES[QTYPES[0]].block_size
TYPE_SIZE: dict[str, int] = {q: CACHE_TYPES[q].type_size for q in QTYPES}
BITS: dict[str, int] = {q: CACHE_TYPES[q].index_bits for q in QTYPES}

# Input conditioning (FORMAT.md, "Quantization", step 2): after it every
# intermediate value is zero or a normal float32, so hardware that flushes
# subnormals to zero computes the same bytes as hardware that keeps them.
CLAMP = np.float32(2.0**60)
FLUSH = np.float32(2.0**-63)

FP16_MAX_BITS = 0x7BFF  # 65504, the largest finite half: where an overflowing scale saturates
FP16_NAN_BITS = 0x7E00  # canonical quiet NaN: the scale of a block that held NaN or Inf


def tree_sum(v: np.ndarray) -> np.ndarray:
    """Sum the last axis (64 float32 values) in the spec's halving tree.

    s[i] = v[i] + v[i+32] for i < 32, then s[i] += s[i+16], 8, 4, 2, 1. Every
    addition is a float32 operation with round-to-nearest-even (NumPy never
    fuses or reassociates elementwise float32 arithmetic).
    """
    v = np.asarray(v, dtype=np.float32)
    if v.shape[-1] != BLOCK_SIZE:
        raise ValueError(f"tree_sum needs {BLOCK_SIZE} values on the last axis, got {v.shape[-1]}")
    s = v[..., :32] + v[..., 32:]
    for h in (16, 8, 4, 2, 1):
        s = s[..., :h] + s[..., h : 2 * h]
    return s[..., 0]


def sum_squares(v: np.ndarray) -> np.ndarray:
    """Σ v[i]² over a block: each square rounded to float32, then tree_sum (no FMA)."""
    v = np.asarray(v, dtype=np.float32)
    return tree_sum(v * v)


def fp16_bits(scale: np.ndarray) -> np.ndarray:
    """float32 → fp16 bit pattern: round to nearest even, keep fp16 subnormals,
    saturate finite values that round past 65504 to 0x7BFF, NaN → 0x7E00."""
    scale = np.asarray(scale, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        bits = scale.astype(np.float16).view(np.uint16)
    bits = np.where(np.isinf(scale) | (np.isfinite(scale) & (np.abs(scale) > 65504)), FP16_MAX_BITS | (bits & 0x8000), bits)
    return np.where(np.isnan(scale), FP16_NAN_BITS, bits).astype(np.uint16)


def select_indices(u: np.ndarray, bits: int, midpoints: np.ndarray | None = None) -> np.ndarray:
    """Codebook index of each normalised value, by the symmetric rule of FORMAT.md step 6.

    cnt = the number of positive midpoints m with |u| > m (strict: a tie goes to the
    index nearer zero); idx = N/2 + cnt for u > 0, N/2 - 1 - cnt otherwise (±0 takes
    N/2 - 1). `midpoints` are the positive midpoints to compare with, by default the
    plain codebook's (search candidate SEARCH_CENTRE).
    """
    u = np.asarray(u, dtype=np.float32)
    half = 1 << (bits - 1)
    pos = MIDPOINTS[bits][half:] if midpoints is None else midpoints
    cnt = (np.abs(u)[..., None] > pos).sum(axis=-1)
    return np.where(u > 0, half + cnt, half - 1 - cnt).astype(np.uint8)


def search(x: np.ndarray, u: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Step 6, the scale search: (indices uint8 (n, 64), cs float32 (n,)) of the best candidate.

    Candidate t takes the indices of `select_indices` against SEARCH_MIDPOINTS[bits][t]
    and scores p / sqrt(cs), with p = tree_sum(|x[i]| * |C[idx[i]]|) and
    cs = tree_sum(C[idx[i]]^2), every product rounded; the first highest score wins.
    """
    x = np.asarray(x, dtype=np.float32)
    ax = np.abs(x)
    cb = CENTROIDS[bits]
    best_idx = np.zeros(x.shape, np.uint8)
    best_cs = np.zeros(x.shape[:-1], np.float32)
    best_score = np.full(x.shape[:-1], -np.inf, np.float32)
    for mids in SEARCH_MIDPOINTS[bits]:
        idx = select_indices(u, bits, mids)
        c = cb[idx]
        cs = sum_squares(c)
        score = tree_sum(ax * np.abs(c)) / np.sqrt(cs)
        better = score > best_score
        best_idx = np.where(better[..., None], idx, best_idx)
        best_cs = np.where(better, cs, best_cs)
        best_score = np.where(better, score, best_score)
    return best_idx, best_cs


def condition(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1 and 2: (conditioned float32 blocks (n, 64), which blocks are finite (n,)).

    A block holding NaN or ±Inf is zeroed here (its bytes are fixed by step 1 alone); the
    others are clamped to ±2^60, and values below 2^-63 in magnitude become +0.
    """
    x = np.asarray(blocks, dtype=np.float32).reshape(-1, BLOCK_SIZE)
    finite = np.isfinite(x).all(axis=-1)
    x = np.where(finite[:, None], x, np.float32(0))
    x = np.clip(x, -CLAMP, CLAMP)
    return np.where(np.abs(x) < FLUSH, np.float32(0), x), finite


def encode(blocks: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The normative per-block computation: (indices uint8 (n, 64), fp16 scale bits uint16 (n,))."""
    x, finite = condition(blocks)

    # step 3-5: norm, one reciprocal, one multiply per value
    ss = sum_squares(x)
    zero = ss == 0
    norm = np.sqrt(ss)
    with np.errstate(divide="ignore"):
        inv = np.float32(1) / np.where(zero, np.float32(1), norm)
    u = x * inv[:, None]

    # step 6: the candidate scale whose indices fit the block best
    idx, cs = search(x, u, bits)

    # step 7: norm-preserving scale ‖x‖ / ‖C[idx]‖
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = norm / np.sqrt(cs)
    d = fp16_bits(np.where(zero, np.float32(0), scale))

    d = np.where(zero, np.uint16(0), d)
    d = np.where(finite, d, np.uint16(FP16_NAN_BITS))
    idx = np.where(finite[:, None], idx, np.uint8(0))
    return idx.astype(np.uint8), d.astype(np.uint16)


def scale_bytes(d: np.ndarray) -> np.ndarray:
    return d.astype("<u2").view(np.uint8).reshape(-1, 2)


def scale_from_bytes(raw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(raw[:, :2]).view("<f2").reshape(-1).astype(np.float32)


def pack2(idx: np.ndarray) -> np.ndarray:
    """16 bytes: byte j holds idx[j], idx[j+16], idx[j+32], idx[j+48] in bits 0-1, 2-3, 4-5, 6-7."""
    q = (idx & np.uint8(3)).reshape(-1, 4, 16)
    return q[:, 0] | (q[:, 1] << np.uint8(2)) | (q[:, 2] << np.uint8(4)) | (q[:, 3] << np.uint8(6))


def unpack2(qs: np.ndarray) -> np.ndarray:
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 4, 1)
    return ((qs[:, None, :] >> shifts) & np.uint8(3)).reshape(-1, BLOCK_SIZE)


def _pack_high(idx: np.ndarray) -> np.ndarray:
    """8 bytes: bit k of byte j is bit 2 of idx[j + 8k]."""
    h = ((idx >> np.uint8(2)) & np.uint8(1)).reshape(-1, 8, 8)  # [k, j]
    weights = (np.uint8(1) << np.arange(8, dtype=np.uint8)).reshape(1, 8, 1)
    return (h * weights).sum(axis=1, dtype=np.uint8)


def _unpack_high(qh: np.ndarray) -> np.ndarray:
    shifts = np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
    return (((qh[:, None, :] >> shifts) & np.uint8(1)) << np.uint8(2)).reshape(-1, BLOCK_SIZE)


def _pack4(idx: np.ndarray) -> np.ndarray:
    """32 bytes: byte j holds idx[j] in the low nibble and idx[j+32] in the high nibble."""
    return (idx[:, :32] & np.uint8(15)) | (idx[:, 32:] << np.uint8(4))


def _unpack4(qs: np.ndarray) -> np.ndarray:
    return np.concatenate([qs & np.uint8(15), qs >> np.uint8(4)], axis=-1)


class _Turbo:
    """One turbo type: bits per index, bytes per block, packing of the index planes."""

    qtype: QType
    bits: int
    block_size = BLOCK_SIZE
    type_size: int

    @classmethod
    def pack(cls, idx: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def unpack(cls, qs: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def quantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        """float32 (n, 64) → uint8 (n, type_size), exactly the stored bytes."""
        idx, d = encode(blocks, cls.bits)
        return np.concatenate([scale_bytes(d), cls.pack(idx)], axis=-1)

    @classmethod
    def indices(cls, blocks: np.ndarray) -> np.ndarray:
        """uint8 (n, type_size) → codebook indices uint8 (n, 64)."""
        return cls.unpack(np.asarray(blocks, dtype=np.uint8).reshape(-1, cls.type_size)[:, 2:])

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        """uint8 (n, type_size) → float32 (n, 64): y[i] = f32(d) * C[idx[i]], one float32 multiply."""
        blocks = np.asarray(blocks, dtype=np.uint8).reshape(-1, cls.type_size)
        d = scale_from_bytes(blocks)
        return d[:, None] * CENTROIDS[cls.bits][cls.indices(blocks)]


class Turbo2(_Turbo):
    qtype = "turbo2"
    bits, type_size = BITS[qtype], TYPE_SIZE[qtype]

    @classmethod
    def pack(cls, idx: np.ndarray) -> np.ndarray:
        return pack2(idx)

    @classmethod
    def unpack(cls, qs: np.ndarray) -> np.ndarray:
        return unpack2(qs)


class Turbo3(_Turbo):
    qtype = "turbo3"
    bits, type_size = BITS[qtype], TYPE_SIZE[qtype]

    @classmethod
    def pack(cls, idx: np.ndarray) -> np.ndarray:
        return np.concatenate([pack2(idx), _pack_high(idx)], axis=-1)

    @classmethod
    def unpack(cls, qs: np.ndarray) -> np.ndarray:
        return unpack2(qs[:, :16]) | _unpack_high(qs[:, 16:])


class Turbo4(_Turbo):
    qtype = "turbo4"
    bits, type_size = BITS[qtype], TYPE_SIZE[qtype]

    @classmethod
    def pack(cls, idx: np.ndarray) -> np.ndarray:
        return _pack4(idx)

    @classmethod
    def unpack(cls, qs: np.ndarray) -> np.ndarray:
        return _unpack4(qs)


TYPES: dict[str, type[_Turbo]] = {t.qtype: t for t in (Turbo2, Turbo3, Turbo4)}


def type_of(qtype: str) -> type[_Turbo]:
    try:
        return TYPES[str(qtype)]
    except KeyError:
        raise ValueError(f"unknown turbo type {qtype!r}; expected one of {', '.join(QTYPES)}") from None


def quantize(data: np.ndarray, qtype: str) -> np.ndarray:
    """float32 (..., k·64) → uint8 (..., k·type_size): each row becomes k contiguous blocks."""
    t = type_of(qtype)
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 0 or data.shape[-1] % BLOCK_SIZE:
        raise ValueError(f"row length must be a multiple of {BLOCK_SIZE}, got shape {data.shape}")
    out = t.quantize_blocks(data.reshape(-1, BLOCK_SIZE))
    return out.reshape(*data.shape[:-1], data.shape[-1] // BLOCK_SIZE * t.type_size)


def dequantize(data: np.ndarray, qtype: str) -> np.ndarray:
    """uint8 (..., k·type_size) → float32 (..., k·64)."""
    t = type_of(qtype)
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim == 0 or data.shape[-1] % t.type_size:
        raise ValueError(f"row size must be a multiple of {t.type_size} bytes for {t.qtype}, got shape {data.shape}")
    out = t.dequantize_blocks(data.reshape(-1, t.type_size))
    return out.reshape(*data.shape[:-1], data.shape[-1] // t.type_size * BLOCK_SIZE)


def dot(blocks: np.ndarray, q: np.ndarray, qtype: str) -> np.ndarray:
    """Rotated-domain dot product of quantized rows with float32 vectors, in the reference order.

    Per block b: t_b = tree_sum(q[i] * C[idx[i]]) (float32 products), p_b = f32(d_b) * t_b;
    then acc = ((p_0 + p_1) + p_2) + ... sequentially over the blocks of the row.
    Leading axes of `blocks` and `q` broadcast; returns float32 of the broadcast shape.
    """
    t = type_of(qtype)
    blocks = np.asarray(blocks, dtype=np.uint8)
    q = np.asarray(q, dtype=np.float32)
    nb = blocks.shape[-1] // t.type_size
    if blocks.shape[-1] % t.type_size or q.shape[-1] != nb * BLOCK_SIZE:
        raise ValueError(f"shapes {blocks.shape} and {q.shape} do not match for {t.qtype}")
    lead = np.broadcast_shapes(blocks.shape[:-1], q.shape[:-1])
    blocks = np.broadcast_to(blocks, (*lead, blocks.shape[-1])).reshape(-1, t.type_size)
    q = np.broadcast_to(q, (*lead, q.shape[-1])).reshape(-1, BLOCK_SIZE)
    c = CENTROIDS[t.bits][t.indices(blocks)]
    partial = (scale_from_bytes(blocks) * tree_sum(q * c)).reshape(-1, nb)
    acc = partial[:, 0].copy()
    for b in range(1, nb):
        acc = acc + partial[:, b]
    return acc.reshape(lead)
