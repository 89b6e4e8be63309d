"""llama.cpp's own op tests, for every turbo case we added to test-backend-ops.

On the CPU, test-backend-ops compares the backend with its reference mode; the
turbo cases cover SET_ROWS, GET_ROWS, CPY and FLASH_ATTN_EXT with turbo K and/or
V next to f16/q8_0/q4_0, at head sizes 64 to 576. For FLASH_ATTN_EXT that compares
two paths: our kernel (native/cpu/tq-fattn.c: decode over 512-8192 cells at GQA 1-8,
batches of queries) with ggml's per-row reference.
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

