"""The turbo types inside our ggml, held byte for byte to the NumPy reference.

Every kernel the CPU backend can run here (generic C, AVX2, AVX-512, and the
default the type traits use) must quantize to the reference's bytes, dequantize
to its floats and compute its dot product exactly (the spec fixes the order).
Inputs: random rows, real K/V rows from the three models (tests/data, made by
tools/dump_kv.py) and the spec's edge cases.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tq_gguf import cachetypes, ggml
from tq_gguf import reference as ref
from tq_gguf.cachetypes import TURBO_TYPES

pytestmark = pytest.mark.native

QTYPES = list(TURBO_TYPES)
KV_ROWS = Path(__file__).parent / "data" / "kv_rows.npz"


def type_id(qtype: str) -> int:
    return cachetypes.get(qtype).ggml_id


def edge_blocks() -> np.ndarray:
    """One 64-value block per row, each a case docs/FORMAT.md defines."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal(64).astype(np.float32)
    rows = []

    def put(**at):
        b = base.copy()
        for i, v in at.items():
            b[int(i[1:])] = v
        rows.append(b)

    rows.append(np.zeros(64, np.float32))                       # all-zero block
    rows.append(np.full(64, -0.0, np.float32))                  # negative zeros
    spike = np.zeros(64, np.float32); spike[17] = 3.0; rows.append(spike)
    spike = np.zeros(64, np.float32); spike[0] = -1e-3; rows.append(spike)
    rows.append(np.full(64, 1.0, np.float32))                   # every u equal
    put(i3=np.nan)
    put(i63=np.inf)
    put(i0=-np.inf)
    rows.append(base * np.float32(1e30))                        # beyond the clamp: scale saturates
    rows.append(base * np.float32(2.0**61))
    rows.append(base * np.float32(9000.0))                      # norm near the fp16 limit
    rows.append(base * np.float32(65504.0 / 8))
    rows.append(base * np.float32(1e-6))                        # scale in fp16 subnormals
    rows.append(base * np.float32(1e-9))                        # scale rounds to zero
    rows.append(base * np.float32(1e-40))                       # float32 subnormal inputs, flushed
    put(i9=np.float32(2.0**-63), i10=np.float32(2.0**-64), i11=np.float32(-(2.0**-63)))
    mids = ref.MIDPOINTS[4]
    tie = np.zeros(64, np.float32); tie[: len(mids)] = mids; tie[40] = 1.0; rows.append(tie)  # near midpoints
    return np.stack(rows).astype(np.float32)


def random_rows(n: int = 200, width: int = 256) -> np.ndarray:
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((n, width)).astype(np.float32)
    x[::7] *= rng.lognormal(0, 3, size=(len(x[::7]), 1)).astype(np.float32)  # spread of norms
    x[::11, 5] *= 50  # outlier channels, as in real keys
    return ref.rotate(x)


def real_rows() -> list[np.ndarray]:
    data = np.load(KV_ROWS)
    return [ref.rotate(data[k]) for k in sorted(data.files)]


def inputs() -> list[tuple[str, np.ndarray]]:
    cases = [("random", random_rows()), ("edge", edge_blocks())]
    cases += [(f"real{i}", rows) for i, rows in enumerate(real_rows())]
    return cases


@pytest.fixture(scope="module")
def variants(native_lib):
    found = ggml.cpu_variants()
    assert "generic" in found and "default" in found
    return found


def test_type_traits(native_lib):
    for qtype, size in (("turbo2", 18), ("turbo3", 26), ("turbo4", 34)):
        tid = type_id(qtype)
        assert ggml.type_name(tid) == qtype
        assert ggml.type_traits(tid) == (64, size)
    assert ggml.type_count() == 46


def test_kv_rows_fixture_covers_all_models():
    names = {k.split("/")[0] for k in np.load(KV_ROWS).files}
    assert names == {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-1.5b"}


@pytest.mark.parametrize("qtype", QTYPES)
def test_quantize_chunk_matches_reference_bytes(native_lib, qtype):
    for name, x in inputs():
        native = ggml.quantize(x, type_id(qtype))
        expected = ref.quantize(x, qtype)
        mismatch = np.flatnonzero((native != expected).any(axis=-1))
        assert mismatch.size == 0, f"{qtype} {name}: rows {mismatch[:5]} differ"


@pytest.mark.parametrize("qtype", QTYPES)
def test_every_kernel_variant_gives_reference_bytes_and_floats(variants, qtype):
    tid = type_id(qtype)
    for name, x in inputs():
        expected = ref.quantize(x, qtype)
        floats = ref.dequantize(expected, qtype)
        for variant in variants:
            got = np.stack([ggml.cpu_quantize(row, tid, variant) for row in x])
            assert np.array_equal(got, expected), f"{variant} quantize {qtype} {name}"
            back = np.stack([ggml.cpu_dequantize(row, tid, x.shape[-1], variant) for row in expected])
            assert np.array_equal(back.view(np.uint32), floats.view(np.uint32)), f"{variant} dequantize {qtype} {name}"


@pytest.mark.parametrize("qtype", QTYPES)
def test_base_to_float_gives_reference_floats(native_lib, qtype):
    for name, x in inputs():
        raw = ref.quantize(x, qtype)
        got = ggml.dequantize(raw, type_id(qtype), x.size).reshape(x.shape)
        assert np.array_equal(got.view(np.uint32), ref.dequantize(raw, qtype).view(np.uint32)), name


@pytest.mark.parametrize("qtype", QTYPES)
def test_vec_dot_is_the_reference_dot(variants, qtype):
    """FORMAT.md section 7 fixes the order; every variant follows it, so the result is exact."""
    tid = type_id(qtype)
    rng = np.random.default_rng(5)
    for name, x in inputs():
        finite = np.isfinite(x).all(axis=-1) & (np.abs(x).max(axis=-1) < 1e20)
        x = x[finite]
        raw = ref.quantize(x, qtype)
        q = ref.rotate(rng.standard_normal(x.shape).astype(np.float32))
        expected = ref.dot(raw, q, qtype)
        for variant in variants:
            got = np.array([ggml.cpu_vec_dot(raw[i], q[i], tid, variant) for i in range(len(x))], dtype=np.float32)
            assert np.array_equal(got, expected.astype(np.float32)), f"{variant} {qtype} {name}"


@pytest.mark.parametrize("qtype", QTYPES)
def test_validate_row_data(native_lib, qtype):
    tid = type_id(qtype)
    good = ref.quantize(random_rows(4), qtype)
    assert ggml.validate_row_data(good, tid)
    bad = ref.quantize(edge_blocks()[5:6], qtype)  # the NaN block: scale 0x7E00
    assert bad[0, 0] == 0x00 and bad[0, 1] == 0x7E
    assert not ggml.validate_row_data(bad, tid)


def test_rotation_matrix_is_the_reference_rotation(native_lib):
    native = ggml.rotation_matrix(64)
    assert np.array_equal(native, ref.rotation_matrix(64).astype(np.float32))
    x = np.random.default_rng(3).standard_normal((10, 64)).astype(np.float32)
    np.testing.assert_allclose(x @ native.T, ref.rotate(x), rtol=0, atol=1e-5)
    np.testing.assert_allclose((x @ native.T) @ native, x, rtol=0, atol=1e-5)  # R^T undoes R
