#!/usr/bin/env python3
"""Speed of KV-cache configurations: decode (tg) and prefill (pp) at several depths.

docs/SPEED.md's tables: `tq-gguf bench` (tq_gguf.analysis.bench) with two baselines,
f16/f16 and q8_0/q8_0, measured in the same run, as Markdown. Also reports how
fast the CPU quantizes rows into each cache type (the work SET_ROWS does per token).

    python tools/bench/kv_bench.py                                # SmolLM2, depths 0 4096 8192
    python tools/bench/kv_bench.py --depths 0 --configs f16/f16 q8_0/turbo3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tq_gguf.gguf import models  # noqa: E402
from tq_gguf.kv import cachetypes  # noqa: E402
from tq_gguf.kv.cacheconfig import CacheConfig  # noqa: E402
from tq_gguf.native import ggml, typeids  # noqa: E402

if TYPE_CHECKING:
    from tq_gguf.analysis.bench import Bench

CONFIGS = ["f16/f16", "q8_0/q8_0", "q4_0/q4_0", "q8_0/q4_0", "q8_0/turbo4", "q8_0/turbo3", "q8_0/turbo2",
           "turbo4/turbo4", "turbo3/turbo3"]
BASELINES = ("f16/f16", "q8_0/q8_0")


def quantize_throughput(reps: int = 20) -> dict[str, float]:
    """MB/s of float32 rows through ggml-cpu's from_float (what SET_ROWS runs)."""
    x = np.random.default_rng(0).standard_normal(64 * 4096).astype(np.float32)
    out = {}
    for name in ("q8_0", "q4_0", "turbo4", "turbo3", "turbo2"):
        tid = typeids.ggml_id(cachetypes.get(name))
        run = lambda: ggml.cpu_from_float(x, tid)  # noqa: E731
        run()
        t = time.perf_counter()
        for _ in range(reps):
            run()
        out[name] = x.nbytes * reps / (time.perf_counter() - t) / 1e6
    return out


def markdown(result: Bench) -> str:
    cols = result.columns
    lines = ["| K/V | " + " | ".join(result.column_name(c) for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for r in result.results:
        cells = [f"{r.speeds[c].tokens_per_s:.1f} ("
                 + " ".join(f"{result.ratio(r.config, c, b):.2f}x" for b in result.baselines) + ")" for c in cols]
        lines.append(f"| {r.config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--configs", nargs="+", default=CONFIGS)
    ap.add_argument("--depths", nargs="+", type=int, default=[0, 4096, 8192])
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--reps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from tq_gguf.analysis.bench import bench  # deferred: tq_gguf.runtime loads the native build; --help needs none

    path = models.resolve(args.model)
    result = bench(path, [CacheConfig.parse(c) for c in args.configs], depths=args.depths, n_prompt=args.n_prompt,
                   n_gen=args.n_gen, reps=args.reps, rounds=args.rounds, threads=args.threads,
                   baselines=[CacheConfig.parse(b) for b in BASELINES],
                   progress=lambda _, speeds, done, total: print(f"{done}/{total} {speeds.config}: done",
                                                                 file=sys.stderr))
    print(f"model {path.name}, {args.threads} threads, flash attention on; "
          "tok/s (x f16/f16, x q8_0/q8_0)\n")
    print(markdown(result))
    q = quantize_throughput()
    print("\nrow quantization (SET_ROWS work), MB/s of float32 input: "
          + ", ".join(f"{k} {v:.0f}" for k, v in q.items()))
    if args.json:
        args.json.write_text(json.dumps(result.as_dict() | {"quantize_mb_s": q}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
