"""`tq-gguf serve` over real HTTP and `tq-gguf run` as a real process, on SmolLM2.

Both must produce exactly what tq_gguf.Llama produces in this process with the
same cache, context and thread count (greedy decoding): the server through
llama-cpp-python's OpenAI-compatible routes, streamed or not, and `run` for
plain continuation and for --chat. The OpenAI client is the real one.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ServerProcess

from tq_gguf.gguf import ggufinfo
from tq_gguf.kv.cacheconfig import CacheConfig
from tq_gguf.runtime.ports import free_port

TQ_GGUF = str(Path(sys.executable).parent / "tq-gguf")
N_CTX = 512
PROMPT = "The capital of France is"
QUESTION = "What is the capital of France?"


def server_default(request_type: str, field: str):
    """A sampling default of llama-cpp-python's server requests, which OpenAI clients do not send."""
    from llama_cpp.server import types

    return getattr(types, request_type).model_fields[field].default


def tq_gguf(*args, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([TQ_GGUF, *map(str, args)], input=input, capture_output=True, text=True, timeout=180)


def cli(*args, input: str | None = None):
    """The CLI in this process (warm imports, cached GGUF reads) for the cases a subprocess adds nothing to."""
    from click.testing import CliRunner

    from tq_gguf.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture(scope="module")
def llm(default_model_path):
    from tq_gguf import Llama

    # what the server and `run -t 1` build: one thread for decode and batches
    return Llama(default_model_path, cache="q8_0/tcq3", n_ctx=N_CTX, n_threads=1, n_threads_batch=1)


class Server(ServerProcess):
    """`tq-gguf serve` (the Python engine) on `model`, ready once /v1/models answers."""

    def __init__(self, model: Path, *cache_args: str):
        port = free_port()
        super().__init__([TQ_GGUF, "serve", model, *cache_args, "--port", port, "--ctx", N_CTX, "-t", 1,
                          "--alias", "smollm2"], port, ready_http="/v1/models", timeout=120, stop_timeout=20)


@pytest.fixture(scope="module")
def server(default_model_path):
    s = Server(default_model_path, "--cache-k", "q8_0", "--cache-v", "tcq3")
    yield s
    s.stop()


def test_server_holds_the_turbo_cache(server, default_model_path):
    info = server.get("/tq/cache")
    assert (info["config"], info["k_type"], info["v_type"], info["preset"]) == ("q8_0/tcq3", "q8_0", "tcq3",
                                                                                "balanced")
    model = ggufinfo.read(default_model_path)
    assert info["n_ctx"] == N_CTX
    assert info["bytes_allocated"] == CacheConfig.parse("q8_0/tcq3").kv_bytes(model, N_CTX)
    assert info["bytes_f16_allocated"] == CacheConfig.parse("f16/f16").kv_bytes(model, N_CTX)
    assert [m["id"] for m in server.get("/v1/models")["data"]] == ["smollm2"]


@pytest.fixture(scope="module")
def expected_completion(llm):
    # the server applies its own repeat penalty (1.1) unless a request sets one; greedy decoding follows it
    penalty = server_default("CreateCompletionRequest", "repeat_penalty")
    return llm(PROMPT, max_tokens=16, temperature=0, repeat_penalty=penalty)["choices"][0]["text"]


def test_completion_matches_in_process(server, expected_completion):
    expected = expected_completion
    got = server.client().completions.create(model="smollm2", prompt=PROMPT, max_tokens=16, temperature=0)
    assert got.choices[0].text == expected
    assert got.usage.completion_tokens == 16


def test_streamed_completion_matches_in_process(server, expected_completion):
    expected = expected_completion
    stream = server.client().completions.create(model="smollm2", prompt=PROMPT, max_tokens=16, temperature=0,
                                                stream=True)
    pieces = [chunk.choices[0].text for chunk in stream]
    assert len([p for p in pieces if p]) > 1  # it really arrived as a stream of server-sent events
    assert "".join(pieces) == expected


def test_streamed_chat_matches_in_process(server, llm):
    messages = [{"role": "user", "content": QUESTION}]
    penalty = server_default("CreateChatCompletionRequest", "repeat_penalty")
    expected = llm.create_chat_completion(messages, max_tokens=16, temperature=0,
                                          repeat_penalty=penalty)["choices"][0]["message"]["content"]
    stream = server.client().chat.completions.create(model="smollm2", messages=messages, max_tokens=16,
                                                     temperature=0, stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream]
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == expected


def test_server_with_per_layer_cache(default_model_path):
    from tq_gguf import Llama

    s = Server(default_model_path, "--cache", "q8_0/turbo2:b2")
    try:
        info = s.get("/tq/cache")
        got = s.client().completions.create(model="smollm2", prompt=PROMPT, max_tokens=8, temperature=0)
    finally:
        s.stop()
    assert (info["config"], info["boundary_layers"]) == ("q8_0/turbo2:b2", 2)
    assert info["bytes_allocated"] == CacheConfig.parse("q8_0/turbo2:b2").kv_bytes(ggufinfo.read(default_model_path),
                                                                                N_CTX)
    llm = Llama(default_model_path, cache="q8_0/turbo2:b2", n_ctx=N_CTX, n_threads=1, n_threads_batch=1)
    penalty = server_default("CreateCompletionRequest", "repeat_penalty")
    assert got.choices[0].text == llm(PROMPT, max_tokens=8, temperature=0, repeat_penalty=penalty)["choices"][0]["text"]


def test_serve_refuses_bad_input_in_one_line(default_model_path):
    # both are refused before the server stack loads, so this process can run them
    r = cli("serve", default_model_path, "--cache-v", "q3_x", "--port", free_port())
    assert r.exit_code == 1 and r.stderr.strip().splitlines() == [
        "error: unknown cache type 'q3_x'; choose one of f32, f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl, "
        "turbo4, turbo3, turbo2, tcq3, tcq2"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli("serve", default_model_path, "--port", port)
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_run_prints_what_the_session_generates(default_model_path, llm):
    r = tq_gguf("run", default_model_path, "-p", PROMPT, "-n", 8, "--ctx", N_CTX, "-t", 1)
    assert r.returncode == 0, r.stderr
    assert r.stdout == llm(PROMPT, max_tokens=8, temperature=0)["choices"][0]["text"]
    assert "K q8_0 / V tcq3 (preset balanced)" in r.stderr and "generated 8 tokens" in r.stderr


def test_run_cache_options(default_model_path):
    model = ggufinfo.read(default_model_path)
    r = cli("run", default_model_path, "--cache", "q8_0/turbo2:b2", "-p", PROMPT, "-n", 4, "--ctx", N_CTX, "-t", 1)
    assert r.exit_code == 0, r.output
    assert "K q8_0 / V turbo2, first and last 2 layers q8_0:" in r.stderr
    assert f"KV cache {CacheConfig.parse('q8_0/turbo2:b2').kv_bytes(model, N_CTX) / 2**20:.2f} MiB" in r.stderr
    # an explicit type wins over the spec's, which keeps its protected layers
    r = cli("run", default_model_path, "--cache", "q8_0/turbo2:b2", "--cache-v", "turbo4", "-p", PROMPT, "-n", 4,
            "--ctx", N_CTX, "-t", 1)
    assert r.exit_code == 0, r.output
    assert "K q8_0 / V turbo4, first and last 2 layers q8_0:" in r.stderr
    # key smoothing: a preset that has it, and the flag that adds it to any config (mu's bytes counted)
    r = cli("run", default_model_path, "--cache", "max", "-p", PROMPT, "-n", 4, "--ctx", N_CTX, "-t", 1)
    assert r.exit_code == 0, r.output
    assert "K turbo4 / V tcq3, keys smoothed (preset max)" in r.stderr
    r = cli("run", default_model_path, "--cache-k", "turbo4", "--cache-v", "turbo4", "--smooth-k", "-p", PROMPT,
            "-n", 4, "--ctx", N_CTX, "-t", 1)
    assert r.exit_code == 0, r.output
    assert "K turbo4 / V turbo4, keys smoothed (preset compact)" in r.stderr
    assert f"KV cache {CacheConfig.parse('compact').kv_bytes(model, N_CTX) / 2**20:.2f} MiB" in r.stderr


def test_run_follows_the_model_tag_unless_told_otherwise(default_model_path, tmp_path):
    tagged = tmp_path / "tagged.gguf"
    r = cli("tag", default_model_path, "--cache", "turbo4/turbo3", "-o", tagged)
    assert r.exit_code == 0, r.output
    r = cli("run", tagged, "-p", PROMPT, "-n", 2, "--ctx", N_CTX, "-t", 1)
    assert r.exit_code == 0, r.output
    assert "K turbo4 / V turbo3:" in r.stderr
    r = cli("run", tagged, "--cache-k", "q8_0", "-p", PROMPT, "-n", 2, "--ctx", N_CTX, "-t", 1)
    assert r.exit_code == 0, r.output
    assert "K q8_0 / V turbo3:" in r.stderr  # the tag's V, the option's K


def test_chat_answers_each_line_of_stdin(default_model_path, llm):
    follow_up = "And of Spain?"
    r = tq_gguf("run", default_model_path, "--chat", "-n", 12, "--ctx", N_CTX, "-t", 1,
                input=f"{QUESTION}\n\n{follow_up}\n/exit\nnot read\n")
    assert r.returncode == 0, r.stderr
    history = [{"role": "user", "content": QUESTION}]
    first = llm.create_chat_completion(history, max_tokens=12, temperature=0)["choices"][0]["message"]["content"]
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": follow_up}]
    second = llm.create_chat_completion(history, max_tokens=12, temperature=0)["choices"][0]["message"]["content"]
    assert r.stdout == f"{first}\n{second}\n"
    assert "2 turns" in r.stderr and "K q8_0 / V tcq3" in r.stderr


def test_chat_with_system_message_and_first_prompt(default_model_path, llm):
    system = "You answer in one word."
    r = tq_gguf("run", default_model_path, "--chat", "--system", system, "-p", QUESTION, "-n", 8, "--ctx", N_CTX,
                "-t", 1, input="")
    assert r.returncode == 0, r.stderr
    messages = [{"role": "system", "content": system}, {"role": "user", "content": QUESTION}]
    expected = llm.create_chat_completion(messages, max_tokens=8, temperature=0)["choices"][0]["message"]["content"]
    assert r.stdout == expected + "\n"
    assert "1 turn," in r.stderr


def test_chat_that_outgrows_the_context_is_one_error(default_model_path):
    # --ctx 64 becomes the 256 cells llama.cpp allocates; a message of 300 words cannot fit
    r = cli("run", default_model_path, "--chat", "-n", 4, "--ctx", 64, "-t", 1, input="word " * 300 + "\n")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "error: the conversation no longer fits the 256-token context; start again with a larger --ctx")


def test_run_usage_errors():
    r = cli("run", "-n", 3)
    assert r.exit_code == 2 and "give a prompt with -p, or use --chat" in r.stderr
    r = cli("run", "--system", "x", "-p", "y")
    assert r.exit_code == 2 and "--system is for --chat" in r.stderr
