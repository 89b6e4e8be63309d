"""The turbo types on ggml's CUDA backend, on a CUDA device.

The same checks as test_vulkan.py: test-backend-ops against the CPU for every turbo
SET_ROWS, GET_ROWS, CPY and FLASH_ATTN_EXT case; SET_ROWS bytes and GET_ROWS floats bit
for bit against the NumPy reference; the verify harness on the device. They need a build
with the CUDA backend and a GPU, so on a machine without one they skip and say why
(docs/BACKENDS.md gives the one command for a GPU machine). Here CUDA is only compiled
(tests/unit/test_cuda_compile.py).
"""

from __future__ import annotations

import os

import pytest

from gpu_device import QTYPES, Device, assert_quantize_and_decode_exact, assert_rows_and_copies_pass, verify_harness


CUDA = Device("CUDA0", "CUDA", "tq-gguf build --backend cuda, on a machine with an NVIDIA GPU", dict(os.environ))


@pytest.fixture(scope="module")
def cuda(native_lib):
    reason = CUDA.skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("op", ["SET_ROWS", "GET_ROWS", "CPY"])
def test_backend_ops_rows_and_copies(cuda, op):
    assert_rows_and_copies_pass(CUDA, op)


def test_backend_ops_flash_attn(cuda):
    """Every turbo FLASH_ATTN_EXT case (turbo K and/or V, head sizes 64 to 576) against the CPU."""
    passed, total, out = CUDA.backend_ops("FLASH_ATTN_EXT")
    assert passed == total, out[-3000:]
    assert total >= 100, total
    for qtype in QTYPES:
        assert f"type_K={qtype}" in out and f"type_V={qtype}" in out, qtype


def test_quantize_and_decode_are_exact(cuda):
    assert_quantize_and_decode_exact(CUDA)


def test_verify_harness_passes_on_cuda(cuda):
    out, _ = verify_harness(CUDA)
    assert out["max_head"] is None, out  # a real GPU runs every head size, 256 included
