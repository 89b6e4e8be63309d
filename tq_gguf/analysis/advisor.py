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
from ..kv.cacheconfig import BOUNDARY_TYPE, PRESETS, CacheConfig
from .kvprobe import Probe, capture
from .kvstats import OUTLIER_FACTOR, LayerStats, check_head_sizes, measure

# Largest per-layer attention-output error a recommended config may have. The models
# that collapse in README's table each have one layer with an error near 1 (the
# attention output is then mostly error): turbo4 keys put Qwen2.5-Coder's layer 0 at
# 1.05 and its KLD is 6.3 instead of the ~0.1 its mean error predicts; keeping only
# layers 0 and 27 at q8_0 (turbo4/turbo3:b1) brings the 256-token KL against f16 from
# 5.9 to 0.07. Not every such layer collapses a model (under turbo3 keys Gemma 3's
# layer 11 reaches 1.06 and its KLD still follows the mean), so the limit sits well
# below 1: 0.25, an error a quarter of the output's energy, is above every layer of
# the configs README finds within 2.5% of f16 perplexity (at most 0.036; q8_0/turbo2
# at most 0.10) and below Gemma's worst layer under turbo4 keys (0.48), a config
# README puts at +15% perplexity.
LAYER_LIMIT = 0.25

# Largest mean attention-output error of the config recommended without a budget.
# README, with the encoder's scale search: q8_0/turbo3 is within PPL_WITHIN of f16
# perplexity on all three models (+2.1%, +2.3%, -0.9%) and measures 0.018 here on SmolLM2
# (Gemma 3: 0.016); the next configs README measures on SmolLM2, the most sensitive of
# the three, are further off: turbo4/turbo4 (0.024 here, +3.9% perplexity) and
# q4_0/q4_0 (0.025, +5.1%). The bar lies between. (Qwen2.5 tolerates more: q8_0/turbo2
# stays within 2% at 0.068; the bar follows the most sensitive model.)
QUALITY_BAR = 0.022
PPL_WITHIN = "2.5%"  # what README measures for the configs under the bar

# The most boundary layers a candidate protects at each end (the `max` preset's 2):
# protecting more costs q8_0's 8.5 bits in a growing share of a small model's layers.
MAX_BOUNDARY = 2

# README's mean KLD over the mean attention-output error, lowest and highest, on the 20
# configs of its quality table that neither break a model nor are q8_0/q8_0 (module doc).
KLD_PER_ERR = (0.7, 3.2)

# From this context length on, only candidates with q8_0 keys are recommended. The probe
# reads a short text, so its errors are short-context errors; README's long-context
# measurements show where that stops holding. Gemma 3 at 8192 tokens: the two configs
# with 4-bit keys lost the needle farthest from the question (turbo4/turbo3 and q4_0/q4_0
# 0 of 2 at depth 0, where f16 and every q8_0-key config found 2 of 2), and their KL
# divergence grew with the window (up to 1.14x the 512-token figure) while every q8_0-key
# config's fell (0.75-0.86x). SmolLM2 with turbo4 keys retrieved exactly where f16 did at
# 4096 and at 8192 tokens (at 8192 only the needle next to the question, f16 included, so
# that says little). Few trials, so a caution rather than a rate, but the risk is one a
# short probe cannot see.
LONG_CONTEXT = 8192
LONG_CONTEXT_KEY = BOUNDARY_TYPE

# How many entries the reasons list when they name layers.
_MAX_NAMED = 4


@dataclass(frozen=True)
class Candidate:
    """One config evaluated on the measured layers."""

    config: str
    preset: str | None
    bits_per_value: float   # mean over K and V values of all layers (f16: 16)
    mean_err: float         # mean attention-output error over the layers
    worst_layer: int
    worst_err: float
    over_limit: list[int]   # layers above LAYER_LIMIT
    kv_bytes: int | None = None  # the cache at the advice's context length (none given: None)

    @property
    def eligible(self) -> bool:
        return not self.over_limit

    @property
    def keeps_keys(self) -> bool:
        """Whether every layer's keys are at LONG_CONTEXT_KEY (what long contexts need)."""
        return CacheConfig.parse(self.config).k.name == LONG_CONTEXT_KEY


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


# --- evaluating candidates -----------------------------------------------------------------------

def _pairs() -> list[tuple[str, str]]:
    """The presets' distinct K/V pairs."""
    seen: list[tuple[str, str]] = []
    for preset in PRESETS.values():
        pair = (preset.config.k.name, preset.config.v.name)
        if pair not in seen:
            seen.append(pair)
    return seen


def candidate_configs(n_layer: int) -> list[CacheConfig]:
    out = []
    for k, v in _pairs():
        for b in range(MAX_BOUNDARY + 1):
            if b and ((k, v) == (BOUNDARY_TYPE, BOUNDARY_TYPE) or 2 * b >= n_layer):
                continue  # protecting q8_0/q8_0 changes nothing; too few layers left to compress
            out.append(CacheConfig.of(k, v, b))
    return out


def bits_per_value(config: CacheConfig, n_layer: int, head_dim_k: int, head_dim_v: int) -> float:
    k_types, v_types = config.layer_types(n_layer)
    total = sum(k.bits_per_value * head_dim_k + v.bits_per_value * head_dim_v for k, v in zip(k_types, v_types))
    return total / (n_layer * (head_dim_k + head_dim_v))


def evaluate(config: CacheConfig, stats: list[LayerStats], head_dim_k: int, head_dim_v: int,
             kv_bytes: int | None = None) -> Candidate:
    n_layer = len(stats)
    k_types, v_types = config.layer_types(n_layer)
    errs = [s.out_err(k.name, v.name) for s, k, v in zip(stats, k_types, v_types)]
    worst = max(range(n_layer), key=errs.__getitem__)
    return Candidate(
        config=str(config), preset=config.preset,
        bits_per_value=bits_per_value(config, n_layer, head_dim_k, head_dim_v),
        mean_err=sum(errs) / n_layer, worst_layer=worst, worst_err=errs[worst],
        over_limit=[il for il, e in enumerate(errs) if e > LAYER_LIMIT], kv_bytes=kv_bytes,
    )


def is_long(ctx: int | None) -> bool:
    return ctx is not None and ctx >= LONG_CONTEXT


def choose(candidates: list[Candidate], budget_bits: float | None, ctx: int | None = None) -> Candidate:
    """Without a budget: the fewest bits among configs that meet the quality bar and the layer limit.
    With one: the lowest mean error among configs within the budget that meet the layer limit.
    For a context of LONG_CONTEXT tokens or more, only configs that keep keys at q8_0 qualify."""
    eligible = [c for c in candidates if c.eligible]
    if not eligible:
        # Even q8_0/q8_0 has a layer over the limit. f16 is not a candidate (it is not a compression):
        # return the least damaging one; the reasons say it fails the limit and point to f16 keys.
        return min(candidates, key=lambda c: c.mean_err)
    if is_long(ctx):
        eligible = [c for c in eligible if c.keeps_keys]
        if not eligible:  # only 4-bit keys pass the layer limit: q8_0 keys matter more here
            return min((c for c in candidates if c.keeps_keys), key=lambda c: c.mean_err)
    if budget_bits is None:
        good = [c for c in eligible if c.mean_err <= QUALITY_BAR]
        if not good:
            return min(eligible, key=lambda c: (c.mean_err, c.bits_per_value))
        return min(good, key=lambda c: (round(c.bits_per_value, 6), c.mean_err))
    fitting = [c for c in eligible if c.bits_per_value <= budget_bits + 1e-9]
    if not fitting:
        smallest = min(eligible, key=lambda c: c.bits_per_value)
        need = f"keeps every layer's attention-output error under {LAYER_LIMIT}"
        if is_long(ctx):
            need += (f" and keys at {LONG_CONTEXT_KEY}, as a context of {ctx} tokens needs (4-bit keys lost far "
                     f"needles at {LONG_CONTEXT} tokens: README, Long context)")
        raise TqError(f"no config within {budget_bits:g} bits per value {need}; the smallest that does is "
                      f"{_name(smallest)} at {smallest.bits_per_value:.2f} bits")
    return min(fitting, key=lambda c: (c.mean_err, c.bits_per_value))


# --- reasons ------------------------------------------------------------------------------------

def _name(c: Candidate) -> str:
    return f"{c.preset} ({c.config})" if c.preset else c.config


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _layers(items: list[str]) -> str:
    shown = items[:_MAX_NAMED]
    more = len(items) - len(shown)
    text = ", ".join(shown)
    return text + (f" and {more} more" if more > 0 else "")


def _key_reasons(stats: list[LayerStats]) -> list[str]:
    worst = max(stats, key=lambda s: s.k.channel_ratio)
    with_outliers = [s for s in stats if s.k.outlier_channels]
    if with_outliers:
        ranked = sorted(with_outliers, key=lambda s: -s.k.channel_ratio)
        named = [f"{s.layer} ({s.k.channel_ratio:.0f}x, {_count(s.k.outlier_channels, 'channel')})" for s in ranked]
        head = (f"Keys have outlier channels (RMS over {OUTLIER_FACTOR:g}x the layer's median channel) in "
                f"{len(with_outliers)} of {len(stats)} layers: {_layers(named)}.")
    else:
        head = (f"Keys have no outlier channels: no channel's RMS exceeds {OUTLIER_FACTOR:g}x its layer's median "
                f"(largest {worst.k.channel_ratio:.1f}x, layer {worst.layer}).")
    spread = max(stats, key=lambda s: s.k.norm_spread)
    tails = max(stats, key=lambda s: s.k.kurtosis)
    head += (f" The 99th-percentile key norm is at most {spread.k.norm_spread:.2f}x the median (layer {spread.layer});"
             f" the kurtosis of key values reaches {tails.k.kurtosis:.0f} (layer {tails.layer}; a Gaussian has 3).\n")
    head = head.rstrip()

    t4 = [(s.layer, s.out_err("turbo4", BOUNDARY_TYPE)) for s in stats]
    over = [(il, e) for il, e in t4 if e > LAYER_LIMIT]
    if over:
        named = [f"{il} ({e:.2f}, channels up to {stats[il].k.channel_ratio:.0f}x)" for il, e in
                 sorted(over, key=lambda x: -x[1])]
        ends = all(il < MAX_BOUNDARY or il >= len(stats) - MAX_BOUNDARY for il, _ in over)
        tail = (f"; these are boundary layers, so turbo4 keys are possible only with them kept at {BOUNDARY_TYPE}"
                if ends else "; they are not all at the ends of the model, so keys stay at q8_0")
        verdict = (f"turbo4 keys would push the attention-output error of layer {_layers(named)} over the "
                   f"per-layer limit of {LAYER_LIMIT}{tail}.")
    else:
        il, e = max(t4, key=lambda x: x[1])
        mean = sum(s.k_attn["turbo4"].out_err for s in stats) / len(stats)
        verdict = (f"turbo4 keys keep every layer under the per-layer limit of {LAYER_LIMIT} (worst: layer {il} at "
                   f"{e:.3f}) and add {mean:.3f} to the mean attention-output error.")
    q4 = sum(s.k.rel_mse["q4_0"] for s in stats) / len(stats)
    t4m = sum(s.k.rel_mse["turbo4"] for s in stats) / len(stats)
    return [head, verdict + f" (Relative MSE of the key rows: turbo4 {t4m:.4f}, q4_0 {q4:.4f}.)"]


def _value_reason(stats: list[LayerStats]) -> str:
    mean = {t: sum(s.v_out_err[t] for s in stats) / len(stats) for t in ("turbo4", "turbo3", "turbo2")}
    worst = max(stats, key=lambda s: s.v_out_err["turbo3"])
    heavy = [s for s in stats if s.v.outlier_channels]
    extra = (f" Values have outlier channels in layer {_layers([str(s.layer) for s in heavy])}."
             if heavy else " Values have no outlier channels.")
    return (f"Values: turbo3 adds a mean attention-output error of {mean['turbo3']:.3f} (turbo4 {mean['turbo4']:.3f}, "
            f"turbo2 {mean['turbo2']:.3f}); the worst turbo3 layer is {worst.layer} at "
            f"{worst.v_out_err['turbo3']:.3f}." + extra)


def _expected_kld(mean_err: float) -> str:
    lo, hi = KLD_PER_ERR
    return f"README's models put the output KL divergence at {lo}-{hi}x the mean error, so about " \
           f"{lo * mean_err:.2f}-{hi * mean_err:.2f} here"


def _boundary_reason(chosen: Candidate, cfg: CacheConfig, by_name: dict[str, Candidate],
                     stats: list[LayerStats]) -> str:
    pair = f"{cfg.k.name}/{cfg.v.name}"
    plain = by_name[pair]
    kept = f"The first and last {_count(cfg.boundary, 'layer')} stay at {BOUNDARY_TYPE}/{BOUNDARY_TYPE}"
    if not plain.over_limit:
        return (f"{kept}: that lowers the mean error from {plain.mean_err:.3f} ({pair} everywhere) to "
                f"{chosen.mean_err:.3f}.")
    over = ", ".join(f"{il} ({stats[il].out_err(cfg.k.name, cfg.v.name):.2f})" for il in plain.over_limit)
    text = f"{kept}: {pair} would put layer {over} over the per-layer limit of {LAYER_LIMIT}"
    needed = max(min(il + 1, len(stats) - il) for il in plain.over_limit)
    if needed < cfg.boundary:
        fewer = by_name[str(CacheConfig.of(cfg.k.name, cfg.v.name, needed))]
        text += (f"; protecting {cfg.boundary} rather than {needed} lowers the mean error from "
                 f"{fewer.mean_err:.3f} to {chosen.mean_err:.3f}")
    return text + "."


def _decision_reasons(chosen: Candidate, candidates: list[Candidate], stats: list[LayerStats],
                      budget_bits: float | None, ctx: int | None) -> list[str]:
    out = []
    what = (f"{_name(chosen)}: {chosen.bits_per_value:.2f} bits per value (f16: 16), predicted mean "
            f"attention-output error {chosen.mean_err:.3f}, worst layer {chosen.worst_layer} at {chosen.worst_err:.3f}")
    if not chosen.eligible:
        out.append(f"No candidate keeps every layer under {LAYER_LIMIT}; the least damaging is {what}. Layer "
                   f"{_layers([str(i) for i in chosen.over_limit])} stay over the limit even so: consider f16 keys.")
        return out
    if budget_bits is None:
        if chosen.mean_err <= QUALITY_BAR:
            out.append(f"Recommended {what}: the most compact candidate whose mean error stays within {QUALITY_BAR} "
                       f"(README's models stay within {PPL_WITHIN} of f16 perplexity below it) with every layer under "
                       f"{LAYER_LIMIT}.")
        else:
            out.append(f"Recommended {what}: no candidate meets the quality bar of {QUALITY_BAR}, so this is the one "
                       f"with the lowest error; expect more than {PPL_WITHIN} perplexity loss ({_expected_kld(chosen.mean_err)}).")
        smaller = [c for c in candidates if c.eligible and c.bits_per_value < chosen.bits_per_value - 1e-9
                   and (c.keeps_keys or not is_long(ctx))]
        if smaller:
            alt = min(smaller, key=lambda c: (c.bits_per_value, c.mean_err))
            out.append(f"If memory matters more: {_name(alt)} stores {alt.bits_per_value:.2f} bits per value and keeps "
                       f"every layer under the limit, at a mean error of {alt.mean_err:.3f} (above the bar); ask for "
                       f"it with --budget-bits {math.ceil(alt.bits_per_value * 100) / 100:.2f}.")
    else:
        out.append(f"Recommended {what}: the lowest mean error among candidates within {budget_bits:g} bits per value "
                   f"that keep every layer under {LAYER_LIMIT}.")
        if chosen.mean_err > QUALITY_BAR:
            out.append(f"Its mean error is above the quality bar of {QUALITY_BAR}: expect more than {PPL_WITHIN} perplexity "
                       f"loss ({_expected_kld(chosen.mean_err)}).")
    cfg = CacheConfig.parse(chosen.config)
    if cfg.boundary:
        out.append(_boundary_reason(chosen, cfg, {c.config: c for c in candidates}, stats))
    return out


def _context_reasons(chosen: Candidate, candidates: list[Candidate], budget_bits: float | None, ctx: int,
                     kv_bytes_f16: int) -> list[str]:
    size = (f"At {ctx} tokens this cache takes {plan.format_size(chosen.kv_bytes)}, "
            f"{chosen.kv_bytes / kv_bytes_f16:.0%} of f16's {plan.format_size(kv_bytes_f16)}.")
    if not is_long(ctx):
        return [size + f" Below {LONG_CONTEXT} tokens the short-text measurements decide alone (README: on "
                       f"SmolLM2, whose keys they find fit for turbo4, turbo4 keys retrieved needles exactly where "
                       f"f16 did at 2048 and 4096 tokens)."]
    out = [size + f" From {LONG_CONTEXT} tokens on, keys stay at {LONG_CONTEXT_KEY}: on Gemma 3 at {LONG_CONTEXT} "
                  f"tokens 4-bit keys lost the needle farthest from the question where f16 and {LONG_CONTEXT_KEY} "
                  f"keys found it, and their KL divergence grew with the window while {LONG_CONTEXT_KEY} keys' fell "
                  f"(README, Long context)."]
    unrestricted = choose(candidates, budget_bits)
    if unrestricted.config != chosen.config:
        out.append(f"For a short context {_name(unrestricted)} would be recommended "
                   f"({unrestricted.bits_per_value:.2f} bits per value, mean error {unrestricted.mean_err:.3f}).")
    return out


def reasons_for(chosen: Candidate, candidates: list[Candidate], stats: list[LayerStats],
                budget_bits: float | None, ctx: int | None = None, kv_bytes_f16: int | None = None) -> list[str]:
    context = _context_reasons(chosen, candidates, budget_bits, ctx, kv_bytes_f16) if ctx else []
    return [*_decision_reasons(chosen, candidates, stats, budget_bits, ctx), *context, *_key_reasons(stats),
            _value_reason(stats)]


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
