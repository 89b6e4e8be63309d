"""llama.cpp's own op tests, for every turbo case we added to test-backend-ops.

On the CPU, test-backend-ops compares the backend with its reference mode; the
turbo cases cover SET_ROWS, GET_ROWS, CPY and FLASH_ATTN_EXT with turbo K and/or
V next to f16/q8_0/q4_0, at head sizes 64 to 576.
"""

from __future__ import annotations

import os
import re
import subprocess

from tq_gguf.build.builder import tool_path


OPS = "SET_ROWS,GET_ROWS,CPY,FLASH_ATTN_EXT"


def run_backend_ops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(tool_path("test-backend-ops")), *args], capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})


def test_turbo_cases_pass_on_cpu(native_lib):
    res = run_backend_ops("test", "-b", "CPU", "-o", OPS, "-p", "turbo", "-j", "2")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    m = re.search(r"(\d+)/(\d+) tests passed", out)
    assert m, out[-2000:]
    passed, total = int(m.group(1)), int(m.group(2))
    assert passed == total
    # 3 types x (get/set rows, copies, 3 head sizes x 2 batch sizes x 9 K/V pairings, extras)
    assert total >= 250, total
    for op in OPS.split(","):
        assert re.search(rf"{op}\(.*turbo.*OK", out), f"no passing {op} case with a turbo type"



def test_turbo_flash_attn_on_the_opt_in_fast_paths(native_lib):
    """The opt-in grouped decode and tiled prefill over turbo caches (GGML_TQ_FA_FAST=1,
    GGML_TQ_FA_TILED=1; native/cpu/tq-fattn.c) pass the same flash-attention cases: decode
    over 512-8192 cells at GQA 1-8, and prefill batches of 64+ queries."""
    res = run_backend_ops("test", "-b", "CPU", "-o", "FLASH_ATTN_EXT", "-p", "turbo", "-j", "2",
                          env={"GGML_TQ_FA_FAST": "1", "GGML_TQ_FA_TILED": "1"})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    m = re.search(r"(\d+)/(\d+) tests passed", out)
    assert m and m.group(1) == m.group(2), out[-2000:]
    assert int(m.group(2)) >= 200, m.group(2)
