"""llama.cpp's own op tests where `-b CPU` compares two different code paths.

test-backend-ops checks the CPU backend against the same backend in its reference mode
(`ggml_backend_cpu_set_use_ref`). That mode changes one thing on the CPU: flash
attention runs its plain one-query-at-a-time path instead of the split-KV / grouped
decode and the tiled prefill. Every other turbo case (SET_ROWS, GET_ROWS, CPY, and flash
attention at batch sizes that take neither fast path) would run the same code twice and
prove nothing, so they are left out here: tests/native/test_native_turbo.py holds the CPU
kernels to the NumPy reference, and tests/gpu/ runs every turbo case against the CPU.

What is left: the turbo FLASH_ATTN_EXT cases of single-token decode (split KV over the
threads, or the GQA-grouped kernel of native/cpu/tq-fattn.c) and of prefill batches of
64+ queries (the tiled path), held to the reference path.
"""

from __future__ import annotations

import os
import re
import subprocess

from tq_gguf.build.builder import tool_path

# test-backend-ops's -p is a regex searched in a case's parameters ("...,kv=1024,nb=1,...,
# type_K=turbo3,..."): a turbo K or V, and nb = 1 (decode) or nb >= 64 (GGML_FA_TILE_Q queries).
FAST_PATH_CASES = r"^(?=.*turbo).*,nb=(1|6[4-9]|[7-9][0-9]|[1-9][0-9]{2,}),"


def run_fast_path_cases(env: dict[str, str] | None = None) -> str:
    res = subprocess.run([str(tool_path("test-backend-ops")), "test", "-b", "CPU", "-o", "FLASH_ATTN_EXT",
                          "-p", FAST_PATH_CASES, "-j", "2"],
                         capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    m = re.search(r"(\d+)/(\d+) tests passed", out)
    assert m and m.group(1) == m.group(2), out[-2000:]
    # 3 turbo types x (33 decode cases at head sizes 64-256 and 700-1024 cells, 48 grouped-decode
    # shapes over 20-8192 cells, 4 prefills of 64-100 queries) = 255 when this was written
    assert int(m.group(2)) >= 250, m.group(2)
    assert not re.search(r",nb=(8|3),", out), "a case without a fast path was selected"
    return out


def test_turbo_flash_attn_fast_paths_match_the_reference_path(native_lib):
    """The default paths: decode over 512+ cells splits the KV between threads."""
    out = run_fast_path_cases()
    for kv_types in ("type_K=q8_0,type_V=turbo", "type_K=turbo4,type_V=turbo4", "type_K=turbo2,type_V=f16"):
        assert re.search(rf"nb=1,.*{kv_types}.*OK", out), kv_types


def test_turbo_flash_attn_opt_in_fast_paths_match_the_reference_path(native_lib):
    """The opt-in grouped decode and tiled prefill over turbo caches (GGML_TQ_FA_FAST=1,
    GGML_TQ_FA_TILED=1; native/cpu/tq-fattn.c): decode over 20-8192 cells at GQA 1-8, and
    prefill batches of 64+ queries."""
    out = run_fast_path_cases({"GGML_TQ_FA_FAST": "1", "GGML_TQ_FA_TILED": "1"})
    assert re.search(r"nb=(64|70|100),.*turbo.*OK", out)
