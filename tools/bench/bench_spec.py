#!/usr/bin/env python3
"""Speculative decoding with turbo caches: acceptance rate, speed-up and greedy equality per cache config.

For each cache config it starts `tq-gguf serve TARGET --engine llama-server` once without a
draft and once with `--draft DRAFT --draft-max N` for each N (target and draft with the same
cache config), sends the same greedy completions to each, and reports the decode rate
(llama-server's own timings: generated tokens over generation time, prompt excluded), the
speed-up over the plain server, the share of drafted tokens the target accepted, and whether
every text equals the plain server's.

    python tools/bench/bench_spec.py                      # Qwen2.5-Coder-1.5B drafted by 0.5B
    python tools/bench/bench_spec.py --configs balanced --draft-max 3,8 --json spec.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchserver import post_json, served

PROMPTS = [
    "# Python\ndef merge_intervals(intervals):\n    \"\"\"Merge overlapping [start, end] intervals.\"\"\"\n",
    "// C\n#include <string.h>\n\n/* Reverse the string s in place. */\nvoid reverse(char *s) {\n",
    "import json\n\ndef load_config(path, defaults):\n    \"\"\"Read a JSON file and fill in missing keys from defaults.\"\"\"\n",
    "#!/bin/sh\n# Print the ten largest files under the directory given as $1.\n",
    "class Stack:\n    \"\"\"A stack backed by a Python list.\"\"\"\n\n    def __init__(self):\n",
    "-- SQL\n-- The five customers with the highest total order value in 2024.\nSELECT",
]


def complete(url: str, prompt: str, n_tokens: int) -> dict:
    return post_json(url + "/completion", {"prompt": prompt, "n_predict": n_tokens, "temperature": 0,
                                           "ignore_eos": True, "cache_prompt": False})


def run_server(target: str, config: str, draft: str | None, draft_max: int | None, prompts: list[str],
               n_tokens: int, threads: int) -> dict:
    extra = ("--draft", draft, "--draft-max", str(draft_max)) if draft else ()
    with served(target, config, ctx=1024, threads=threads, extra=extra) as server:
        complete(server.url, prompts[0], 4)  # warm up
        results = [complete(server.url, p, n_tokens) for p in prompts]
    timings = [r["timings"] for r in results]
    drafted = sum(t.get("draft_n", 0) for t in timings)
    return {"config": config, "draft_max": draft_max if draft else 0, "texts": [r["content"] for r in results],
            "tokens": sum(t["predicted_n"] for t in timings),
            "tok_s": sum(t["predicted_n"] for t in timings) / (sum(t["predicted_ms"] for t in timings) / 1000),
            "drafted": drafted, "accepted": sum(t.get("draft_n_accepted", 0) for t in timings)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="qwen2.5-coder-1.5b")
    ap.add_argument("--draft", default="qwen2.5-coder-0.5b")
    ap.add_argument("--configs", default="f16/f16,q8_0/q8_0,q8_0/turbo4,balanced,turbo4/turbo3,max")
    ap.add_argument("--draft-max", default="3,8", help="comma-separated --draft-max values")
    ap.add_argument("--tokens", type=int, default=96, help="tokens per completion")
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many of the built-in prompts")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    prompts = PROMPTS[:args.prompts]
    rows = []
    print(f"{args.target} drafted by {args.draft}: {len(prompts)} greedy completions of {args.tokens} tokens, "
          f"{args.threads} threads")
    print(f"{'config':<14} {'draft-max':>9} {'tok/s':>7} {'speed-up':>8} {'accepted':>9}  same text")
    for config in args.configs.split(","):
        plain = run_server(args.target, config, None, None, prompts, args.tokens, args.threads)
        rows.append(plain)
        print(f"{config:<14} {'-':>9} {plain['tok_s']:>7.2f} {'1.00x':>8} {'-':>9}  -", flush=True)
        for n in (int(x) for x in args.draft_max.split(",")):
            spec = run_server(args.target, config, args.draft, n, prompts, args.tokens, args.threads)
            spec["speedup"] = spec["tok_s"] / plain["tok_s"]
            spec["acceptance"] = spec["accepted"] / spec["drafted"] if spec["drafted"] else 0.0
            same = [a == b for a, b in zip(spec["texts"], plain["texts"])]
            spec["same_text"] = same
            rows.append(spec)
            print(f"{config:<14} {n:>9} {spec['tok_s']:>7.2f} {spec['speedup']:>7.2f}x {spec['acceptance']:>8.1%}  "
                  f"{sum(same)}/{len(same)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"target": args.target, "draft": args.draft, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
