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


QUESTION = "What are the three primary colors?"


def test_exec_llama_cli_runs_turbo_caches(default_model_path):
    """llama-cli from our build, greedy with a turbo4/turbo3 cache, answers exactly what the
    python engine (tq_gguf.Llama) answers with the same cache, context and threads: the tool
    really decodes through the turbo kernels, as the library does."""
    from tq_gguf import Llama  # loads the native library, which collecting this module must not need

    r = tq_gguf("exec", "llama-cli", "-m", str(default_model_path), "-ctk", "turbo4", "-ctv", "turbo3", "-fa", "on",
                "-c", "512", "-p", QUESTION, "-n", "16", "-st", "--temp", "0", "-t", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    # llama-cli echoes "> QUESTION", prints the answer, then a blank line and its speed line
    answer = r.stdout.split(f"> {QUESTION}\n")[-1].split("\n\n[ Prompt:")[0]
    assert "[ Prompt:" in r.stdout, r.stdout[-1500:]
    llm = Llama(default_model_path, cache="turbo4/turbo3", n_ctx=512, n_threads=1, n_threads_batch=1,
                flash_attn=True)
    try:
        expected = llm.create_chat_completion([{"role": "user", "content": QUESTION}], max_tokens=16,
                                              temperature=0, repeat_penalty=1.0)["choices"][0]["message"]["content"]
    finally:
        llm.close()
    assert len(expected) > 20
    assert answer == expected
