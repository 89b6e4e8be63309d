"""`tq-gguf info` says where the built tools are; `tq-gguf exec` runs them as llama.cpp's own,
turbo caches included, with their exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tq_gguf.nativebuild import builder

TQ_GGUF = str(Path(sys.executable).parent / "tq-gguf")


def tq_gguf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TQ_GGUF, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=180)


def test_info_names_the_binaries():
    r = tq_gguf("info")
    bin_dir = builder.installed_bin_dir()
    assert f"binaries          {bin_dir}" in r.stdout
    assert "tools             llama-cli, llama-server, llama-bench, llama-perplexity, rpc-server" in r.stdout
    assert all((bin_dir / exe).is_file() for exe in builder.USER_TOOLS.values())


def test_exec_passes_the_exit_status_through():
    assert tq_gguf("exec", "llama-bench", "--help").returncode == 0
    r = tq_gguf("exec", "llama-bench", "--no-such-option")
    assert r.returncode == 1 and "error: invalid parameter for argument: --no-such-option" in r.stderr


def test_exec_llama_cli_runs_turbo_caches(default_model_path):
    r = tq_gguf("exec", "llama-cli", "-m", str(default_model_path), "-ctk", "turbo4", "-ctv", "turbo3", "-fa", "on",
                "-p", "What are the three primary colors?", "-n", "16", "-st", "--temp", "0", "-t", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    answer = r.stdout.split("What are the three primary colors?")[-1]
    assert "Generation:" in answer and len(answer.split("[ Prompt:")[0].strip()) > 20, r.stdout[-1500:]
