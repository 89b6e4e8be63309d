#!/usr/bin/env python3
"""Quality of KV-cache configurations on real models: perplexity, KL divergence, top-1.

docs/QUALITY.md's table: `tq-gguf eval` (tq_gguf.analysis.evaluate) over several models,
each with its own chunk count, as one Markdown table. The f16/f16 row is the base
every other config is scored against; --json writes the raw numbers too.

    python tools/bench/kv_quality.py                                  # all models, all configs
    python tools/bench/kv_quality.py --models smollm2-135m --chunks 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tq_gguf.gguf import ggufinfo, models  # noqa: E402
from tq_gguf.kv.cacheconfig import CacheConfig  # noqa: E402

if TYPE_CHECKING:
    from tq_gguf.analysis.evaluate import Evaluation

CONFIGS = ["q8_0/q8_0", "q4_0/q4_0", "q8_0/q4_0", "q8_0/turbo4", "q8_0/turbo3", "q8_0/turbo2",
           "turbo4/turbo4", "turbo3/turbo3", "turbo4/turbo3"]
# 512-token chunks per model: what a 2-core machine runs in about 15 minutes for all three
DEFAULT_CHUNKS = {"smollm2-135m": 8, "gemma3-270m": 8, "qwen2.5-coder-1.5b": 4}
KV_CTX = 8192  # the table's KV column, the same context for every model


def markdown(evaluations: dict[str, Evaluation]) -> str:
    lines = ["| model | K/V | PPL | mean KLD | top-1 % | KV MiB @ 8K |", "|---|---|---|---|---|---|"]
    for name, ev in evaluations.items():
        info = ggufinfo.read(ev.model)
        for s in (ev.base, *ev.scores):
            kld = f"{s.kld:.5f} ± {s.kld_err:.5f}" if s.kld is not None else "(base)"
            top1 = f"{s.top1:.2f}" if s.top1 is not None else "(base)"
            kv_mib = CacheConfig.parse(s.config).kv_bytes(info, KV_CTX) / 2**20
            lines.append(f"| {name} | {s.config} | {s.ppl:.3f} ± {s.ppl_err:.3f} | {kld} | {top1} | {kv_mib:.1f} |")
    return "\n".join(lines)


def report(name: str, config: str, n: int) -> None:
    print(f"{name} {config}: {n} more chunk(s) scored", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_CHUNKS))
    ap.add_argument("--configs", nargs="+", default=CONFIGS)
    ap.add_argument("--chunks", type=int, help="512-token chunks per model (default: per model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args()

    from tq_gguf.analysis.evaluate import evaluate  # deferred: tq_gguf.runtime loads the native build; --help needs none

    configs = [CacheConfig.parse(c) for c in args.configs]
    evaluations: dict[str, Evaluation] = {}
    for name in args.models:
        chunks = args.chunks or DEFAULT_CHUNKS.get(name, 8)
        evaluations[name] = evaluate(models.fetch(name), configs, chunks=chunks, threads=args.threads,
                                     progress=lambda config, n, name=name: report(name, config, n))
    print(markdown(evaluations))
    if args.json:
        args.json.write_text(json.dumps({name: ev.as_dict() for name, ev in evaluations.items()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
