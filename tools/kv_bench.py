#!/usr/bin/env python3
"""Speed of KV-cache configurations: decode (tg) and prefill (pp) at several depths.

Runs llama-bench (flash attention on, 2 threads by default) for each K/V
configuration and prints tokens/s with each configuration's ratio against
f16/f16 and q8_0/q8_0 measured in the same run. Also reports how fast the CPU
quantizes rows into each cache type (the work SET_ROWS does per token).

    python tools/kv_bench.py                                # SmolLM2, depths 0 4096 8192
    python tools/kv_bench.py --depths 0 --configs f16/f16 q8_0/turbo3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tq_gguf import cachetypes, ggml, models  # noqa: E402
from tq_gguf.build import tool_path  # noqa: E402

CONFIGS = ["f16/f16", "q8_0/q8_0", "q4_0/q4_0", "q8_0/q4_0", "q8_0/turbo4", "q8_0/turbo3", "q8_0/turbo2",
           "turbo4/turbo4", "turbo3/turbo3"]
BASELINES = ("f16/f16", "q8_0/q8_0")


def bench(model: Path, config: str, depths: list[int], n_prompt: int, n_gen: int, threads: int, reps: int) -> dict:
    k, v = config.split("/")
    cmd = [str(tool_path("llama-bench")), "-m", str(model), "-p", str(n_prompt), "-n", str(n_gen),
           "-d", ",".join(map(str, depths)), "-ctk", k, "-ctv", v, "-fa", "on", "-t", str(threads),
           "-r", str(reps), "-o", "json"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"llama-bench failed for {config}:\n{res.stderr[-3000:]}")
    out = {}
    for row in json.loads(res.stdout):
        kind = "pp" if row["n_prompt"] > 0 else "tg"
        out[(kind, row["n_depth"])] = row["avg_ts"]
    return out


def quantize_throughput(reps: int = 20) -> dict[str, float]:
    """MB/s of float32 rows through ggml-cpu's from_float (what SET_ROWS runs)."""
    x = np.random.default_rng(0).standard_normal(64 * 4096).astype(np.float32)
    out = {}
    for name in ("q8_0", "q4_0", "turbo4", "turbo3", "turbo2"):
        tid = cachetypes.get(name).ggml_id
        run = lambda: ggml.cpu_from_float(x, tid)  # noqa: E731
        run()
        t = time.perf_counter()
        for _ in range(reps):
            run()
        out[name] = x.nbytes * reps / (time.perf_counter() - t) / 1e6
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--configs", nargs="+", default=CONFIGS)
    ap.add_argument("--depths", nargs="+", type=int, default=[0, 4096, 8192])
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--reps", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    path = models.resolve(args.model)
    configs = list(dict.fromkeys([*BASELINES, *args.configs]))
    results = {}
    for config in configs:
        results[config] = bench(path, config, args.depths, args.n_prompt, args.n_gen, args.threads, args.reps)
        print(f"{config}: " + ", ".join(f"{k}{d}={v:.1f}" for (k, d), v in sorted(results[config].items())), file=sys.stderr)

    print(f"model {path.name}, {args.threads} threads, flash attention on; tok/s (x f16/f16, x q8_0/q8_0)\n")
    cols = [(kind, d) for kind in ("tg", "pp") for d in args.depths if (kind, d) in results[BASELINES[0]]]  # -p 0 / -n 0 skip a kind
    print("| K/V | " + " | ".join(f"{k}{args.n_gen if k == 'tg' else args.n_prompt} @ d{d}" for k, d in cols) + " |")
    print("|---|" + "---|" * len(cols))
    for config in configs:
        cells = []
        for col in cols:
            ts = results[config][col]
            ratios = " ".join(f"{ts / results[b][col]:.2f}x" for b in BASELINES)
            cells.append(f"{ts:.1f} ({ratios})")
        print(f"| {config} | " + " | ".join(cells) + " |")
    q = quantize_throughput()
    print("\nrow quantization (SET_ROWS work), MB/s of float32 input: "
          + ", ".join(f"{k} {v:.0f}" for k, v in q.items()))
    if args.json:
        args.json.write_text(json.dumps({"results": {c: {f"{k}@{d}": v for (k, d), v in r.items()} for c, r in results.items()},
                                         "quantize_mb_s": q}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
