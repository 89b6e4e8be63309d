"""The block format: a scalar transcription of docs/FORMAT.md against the vectorised
reference, golden bytes, distortion, packing and every edge case the spec defines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tq_gguf.reference import BLOCK_SIZE, CENTROIDS, MIDPOINTS, QTYPES, TYPE_SIZE, dequantize, dot, quantize
from tq_gguf.reference.codebooks import SEARCH_FACTORS, SEARCH_MIDPOINTS
from tq_gguf.reference.quants import TYPES, fp16_bits, select_indices, sum_squares, tree_sum

BITS = {"turbo2": 2, "turbo3": 3, "turbo4": 4}
OPTIMUM = {2: 0.11453, 3: 0.03339, 4: 0.00913}
F = np.float32

# Golden vector (also in FORMAT.md, "Test vector"): x[i] = ((37 i) mod 64 - 31.5) / 16, then x[5] = 7.25.
GOLDEN = {
    "turbo2": "b749a44ee45e399379e44ee59239934ae44e",
    "turbo3": "0c4c49e44ee9933ba74ee48e359339944ee45aa5d22d964bb45a",
    "turbo4": "d74b8348955aa67fc78449956ab67b388459a56ab77c48945aa66bb78449955ab67b",
}


def golden_input() -> np.ndarray:
    x = ((np.arange(64) * 37) % 64 - 31.5).astype(np.float32) / F(16)
    x[5] = 7.25
    return x


def spec_block(x: np.ndarray, bits: int) -> bytes:
    """docs/FORMAT.md, one block, written as the scalar loops a C implementer would write."""
    x = [F(v) for v in x]
    if not all(math.isfinite(float(v)) for v in x):
        d, idx = 0x7E00, [0] * 64
    else:
        x = [F(0) if abs(v) < F(2.0**-63) else min(max(v, F(-(2.0**60))), F(2.0**60)) for v in x]
        s = [x[i] * x[i] + x[i + 32] * x[i + 32] for i in range(32)]
        h = 16
        while h >= 1:
            s = [s[i] + s[i + h] for i in range(h)]
            h //= 2
        if s[0] == 0:
            d, idx = 0, [(1 << (bits - 1)) - 1] * 64
        else:
            norm = np.sqrt(s[0])
            inv = F(1) / norm
            u = [v * inv for v in x]
            half = 1 << (bits - 1)
            best = None
            for t in range(len(SEARCH_FACTORS)):
                mids = [F(SEARCH_FACTORS[t]) * m for m in MIDPOINTS[bits][half:]]  # P[t][j], rounded products
                cnt = [sum(1 for m in mids if abs(v) > m) for v in u]
                k = [half + n if v > 0 else half - 1 - n for v, n in zip(u, cnt)]
                c = [abs(CENTROIDS[bits][j]) for j in k]
                p = [abs(x[i]) * c[i] for i in range(64)]
                q = [c[i] * c[i] for i in range(64)]
                for h in (32, 16, 8, 4, 2, 1):
                    p = [p[i] + p[i + h] for i in range(h)]
                    q = [q[i] + q[i + h] for i in range(h)]
                score = p[0] / np.sqrt(q[0])
                if best is None or score > best[0]:
                    best = (score, k, q[0])
            _, idx, cs = best
            scale = norm / np.sqrt(cs)
            d = 0x7BFF if scale > F(65504) else int(np.array(scale, dtype=np.float32).astype(np.float16).view(np.uint16))
            if d == 0x7C00:
                d = 0x7BFF
    out = bytearray([d & 0xFF, d >> 8])
    if bits == 4:
        out += bytes(idx[j] | idx[j + 32] << 4 for j in range(32))
    else:
        out += bytes((idx[j] & 3) | (idx[j + 16] & 3) << 2 | (idx[j + 32] & 3) << 4 | (idx[j + 48] & 3) << 6 for j in range(16))
        if bits == 3:
            out += bytes(sum(((idx[j + 8 * k] >> 2) & 1) << k for k in range(8)) for j in range(8))
    return bytes(out)


def tricky_blocks(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian, heavy-tailed, huge, tiny, subnormal, spiky and exactly-representable blocks."""
    kinds = [
        rng.standard_normal((n, 64)),
        rng.standard_t(2, (n, 64)),
        rng.standard_normal((n, 64)) * 1e4,
        rng.standard_normal((n, 64)) * 1e-6,
        rng.standard_normal((n, 64)) * 1e-19,
        rng.standard_normal((n, 64)) * 1e-40,
        np.where(rng.random((n, 64)) < 0.05, 1e3, 1e-3) * rng.standard_normal((n, 64)),
        rng.integers(-4, 5, (n, 64)) / 8.0,
    ]
    return np.concatenate(kinds).astype(np.float32)


@pytest.mark.parametrize("qtype", QTYPES)
def test_golden_bytes(qtype):
    raw = quantize(golden_input(), qtype)
    assert raw.dtype == np.uint8 and raw.shape == (TYPE_SIZE[qtype],)
    assert raw.tobytes().hex() == GOLDEN[qtype]
    assert spec_block(golden_input(), BITS[qtype]).hex() == GOLDEN[qtype]


@pytest.mark.parametrize("qtype", QTYPES)
def test_vectorised_reference_equals_scalar_spec(qtype):
    rng = np.random.default_rng(11)
    blocks = tricky_blocks(12, rng)
    blocks[0, 7] = np.nan
    blocks[1, 0] = -np.inf
    blocks[2] = 0
    blocks[3, :] = -0.0
    raw = TYPES[qtype].quantize_blocks(blocks)
    for b in range(len(blocks)):
        assert raw[b].tobytes() == spec_block(blocks[b], BITS[qtype]), f"block {b}"


@pytest.mark.parametrize("qtype", QTYPES)
def test_row_layout_and_shapes(qtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 192)).astype(np.float32)
    raw = quantize(x, qtype)
    assert raw.shape == (2, 3, 3 * TYPE_SIZE[qtype])
    # a row is its blocks laid end to end
    per_block = TYPES[qtype].quantize_blocks(x.reshape(-1, 64)).reshape(2, 3, -1)
    assert np.array_equal(raw, per_block)
    assert dequantize(raw, qtype).shape == x.shape
    with pytest.raises(ValueError):
        quantize(np.zeros(100, dtype=np.float32), qtype)
    with pytest.raises(ValueError):
        dequantize(np.zeros(TYPE_SIZE[qtype] + 1, dtype=np.uint8), qtype)


def test_constants():
    assert BLOCK_SIZE == 64
    assert TYPE_SIZE == {"turbo2": 18, "turbo3": 26, "turbo4": 34}
    assert set(QTYPES) == set(TYPE_SIZE)
    for qt, size in TYPE_SIZE.items():
        assert size * 8 / 64 == BITS[qt] + 0.25


@pytest.fixture(scope="module")
def unit_vectors() -> np.ndarray:
    rng = np.random.default_rng(2024)
    u = rng.standard_normal((100_000, 64))
    return (u / np.linalg.norm(u, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("qtype", QTYPES)
def test_codebook_distortion_on_unit_vectors(qtype, unit_vectors):
    """The plain codebook (search candidate 4) with the exact norm: the Lloyd-Max optimum within 0.5%."""
    bits = BITS[qtype]
    idx = select_indices(unit_vectors, bits)
    err = ((CENTROIDS[bits][idx].astype(np.float64) - unit_vectors) ** 2).sum(axis=1)
    mean = err.mean()
    assert abs(mean / OPTIMUM[bits] - 1) < 0.005
    assert mean < np.sqrt(3) * np.pi / 2 * 4.0**-bits


# Measured quantize -> dequantize distortion of the format itself (scale search, fp16 norm-preserving
# scale), FORMAT.md 11.5; without the search it was 0.1166, 0.03278, 0.008825
FORMAT_DISTORTION = {2: 0.1144, 3: 0.02973, 4: 0.007045}


@pytest.mark.parametrize("qtype", QTYPES)
def test_format_distortion_on_unit_vectors(qtype, unit_vectors):
    bits = BITS[qtype]
    y = dequantize(quantize(unit_vectors, qtype), qtype).astype(np.float64)
    mean = ((y - unit_vectors) ** 2).sum(axis=1).mean()
    assert mean < np.sqrt(3) * np.pi / 2 * 4.0**-bits
    assert abs(mean / FORMAT_DISTORTION[bits] - 1) < 0.01
    # the stored scale keeps each block's norm (to fp16 rounding)
    assert np.allclose(np.linalg.norm(y, axis=1), 1.0, rtol=2e-3)


@pytest.mark.parametrize("qtype", QTYPES)
def test_inner_product_error(qtype, unit_vectors):
    """<y, x̂> - <y, x> for independent unit y: centred, variance ≈ distortion / d."""
    bits = BITS[qtype]
    x = unit_vectors[:20_000]
    y = unit_vectors[20_000:40_000].astype(np.float64)
    xh = dequantize(quantize(x, qtype), qtype).astype(np.float64)
    err = (y * (xh - x)).sum(axis=1)
    var = err.var()
    assert abs(err.mean()) < 4 * np.sqrt(var / len(err))
    assert 0.8 * FORMAT_DISTORTION[bits] / 64 < var < 1.2 * FORMAT_DISTORTION[bits] / 64


@pytest.mark.parametrize("qtype", QTYPES)
def test_deterministic(qtype):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((64, 256)).astype(np.float32)
    a, b = quantize(x, qtype), quantize(x.copy(), qtype)
    assert np.array_equal(a, b)
    # quantizing a block alone or among others gives the same bytes
    assert np.array_equal(quantize(x[5, 64:128], qtype), a[5, TYPE_SIZE[qtype] : 2 * TYPE_SIZE[qtype]])


@pytest.mark.parametrize("qtype", QTYPES)
def test_packing_round_trip_and_layout(qtype):
    t, bits = TYPES[qtype], BITS[qtype]
    rng = np.random.default_rng(6)
    idx = rng.integers(0, 1 << bits, (500, 64)).astype(np.uint8)
    qs = t.pack(idx)
    assert qs.shape == (500, TYPE_SIZE[qtype] - 2)
    assert np.array_equal(t.unpack(qs), idx)
    # single index i set to the top value: exactly one field of the planes changes
    for i in (0, 1, 15, 16, 31, 32, 47, 63):
        one = np.zeros((1, 64), dtype=np.uint8)
        one[0, i] = (1 << bits) - 1
        q = t.pack(one)[0]
        expect = np.zeros_like(q)
        if bits == 4:
            expect[i % 32] = 0x0F << (4 * (i // 32))
        else:
            expect[i % 16] = 3 << (2 * (i // 16))
            if bits == 3:
                expect[16 + i % 8] = 1 << (i // 8)
        assert np.array_equal(q, expect), i


@pytest.mark.parametrize("qtype", QTYPES)
def test_zero_block(qtype):
    bits = BITS[qtype]
    for z in (np.zeros(64, np.float32), np.full(64, -0.0, np.float32), np.full(64, 1e-20, np.float32)):
        raw = quantize(z, qtype)
        assert raw[:2].tobytes() == b"\0\0"
        assert np.all(TYPES[qtype].indices(raw[None]) == (1 << (bits - 1)) - 1)
        assert np.array_equal(dequantize(raw, qtype), np.zeros(64, np.float32))


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_block(qtype, bad):
    rng = np.random.default_rng(7)
    x = rng.standard_normal(128).astype(np.float32)
    x[70] = bad
    raw = quantize(x, qtype)
    ts = TYPE_SIZE[qtype]
    assert raw[ts : ts + 2].tobytes() == bytes([0x00, 0x7E])
    assert not raw[ts + 2 :].any()
    y = dequantize(raw, qtype)
    assert np.isnan(y[64:]).all() and np.isfinite(y[:64]).all()
    assert np.array_equal(raw[:ts], quantize(x[:64], qtype))


@pytest.mark.parametrize("qtype", QTYPES)
def test_single_spike(qtype):
    bits = BITS[qtype]
    x = np.zeros(64, np.float32)
    x[9] = -3.0
    raw = quantize(x, qtype)
    idx = TYPES[qtype].indices(raw[None])[0]
    assert idx[9] == 0 and np.all(np.delete(idx, 9) == (1 << (bits - 1)) - 1)
    y = dequantize(raw, qtype)
    assert abs(np.linalg.norm(y) - 3.0) < 3.0 * 2**-10
    # unrotated, a spike is the format's worst case: its energy is spread over the block
    # (the rotation exists to prevent that), but the norm and the spike's position survive
    assert y[9] < y[0] and np.all(np.delete(y, 9) == y[0])


def _scale_bits(raw: np.ndarray) -> int:
    return int(raw[:2].view("<u2")[0])


@pytest.mark.parametrize("qtype", QTYPES)
def test_scale_saturates_at_fp16_max(qtype):
    x = np.full(64, 3e4, np.float32)  # scale = 2.4e5 / ‖C[idx]‖ > 65504 for every codebook
    assert _scale_bits(quantize(x, qtype)) == 0x7BFF
    x = np.full(64, 1e30, np.float32)  # clamped to 2^60, still saturates, never overflows
    assert _scale_bits(quantize(x, qtype)) == 0x7BFF
    assert np.isfinite(dequantize(quantize(x, qtype), qtype)).all()
    x[:] = 1.0
    x[3] = -np.float32(3.4e38)
    raw = quantize(x, qtype)
    assert _scale_bits(raw) == 0x7BFF and TYPES[qtype].indices(raw[None])[0, 3] == 0


def test_fp16_rounding_rules():
    cases = {
        1.0: 0x3C00,
        65504.0: 0x7BFF,
        65519.99: 0x7BFF,  # rounds down to 65504
        65520.0: 0x7BFF,  # would round to inf: saturates
        1e9: 0x7BFF,
        np.inf: 0x7BFF,
        2.0**-24: 0x0001,  # smallest fp16 subnormal kept
        2.0**-25: 0x0000,  # exact tie between 0 and 2^-24: even (zero)
        1.5 * 2.0**-25: 0x0001,
        3 * 2.0**-25: 0x0002,  # tie between 1 and 2 ulps: even
        1 + 2.0**-11: 0x3C00,  # tie: even mantissa
        1 + 3 * 2.0**-11: 0x3C02,
        0.0: 0x0000,
        np.nan: 0x7E00,
    }
    got = fp16_bits(np.array(list(cases), dtype=np.float32))
    assert [hex(v) for v in got] == [hex(v) for v in cases.values()]


@pytest.mark.parametrize("qtype", QTYPES)
def test_scale_underflow_keeps_fp16_subnormals(qtype):
    x = np.zeros(64, np.float32)
    x[0] = 1e-6
    raw = quantize(x, qtype)
    d = _scale_bits(raw)
    assert 0 < d < 0x0400  # a subnormal half
    x[0] = 1e-9
    assert _scale_bits(quantize(x, qtype)) == 0  # below half the smallest subnormal: zero scale


def test_subnormal_and_tiny_inputs_are_flushed():
    # entries below 2^-63 are replaced by +0 before anything else
    x = np.full(64, 1.0, np.float32)
    x[1::2] = np.float32(1e-40)  # subnormal
    y = x.copy()
    y[1::2] = 0
    for qt in QTYPES:
        assert np.array_equal(quantize(x, qt), quantize(y, qt))
    z = np.full(64, np.float32(2.0**-63))  # exactly the threshold: kept (scale underflows to 0, indices do not)
    # u = 1/8 everywhere: every candidate fits exactly, so the first (F[0]) wins, which puts 1/8 in cell 12
    assert np.all(TYPES["turbo4"].indices(quantize(z, "turbo4")[None]) == 12)
    assert np.all(TYPES["turbo4"].indices(quantize(z * F(0.5), "turbo4")[None]) == 7)  # zero block


def test_no_subnormal_intermediates():
    """With the clamp and flush, u = x * inv is zero or a normal float32 even for extreme blocks,
    so flush-to-zero hardware computes the same indices."""
    x = np.full((3, 64), 2.0**-63, np.float32)
    x[:, 0] = [2.0**60, 1e30, -(2.0**60)]
    x = np.clip(x, -(2.0**60), 2.0**60).astype(np.float32)
    ss = sum_squares(x)
    assert np.all(np.isfinite(ss))
    u = x * (F(1) / np.sqrt(ss))[:, None]
    tiny = np.abs(u)[u != 0]
    assert tiny.min() >= np.finfo(np.float32).tiny


def test_ties_go_to_the_index_nearer_zero():
    for bits in (2, 3, 4):
        m = MIDPOINTS[bits]
        k = np.arange(len(m))
        half = 1 << (bits - 1)
        # a value on a midpoint takes the neighbour nearer zero: k + 1 below the centre, k from it up
        assert np.array_equal(select_indices(m, bits), np.where(k < half - 1, k + 1, k))
        assert np.array_equal(select_indices(np.nextafter(m, F(np.inf)), bits), k + 1)
        assert np.array_equal(select_indices(np.nextafter(m, F(-np.inf)), bits), k)
        assert select_indices(np.array([-0.0], np.float32), bits)[0] == half - 1
        assert select_indices(np.array([-1.0, 1.0], np.float32), bits).tolist() == [0, (1 << bits) - 1]


def test_search_thresholds_are_the_rounded_products():
    """P[t][j] = f32(F[t] * M[j]) for the positive midpoints, F ascending with F[4] = 1 (FORMAT.md 9)."""
    assert SEARCH_FACTORS[4] == 1 and np.all(np.diff(SEARCH_FACTORS) > 0)
    assert np.array_equal(SEARCH_FACTORS, np.exp2((np.arange(8) - 4) / 12).astype(np.float32))
    for bits in (2, 3, 4):
        half = 1 << (bits - 1)
        assert np.array_equal(SEARCH_MIDPOINTS[bits], SEARCH_FACTORS[:, None] * MIDPOINTS[bits][None, half:])
        # strictly ascending rows: the SIMD encoders count by binary search, which relies on it
        assert np.all(np.diff(SEARCH_MIDPOINTS[bits], axis=1) > 0)


@pytest.mark.parametrize("qtype", QTYPES)
def test_search_keeps_the_least_error_candidate(qtype):
    """The stored block is the candidate with the least float64 error (up to float32 ties), so it is
    never worse than the plain codebook's indices (candidate 4)."""
    bits = BITS[qtype]
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal((300, 64)), rng.standard_t(3, (300, 64))]).astype(np.float32)
    y = dequantize(quantize(x, qtype), qtype).astype(np.float64)
    err = ((y - x) ** 2).sum(axis=1)
    x64 = x.astype(np.float64)
    u = x / np.linalg.norm(x64, axis=1, keepdims=True).astype(np.float32)
    per_candidate = []
    for mids in SEARCH_MIDPOINTS[bits]:
        c = CENTROIDS[bits][select_indices(u, bits, mids)].astype(np.float64)
        rec = c * (np.linalg.norm(x64, axis=1) / np.linalg.norm(c, axis=1))[:, None]
        per_candidate.append(((rec - x64) ** 2).sum(axis=1))
    per_candidate = np.array(per_candidate)
    # fp16 rounding of the scale is the only difference from the float64 best candidate
    assert np.all(err <= per_candidate.min(axis=0) * (1 + 2e-3) + 1e-12)
    assert err.mean() < 0.99 * per_candidate[4].mean()


def test_tree_sum_order():
    # 2^24 + 1 + 1 ...: the order is observable in float32; check the exact halving tree
    v = np.ones(64, np.float32)
    v[0] = 2.0**24
    # halving: s[0] = 2^24 + 1 (rounds to 2^24), the other 31 pairs give 2 each -> 2^24 + 62
    assert tree_sum(v) == F(2.0**24 + 62)
    v2 = np.zeros(64, np.float32)
    v2[0], v2[32] = 2.0**24, 1.0
    assert tree_sum(v2) == F(2.0**24)
    assert sum_squares(np.full(64, 0.5, np.float32)) == F(16)


@pytest.mark.parametrize("qtype", QTYPES)
def test_dequantize_is_one_multiply(qtype):
    rng = np.random.default_rng(8)
    raw = quantize(rng.standard_normal((10, 64)).astype(np.float32), qtype)
    d = raw[:, :2].copy().view("<f2").astype(np.float32)
    expect = d * CENTROIDS[BITS[qtype]][TYPES[qtype].indices(raw)]
    assert np.array_equal(dequantize(raw, qtype).view(np.uint32), expect.view(np.uint32))


@pytest.mark.parametrize("qtype", QTYPES)
def test_dot_reference_order(qtype):
    rng = np.random.default_rng(10)
    k = rng.standard_normal((7, 192)).astype(np.float32)
    q = rng.standard_normal(192).astype(np.float32)
    raw = quantize(k, qtype)
    got = dot(raw, q, qtype)
    assert got.shape == (7,) and got.dtype == np.float32
    c = CENTROIDS[BITS[qtype]][TYPES[qtype].indices(raw.reshape(-1, TYPE_SIZE[qtype]))].reshape(7, 3, 64)
    d = raw.reshape(7, 3, -1)[:, :, :2].copy().view("<f2").astype(np.float32)[..., 0]
    p = d * tree_sum(q.reshape(3, 64) * c)
    assert np.array_equal(got, (p[:, 0] + p[:, 1]) + p[:, 2])
    # any float32 accumulation order stays within the spec's tolerance
    exact = (dequantize(raw, qtype).astype(np.float64) * q).sum(axis=1)
    bound = (192 + 2) * 2.0**-24 * (np.abs(dequantize(raw, qtype)) * np.abs(q)).sum(axis=1)  # FORMAT.md section 7
    assert np.all(np.abs(got - exact) <= bound)
    # broadcasting: several queries against several rows
    many = dot(raw[None, :, :], np.stack([q, -q])[:, None, :], qtype)
    assert many.shape == (2, 7) and np.array_equal(many[1], -got)
