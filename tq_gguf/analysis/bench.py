"""Speed of KV-cache configs: decode and prefill tokens/s through llama-bench.

Every config runs in one llama-bench process per config (flash attention on),
with the baselines (f16/f16, then q8_0/q8_0) measured in the same session, so ratios
compare runs on the same machine under the same load. llama-bench takes one K
and one V type for the whole model: configs with per-layer types are refused.

On a shared machine the speed drifts over minutes, and one config's process can
meet a slow spell another's missed (run to run, ±15% was seen on a 2-core VM where
repetitions inside one process agreed within 2%). With `rounds` > 1 every config
runs once per round, in turns, and each figure is the median of its rounds, so a
slow spell falls on all configs alike.

Decode reads every weight and the whole KV cache once per token, so its speed is
bounded by memory bandwidth: the run also times a plain memory copy and reports,
per decode test, the bytes read per token and the share of the copy speed reached.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import CacheTypeError, TqError
from ..gguf import ggufinfo
from ..kv import plan
from ..kv.cacheconfig import CacheConfig
from ..runtime import lowlevel
from . import llamatool

BASELINE = CacheConfig.of("f16", "f16")
BASELINES = (BASELINE, CacheConfig.of("q8_0", "q8_0"))
DEFAULT_DEPTHS = (0, 4096, 8192)
COPY_BYTES = 256 << 20  # per copy: far beyond any cache level
COPY_REPS = 5

Column = tuple[str, int]  # ("tg" decode | "pp" prefill, context depth)


@dataclass(frozen=True)
class Speed:
    tokens_per_s: float
    stddev: float  # llama-bench's over repetitions, or over rounds when there are several


def median_speed(rounds: Sequence[Speed]) -> Speed:
    """One config's figure from its rounds: the median tokens/s, with the spread of the rounds'
    figures (llama-bench's own spread when there is one round)."""
    if len(rounds) == 1:
        return rounds[0]
    speeds = [r.tokens_per_s for r in rounds]
    return Speed(float(np.median(speeds)), float(np.std(speeds, ddof=1)))


@dataclass
class ConfigSpeed:
    config: str
    preset: str | None
    speeds: dict[Column, Speed]


@dataclass
class Bench:
    model: str
    n_prompt: int
    n_gen: int
    depths: tuple[int, ...]
    reps: int
    threads: int | None
    baselines: tuple[str, ...]
    rounds: int = 1
    copy_bytes_per_s: float = 0.0  # memory copy speed measured in the same run (bytes copied per second)
    weight_bytes: int = 0          # read once per decoded token
    kv_read: dict[tuple[str, int], int] = field(default_factory=dict)  # (config, depth) -> KV bytes per token
    results: list[ConfigSpeed] = field(default_factory=list)

    @property
    def columns(self) -> list[Column]:
        """Decode columns, then prefill, each by depth; -n 0 or -p 0 drops a kind."""
        kinds = [k for k, n in (("tg", self.n_gen), ("pp", self.n_prompt)) if n > 0]
        return [(kind, d) for kind in kinds for d in self.depths]

    def column_name(self, column: Column) -> str:
        kind, depth = column
        return f"{kind}{self.n_gen if kind == 'tg' else self.n_prompt} @ d{depth}"

    def result(self, config: str) -> ConfigSpeed:
        return next(r for r in self.results if r.config == config)

    def ratio(self, config: str, column: Column, baseline: str | None = None) -> float:
        """tokens/s of `config` over the baseline's (default: f16/f16) in the same column."""
        base = self.result(baseline or self.baselines[0]).speeds[column].tokens_per_s
        return self.result(config).speeds[column].tokens_per_s / base

    def read_per_token(self, config: str, depth: int) -> int:
        """Bytes a decoded token reads at `depth`: every weight and the KV cache (the model file's
        size stands for the weights)."""
        return self.weight_bytes + self.kv_read[config, depth]

    def bandwidth_share(self, config: str, column: Column) -> float:
        """Bytes read per second by the decode test in `column`, over the copy speed."""
        kind, depth = column
        if kind != "tg" or not self.copy_bytes_per_s:
            raise ValueError("a bandwidth share exists for decode tests only")
        speed = self.result(config).speeds[column].tokens_per_s
        return speed * self.read_per_token(config, depth) / self.copy_bytes_per_s

    def as_dict(self) -> dict:
        return {
            "model": self.model, "n_prompt": self.n_prompt, "n_gen": self.n_gen, "depths": list(self.depths),
            "reps": self.reps, "rounds": self.rounds, "threads": self.threads, "baselines": list(self.baselines),
            "copy_bytes_per_s": self.copy_bytes_per_s, "weight_bytes": self.weight_bytes,
            "results": [
                {"config": r.config, "preset": r.preset, "tests": [
                    {"test": self.column_name(c), "kind": c[0], "depth": c[1],
                     "tokens_per_s": r.speeds[c].tokens_per_s, "stddev": r.speeds[c].stddev,
                     **{f"ratio_{b.replace('/', '_')}": self.ratio(r.config, c, b) for b in self.baselines},
                     **({"read_bytes_per_token": self.read_per_token(r.config, c[1]),
                         "bandwidth_share": self.bandwidth_share(r.config, c)} if c[0] == "tg" else {})}
                    for c in self.columns]}
                for r in self.results],
        }


def check_uniform(config: CacheConfig) -> CacheConfig:
    """The one K/V pair llama-bench can run for `config`; refuses per-layer configs."""
    if config.mixed:
        name = f"{config.preset} ({config})" if config.preset else str(config)
        raise CacheTypeError(
            f"llama-bench has no per-layer cache types, so it cannot run {name}, which keeps the first and last "
            f"{config.boundary} layers at q8_0; bench {config.k.name}/{config.v.name} instead"
        )
    return CacheConfig.of(config.k.name, config.v.name, smooth_k=config.smooth_k)


def parse(stdout: str) -> dict[Column, Speed]:
    """llama-bench's `-o json` rows, by (kind, depth)."""
    try:
        rows = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise llamatool.ToolError(f"llama-bench printed no JSON results ({exc})") from None
    return {("pp" if row["n_prompt"] > 0 else "tg", row["n_depth"]): Speed(row["avg_ts"], row["stddev_ts"])
            for row in rows}


def runs(model_path: Path, configs: Sequence[CacheConfig],
         baselines: Sequence[CacheConfig] = BASELINES) -> list[CacheConfig]:
    """The configs to run, baselines first, each checked against the model and llama-bench."""
    info = ggufinfo.read(model_path)
    ordered = list(dict.fromkeys([*baselines, *configs]))
    for config in ordered:
        check_uniform(config).validate(info, flash_attn=True)
    lowlevel.check_loads(model_path)
    return ordered


def copy_speed(threads: int) -> float:
    """Bytes per second a plain memory copy moves (the best of COPY_REPS), with `threads` copies
    side by side, as decode reads with that many threads (numpy lets go of the GIL while it copies)."""
    per = COPY_BYTES // threads
    pairs = [(np.ones(per, np.uint8), np.empty(per, np.uint8)) for _ in range(threads)]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(COPY_REPS):
            t0 = time.perf_counter()
            list(pool.map(lambda p: np.copyto(p[1], p[0]), pairs))
            best = min(best, time.perf_counter() - t0)
    return per * threads / best


def kv_read_per_token(info, config: CacheConfig, depth: int, n_gen: int) -> int:
    """KV bytes a decode test at `depth` reads per token: the cache view at its middle token
    (llama.cpp pads the view to 256 cells; sliding-window layers read their window only)."""
    uniform = check_uniform(config)
    types_k = [uniform.k] * info.n_layer
    types_v = [uniform.v] * info.n_layer
    # llama.cpp's tools keep only the window in SWA layers
    tool = plan.ContextParams(swa_full=False, smooth_k=uniform.smooth_k)
    return plan.kv_size(info, max(1, depth + n_gen // 2), types_k, types_v, tool).total


def bench(model_path: Path, configs: Sequence[CacheConfig], *, depths: Sequence[int] = DEFAULT_DEPTHS,
          n_prompt: int = 512, n_gen: int = 64, reps: int = 2, rounds: int = 1, threads: int | None = None,
          baselines: Sequence[CacheConfig] = BASELINES,
          progress: Callable[[Bench, ConfigSpeed, int, int], None] | None = None) -> Bench:
    """Run llama-bench for the baselines, then every config, `rounds` times in turns;
    `progress(bench, speeds, done, total)` after each process."""
    if n_prompt == 0 and n_gen == 0:
        raise TqError("nothing to measure: -p and -n are both 0")
    if rounds < 1:
        raise TqError(f"rounds must be at least 1, not {rounds}")
    ordered = runs(model_path, configs, baselines)  # refuse anything unrunnable before timing the rest
    result = Bench(model=str(model_path), n_prompt=n_prompt, n_gen=n_gen, depths=tuple(dict.fromkeys(depths)),
                   reps=reps, threads=threads, baselines=tuple(str(b) for b in baselines), rounds=rounds)
    info = ggufinfo.read(model_path)
    result.weight_bytes = model_path.stat().st_size
    result.kv_read = {(str(c), d): kv_read_per_token(info, c, d, n_gen) for c in ordered for d in result.depths}
    if n_gen:
        result.copy_bytes_per_s = copy_speed(threads or 1)
    measured: dict[str, list[dict[Column, Speed]]] = {str(c): [] for c in ordered}
    total = rounds * len(ordered)
    for done, config in enumerate((c for _ in range(rounds) for c in ordered), start=1):
        uniform = check_uniform(config)
        stdout, _ = llamatool.run("llama-bench", [
            "-m", str(model_path), "-p", str(n_prompt), "-n", str(n_gen), "-d", ",".join(map(str, result.depths)),
            "-ctk", uniform.k.name, "-ctv", uniform.v.name, *(["-sk"] if uniform.smooth_k else []),
            "-fa", "on", "-r", str(reps), "-o", "json",
            *(["-t", str(threads)] if threads else [])])
        measured[str(config)].append(parse(stdout))
        if progress:
            progress(result, ConfigSpeed(str(config), config.preset, measured[str(config)][-1]), done, total)
    for config in ordered:
        per_round = measured[str(config)]
        result.results.append(ConfigSpeed(str(config), config.preset,
                                          {c: median_speed([r[c] for r in per_round]) for c in per_round[0]}))
    return result
