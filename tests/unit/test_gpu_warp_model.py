"""A lane-by-lane model of the GPU turbo kernels, held to the NumPy reference.

The CUDA (native/cuda/tq-cuda.cuh) and Metal (native/metal/tq-metal.h) quantizers
give one 32-lane warp/simdgroup a 64-value block, lane l holding x[l] and x[l + 32].
Neither can run here, so this models exactly their data movement: the xor-shuffle
halving tree, the per-lane index choice of each scale-search candidate, the choice
between candidates (the same on every lane, since each lane holds the whole block's
score), the shuffles that pack turbo2/3 bytes, and the byte ranges the FlashAttention
readers load for a lane. Every operation is one
float32 operation, as the kernels' __fmul_rn/__fadd_rn (CUDA) and contraction-free
code (Metal) make it. The model must give the reference's bytes on the spec's edge
cases and on random data; a change to the kernels' lane logic should change this
model with it.
"""

from __future__ import annotations

import numpy as np
import pytest

from tq_gguf import reference as ref
from tq_gguf.reference.codebooks import SEARCH_MIDPOINTS
from helpers import edge_blocks

BITS = {"turbo2": 2, "turbo3": 3, "turbo4": 4}
LANES = np.arange(32)
f32 = np.float32


def shfl_xor(v: np.ndarray, h: int) -> np.ndarray:
    return v[LANES ^ h]


def shfl_down(v: np.ndarray, d: int) -> np.ndarray:
    # lanes past the end keep their own value (CUDA and Metal agree); only lanes < 16 use it
    src = np.where(LANES + d < 32, LANES + d, LANES)
    return v[src]


def shfl(v: np.ndarray, src: np.ndarray) -> np.ndarray:
    return v[src]


def tree_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """tq_cuda_tree_sum / tq_metal_tree_sum: s = a + b, then s += shfl_xor(s, h), h = 16..1."""
    s = (a + b).astype(f32)
    for h in (16, 8, 4, 2, 1):
        s = (s + shfl_xor(s, h)).astype(f32)
    return s


def pack(qtype: str, lo: np.ndarray, hi: np.ndarray) -> bytes:
    """tq_cuda_pack: returns qs (and qh) as the lanes store them."""
    if qtype == "turbo4":
        return bytes(((lo | hi << 4) & 0xFF).astype(np.uint8))
    lo16, hi16 = shfl_down(lo, 16), shfl_down(hi, 16)
    qs = ((lo & 3) | (lo16 & 3) << 2 | (hi & 3) << 4 | (hi16 & 3) << 6).astype(np.uint8)[:16]
    out = bytes(qs)
    if qtype == "turbo3":
        h = np.zeros(32, np.int64)
        for k in range(4):
            h |= ((shfl(lo, LANES % 8 + 8 * k) >> 2) & 1) << k
            h |= ((shfl(hi, LANES % 8 + 8 * k) >> 2) & 1) << (k + 4)
        out += bytes(h.astype(np.uint8)[:8])
    return out


def quantize_block(x: np.ndarray, qtype: str) -> bytes:
    """tq_cuda_quantize_block for one block, all 32 lanes at once."""
    bits = BITS[qtype]
    cen = ref.CENTROIDS[bits]
    a, b = x[:32].astype(f32), x[32:].astype(f32)

    if (~np.isfinite(a) | ~np.isfinite(b)).any():
        z = np.zeros(32, np.int64)
        return np.uint16(0x7E00).tobytes() + pack(qtype, z, z)

    def condition(v):
        v = np.minimum(np.maximum(v, f32(-2.0**60)), f32(2.0**60))
        return np.where(np.abs(v) < f32(2.0**-63), f32(0), v).astype(f32)

    a, b = condition(a), condition(b)
    ss = tree_sum(a * a, b * b)
    assert (ss == ss[0]).all()  # every lane holds lane 0's sum
    if ss[0] == 0:
        k = np.full(32, (1 << (bits - 1)) - 1, np.int64)
        return np.uint16(0).tobytes() + pack(qtype, k, k)

    norm = np.sqrt(ss[0], dtype=f32)
    inv = f32(1) / norm
    ua, ub = a * inv, b * inv

    # step 6: every lane counts its two values against candidate t's positive midpoints;
    # the scores are tree sums, so every lane holds the same score and takes the same branch
    npos = 1 << (bits - 1)
    xa, xb = np.abs(a), np.abs(b)
    best = None
    for smid in SEARCH_MIDPOINTS[bits]:
        na = (np.abs(ua)[:, None] > smid[None, :]).sum(1).astype(np.int64)
        nb = (np.abs(ub)[:, None] > smid[None, :]).sum(1).astype(np.int64)
        ca, cb = cen[npos + na], cen[npos + nb]
        p = tree_sum(xa * ca, xb * cb)
        cs = tree_sum(ca * ca, cb * cb)
        score = (p / np.sqrt(cs, dtype=f32)).astype(f32)
        assert (score == score[0]).all()
        if best is None or score[0] > best:
            best, best_na, best_nb, best_cs = score[0], na, nb, cs[0]

    ka = np.where(ua > 0, npos + best_na, npos - 1 - best_na)
    kb = np.where(ub > 0, npos + best_nb, npos - 1 - best_nb)
    scale = norm / np.sqrt(best_cs, dtype=f32)
    d = np.uint16(0x7BFF) if scale > f32(65504) else np.float16(scale).view(np.uint16)
    return np.uint16(d).tobytes() + pack(qtype, ka, kb)


def load_centroids(block: bytes, qtype: str, i0: int, ne: int) -> tuple[np.float32, np.ndarray]:
    """tq_cuda_load_centroids: values i0 .. i0 + ne - 1 from ne consecutive bytes per plane."""
    bits = BITS[qtype]
    cen = ref.CENTROIDS[bits]
    raw = np.frombuffer(block, np.uint8).astype(np.int64)
    d = np.frombuffer(block[:2], np.float16)[0].astype(f32)
    qs = raw[2:]
    i = i0 % 64
    if qtype == "turbo4":
        q = qs[i % 32: i % 32 + ne]
        idx = (q >> (4 * (i // 32))) & 15
    else:
        q = qs[i % 16: i % 16 + ne]
        idx = (q >> (2 * (i // 16))) & 3
        if qtype == "turbo3":
            h = raw[18 + i % 8: 18 + i % 8 + ne]
            idx = idx | ((h >> (i // 8)) & 1) << 2
    return d, cen[idx]


def cases() -> np.ndarray:
    rng = np.random.default_rng(11)
    rand = rng.standard_normal((64, 64)).astype(np.float32)
    heavy = (rng.standard_t(3, (32, 64)) * 5).astype(np.float32)
    return np.concatenate([edge_blocks(), rand, heavy])


@pytest.mark.parametrize("qtype", list(BITS))
def test_lane_model_quantizer_gives_reference_bytes(qtype):
    blocks = cases()
    expect = ref.quantize(blocks, qtype)
    for n, x in enumerate(blocks):
        assert quantize_block(x, qtype) == bytes(expect[n]), f"block {n}"


@pytest.mark.parametrize("qtype", list(BITS))
@pytest.mark.parametrize("ne", [4, 8])
def test_lane_model_readers_give_reference_values(qtype, ne):
    """dequantize_V_turbo (ne = 4) and vec_dot_fattn_vec_KQ_turbo (ne = 8) read the right bits."""
    blocks = cases()
    q = ref.quantize(blocks, qtype)
    expect = ref.dequantize(q, qtype)
    for n in range(len(blocks)):
        for i0 in range(0, 64, ne):
            d, c = load_centroids(bytes(q[n]), qtype, i0, ne)
            got = (d * c).astype(f32)
            np.testing.assert_array_equal(got, expect[n, i0:i0 + ne])
