#!/usr/bin/env python3
"""Quality of KV-cache configurations on real models: perplexity, KL divergence, top-1.

For each model, llama-perplexity first runs with an f16/f16 cache and saves its
logits (--kl-divergence-base); every other K/V configuration is then scored
against those logits (--kl-divergence). The text is git's release notes (see
tq_gguf/evaltext.py), at c = 512 with flash attention on. Prints a Markdown
table; --json writes the raw numbers too.

    python tools/kv_quality.py                                  # all models, all configs
    python tools/kv_quality.py --models smollm2-135m --chunks 8
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tq_gguf import cachetypes, ggufinfo, models  # noqa: E402
from tq_gguf.build import tool_path  # noqa: E402
from tq_gguf.evaltext import git_release_notes  # noqa: E402

CONFIGS = ["f16/f16", "q8_0/q8_0", "q4_0/q4_0", "q8_0/q4_0", "q8_0/turbo4", "q8_0/turbo3", "q8_0/turbo2",
           "turbo4/turbo4", "turbo3/turbo3", "turbo4/turbo3"]
# 512-token chunks per model: what a 2-core machine runs in about 15 minutes for all three
DEFAULT_CHUNKS = {"smollm2-135m": 8, "gemma3-270m": 8, "qwen2.5-coder-1.5b": 4}


@dataclass
class Result:
    model: str
    config: str
    ppl: float
    ppl_err: float
    kld: float | None
    kld_err: float | None
    top1: float | None
    kv_mib_8k: float


def parse(output: str) -> dict[str, float]:
    out: dict[str, float] = {}
    if m := re.search(r"Mean PPL\(Q\)\s*:\s*([\d.]+)\s*±\s*([\d.]+)", output):
        out["ppl"], out["ppl_err"] = float(m.group(1)), float(m.group(2))
    elif m := re.search(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)", output):
        out["ppl"], out["ppl_err"] = float(m.group(1)), float(m.group(2))
    if m := re.search(r"Mean\s+KLD:\s*([-\d.]+)\s*±\s*([\d.]+)", output):
        out["kld"], out["kld_err"] = float(m.group(1)), float(m.group(2))
    if m := re.search(r"Same top p:\s*([\d.]+)", output):
        out["top1"] = float(m.group(1))
    return out


def run_perplexity(model: Path, k: str, v: str, extra: list[str], threads: int) -> str:
    cmd = [str(tool_path("llama-perplexity")), "-m", str(model), "-c", "512", "-t", str(threads),
           "-fa", "on", "-ctk", k, "-ctv", v, *extra]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"llama-perplexity failed for {model.name} {k}/{v}:\n{res.stderr[-3000:]}")
    return res.stdout + res.stderr


def kv_mib(info: ggufinfo.ModelInfo, k: str, v: str, n_ctx: int = 8192) -> float:
    return info.kv_bytes(n_ctx, cachetypes.get(k), cachetypes.get(v)) / 2**20


def evaluate(model_name: str, configs: list[str], chunks: int, threads: int, workdir: Path) -> list[Result]:
    path = models.fetch(model_name)
    info = ggufinfo.read(path)
    text = workdir / "eval.txt"
    text.write_text(git_release_notes(2_000_000))
    base = workdir / f"{model_name}.kld"
    out = run_perplexity(path, "f16", "f16", ["-f", str(text), "--chunks", str(chunks), "--kl-divergence-base", str(base)], threads)
    results = [Result(model_name, "f16/f16", **parse(out), kld=0.0, kld_err=0.0, top1=100.0, kv_mib_8k=kv_mib(info, "f16", "f16"))]
    print(f"{model_name} f16/f16: PPL {results[0].ppl:.3f}", file=sys.stderr)
    for config in configs:
        if config == "f16/f16":
            continue
        k, v = config.split("/")
        out = run_perplexity(path, k, v, ["--kl-divergence-base", str(base), "--kl-divergence"], threads)
        p = parse(out)
        r = Result(model_name, config, p["ppl"], p["ppl_err"], p.get("kld"), p.get("kld_err"), p.get("top1"), kv_mib(info, k, v))
        print(f"{model_name} {config}: PPL {r.ppl:.3f} KLD {r.kld} top1 {r.top1}", file=sys.stderr)
        results.append(r)
    return results


def markdown(results: list[Result]) -> str:
    lines = ["| model | K/V | PPL | mean KLD | top-1 % | KV MiB @ 8K |", "|---|---|---|---|---|---|"]
    for r in results:
        kld = f"{r.kld:.5f} ± {r.kld_err:.5f}" if r.kld is not None else "–"
        top1 = f"{r.top1:.2f}" if r.top1 is not None else "–"
        lines.append(f"| {r.model} | {r.config} | {r.ppl:.3f} ± {r.ppl_err:.3f} | {kld} | {top1} | {r.kv_mib_8k:.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_CHUNKS))
    ap.add_argument("--configs", nargs="+", default=CONFIGS)
    ap.add_argument("--chunks", type=int, help="512-token chunks per model (default: per model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    args = ap.parse_args()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            results += evaluate(name, args.configs, args.chunks or DEFAULT_CHUNKS.get(name, 8), args.threads, Path(tmp))
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
