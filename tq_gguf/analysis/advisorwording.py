"""The advisor's reasons: the text that explains a recommendation, from the rules' numbers
(advisorrules) and the measured layers (kvstats)."""

from __future__ import annotations

import math

from ..kv import plan
from ..kv.cacheconfig import BOUNDARY_TYPE, PRESETS, CacheConfig
from .advisorrules import (KLD_PER_ERR, LAYER_LIMIT, LONG_CONTEXT, LONG_CONTEXT_KEY, MAX_BOUNDARY, PPL_WITHIN,
                           QUALITY_BAR, SMOOTHED_KEY_WEIGHT, Candidate, candidate_name, choose, is_long)
from .kvstats import OUTLIER_FACTOR, LayerStats

# How many entries the reasons list when they name layers.
_MAX_NAMED = 4


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


# The value types the reason compares, from the default V down: balanced's trellis type, then the
# scalar types and the 2-bit trellis type, as kvstats measures them.
_VALUE_TYPES = (PRESETS["balanced"].config.v.name, "turbo4", "turbo3", "tcq2", "turbo2")


def _value_reason(stats: list[LayerStats]) -> str:
    mean = {t: sum(s.v_out_err[t] for s in stats) / len(stats) for t in _VALUE_TYPES}
    main, others = _VALUE_TYPES[0], _VALUE_TYPES[1:]
    worst = max(stats, key=lambda s: s.v_out_err[main])
    heavy = [s for s in stats if s.v.outlier_channels]
    extra = (f" Values have outlier channels in layer {_layers([str(s.layer) for s in heavy])}."
             if heavy else " Values have no outlier channels.")
    rest = ", ".join(f"{t} {mean[t]:.3f}" for t in others)
    return (f"Values: {main} adds a mean attention-output error of {mean[main]:.3f} ({rest}); the worst {main} "
            f"layer is {worst.layer} at {worst.v_out_err[main]:.3f}." + extra)


def _expected_kld(mean_err: float) -> str:
    lo, hi = KLD_PER_ERR
    return f"docs/QUALITY.md's models put the output KL divergence at {lo}-{hi}x the mean error, so about " \
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


def _err(c: Candidate) -> str:
    """A candidate's mean error as the choice counts it: smoothed compressed keys measure better in the probe
    than in the model (advisorrules.SMOOTHED_KEY_WEIGHT), so theirs is shown weighted too."""
    if not c.smoothed_keys:
        return f"{c.mean_err:.3f}"
    return f"{c.mean_err:.3f} (smoothed keys count {SMOOTHED_KEY_WEIGHT:g}x: {c.weighted_err:.3f})"


def _decision_reasons(chosen: Candidate, candidates: list[Candidate], stats: list[LayerStats],
                      budget_bits: float | None, ctx: int | None) -> list[str]:
    out = []
    what = (f"{candidate_name(chosen)}: {chosen.bits_per_value:.2f} bits per value (f16: 16), predicted mean "
            f"attention-output error {_err(chosen)}, worst layer {chosen.worst_layer} at {chosen.worst_err:.3f}")
    if not chosen.eligible:
        out.append(f"No candidate keeps every layer under {LAYER_LIMIT}; the least damaging is {what}. Layer "
                   f"{_layers([str(i) for i in chosen.over_limit])} stay over the limit even so: consider f16 keys.")
        return out
    if budget_bits is None:
        if chosen.weighted_err <= QUALITY_BAR:
            out.append(f"Recommended {what}: the most compact candidate whose mean error stays within {QUALITY_BAR} "
                       f"(docs/QUALITY.md's models stay within {PPL_WITHIN} of f16 perplexity below it) with every layer under "
                       f"{LAYER_LIMIT}.")
        else:
            out.append(f"Recommended {what}: no candidate meets the quality bar of {QUALITY_BAR}, so this is the one "
                       f"with the lowest error; expect more than {PPL_WITHIN} perplexity loss ({_expected_kld(chosen.mean_err)}).")
        smaller = [c for c in candidates if c.eligible and c.bits_per_value < chosen.bits_per_value - 1e-9
                   and (c.keeps_keys or not is_long(ctx))]
        if smaller:
            alt = min(smaller, key=lambda c: (c.bits_per_value, c.weighted_err))
            out.append(f"If memory matters more: {candidate_name(alt)} stores {alt.bits_per_value:.2f} bits per value "
                       f"and keeps every layer under the limit, at a mean error of {_err(alt)} (above the bar); "
                       f"ask for it with --budget-bits {math.ceil(alt.bits_per_value * 100) / 100:.2f}.")
    else:
        out.append(f"Recommended {what}: the lowest mean error among candidates within {budget_bits:g} bits per value "
                   f"that keep every layer under {LAYER_LIMIT}.")
        if chosen.weighted_err > QUALITY_BAR:
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
        return [size + f" Below {LONG_CONTEXT} tokens the short-text measurements decide alone (docs/LONG_CONTEXT.md: on "
                       f"SmolLM2, whose keys they find fit for turbo4, turbo4 keys retrieved needles exactly where "
                       f"f16 did at 2048 and 4096 tokens)."]
    out = [size + f" From {LONG_CONTEXT} tokens on, keys stay at {LONG_CONTEXT_KEY}: on Gemma 3 at {LONG_CONTEXT} "
                  f"tokens 4-bit keys lost the needle farthest from the question where f16 and {LONG_CONTEXT_KEY} "
                  f"keys found it, and their KL divergence grew with the window while {LONG_CONTEXT_KEY} keys' fell "
                  f"(docs/LONG_CONTEXT.md)."]
    unrestricted = choose(candidates, budget_bits)
    if unrestricted.config != chosen.config:
        out.append(f"For a short context {candidate_name(unrestricted)} would be recommended "
                   f"({unrestricted.bits_per_value:.2f} bits per value, mean error {unrestricted.mean_err:.3f}).")
    return out


def reasons_for(chosen: Candidate, candidates: list[Candidate], stats: list[LayerStats],
                budget_bits: float | None, ctx: int | None = None, kv_bytes_f16: int | None = None) -> list[str]:
    context = _context_reasons(chosen, candidates, budget_bits, ctx, kv_bytes_f16) if ctx else []
    return [*_decision_reasons(chosen, candidates, stats, budget_bits, ctx), *context, *_key_reasons(stats),
            _value_reason(stats)]
