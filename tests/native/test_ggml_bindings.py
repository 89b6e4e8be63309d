"""Loading the patched library through cffi, and refusing the wrong one."""

from __future__ import annotations

import numpy as np
import pytest

from tq_gguf.nativebuild import builder
from tq_gguf.errors import NativeLibraryError
from tq_gguf.native import ggml


@pytest.fixture
def fresh_lib_cache():
    ggml.lib.cache_clear()
    yield
    ggml.lib.cache_clear()


def test_library_is_the_current_build(native_lib):
    assert ggml.build_id() == builder.current_key("cpu")
    assert "CPU" in ggml.backends()


def test_stale_build_is_refused(fresh_lib_cache, monkeypatch):
    monkeypatch.setattr(builder, "current_key", lambda backend="cpu": "cpu-0000000000000000")
    with pytest.raises(NativeLibraryError, match=r"stale.*run `tq-gguf build`"):
        ggml.lib()


def test_missing_build_is_refused(fresh_lib_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("TQ_GGUF_LIB_DIR", str(tmp_path))
    with pytest.raises(NativeLibraryError, match=r"does not exist; run `tq-gguf build`"):
        ggml.lib()


def test_unknown_type_id_is_an_error_not_a_crash(native_lib):
    with pytest.raises(NativeLibraryError, match="does not exist in this build"):
        ggml.type_traits(99)
    assert ggml.type_name(99) is None


def test_q8_0_through_cffi_matches_gguf_py(native_lib):
    """The bindings are sound on a stock type too: gguf-py's q8_0 gives the same bytes."""
    from gguf import GGMLQuantizationType, quants

    x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    ours = ggml.quantize(x, 8)
    theirs = quants.quantize(x, GGMLQuantizationType.Q8_0)
    assert np.array_equal(ours, theirs)
    np.testing.assert_array_equal(ggml.dequantize(ours, 8, x.size).reshape(x.shape), quants.dequantize(theirs, GGMLQuantizationType.Q8_0))
