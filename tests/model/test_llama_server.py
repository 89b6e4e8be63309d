"""`tq-gguf serve --engine llama-server` over real HTTP, on SmolLM2 with turbo caches.

Concurrent streamed requests, more of them than slots, each give the text the same request
gives alone (greedy); /metrics counts them; a client that hangs up mid-stream leaves the
server serving; SIGTERM stops the server and its llama-server child, leaving no process.
The OpenAI client is the real one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import ServerProcess, alive, children_of

from tq_gguf.gguf import ggufinfo
from tq_gguf.kv.cacheconfig import CacheConfig
from tq_gguf.kv.plan import format_size
from tq_gguf.runtime.llamaserver import slot_plan
from tq_gguf.runtime.ports import free_port

TQ_GGUF = str(Path(sys.executable).parent / "tq-gguf")
SLOTS = 2
N_CTX = 512
N_TOKENS = 24
PROMPTS = ["The capital of France is", "Water boils at", "The three primary colors are",
           "Once upon a time, a small robot"]


class LlamaServer(ServerProcess):
    """`tq-gguf serve --engine llama-server` on `model`; the CLI says "ready at" once /health answers."""

    def __init__(self, model: Path, *args: str):
        port = free_port()
        super().__init__([TQ_GGUF, "serve", model, "--engine", "llama-server", "--port", port, "--alias", "smollm2",
                          *args], port, ready_line="ready at")

    def stream(self, prompt: str) -> str:
        pieces = self.client().completions.create(model="smollm2", prompt=prompt, max_tokens=N_TOKENS,
                                                  temperature=0, stream=True)
        return "".join(chunk.choices[0].text for chunk in pieces)

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:
            text = response.read().decode()
        return {name: float(value) for name, value in
                (line.split() for line in text.splitlines() if line and not line.startswith("#"))}


@pytest.fixture(scope="module")
def server(default_model_path):
    s = LlamaServer(default_model_path, "--parallel", str(SLOTS), "--ctx", str(N_CTX), "--cache-k", "turbo4",
                    "--cache-v", "turbo3", "-t", "1")
    yield s
    s.stop()


def test_banner_states_slots_and_kv_bytes(server, default_model_path):
    info = ggufinfo.read(default_model_path)
    plan = slot_plan(info, CacheConfig.parse("turbo4/turbo3"), True, SLOTS, N_CTX)
    assert plan.kv_total == 2 * plan.kv_per_slot and plan.ctx_per_slot == N_CTX
    assert f"{SLOTS} slots of {N_CTX} tokens; KV cache {format_size(plan.kv_per_slot)} per slot, " \
           f"{format_size(plan.kv_total)} in total" in "\n".join(server.banner)
    with urllib.request.urlopen(server.url + "/props", timeout=5) as response:
        props = json.load(response)
    assert props["total_slots"] == SLOTS


def test_concurrent_streams_match_each_alone(server):
    """Twice as many concurrent requests as slots: the extra ones wait, none is lost, and every
    text is what the request gives alone."""
    alone = {prompt: server.stream(prompt) for prompt in PROMPTS}
    assert all(len(text) > 20 for text in alone.values()), alone
    before = server.metrics()
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = dict(zip(PROMPTS, pool.map(server.stream, PROMPTS)))
    assert together == alone
    after = server.metrics()
    assert after["llamacpp:tokens_predicted_total"] - before["llamacpp:tokens_predicted_total"] == \
        N_TOKENS * len(PROMPTS)


def test_a_client_hanging_up_mid_stream_leaves_the_server_serving(server):
    expected = server.stream(PROMPTS[0])
    request = urllib.request.Request(server.url + "/v1/completions", method="POST",
                                     headers={"Content-Type": "application/json"},
                                     data=json.dumps({"prompt": PROMPTS[1], "max_tokens": 400, "temperature": 0,
                                                      "stream": True}).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.readline().startswith(b"data: ")  # the stream has begun; now hang up
    deadline = time.monotonic() + 60
    while server.metrics()["llamacpp:requests_processing"] and time.monotonic() < deadline:
        time.sleep(0.2)  # the server notices at its next token and frees the slot
    assert server.metrics()["llamacpp:requests_processing"] == 0
    assert server.stream(PROMPTS[0]) == expected


def test_sigterm_stops_the_server_and_its_child(default_model_path):
    s = LlamaServer(default_model_path, "--ctx", "256", "--cache", "balanced")
    children = children_of(s.proc.pid)
    assert len(children) == 1, children  # the llama-server process
    out = s.stop()
    assert s.returncode == 0, out
    assert "stopping llama-server (SIGTERM)" in out
    assert not alive(children[0])


def test_per_layer_config_reaches_llama_server(default_model_path):
    """q8_0/turbo2:b2 keeps the first and last 2 layers at q8_0: llama-server gets the per-layer flags and
    allocates what the plan says."""
    s = LlamaServer(default_model_path, "--ctx", "256", "--cache", "q8_0/turbo2:b2", "--verbose")
    log = s.stop()
    code = s.returncode
    plan = slot_plan(ggufinfo.read(default_model_path), CacheConfig.parse("q8_0/turbo2:b2"), True, 1, 256)
    sizes = [line for line in log.splitlines() if "llama_kv_cache: size =" in line]
    assert code == 0 and len(sizes) == 1, sizes
    # llama.cpp logs the size in MiB with two decimals; uniform q8_0/turbo2 would be 1.89 MiB
    assert f"size = {plan.kv_total / 2**20:7.2f} MiB (   256 cells,  30 layers,  1/1 seqs)" in sizes[0], sizes


def test_port_in_use_is_one_error_line(default_model_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([TQ_GGUF, "serve", str(default_model_path), "--engine", "llama-server", "--port",
                            str(port)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_smoothed_keys_serve_parallel_slots(default_model_path):
    """Key smoothing in llama-server: one mu for every slot, learned from the first request into the
    empty cache and kept while any slot holds cells, so concurrent requests give what each gives
    alone, as without smoothing; the banner counts mu's bytes as the plan does."""
    s = LlamaServer(default_model_path, "--parallel", str(SLOTS), "--ctx", str(N_CTX), "--cache", "compact",
                    "-t", "1")
    try:
        banner = "\n".join(s.banner)
        plan = slot_plan(ggufinfo.read(default_model_path), CacheConfig.parse("compact"), True, SLOTS, N_CTX)
        assert "keys smoothed (preset compact)" in banner and f"{format_size(plan.kv_total)} in total" in banner
        alone = {prompt: s.stream(prompt) for prompt in PROMPTS}
        assert all(len(text) > 20 for text in alone.values()), alone
        with ThreadPoolExecutor(len(PROMPTS)) as pool:
            together = dict(zip(PROMPTS, pool.map(s.stream, PROMPTS)))
        assert together == alone
    finally:
        out = s.stop()
    assert s.returncode == 0, out


@pytest.mark.parametrize("cache", ["turbo4/turbo3", "compact", "turbo4/tcq3:sk"])
def test_a_slot_run_past_its_context_shifts_and_answers(default_model_path, cache):
    """With --context-shift a slot that fills its context drops its oldest tokens, re-ropes the kept
    keys (turbo4, and smoothed turbo4 whose rows hold k - mu; beside turbo and trellis-coded values,
    which do not move), and generates to the end (without
    the flag it stops at 248 of the 400 tokens: 256 cells less the prompt's 8)."""
    ctx, n = 256, 400  # more tokens than the slot holds
    s = LlamaServer(default_model_path, "--ctx", str(ctx), "--cache", cache, "--context-shift", "-t", "1")
    try:
        got = s.client().completions.create(model="smollm2", prompt=PROMPTS[3], max_tokens=n, temperature=0)
        assert got.usage.completion_tokens == n and got.choices[0].finish_reason == "length"
        assert len(got.choices[0].text) > 2 * ctx  # text, not an empty or cut answer
        assert s.get("/health")["status"] == "ok"
    finally:
        out = s.stop()
    assert s.returncode == 0, out
