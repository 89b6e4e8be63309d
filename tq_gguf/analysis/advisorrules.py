"""The advisor's rules: the limits its advice rests on, the candidates, and the choice among them.

tq_gguf.analysis.advisor's docstring has the method; advisorwording says why in words.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import TqError
from ..kv.cacheconfig import BOUNDARY_TYPE, PRESETS, CacheConfig
from .kvstats import LayerStats

# Largest per-layer attention-output error a recommended config may have. The models
# that collapse in docs/QUALITY.md's table each have one layer with an error near 1 (the
# attention output is then mostly error): turbo4 keys put Qwen2.5-Coder's layer 0 at
# 1.05 and its KLD is 6.3 instead of the ~0.1 its mean error predicts; keeping only
# layers 0 and 27 at q8_0 (turbo4/turbo3:b1) brings the 256-token KL against f16 from
# 5.9 to 0.07. Not every such layer collapses a model (under turbo3 keys Gemma 3's
# layer 11 reaches 1.06 and its KLD still follows the mean), so the limit sits well
# below 1: 0.25, an error a quarter of the output's energy, is above every layer of
# the configs docs/QUALITY.md finds within 2.5% of f16 perplexity (at most 0.036; q8_0/turbo2
# at most 0.10) and below Gemma's worst layer under turbo4 keys (0.48), a config
# docs/QUALITY.md puts at +15% perplexity.
LAYER_LIMIT = 0.25

# Largest mean attention-output error of the config recommended without a budget.
# docs/QUALITY.md, with the encoder's scale search: q8_0/turbo3 is within PPL_WITHIN of f16
# perplexity on all three models (+2.1%, +2.3%, -0.9%) and measures 0.018 here on SmolLM2
# (Gemma 3: 0.016); the next configs docs/QUALITY.md measures on SmolLM2, the most sensitive of
# the three, are further off: turbo4/turbo4 (0.024 here, +3.9% perplexity) and
# q4_0/q4_0 (0.025, +5.1%). The bar lies between. (Qwen2.5 tolerates more: q8_0/turbo2
# stays within 2% at 0.068; the bar follows the most sensitive model.)
QUALITY_BAR = 0.022
PPL_WITHIN = "2.5%"  # what docs/QUALITY.md measures for the configs under the bar

# The most boundary layers a candidate protects at each end (the `max` preset's 2):
# protecting more costs q8_0's 8.5 bits in a growing share of a small model's layers.
MAX_BOUNDARY = 2

# docs/QUALITY.md's mean KLD over the mean attention-output error, lowest and highest, on the 20
# configs of its quality table that neither break a model nor are q8_0/q8_0 (module doc).
KLD_PER_ERR = (0.7, 3.2)

# From this context length on, only candidates with q8_0 keys are recommended. The probe
# reads a short text, so its errors are short-context errors; docs/LONG_CONTEXT.md's
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

# Smoothed compressed keys (`:sk`) measure better in the probe than they do in the model. The
# probe takes mu from the very rows it scores; a real cache takes it from its first ubatch,
# often other text (llama-perplexity's chunks after the first of a batch), so the stored keys
# are not centred as well. Measured with turbo4/turbo4:sk (docs/QUALITY.md, "Key smoothing"):
# probe error 0.0158 / 0.0189 / 0.0101 on SmolLM2 / Gemma 3 / Qwen2.5 against model KLD
# 0.0320 / 0.0523 / 0.0117, where q8_0/turbo3 measures 0.0176 / 0.0158 / 0.0168 against
# 0.0262 / 0.0289 / 0.0138. Counting a smoothed candidate's error 1.8x orders every pair of
# them as the models do, and lets smoothed keys through the quality bar only on Qwen2.5
# (0.018), where their KLD is below q8_0/turbo3's, not on SmolLM2 (0.028) or Gemma 3 (0.034).
SMOOTHED_KEY_WEIGHT = 1.8


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
    smoothed_keys: bool = False  # compressed keys with key smoothing (weighed by SMOOTHED_KEY_WEIGHT)

    @property
    def eligible(self) -> bool:
        return not self.over_limit

    @property
    def weighted_err(self) -> float:
        """mean_err as the choice counts it: smoothed compressed keys weigh SMOOTHED_KEY_WEIGHT."""
        return self.mean_err * (SMOOTHED_KEY_WEIGHT if self.smoothed_keys else 1.0)

    @property
    def keeps_keys(self) -> bool:
        """Whether every layer's keys are at LONG_CONTEXT_KEY (what long contexts need)."""
        return CacheConfig.parse(self.config).k.name == LONG_CONTEXT_KEY



# Candidates beside the presets: q8_0 keys with 2-bit values, and 4-bit keys unsmoothed (so
# the advice can say what smoothing changes), each between or below the presets in bits.
EXTRA_CANDIDATES = ("q8_0/turbo2", "turbo4/turbo3")


def _bases() -> list[CacheConfig]:
    """The distinct configs, without boundary layers, of the presets and EXTRA_CANDIDATES."""
    seen: list[CacheConfig] = []
    for config in [*(p.config for p in PRESETS.values()), *map(CacheConfig.parse, EXTRA_CANDIDATES)]:
        base = replace(config, boundary=0)
        if base not in seen:
            seen.append(base)
    return seen


def candidate_configs(n_layer: int) -> list[CacheConfig]:
    out = []
    for base in _bases():
        for b in range(MAX_BOUNDARY + 1):
            if b and ((base.k.name, base.v.name) == (BOUNDARY_TYPE, BOUNDARY_TYPE) or 2 * b >= n_layer):
                continue  # protecting q8_0/q8_0 changes nothing; too few layers left to compress
            out.append(replace(base, boundary=b))
    return out


def bits_per_value(config: CacheConfig, n_layer: int, head_dim_k: int, head_dim_v: int) -> float:
    k_types, v_types = config.layer_types(n_layer)
    total = sum(k.bits_per_value * head_dim_k + v.bits_per_value * head_dim_v for k, v in zip(k_types, v_types))
    return total / (n_layer * (head_dim_k + head_dim_v))


def evaluate(config: CacheConfig, stats: list[LayerStats], head_dim_k: int, head_dim_v: int,
             kv_bytes: int | None = None) -> Candidate:
    n_layer = len(stats)
    k_types, v_types = config.layer_types(n_layer)
    errs = [s.out_err(k.name, v.name, config.smooth_k and k.quantized) for s, k, v in zip(stats, k_types, v_types)]
    worst = max(range(n_layer), key=errs.__getitem__)
    return Candidate(
        config=str(config), preset=config.preset,
        bits_per_value=bits_per_value(config, n_layer, head_dim_k, head_dim_v),
        mean_err=sum(errs) / n_layer, worst_layer=worst, worst_err=errs[worst],
        over_limit=[il for il, e in enumerate(errs) if e > LAYER_LIMIT], kv_bytes=kv_bytes,
        smoothed_keys=config.smooth_k and config.k.name != LONG_CONTEXT_KEY,
    )


def is_long(ctx: int | None) -> bool:
    return ctx is not None and ctx >= LONG_CONTEXT

def candidate_name(c: Candidate) -> str:
    return f"{c.preset} ({c.config})" if c.preset else c.config



def choose(candidates: list[Candidate], budget_bits: float | None, ctx: int | None = None) -> Candidate:
    """Without a budget: the fewest bits among configs that meet the quality bar and the layer limit.
    With one: the lowest mean error among configs within the budget that meet the layer limit.
    For a context of LONG_CONTEXT tokens or more, only configs that keep keys at q8_0 qualify."""
    eligible = [c for c in candidates if c.eligible]
    if not eligible:
        # Even q8_0/q8_0 has a layer over the limit. f16 is not a candidate (it is not a compression):
        # return the least damaging one; the reasons say it fails the limit and point to f16 keys.
        return min(candidates, key=lambda c: c.weighted_err)
    if is_long(ctx):
        eligible = [c for c in eligible if c.keeps_keys]
        if not eligible:  # only 4-bit keys pass the layer limit: q8_0 keys matter more here
            return min((c for c in candidates if c.keeps_keys), key=lambda c: c.weighted_err)
    if budget_bits is None:
        good = [c for c in eligible if c.weighted_err <= QUALITY_BAR]
        if not good:
            return min(eligible, key=lambda c: (c.weighted_err, c.bits_per_value))
        return min(good, key=lambda c: (round(c.bits_per_value, 6), c.weighted_err))
    fitting = [c for c in eligible if c.bits_per_value <= budget_bits + 1e-9]
    if not fitting:
        smallest = min(eligible, key=lambda c: c.bits_per_value)
        need = f"keeps every layer's attention-output error under {LAYER_LIMIT}"
        if is_long(ctx):
            need += (f" and keys at {LONG_CONTEXT_KEY}, as a context of {ctx} tokens needs (4-bit keys lost far "
                     f"needles at {LONG_CONTEXT} tokens: docs/LONG_CONTEXT.md)")
        raise TqError(f"no config within {budget_bits:g} bits per value {need}; the smallest that does is "
                      f"{candidate_name(smallest)} at {smallest.bits_per_value:.2f} bits")
    return min(fitting, key=lambda c: (c.weighted_err, c.bits_per_value))
