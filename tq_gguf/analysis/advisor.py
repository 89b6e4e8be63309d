"""`advise`: measure a model's K/V rows and recommend a KV-cache config.

    from tq_gguf import advise
    advice = advise("model.gguf")              # the most compact config that meets the quality bar
    advice = advise("model.gguf", budget_bits=4.5)  # the best config within 4.5 bits per value
    print(advice.config, advice.reasons)

The model reads a short built-in text (kvprobe); every layer's Q, K and V are
captured and each candidate cache type is applied to them as llama.cpp would
(kvstats). One number decides: the **attention-output error** of a layer,
‖o' − o‖² / ‖o‖² with o the exact attention output and o' the one computed from
the quantized K and V (K and V errors add). Its mean over the layers predicts
the model's output KL divergence: on the three models of docs/QUALITY.md's table,
its mean KLD is 0.74-3.2x this mean for the 20 configurations there that
neither break a model nor are q8_0/q8_0 (whose KLD, 0.004-0.007, is a floor set
by other numerics; ratios computed from `tq-gguf advise --json`). Each layer is
measured on exact inputs, so what errors do to later layers is what the mean
stands for. A single layer with a large error can break a model instead of
degrading it, which the mean does not see; hence a per-layer limit too.

The candidates are the presets' K/V pairs, each also with its first and last
1..MAX_BOUNDARY layers kept at q8_0 (`K/V:bN`). Given the context length the
cache is for (`ctx`), the advice also sizes the cache there, and from
LONG_CONTEXT tokens on it keeps keys at q8_0.

The rules (the limits, the candidates, the choice) are in advisorrules, the reasons' text in
advisorwording; this module measures, applies them and returns the Advice.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import TqError
from ..gguf import models
from ..kv import plan
from ..kv.cacheconfig import CacheConfig
from .advisorrules import (KLD_PER_ERR, LAYER_LIMIT, LONG_CONTEXT, LONG_CONTEXT_KEY, MAX_BOUNDARY, PPL_WITHIN,
                           QUALITY_BAR, Candidate, bits_per_value, candidate_configs, choose, evaluate, is_long)
from .advisorwording import reasons_for
from .kvprobe import Probe, capture
from .kvstats import OUTLIER_FACTOR, LayerStats, check_head_sizes, measure

# The advisor's names, wherever they are defined: callers and tests use them from here.
__all__ = ["KLD_PER_ERR", "LAYER_LIMIT", "LONG_CONTEXT", "LONG_CONTEXT_KEY", "MAX_BOUNDARY", "PPL_WITHIN",
           "QUALITY_BAR", "Advice", "Candidate", "advise", "advise_probe", "bits_per_value", "candidate_configs",
           "check_budget", "check_context", "choose", "evaluate", "is_long", "reasons_for"]


@dataclass
class Advice:
    model: str
    arch: str
    n_layer: int
    head_dim_k: int
    head_dim_v: int
    n_head_kv: int
    n_tokens: int
    budget_bits: float | None
    ctx: int | None         # the context length the advice is for (None: not given)
    kv_bytes_f16: int | None  # an f16 cache at that context
    recommended: Candidate
    reasons: list[str]
    candidates: list[Candidate]
    layers: list[LayerStats]
    seconds: float
    thresholds: dict[str, float] = field(default_factory=lambda: {
        "layer_limit": LAYER_LIMIT, "quality_bar": QUALITY_BAR, "outlier_factor": OUTLIER_FACTOR})

    @property
    def config(self) -> CacheConfig:
        return CacheConfig.parse(self.recommended.config)

    def as_dict(self) -> dict:
        """Plain data for JSON; a statistic that is not finite (a degenerate layer) becomes None."""
        out = _finite(asdict(self))
        out["recommended"]["cli"] = " ".join(self.config.cli_args(self.n_layer))
        return out


def _finite(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


# --- entry point --------------------------------------------------------------------------------

def check_budget(budget_bits: float | None, n_layer: int, head_dim_k: int, head_dim_v: int) -> None:
    if budget_bits is None:
        return
    smallest = min(candidate_configs(n_layer), key=lambda c: bits_per_value(c, n_layer, head_dim_k, head_dim_v))
    floor = bits_per_value(smallest, n_layer, head_dim_k, head_dim_v)
    if budget_bits < floor - 1e-9:
        name = f"{smallest.preset} ({smallest})" if smallest.preset else str(smallest)
        raise TqError(f"a budget of {budget_bits:g} bits per value is below every candidate; the smallest, "
                      f"{name}, stores {floor:.2f}")


def check_context(ctx: int | None, info) -> None:
    if ctx is None:
        return
    if ctx < 1:
        raise TqError(f"the context length must be a positive number of tokens, got {ctx}")
    if info.n_ctx_train and ctx > info.n_ctx_train:
        raise TqError(f"a context of {ctx} tokens is beyond {info.path.name}'s training context "
                      f"({info.n_ctx_train} tokens); nothing the advice rests on was measured there")


def _cache_bytes(info, config: CacheConfig, ctx: int) -> int:
    return plan.kv_bytes(info, ctx, *config.layer_types(info.n_layer))


def advise_probe(probe: Probe, budget_bits: float | None = None, ctx: int | None = None) -> Advice:
    """The advice for an already captured probe (what `advise` does after reading the model)."""
    info = probe.info
    check_budget(budget_bits, info.n_layer, info.head_dim_k, info.head_dim_v)
    check_context(ctx, info)
    stats = measure(probe)
    candidates = [evaluate(c, stats, info.head_dim_k, info.head_dim_v, ctx and _cache_bytes(info, c, ctx))
                  for c in candidate_configs(info.n_layer)]
    f16 = ctx and _cache_bytes(info, CacheConfig.of("f16", "f16"), ctx)
    chosen = choose(candidates, budget_bits, ctx)
    return Advice(
        model=str(info.path), arch=info.arch, n_layer=info.n_layer, head_dim_k=info.head_dim_k,
        head_dim_v=info.head_dim_v, n_head_kv=info.n_head_kv, n_tokens=probe.n_tokens, budget_bits=budget_bits,
        ctx=ctx, kv_bytes_f16=f16, recommended=chosen,
        reasons=reasons_for(chosen, candidates, stats, budget_bits, ctx, f16), candidates=candidates,
        layers=stats, seconds=0.0,
    )


def advise(model_path: str | Path | None = None, budget_bits: float | None = None,
           n_threads: int | None = None, ctx: int | None = None) -> Advice:
    """Read the model (a GGUF path or a known model name; None: the default model), measure its K/V
    rows and recommend a cache config; with `budget_bits`, the best one within that many bits per value;
    with `ctx`, for a cache of that many tokens (sized in the advice; long ones keep keys at q8_0)."""
    start = time.perf_counter()
    if budget_bits is not None and budget_bits <= 0:
        raise TqError(f"the budget must be a positive number of bits per value, got {budget_bits:g}")
    path = models.resolve(None if model_path is None else str(model_path))

    def before_reading(info) -> None:
        # Fail on what the measurements cannot change before the model reads the text.
        check_head_sizes(info.head_dim_k, info.head_dim_v)
        check_budget(budget_bits, info.n_layer, info.head_dim_k, info.head_dim_v)
        check_context(ctx, info)

    probe = capture(path, n_threads=n_threads or os.cpu_count() or 2, check=before_reading)
    advice = advise_probe(probe, budget_bits, ctx)
    advice.seconds = time.perf_counter() - start
    return advice
