"""The turbo types inside our ggml, held byte for byte to the NumPy reference.

Every kernel the CPU backend can run here (generic C, AVX2, AVX-512, and the
default the type traits use) must quantize to the reference's bytes, dequantize
to its floats and compute its dot product exactly (the spec fixes the order).
Inputs: random rows, real K/V rows from the three models (tests/data, made by
tools/dump_kv.py) and the spec's edge cases.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import edge_blocks, inputs, random_rows

from tq_gguf import paths
from tq_gguf import reference as ref
from tq_gguf.kv import cachetypes
from tq_gguf.kv.cachetypes import TURBO_TYPES
from tq_gguf.native import ggml, typeids

QTYPES = list(TURBO_TYPES)


def type_id(qtype: str) -> int:
    return typeids.ggml_id(cachetypes.get(qtype))


@pytest.fixture(scope="module")
def variants(native_lib):
    found = ggml.cpu_variants()
    assert "generic" in found and "default" in found
    return found


def test_type_traits(native_lib):
    for qtype, size in (("turbo2", 18), ("turbo3", 26), ("turbo4", 34), ("tcq2", 18), ("tcq3", 26)):
        tid = type_id(qtype)
        assert ggml.type_name(tid) == qtype
        assert ggml.type_traits(tid) == (64, size)
        assert ggml.type_traits(tid) == (cachetypes.get(qtype).block_size, cachetypes.get(qtype).type_size)
    # the turbo ids did not move when the tcq types joined after them (state files name types by id)
    assert [type_id(t) for t in ("turbo2", "turbo3", "turbo4", "tcq2", "tcq3")] == [43, 44, 45, 46, 47]
    assert ggml.type_count() == 48


def test_kv_rows_fixture_covers_all_models():
    names = {k.split("/")[0] for k in np.load(paths.KV_ROWS).files}
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


def test_type_facts_match_the_library(native_lib):
    for ct in typeids.available():
        assert ggml.type_name(typeids.ggml_id(ct)) == ct.name
        assert ggml.type_traits(typeids.ggml_id(ct)) == (ct.block_size, ct.type_size), ct.name
