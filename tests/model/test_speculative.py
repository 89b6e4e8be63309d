"""Speculative decoding through `tq-gguf serve --engine llama-server --draft`: Qwen2.5-Coder-0.5B
drafting for Qwen2.5-Coder-1.5B, with turbo caches on target and draft.

Speculation keeps a drafted token only where the target's own greedy choice is that token, so
its output is the target's greedy output as computed in batches. llama.cpp's kernels round
differently for a batch of tokens than for one (the weights' products and flash attention take
other paths), and on Qwen2.5-Coder-1.5B that moves the gap between the two best tokens'
log-probabilities by up to 0.78 nats with `balanced` and 0.43 with f16/f16 (81 tokens of
code, evaluated one by one and in batches of 4; the speculative texts in tools/bench/bench_spec.py
leave the plain ones at such near ties with f16/f16 too). So the test asserts: each speculative
text follows the plain greedy tokens, and where it first leaves them, the plain run's two best
tokens were within NEAR_TIE of each other. A draft accepted unchecked would leave them where the
target's choice is clear.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from helpers import ServerProcess

from tq_gguf.gguf import ggufinfo, models
from tq_gguf.kv.cacheconfig import CacheConfig
from tq_gguf.runtime.llamaserver import draft_config, slot_plan
from tq_gguf.runtime.ports import free_port

TQ_GGUF = str(Path(sys.executable).parent / "tq-gguf")
TARGET, DRAFT = "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"
CONFIG = "balanced"
NEAR_TIE = 1.2  # nats: the 0.78 measured above, with half again as margin
N_TOKENS = 48
N_CTX = 512
PROMPTS = [
    "# Python\ndef is_palindrome(text):\n    \"\"\"Whether text reads the same backwards, ignoring case.\"\"\"\n",
    "// C\n#include <stddef.h>\n\n/* Sum the n integers at a. */\nlong sum(const int *a, size_t n) {\n",
    "import csv\n\ndef read_rows(path):\n    \"\"\"Yield each row of a CSV file as a dict.\"\"\"\n",
]


class Server(ServerProcess):
    """`tq-gguf serve TARGET --engine llama-server`, ready once the CLI says "ready at"."""

    def __init__(self, *args: str):
        port = free_port()
        super().__init__([TQ_GGUF, "serve", TARGET, "--engine", "llama-server", "--port", port, "--ctx", N_CTX,
                          "-t", 2, *args], port, ready_line="ready at", stop_timeout=60)

    def complete(self, prompt: str, **extra) -> dict:
        body = {"prompt": prompt, "n_predict": N_TOKENS, "temperature": 0, "ignore_eos": True,
                "cache_prompt": False, "return_tokens": True, **extra}
        request = urllib.request.Request(self.url + "/completion", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.load(response)


@pytest.fixture(scope="module")
def runs():
    for name in (TARGET, DRAFT):
        models.fetch(name)
    plain = Server("--cache", CONFIG)
    try:
        plain_runs = [plain.complete(p, n_probs=2) for p in PROMPTS]
    finally:
        plain.stop()
    spec = Server("--cache", CONFIG, "--draft", DRAFT, "--draft-max", "4")
    try:
        spec_runs = [spec.complete(p) for p in PROMPTS]
    finally:
        spec.stop()
    return plain_runs, spec_runs


def test_speculative_text_is_the_targets_greedy_text_up_to_near_ties(runs):
    for plain, spec in zip(*runs):
        assert len(spec["tokens"]) == len(plain["tokens"]) == N_TOKENS
        first = next((i for i, (a, b) in enumerate(zip(plain["tokens"], spec["tokens"])) if a != b), None)
        if first is None:
            assert spec["content"] == plain["content"]
            continue
        best, second = plain["completion_probabilities"][first]["top_logprobs"]
        assert best["id"] == plain["tokens"][first]
        gap = best["logprob"] - second["logprob"]
        assert gap < NEAR_TIE, (f"the speculative text left the greedy one at token {first}, where the target "
                                f"preferred {best['token']!r} by {gap:.2f} nats", plain["content"], spec["content"])
        assert spec["tokens"][first] == second["id"]


def test_the_draft_proposes_and_the_target_accepts_most(runs):
    """Code is predictable: the 0.5B model's drafts mostly survive (measured 79-90%)."""
    drafted = sum(r["timings"].get("draft_n", 0) for r in runs[1])
    accepted = sum(r["timings"].get("draft_n_accepted", 0) for r in runs[1])
    assert drafted >= N_TOKENS * len(PROMPTS) // 2, drafted
    assert accepted >= 0.5 * drafted, (accepted, drafted)
    assert not any("draft_n" in r["timings"] for r in runs[0])


def test_a_per_layer_target_with_a_draft_allocates_the_plan(runs):
    """q8_0/turbo2:b2 keeps the target's first and last 2 layers at q8_0; the draft, which has other layers,
    takes its K and V types on all of them, and both caches are what the plan says."""
    server = Server("--cache", "q8_0/turbo2:b2", "--draft", DRAFT, "--verbose")
    log = server.stop()
    target_cfg = CacheConfig.parse("q8_0/turbo2:b2")
    target = slot_plan(ggufinfo.read(models.get(TARGET).path()), target_cfg, True, 1, N_CTX)
    draft = slot_plan(ggufinfo.read(models.get(DRAFT).path()), draft_config(target_cfg, None), True, 1, N_CTX)
    sizes = [line.split("size =")[1].split("MiB")[0].strip() for line in log.splitlines()
             if "llama_kv_cache: size =" in line]
    assert sizes == [f"{target.kv_total / 2**20:.2f}", f"{draft.kv_total / 2**20:.2f}"], sizes
    assert "speculative: draft qwen2.5-coder-0.5b-instruct-q4_k_m.gguf with K q8_0 / V turbo2;" in log


def test_a_draft_with_another_vocabulary_is_one_error_line(default_model_path):
    models.fetch(TARGET)
    r = subprocess.run([TQ_GGUF, "serve", TARGET, "--engine", "llama-server", "--draft", str(default_model_path),
                        "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: {default_model_path.name} cannot draft for {models.get(TARGET).filename}, whose vocabulary "
        f"differs: it has 49152 tokens, the target 151936 (llama-server would serve without speculation)"]


@pytest.mark.parametrize("args, message", [
    (["--draft", DRAFT, "--draft-cache", "q8_0/turbo3:b2"],
     "error: a draft cache takes one K and one V type for all of its layers (llama.cpp has no per-layer flags "
     "for the draft): write q8_0/turbo3, not q8_0/turbo3:b2"),
    (["--draft-max", "4"], "Error: --draft-cache and --draft-max need --draft MODEL"),
])
def test_draft_options_are_checked_before_anything_starts(args, message):
    r = subprocess.run([TQ_GGUF, "serve", TARGET, "--engine", "llama-server", "--port", str(free_port()), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in (1, 2) and r.stderr.strip().splitlines()[-1] == message, r.stderr
