"""llama.cpp's own op tests where `-b CPU` compares two different code paths.

test-backend-ops checks the CPU backend against the same backend in its reference mode
(`ggml_backend_cpu_set_use_ref`). On the CPU that mode changes one thing for the turbo
types: flash attention over a turbo K and/or V runs ggml's plain one-query-at-a-time path
instead of our kernel (native/cpu/tq-fattn.c), which takes every such case, decode and
batches alike. Every other turbo case (SET_ROWS, GET_ROWS, CPY) would run the same code
twice and prove nothing, so they are left out here: tests/native/test_native_turbo.py
holds the CPU kernels to the NumPy reference, and tests/gpu/ runs every turbo case
against the CPU.
"""

from __future__ import annotations

import re
import subprocess

from tq_gguf.nativebuild.builder import tool_path


def flash_attn_cases(pattern: str) -> tuple[int, str]:
    """Run the CPU's FLASH_ATTN_EXT cases named by `pattern` against its reference path; every
    one must pass. Returns how many ran and the output."""
    res = subprocess.run([str(tool_path("test-backend-ops")), "test", "-b", "CPU", "-o", "FLASH_ATTN_EXT",
                          "-p", pattern, "-j", "2"], capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    m = re.search(r"(\d+)/(\d+) tests passed", out)
    assert m and m.group(1) == m.group(2), out[-2000:]
    return int(m.group(2)), out


def test_turbo_flash_attn_matches_the_reference_path(native_lib):
    total, out = flash_attn_cases("turbo")
    # 3 turbo types x (decode and batches at head sizes 64-576, with masks, sinks, ALiBi and
    # softcap; grouped-decode shapes over 20-8192 cells at GQA 1-8; prefills of 64-100 queries)
    assert total >= 300, total
    for case in ("nb=1,.*type_K=q8_0,type_V=turbo", "nb=1,.*type_K=turbo4,type_V=turbo4",
                 "nb=(64|70|100),.*turbo", "nb=(3|8),.*turbo"):
        assert re.search(rf"{case}.*OK", out), case


def test_tcq_value_flash_attn_matches_the_reference_path(native_lib):
    """A trellis-coded V (decoded by the CPU's SIMD decoder in our kernel) against ggml's plain
    path (the same decoder, one query row at a time), beside every K type."""
    total, out = flash_attn_cases("tcq")
    # 2 types x head sizes 64-256 x 1, 8 and 70 queries x 6 K types, and decode at depth
    assert total >= 100, total
    for k in ("f16", "q8_0", "q4_0", "turbo2", "turbo3", "turbo4"):
        for v in ("tcq2", "tcq3"):
            assert re.search(rf"type_K={k},type_V={v},.*OK", out), (k, v)
