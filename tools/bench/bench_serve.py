#!/usr/bin/env python3
"""Load benchmark of `tq-gguf serve --engine llama-server`: concurrent streaming clients against
1, 2, 4 and 8 slots, for each cache config; and how many 4K-token slots each config fits in a
memory budget.

For every (config, slots) it starts the server, lets `slots` clients each send `--requests`
streamed completions (greedy, `--tokens` tokens each, end of text ignored so every request
decodes the same length) and reports the aggregate decode rate over the wall time, and the
median and 95th percentile of the time to first token and of the time between tokens.

    python tools/bench/bench_serve.py                           # SmolLM2, f16/f16, q8_0/q8_0, balanced
    python tools/bench/bench_serve.py MODEL --configs balanced --slots 1,8 --budget 8GiB --json out.json
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tq_gguf.gguf import ggufinfo, models  # noqa: E402
from tq_gguf.kv.cacheconfig import CacheConfig  # noqa: E402
from tq_gguf.kv.plan import format_size, parse_size  # noqa: E402
from tq_gguf.runtime.ports import free_port  # noqa: E402

TQ_GGUF = str(Path(sys.executable).parent / "tq-gguf")
PROMPTS = ["The three primary colors are", "Once upon a time, in a small village,", "The capital of France is",
           "Water boils at", "A list of useful kitchen tools:", "The history of the bicycle begins",
           "To make bread, you need", "The largest planet in the solar system"]
BUDGET_CTX = 4096  # the slot size of the memory-budget column


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stream(url: str, prompt: str, n_tokens: int) -> tuple[float, list[float]]:
    """(seconds to the first token, seconds between each later token) of one streamed completion."""
    body = {"prompt": prompt, "max_tokens": n_tokens, "temperature": 0, "stream": True, "ignore_eos": True}
    request = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    stamps = []
    with urllib.request.urlopen(request, timeout=600) as response:
        for line in response:
            if line.startswith(b"data: ") and b'"text"' in line:
                chunk = json.loads(line[6:])
                if chunk["choices"][0]["text"]:
                    stamps.append(time.perf_counter())
    return stamps[0] - start, [b - a for a, b in zip(stamps, stamps[1:])]


def run_load(model: str, config: str, slots: int, requests: int, n_tokens: int, ctx: int, threads: int) -> dict:
    port = free_port()
    server = subprocess.Popen([TQ_GGUF, "serve", model, "--engine", "llama-server", "--cache", config,
                               "--parallel", str(slots), "--ctx", str(ctx), "--port", str(port), "-t", str(threads)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in server.stdout:
            if "ready at" in line:
                break
        else:
            raise SystemExit(f"server for {config} x {slots} did not start (exit {server.wait()})")
        url = f"http://127.0.0.1:{port}"
        stream(url, PROMPTS[0], 4)  # warm up
        ttft, gaps, lock = [], [], threading.Lock()

        def client(i: int) -> None:
            for r in range(requests):
                first, between = stream(url, PROMPTS[(i + r) % len(PROMPTS)], n_tokens)
                with lock:
                    ttft.append(first)
                    gaps.extend(between)

        start = time.perf_counter()
        workers = [threading.Thread(target=client, args=(i,)) for i in range(slots)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = time.perf_counter() - start
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    return {"config": config, "slots": slots, "requests": slots * requests, "tokens": slots * requests * n_tokens,
            "wall_s": wall, "tok_s": slots * requests * n_tokens / wall,
            "ttft_p50_ms": 1000 * statistics.median(ttft), "ttft_p95_ms": 1000 * percentile(ttft, 0.95),
            "token_p50_ms": 1000 * statistics.median(gaps), "token_p95_ms": 1000 * percentile(gaps, 0.95)}


def slots_in_budget(info, config: CacheConfig, budget: int) -> int:
    """The most slots of BUDGET_CTX tokens whose KV cache fits `budget` bytes, as llama-server allocates it."""
    from tq_gguf.runtime.llamaserver import slot_plan  # deferred: tq_gguf.runtime loads the native build; --help needs none

    slots = 0
    while slots < 256 and slot_plan(info, config, True, slots + 1, BUDGET_CTX).kv_total <= budget:
        slots += 1
    return slots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default=models.DEFAULT_MODEL)
    ap.add_argument("--configs", default="f16/f16,q8_0/q8_0,balanced")
    ap.add_argument("--slots", default="1,2,4,8")
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--tokens", type=int, default=64, help="tokens per request")
    ap.add_argument("--ctx", type=int, default=512, help="context of each slot")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", default="1GiB", help="memory for the KV cache alone")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    path = str(models.resolve(args.model))
    info = ggufinfo.read(path)
    budget = parse_size(args.budget)
    configs = args.configs.split(",")
    rows = [run_load(path, c, int(s), args.requests, args.tokens, args.ctx, args.threads)
            for c in configs for s in args.slots.split(",")]
    fits = {c: slots_in_budget(info, CacheConfig.parse(c), budget) for c in configs}

    print(f"{Path(path).name}: {args.requests} streamed requests of {args.tokens} tokens per client, one client "
          f"per slot, slots of {args.ctx} tokens, {args.threads} thread(s)")
    print(f"{'config':<12} {'slots':>5} {'tok/s':>7} {'TTFT p50':>9} {'p95':>7} {'token p50':>10} {'p95':>7}  (ms)")
    for r in rows:
        print(f"{r['config']:<12} {r['slots']:>5} {r['tok_s']:>7.1f} {r['ttft_p50_ms']:>9.0f} {r['ttft_p95_ms']:>7.0f} "
              f"{r['token_p50_ms']:>10.1f} {r['token_p95_ms']:>7.1f}")
    print(f"\nslots of {BUDGET_CTX} tokens within {format_size(budget)} of KV cache (llama-server's allocation):")
    for c, n in fits.items():
        print(f"  {c:<12} {n}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "budget": budget, "slots_in_budget": fits}, indent=2) + "\n")


if __name__ == "__main__":
    main()
