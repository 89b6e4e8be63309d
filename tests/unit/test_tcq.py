"""The trellis-coded value types tcq2 and tcq3 (docs/FORMAT.md, section 12).

The NumPy reference, a scalar Python transcription of the spec, the C reference encoder, its
AVX2 and AVX-512 variants and the entry point ggml will call must give the same bytes, and the
C decoder the reference's floats bit for bit: on random blocks, on the real V rows of
tests/data/kv_rows.npz rotated as the cache rotates them, and on every edge case the spec
defines. The C is compiled on
its own by tools/tcq_native.py (it is not in the llama.cpp library yet); the SIMD variants
are skipped where the processor lacks them, everything C where there is no compiler.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from tq_gguf.kv.cachetypes import TRELLIS_TYPES
from tq_gguf.reference import dequantize as turbo_dequantize
from tq_gguf.reference import quantize as turbo_quantize
from tq_gguf.reference import rotate
from tq_gguf.reference import trellis as ref
from tq_gguf.reference import trellistables
from tq_gguf.reference.quants import condition, fp16_bits, sum_squares

REPO = Path(__file__).resolve().parents[2]
FORMAT = REPO / "docs" / "FORMAT.md"
HEADER = REPO / "native" / "tq-tcq-tables.h"
QTYPES = ref.QTYPES
SIMD = ("avx2", "avx512")
F = np.float32

# Spec test vector (FORMAT.md 12.7): x[i] = ((37 i) mod 64 - 31.5) / 16, then x[5] = 7.25.
GOLDEN = {
    "tcq2": "434c2a955aa9d40aa5d231f2233f1d39471e",
    "tcq3": "1e4ca44ae49e299379a44ee49339974ae49efda40e927590ac03",
}

# Blocks on which two candidate scales tie exactly for the least metric (FORMAT.md 12.5 step 7):
# Gaussian blocks from default_rng(seed) with x[0] replaced, found by searching x[0] over
# consecutive float32 values where the winner changes. test_scale_tie checks that they still tie.
SCALE_TIES = {
    "tcq2": (0, "0x1.117834p+1", (1, 2)),
    "tcq3": (2, "0x1.df8378p-2", (2, 3)),
}

# Blocks with a value exactly on a midpoint of the subset its stored path takes there (FORMAT.md
# 12.5 step 6: strict, the lower rank). TCQ's paths avoid that spot (the other subset of the pair
# has a level between the two), so such blocks are built: midpoint_block(seed) below, seeds found
# by trying them in order; test_value_on_a_subset_midpoint checks that the block still is one.
MIDPOINT_SEEDS = {"tcq2": 5, "tcq3": 24}


def _tcq_native():
    spec = importlib.util.spec_from_file_location("tcq_native", REPO / "tools" / "tcq_native.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("tcq_native", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def lib():
    loaded = _tcq_native().load()
    if loaded is None:
        pytest.skip("no C compiler")
    return loaded


def golden_input() -> np.ndarray:
    x = ((np.arange(64) * 37) % 64 - 31.5).astype(np.float32) / F(16)
    x[5] = 7.25
    return x


def random_blocks(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gaussian, heavy-tailed, huge, tiny and subnormal-scaled, spiky, integer-valued and, last, n
    sparse blocks (a few small integers among zeros), which give many exact ties of two paths."""
    sparse = np.zeros((n, 64))
    for b in range(n):
        k = rng.integers(1, 6)
        sparse[b, rng.choice(64, k, replace=False)] = rng.integers(-3, 4, k)
    kinds = [
        rng.standard_normal((n, 64)),
        rng.standard_t(2, (n, 64)),
        rng.standard_normal((n, 64)) * 1e4,
        rng.standard_normal((n, 64)) * 1e25,
        rng.standard_normal((n, 64)) * 1e-6,
        rng.standard_normal((n, 64)) * 1e-19,
        rng.standard_normal((n, 64)) * 1e-40,
        np.where(rng.random((n, 64)) < 0.05, 1e3, 1e-3) * rng.standard_normal((n, 64)),
        rng.integers(-4, 5, (n, 64)) / 8.0,
        sparse,
    ]
    return np.concatenate(kinds).astype(np.float32)


def special_blocks() -> np.ndarray:
    """Each edge case of FORMAT.md 12.5, one block each."""
    x = np.zeros((12, 64), np.float32)          # 0: all +0
    x[1] = -0.0                                 # all -0
    x[2, 5] = np.nan                            # NaN among zeros
    x[3] = 1.0
    x[3, 60] = np.inf                           # +Inf
    x[4] = -2.0
    x[4, 0] = -np.inf                           # -Inf
    x[5, 3] = -1e-30                            # flushed to zero: an all-zero block
    x[6] = 1e-45                                # subnormal inputs, flushed
    x[7] = np.where(np.arange(64) % 2, 1.0, -1.0) * F(2.0**62)  # clamped to 2^60: the scale saturates
    x[8] = F(2.0**60)
    x[8, 1:9] = F(2.0**-62)                     # huge norm: these values' products are subnormal
    x[9, 17] = 2.5                              # a single spike
    x[10] = F(2.0**-63)                         # exactly 2^-63: kept
    x[11] = F(2.0**-63) * F(0.999)              # just below: flushed
    return x


def winner_scale(x: np.ndarray, qtype: str) -> np.float32:
    """s_w of FORMAT.md 12.5 for one block: inv times 1/F of the winning candidate."""
    xc, _ = condition(x[None])
    inv = F(1) / np.sqrt(sum_squares(xc))[0]
    return inv * ref.trellis(qtype).inv_factors[ref.encode(x[None], qtype).candidate[0]]


def midpoint_block(qtype: str, seed: int) -> np.ndarray:
    """A Gaussian block whose chosen values are moved onto subset midpoints M for the winning
    candidate, x[i] = M / s_w, until x no longer changes (x moves the norm, and so s_w)."""
    tr = ref.trellis(qtype)
    rng = np.random.default_rng(seed)
    share = rng.uniform(0.2, 1.0)
    chosen = rng.random(64) < share
    target = rng.choice(tr.midpoints.reshape(-1), 64).astype(np.float32)
    x = (rng.standard_normal(64) / 8).astype(np.float32)
    for _ in range(40):
        moved = np.where(chosen, target / winner_scale(x, qtype), x)
        if np.array_equal(moved, x):
            break
        x = moved
    return x


def real_v_rows() -> np.ndarray:
    data = np.load(REPO / "tests" / "data" / "kv_rows.npz")
    return np.concatenate([rotate(data[k]).reshape(-1, 64) for k in sorted(data.files) if k.endswith("/V")])


@pytest.fixture(scope="module")
def blocks() -> dict[str, np.ndarray]:
    return {"random": random_blocks(np.random.default_rng(17), 40), "real": real_v_rows(), "special": special_blocks()}


def spec_block(x: np.ndarray, qtype: str) -> bytes:
    """FORMAT.md 12.5 and 12.4 for one block, written as the scalar loops the spec describes."""
    t = TRELLIS_TYPES[qtype]
    L, M = trellistables.LEVELS[qtype], trellistables.SUBSET_MIDPOINTS[qtype]
    FI, F2, SUB = trellistables.INV_FACTORS[qtype], trellistables.FACTORS_SQ[qtype], trellistables.SUBSET[qtype]
    S, R = t.states, 1 << (t.index_bits - 1)
    x = [F(v) for v in x]
    u, r = [0] * 64, [0] * 64
    if not all(math.isfinite(float(v)) for v in x):
        d = 0x7E00
    else:
        x = [F(0) if abs(v) < F(2.0**-63) else min(max(v, F(-(2.0**60))), F(2.0**60)) for v in x]
        s = [x[i] * x[i] + x[i + 32] * x[i + 32] for i in range(32)]
        for h in (16, 8, 4, 2, 1):
            s = [s[i] + s[i + h] for i in range(h)]
        if s[0] == 0:
            d = 0
        else:
            norm = np.sqrt(s[0])
            inv = F(1) / norm
            best = None
            for cand in range(t.scales):
                st = inv * FI[cand]
                cost = [F(0)] + [F(np.inf)] * (S - 1)
                dec = []
                for i in range(64):
                    v = x[i] * st
                    e = []
                    for j in range(4):
                        q = sum(1 for k in range(R - 1) if v > M[j][k])
                        diff = v - L[j + 4 * q]
                        e.append(diff * diff)
                    new, took = [], []
                    for k in range(S):
                        p0, p1, w = k >> 1, (k >> 1) + S // 2, k & 1
                        c0, c1 = cost[p0] + e[SUB[p0][w]], cost[p1] + e[SUB[p1][w]]
                        new.append(c1 if c1 < c0 else c0)
                        took.append(c1 < c0)
                    cost, dec = new, dec + [took]
                metric = cost[0] * F2[cand]
                if best is None or metric < best[0]:
                    best = (metric, cand, dec)
            _, w_, dec = best
            sw, k, c2 = inv * FI[w_], 0, [F(0)] * 64
            for i in range(63, -1, -1):
                p = (k >> 1) + (S // 2 if dec[i][k] else 0)
                u[i] = k & 1
                j = SUB[p][u[i]]
                v = x[i] * sw
                r[i] = sum(1 for kk in range(R - 1) if v > M[j][kk])
                c = L[j + 4 * r[i]]
                c2[i] = c * c
                k = p
            for h in (32, 16, 8, 4, 2, 1):
                c2 = [c2[i] + c2[i + h] for i in range(h)]
            d = int(fp16_bits(norm / np.sqrt(c2[0])))
    out = bytearray([d & 0xFF, d >> 8])
    if t.index_bits == 3:
        out += bytes(r[j] | r[j + 16] << 2 | r[j + 32] << 4 | r[j + 48] << 6 for j in range(16))
    else:
        out += bytes(sum(r[8 * j + b] << b for b in range(8)) for j in range(8))
    out += bytes(sum(u[8 * j + b] << b for b in range(8)) for j in range(8))
    return bytes(out)


def assert_same_bytes(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, what
    bad = np.flatnonzero((got.reshape(len(want), -1) != want.reshape(len(want), -1)).any(axis=1))
    assert bad.size == 0, f"{what}: {bad.size} blocks differ, first {bad[:8].tolist()}"


def assert_same_floats(got: np.ndarray, want: np.ndarray, what: str) -> None:
    bad = np.flatnonzero((got.view(np.uint32) != want.view(np.uint32)).reshape(len(want), -1).any(axis=1))
    assert bad.size == 0, f"{what}: {bad.size} blocks differ, first {bad[:8].tolist()}"


# --- the tables ---------------------------------------------------------------------------

def _header_arrays() -> dict[str, np.ndarray]:
    out = {}
    for name, body in re.findall(r"static const (?:float|uint8_t) (tq_tcq\w+)(?:\[\d+\])+ = \{(.*?)\};",
                                 HEADER.read_text(), re.S):
        vals = [v.strip().rstrip("f") for v in re.sub(r"[{}]", " ", body).split(",") if v.strip()]
        out[name] = np.array([float.fromhex(v) if "0x" in v else int(v) for v in vals], dtype=np.float64)
    return out


@pytest.mark.parametrize("qtype", QTYPES)
def test_c_tables_equal_the_python_tables(qtype):
    c = _header_arrays()
    for key, table in (("levels", trellistables.LEVELS), ("subset_midpoints", trellistables.SUBSET_MIDPOINTS),
                       ("factors", trellistables.FACTORS), ("inv_factors", trellistables.INV_FACTORS),
                       ("factors_sq", trellistables.FACTORS_SQ)):
        vals = c[f"tq_{qtype}_{key}"]
        assert np.array_equal(vals.astype(np.float32).astype(np.float64), vals), key  # exact float32 literals
        assert np.array_equal(vals.astype(np.float32).view(np.uint32), table[qtype].reshape(-1).view(np.uint32)), key
    assert np.array_equal(c[f"tq_{qtype}_subset"], trellistables.SUBSET[qtype].reshape(-1))


@pytest.mark.parametrize("qtype", QTYPES)
def test_tables_are_what_the_spec_defines(qtype):
    t = TRELLIS_TYPES[qtype]
    L, M = trellistables.LEVELS[qtype], trellistables.SUBSET_MIDPOINTS[qtype]
    assert L.shape == (t.levels,) and np.all(np.diff(L) > 0) and np.array_equal(L, -L[::-1])
    subsets = L.reshape(-1, 4).T.astype(np.float64)            # subset j holds levels j, j + 4, ...
    assert np.array_equal(M, ((subsets[:, :-1] + subsets[:, 1:]) / 2).astype(np.float32))
    # every level and midpoint far from the subnormal range, so a subnormal product acts as zero
    assert min(np.abs(L).min(), np.abs(M).min()) >= 2.0**-7
    e = 2 * np.arange(t.scales) - (t.scales - 1)
    assert np.array_equal(trellistables.FACTORS[qtype], (2.0 ** (e / 12)).astype(np.float32))
    assert np.array_equal(trellistables.INV_FACTORS[qtype], trellistables.FACTORS[qtype][::-1])
    wide = trellistables.FACTORS[qtype].astype(np.float64)
    assert np.array_equal(trellistables.FACTORS_SQ[qtype], (wide * wide).astype(np.float32))
    s = np.arange(t.states)[:, None]
    u = np.arange(2)[None, :]
    parity = np.vectorize(lambda v: bin(int(v)).count("1") & 1)
    assert np.array_equal(trellistables.SUBSET[qtype], parity(t.pair_taps & s) + 2 * (u ^ parity(t.branch_taps & s)))


# --- the reference ------------------------------------------------------------------------

@pytest.mark.parametrize("qtype", QTYPES)
def test_golden_bytes(qtype, lib):
    assert GOLDEN[qtype] in FORMAT.read_text(), "the test vector must be the one FORMAT.md 12.7 lists"
    x = golden_input()
    assert ref.quantize(x, qtype).tobytes().hex() == GOLDEN[qtype]
    assert spec_block(x, qtype).hex() == GOLDEN[qtype]
    assert lib.quantize(x, qtype).tobytes().hex() == GOLDEN[qtype]


@pytest.mark.parametrize("qtype", QTYPES)
def test_reference_equals_scalar_spec(qtype, blocks):
    picks = np.concatenate([blocks["special"], blocks["random"][::37], blocks["real"][:4]])
    raw = ref.quantize_blocks(picks, qtype)
    for b in range(len(picks)):
        assert raw[b].tobytes() == spec_block(picks[b], qtype), f"block {b}"


@pytest.mark.parametrize("qtype", QTYPES)
def test_row_layout_and_shapes(qtype):
    x = np.random.default_rng(5).standard_normal((2, 3, 192)).astype(np.float32)
    size = ref.TYPE_SIZE[qtype]
    raw = ref.quantize(x, qtype)
    assert raw.shape == (2, 3, 3 * size) and size == TRELLIS_TYPES[qtype].type_size
    # a row is its blocks end to end, and each block is encoded and decoded alone
    assert np.array_equal(raw, ref.quantize_blocks(x.reshape(-1, 64), qtype).reshape(2, 3, -1))
    y = ref.dequantize(raw, qtype)
    assert y.shape == x.shape
    assert np.array_equal(y.reshape(-1, 64), ref.dequantize_blocks(raw.reshape(-1, size)[::-1], qtype)[::-1])
    with pytest.raises(ValueError):
        ref.quantize(np.zeros(100, np.float32), qtype)
    with pytest.raises(ValueError):
        ref.dequantize(np.zeros(size + 1, np.uint8), qtype)


@pytest.mark.parametrize("qtype", QTYPES)
def test_special_blocks(qtype):
    x = special_blocks()
    enc = ref.encode(x, qtype)
    raw = ref.quantize_blocks(x, qtype)
    y = ref.dequantize_blocks(raw, qtype)
    zero = [0, 1, 5, 6, 11]
    nonfinite = [2, 3, 4]
    assert not raw[zero].any() and not y[zero].any()              # d = 0, every other bit 0: zeros
    assert np.all(enc.d[nonfinite] == 0x7E00) and not raw[nonfinite, 2:].any()
    assert np.isnan(y[nonfinite]).all()
    assert enc.d[7] == 0x7BFF and np.isfinite(y[7]).all()         # saturated, not infinite
    assert raw[10, 2:].any()                                      # 2^-63 is kept (its scale rounds to 0)
    assert enc.d[8] == 0x7BFF and enc.d[9] != 0


@pytest.mark.parametrize("qtype", QTYPES)
def test_quality_on_real_v_rows(qtype, blocks):
    """What the types are for (FORMAT.md 11.5): less error than turbo at the same bits on the real V
    rows. Measured: 0.79x turbo3's relative MSE for tcq3, 0.83x turbo2's for tcq2."""
    x = blocks["real"]
    turbo = f"turbo{TRELLIS_TYPES[qtype].index_bits}"
    err = ((ref.dequantize(ref.quantize(x, qtype), qtype) - x) ** 2).sum()
    err_turbo = ((turbo_dequantize(turbo_quantize(x, turbo), turbo) - x) ** 2).sum()
    assert err < 0.88 * err_turbo


# --- C against the reference --------------------------------------------------------------

@pytest.mark.parametrize("kind", ["random", "real", "special"])
@pytest.mark.parametrize("qtype", QTYPES)
def test_c_reference_encoder_equals_numpy(qtype, kind, blocks, lib):
    assert_same_bytes(lib.quantize(blocks[kind], qtype, "scalar"), ref.quantize(blocks[kind], qtype), f"{qtype} {kind}")


@pytest.mark.parametrize("variant", SIMD + ("default",))
@pytest.mark.parametrize("qtype", QTYPES)
def test_encoder_variants_equal_numpy(qtype, variant, blocks, lib):
    if not lib.has_variant(variant):
        pytest.skip(f"this processor has no {variant}")
    x = np.concatenate([blocks["special"], blocks["random"], blocks["real"]])
    want = ref.quantize(x, qtype)
    assert_same_bytes(lib.quantize(x, qtype, variant), want, f"{qtype} {variant}")
    # rows of every length against the lanes: a row's last blocks fill part of a register
    for nb in (1, 3, 7, 9, 13, 17, 31):
        assert_same_bytes(lib.quantize(x[:nb].reshape(1, -1), qtype, variant).reshape(nb, -1), want[:nb],
                          f"{qtype} {variant}, a row of {nb} blocks")


@pytest.mark.parametrize("qtype", QTYPES)
def test_c_decoder_equals_numpy(qtype, blocks, lib):
    x = np.concatenate([blocks["special"], blocks["random"], blocks["real"]])
    raw = ref.quantize(x, qtype)
    assert_same_floats(lib.dequantize(raw, qtype), ref.dequantize(raw, qtype), f"{qtype} decoded")
    # any bytes decode alike: NaN, infinite and subnormal scales, last branch bits set
    noise = np.random.default_rng(3).integers(0, 256, raw.shape, dtype=np.uint8)
    noise[:3, :2] = [[0x00, 0x7E], [0x00, 0x7C], [0x01, 0x00]]
    assert_same_floats(lib.dequantize(noise, qtype), ref.dequantize(noise, qtype), f"{qtype} any bytes")


@pytest.mark.parametrize("variant", ("scalar",) + SIMD + ("default",))
@pytest.mark.parametrize("qtype", QTYPES)
def test_cpu_decoders_equal_numpy(qtype, variant, blocks, lib):
    """The CPU decoders (no sequential state: SUB looked up from the shifted branch planes) give
    the reference's floats, on encoded blocks and on any bytes, in rows of any length."""
    if not lib.has_variant(variant):
        pytest.skip(f"{variant} not available on this machine")
    x = np.concatenate([blocks["special"], blocks["random"], blocks["real"]])
    raw = ref.quantize(x, qtype)
    noise = np.random.default_rng(5).integers(0, 256, raw.shape, dtype=np.uint8)
    noise[:3, :2] = [[0x00, 0x7E], [0x00, 0x7C], [0x01, 0x00]]
    for what, data in (("decoded", raw), ("any bytes", noise)):
        assert_same_floats(lib.dequantize(data, qtype, variant), ref.dequantize(data, qtype), f"{qtype} {variant} {what}")
    for nb in (1, 3, 7):
        assert_same_floats(lib.dequantize(noise[:nb].reshape(1, -1), qtype, variant).reshape(nb, -1),
                           ref.dequantize(noise[:nb], qtype), f"{qtype} {variant}, a row of {nb} blocks")


@pytest.mark.parametrize("variant", ("scalar",) + SIMD)
@pytest.mark.parametrize("qtype", QTYPES)
def test_every_block_ends_in_state_zero(qtype, variant, blocks, lib):
    if not lib.has_variant(variant):
        pytest.skip(f"this processor has no {variant}")
    m = TRELLIS_TYPES[qtype].memory
    raw = lib.quantize(np.concatenate([blocks["random"], blocks["real"]]), qtype, variant)
    branch = np.unpackbits(raw[:, -8:], axis=-1, bitorder="little")
    assert not branch[:, 64 - m:].any(), f"{qtype} {variant}: a block's last {m} branch bits are not 0"
    assert branch[:, : 64 - m].any(axis=1).mean() > 0.9   # the other branch bits do carry the path


@pytest.mark.parametrize("qtype", QTYPES)
def test_path_ties_are_frequent_and_every_encoder_breaks_them_alike(qtype, blocks, lib):
    """Exact ties of two predecessors (FORMAT.md 12.5 step 6: the first predecessor stays) happen
    on the stored path of most sparse blocks; the encoders must agree there."""
    x = blocks["random"][-40:]                              # the sparse blocks
    enc = ref.encode(x, qtype)
    assert (enc.tied > 0).mean() > 0.5
    want = ref.quantize(x, qtype)
    for variant in ("scalar",) + SIMD:
        if lib.has_variant(variant):
            assert_same_bytes(lib.quantize(x, qtype, variant), want, f"{qtype} {variant} on ties")


@pytest.mark.parametrize("qtype", QTYPES)
def test_scale_tie(qtype, lib):
    """Two candidate scales with exactly the least metric: the first wins (FORMAT.md 12.5 step 7)."""
    seed, x0, (first, second) = SCALE_TIES[qtype]
    x = np.random.default_rng(seed).standard_normal(64).astype(np.float32)
    x[0] = float.fromhex(x0)
    tr = ref.trellis(qtype)
    xc, _ = condition(x[None])
    inv = F(1) / np.sqrt(sum_squares(xc))
    metric = np.array([ref.viterbi(xc, inv * fi, tr, f2).metric[0] for fi, f2 in zip(tr.inv_factors, tr.factors_sq)])
    assert metric[first] == metric[second] == metric.min(), f"the block no longer ties: {metric}"
    assert ref.encode(x, qtype).candidate[0] == first
    want = ref.quantize(x, qtype)
    assert spec_block(x, qtype) == want.tobytes()
    for variant in ("scalar",) + SIMD:
        if lib.has_variant(variant):
            assert_same_bytes(lib.quantize(x[None], qtype, variant), want[None], f"{qtype} {variant}")


@pytest.mark.parametrize("qtype", QTYPES)
def test_value_on_a_subset_midpoint(qtype, lib):
    """A value exactly on a midpoint of its path's subset takes the lower rank (FORMAT.md 12.5 step 6)."""
    tr = ref.trellis(qtype)
    x = midpoint_block(qtype, MIDPOINT_SEEDS[qtype])
    enc = ref.encode(x[None], qtype)
    v = x * winner_scale(x, qtype)
    subsets = ref.decode_subsets(enc.branch, tr)[0]
    on_midpoint = [i for i in range(64) if v[i] in tr.midpoints[subsets[i]]]
    assert on_midpoint, "the block no longer puts a value on its path's subset midpoint"
    want = ref.quantize(x, qtype)
    assert spec_block(x, qtype) == want.tobytes()
    for variant in ("scalar",) + SIMD:
        if lib.has_variant(variant):
            assert_same_bytes(lib.quantize(x[None], qtype, variant), want[None], f"{qtype} {variant}")
