"""The advisor (`tq-gguf advise`, `tq_gguf.advise`): its selection rules, its measurements on
synthetic rows with known answers, and its advice for the three models.

On the models the expectations are docs/QUALITY.md's: Qwen2.5-Coder's keys break every
4-bit K cache (q4_0 and turbo4 alike), so it must get q8_0 keys, for reasons that
name its key outliers; SmolLM2 and Gemma 3 get configs their head sizes allow.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tq_gguf.analysis import advisor, kvstats
from tq_gguf.errors import CacheTypeError, ModelError, TqError
from tq_gguf.gguf import models
from tq_gguf.kv import cachetypes
from tq_gguf.kv.cacheconfig import PRESETS, CacheConfig

MODEL_NAMES = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-1.5b")


def cand(config: str, bits: float, mean: float, over: tuple[int, ...] = ()) -> advisor.Candidate:
    return advisor.Candidate(config=config, preset=None, bits_per_value=bits, mean_err=mean, worst_layer=0,
                             worst_err=mean, over_limit=list(over))


# --- choosing among candidates (no native library) ---------------------------------------------------

BAR = advisor.QUALITY_BAR


def test_without_budget_the_fewest_bits_that_meet_the_bar_win():
    cs = [cand("a", 8.5, 0.0), cand("b", 5.9, BAR * 0.9), cand("c", 3.8, BAR * 2)]
    assert advisor.choose(cs, None).config == "b"


def test_a_layer_over_the_limit_disqualifies_a_candidate():
    cs = [cand("a", 8.5, 0.0), cand("b", 5.9, BAR * 0.5, over=(0,))]
    assert advisor.choose(cs, None).config == "a"


def test_with_a_budget_the_lowest_error_that_fits_wins():
    cs = [cand("a", 8.5, 0.0), cand("b", 5.9, 0.02), cand("c", 4.4, 0.03), cand("d", 3.8, 0.05),
          cand("e", 4.0, 0.01, over=(3,))]
    assert advisor.choose(cs, 6.0).config == "b"
    assert advisor.choose(cs, 4.5).config == "c"
    assert advisor.choose(cs, 100).config == "a"


def test_an_impossible_budget_names_the_smallest_config_that_would_do():
    cs = [cand("a", 8.5, 0.0), cand("b", 5.4, 0.06), cand("c", 3.8, 0.05, over=(11,))]
    with pytest.raises(TqError, match=r"within 4 bits.*the smallest that does is b at 5\.40"):
        advisor.choose(cs, 4.0)


def test_when_nothing_meets_the_bar_the_lowest_error_wins():
    cs = [cand("a", 8.5, BAR * 1.5), cand("b", 5.9, BAR * 3)]
    assert advisor.choose(cs, None).config == "a"


def test_a_long_context_keeps_keys_at_q8_0():
    cs = [cand("q8_0/q8_0", 8.5, 0.0), cand("q8_0/turbo3", 5.9, BAR * 0.9), cand("turbo4/turbo3", 3.8, BAR * 0.5),
          cand("turbo4/turbo3:b1", 4.2, BAR * 0.4)]
    assert advisor.choose(cs, None).config == "turbo4/turbo3"
    assert advisor.choose(cs, None, ctx=advisor.LONG_CONTEXT - 1).config == "turbo4/turbo3"
    assert advisor.choose(cs, None, ctx=advisor.LONG_CONTEXT).config == "q8_0/turbo3"
    assert advisor.choose(cs, 4.5).config == "turbo4/turbo3:b1"
    with pytest.raises(TqError, match=r"within 4\.5 bits.*keys at q8_0, as a context of 16384 tokens needs.*"
                                      r"smallest that does is q8_0/turbo3 at 5\.90"):
        advisor.choose(cs, 4.5, ctx=16384)


def test_a_long_context_prefers_q8_0_keys_over_the_layer_limit():
    cs = [cand("q8_0/q8_0", 8.5, 0.01, over=(0,)), cand("turbo4/turbo3", 3.8, BAR * 0.5)]
    assert advisor.choose(cs, None).config == "turbo4/turbo3"
    assert advisor.choose(cs, None, ctx=advisor.LONG_CONTEXT).config == "q8_0/q8_0"


def test_a_context_beyond_training_is_refused():
    info = types.SimpleNamespace(n_ctx_train=8192, path=Path("m.gguf"))
    advisor.check_context(8192, info)
    with pytest.raises(TqError, match=r"16384 tokens is beyond m\.gguf's training context \(8192 tokens\)"):
        advisor.check_context(16384, info)


def test_candidates_are_the_presets_and_their_boundary_variants():
    configs = {str(c) for c in advisor.candidate_configs(30)}
    assert {str(p.config) for p in PRESETS.values()} <= configs
    assert "turbo4/turbo3:b1" in configs and "q8_0/tcq3:b2" in configs
    assert not any(c.startswith("q8_0/q8_0:") for c in configs)  # protecting q8_0 with q8_0 changes nothing
    # a 4-layer model cannot keep 2 layers at each end and still compress one
    assert not any(c.boundary >= 2 for c in advisor.candidate_configs(4))


def test_bits_per_value_weights_layers_and_head_sizes():
    cfg = CacheConfig.parse("turbo4/turbo3:b1")
    k_bits, v_bits = cfg.bits_per_value(10)
    assert advisor.bits_per_value(cfg, 10, 128, 128) == pytest.approx((k_bits + v_bits) / 2)
    # with K heads 3x the V heads, K's bits count 3x
    assert advisor.bits_per_value(cfg, 10, 192, 64) == pytest.approx((3 * k_bits + v_bits) / 4)
    assert advisor.bits_per_value(CacheConfig.parse("max"), 30, 64, 64) == pytest.approx((4.25 + 3.25) / 2)


def test_head_sizes_the_turbo_types_cannot_hold_are_refused():
    with pytest.raises(CacheTypeError, match="K head size is 80, not a multiple of 64"):
        kvstats.check_head_sizes(80, 80)
    with pytest.raises(CacheTypeError, match="V head size is 96"):
        kvstats.check_head_sizes(128, 96)
    kvstats.check_head_sizes(576, 512)


# --- measurements on synthetic rows (native library) -------------------------------------------------

native = pytest.mark.native


def sylvester(n: int) -> np.ndarray:
    """llama.cpp's ggml_gen_hadamard: H_1 = 1, H_2m = [[H, H], [H, -H]], scaled to be orthonormal."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)


@native
def test_rotations_follow_llama_cpp():
    from tq_gguf.native import ggml

    get = cachetypes.get
    # turbo: the matrix llama.cpp multiplies every 64-slice by (ggml_tq_rotation_matrix, row-major y = M x)
    signed = ggml.rotation_matrix(64)
    np.testing.assert_allclose(kvstats.stored_rotation(get("turbo4"), "K", 256), signed, atol=1e-7)
    np.testing.assert_allclose(kvstats.stored_rotation(get("turbo2"), "V", 64), signed, atol=1e-7)
    # llama.cpp's own quantized types: the plain Hadamard, for K over the largest power of two dividing
    # the head size, for V over 64
    np.testing.assert_allclose(kvstats.stored_rotation(get("q8_0"), "K", 128), sylvester(128), atol=1e-15)
    np.testing.assert_allclose(kvstats.stored_rotation(get("q4_0"), "K", 192), sylvester(64), atol=1e-15)
    np.testing.assert_allclose(kvstats.stored_rotation(get("q8_0"), "V", 256), sylvester(64), atol=1e-15)
    assert kvstats.stored_rotation(get("q8_0"), "K", 96) is None
    assert kvstats.stored_rotation(get("f16"), "K", 128) is None


@native
@pytest.mark.parametrize("qtype", ["turbo4", "turbo3", "turbo2"])
def test_turbo_roundtrip_is_the_reference_format_on_rotated_rows(qtype):
    from tq_gguf import reference as ref

    x = np.random.default_rng(1).standard_normal((3, 5, 128)).astype(np.float32) * 3
    got = kvstats.roundtrip(x, cachetypes.get(qtype), "K")
    want = ref.unrotate(ref.dequantize(ref.quantize(ref.rotate(x), qtype), qtype))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(x).max())
    assert not np.allclose(got, x, atol=1e-3)  # the cache did lose something


def synthetic_layer(seed: int, outlier: float = 0.0, t: int = 96, d: int = 128):
    from tq_gguf.analysis.kvprobe import LayerQKV

    rng = np.random.default_rng(seed)
    q = rng.standard_normal((t, 4, d)).astype(np.float32)
    k = rng.standard_normal((t, 2, d)).astype(np.float32)
    v = rng.standard_normal((t, 2, d)).astype(np.float32)
    if outlier:
        # one nearly constant key channel far above the rest, like Qwen2.5's bias channels
        k[:, 0, 5] = outlier * (1 + 0.1 * rng.standard_normal(t))
    return LayerQKV(q, k, v)


@native
def test_exact_rows_give_no_attention_error():
    layer = synthetic_layer(2)
    att = kvstats._Attention(layer, 1 / math.sqrt(128))
    zero_k = att.key_error(np.zeros_like(layer.k, dtype=np.float64))
    assert zero_k.out_err == 0 and zero_k.logit_err == 0 and abs(zero_k.attn_kl) < 1e-12
    assert att.value_error(np.zeros_like(layer.v, dtype=np.float64)) == 0
    # rows of attention weights sum to one, and the causal mask holds
    assert np.allclose(att.p.sum(-1), 1) and att.p[0, 0, 1] == 0


def test_attention_mask_follows_llama_cpp_windows():
    full = kvstats.attention_mask(6)
    assert np.array_equal(full, np.tril(np.ones((6, 6), dtype=bool)))
    # standard window of 3: query 5 sees keys 3, 4, 5
    assert np.flatnonzero(kvstats.attention_mask(6, 3)[5]).tolist() == [3, 4, 5]
    # chunked (llama4): query 4 sees its chunk [3, 6) up to itself
    assert np.flatnonzero(kvstats.attention_mask(6, 3, chunked=True)[4]).tolist() == [3, 4]
    assert kvstats.attention_mask(6, 100).tolist() == full.tolist()


@native
def test_a_sliding_window_changes_what_attention_sees():
    layer = synthetic_layer(4)
    full = kvstats._Attention(layer, 1 / math.sqrt(128))
    local = kvstats._Attention(layer, 1 / math.sqrt(128), window=8)
    assert local.p[0, -1, :-8].sum() == 0 and full.p[0, -1, :-8].sum() > 0.5


@native
def test_an_outlier_key_channel_shows_in_attention_though_not_in_row_mse():
    clean = kvstats.layer_stats(0, synthetic_layer(3), 1 / math.sqrt(128))
    spiky = kvstats.layer_stats(0, synthetic_layer(3, outlier=100.0), 1 / math.sqrt(128))
    assert clean.k.outlier_channels == 0 and spiky.k.outlier_channels == 1
    assert spiky.k.channel_ratio > 50 and spiky.k.kurtosis > 10 * clean.k.kurtosis
    # the row MSE of turbo4 even improves (the spike dominates each block's norm) ...
    assert spiky.k.rel_mse["turbo4"] <= clean.k.rel_mse["turbo4"]
    # ... while the attention output suffers: the other channels are quantized relative to the spike
    assert spiky.k_attn["turbo4"].out_err > 10 * clean.k_attn["turbo4"].out_err
    assert spiky.k_attn["q8_0"].out_err < 0.01
    # more bits, less error, on both rows and attention
    for s in (clean, spiky):
        errs = [s.k_attn[t].out_err for t in ("q8_0", "turbo4", "turbo3", "turbo2")]
        assert errs == sorted(errs)
        v_errs = [s.v_out_err[t] for t in ("q8_0", "turbo4", "turbo3", "turbo2")]
        assert v_errs == sorted(v_errs)


@native
def test_the_value_reason_leads_with_balanced_value_type():
    """The advice describes values by the type balanced stores them in, beside the others measured."""
    from tq_gguf.analysis import advisorwording

    stats = [kvstats.layer_stats(il, synthetic_layer(il + 5), 1 / math.sqrt(128)) for il in range(3)]
    text = advisorwording._value_reason(stats)
    main = PRESETS["balanced"].config.v.name
    mean = {t: sum(s.v_out_err[t] for s in stats) / len(stats) for t in ("turbo4", "turbo3", "turbo2", "tcq3", "tcq2")}
    worst = max(stats, key=lambda s: s.v_out_err[main])
    assert text.startswith(f"Values: {main} adds a mean attention-output error of {mean[main]:.3f} ("), text
    assert all(f"{t} {mean[t]:.3f}" in text for t in mean if t != main), text
    assert f"the worst {main} layer is {worst.layer} at {worst.v_out_err[main]:.3f}" in text, text


# --- the three models ---------------------------------------------------------------------------------

model = [pytest.mark.native, pytest.mark.model]


@pytest.fixture(scope="module")
def probes():
    from tq_gguf.analysis import kvprobe

    return {name: kvprobe.capture(models.fetch(name)) for name in MODEL_NAMES}


@pytest.fixture(scope="module")
def advice(probes):
    return {name: advisor.advise_probe(p) for name, p in probes.items()}


@pytest.mark.native
@pytest.mark.model
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_probe_captures_every_layer(probes, name):
    p = probes[name]
    info = p.info
    assert 100 <= p.n_tokens <= 256
    assert len(p.layers) == info.n_layer
    for layer in p.layers:
        assert layer.q.shape == (p.n_tokens, info.n_head, info.head_dim_k)
        assert layer.k.shape == (p.n_tokens, info.n_head_kv, info.head_dim_k)
        assert layer.v.shape == (p.n_tokens, info.n_head_kv, info.head_dim_v)
        assert np.isfinite(layer.k).all() and np.isfinite(layer.v).all()
    # the cache stores keys after RoPE: the captured Q and K are RoPE's outputs, V the projection's
    assert p.source_ops["Q"] == p.source_ops["K"] == "ROPE", p.source_ops
    assert p.source_ops["V"] != "ROPE"
    assert p.attention_scale == pytest.approx(1 / math.sqrt(info.head_dim_k))


@pytest.mark.native
@pytest.mark.model
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_statistics_are_finite_and_complete(advice, name):
    a = advice[name]
    assert len(a.layers) == a.n_layer
    for s in a.layers:
        assert set(s.v_out_err) == set(kvstats.CANDIDATES)
        # every quantized key type is also measured smoothed; the value-only types are not keys
        keys = {t for t in kvstats.CANDIDATES if not cachetypes.get(t).value_only}
        assert set(s.k_attn) == keys | {kvstats.smoothed_key(t) for t in keys}
        assert keys < set(kvstats.CANDIDATES) and set(s.k.rel_mse) == keys
        values = [s.k.norm_spread, s.k.channel_ratio, s.k.kurtosis, s.v.norm_spread, s.v.channel_ratio,
                  s.v.kurtosis, *s.k.rel_mse.values(), *s.v.rel_mse.values(), *s.v_out_err.values(),
                  *(x for ka in s.k_attn.values() for x in (ka.logit_err, ka.attn_kl, ka.out_err))]
        assert all(math.isfinite(x) and x >= 0 for x in values), s
        assert s.k.norm_spread >= 1 and s.k.channel_ratio >= 1
        # q8_0 is far closer than any 4-bit type, on rows and in attention
        assert s.k.rel_mse["q8_0"] < s.k.rel_mse["q4_0"] / 10
        assert s.k_attn["q8_0"].out_err < s.k_attn["turbo4"].out_err
    assert {c.config for c in a.candidates} == {str(c) for c in advisor.candidate_configs(a.n_layer)}


@pytest.mark.native
@pytest.mark.model
def test_qwen_keys_get_smoothing_for_their_outliers(advice):
    """Qwen2.5's key outliers are almost all a constant offset: turbo4 keys alone swamp its first
    layer's attention, smoothed ones do not, and the smoothed config is recommended (its model KLD,
    0.0123, is below q8_0/turbo3's 0.0138; docs/QUALITY.md)."""
    a = advice["qwen2.5-coder-1.5b"]
    cfg = a.config
    assert cfg.smooth_k and cfg.k.name == "turbo4", a.reasons
    text = " ".join(a.reasons).lower()
    assert "keys have outlier channels" in text and "turbo4 keys would push" in text
    # the measurement behind it: some layer's keys have a channel far above the rest, and turbo4 keys
    # there would swamp the attention output unless mu is taken out first
    assert max(s.k.channel_ratio for s in a.layers) > 50
    assert max(s.k_attn["turbo4"].out_err for s in a.layers) > advisor.LAYER_LIMIT
    assert max(s.k_attn["turbo4:sk"].out_err for s in a.layers) < advisor.LAYER_LIMIT / 10
    plain = next(c for c in a.candidates if c.config == "turbo4/turbo3")
    smoothed = next(c for c in a.candidates if c.config == "turbo4/tcq3:sk")  # the max preset
    assert not plain.eligible and smoothed.eligible


@pytest.mark.native
@pytest.mark.model
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_small_models_get_a_config_their_heads_allow(advice, probes, name):
    a = advice[name]
    a.config.validate(probes[name].info)
    assert a.recommended.eligible and a.recommended.mean_err <= advisor.QUALITY_BAR
    assert a.reasons[0].startswith("Recommended")


@pytest.mark.native
@pytest.mark.model
def test_turbo4_keys_follow_readme(advice):
    """docs/QUALITY.md: turbo4 keys cost SmolLM2 little (KLD 0.010 -> 0.049), Gemma 3 much (0.013 -> 0.118)."""
    smol = {c.config: c for c in advice["smollm2-135m"].candidates}
    gemma = {c.config: c for c in advice["gemma3-270m"].candidates}
    assert smol["turbo4/turbo3"].eligible
    assert not gemma["turbo4/turbo3"].eligible and not gemma["turbo4/turbo3:b2"].eligible
    assert smol["turbo4/turbo3"].mean_err < gemma["turbo4/turbo3"].mean_err


@pytest.mark.native
@pytest.mark.model
def test_a_budget_trades_error_for_bits(probes):
    smol = advisor.advise_probe(probes["smollm2-135m"], budget_bits=4.5)
    assert smol.recommended.bits_per_value <= 4.5 and smol.config.k.name == "turbo4"
    assert any("above the quality bar" in r for r in smol.reasons)
    # Qwen: unsmoothed turbo4 keys swamp its first layer; within 4.5 bits the smoothed ones win
    qwen = advisor.advise_probe(probes["qwen2.5-coder-1.5b"], budget_bits=4.5)
    assert qwen.config.smooth_k and qwen.recommended.bits_per_value <= 4.5
    plain = next(c for c in qwen.candidates if c.config == "turbo4/turbo3")
    assert 0 in plain.over_limit
    # Gemma: under 5 bits only smoothed keys keep every layer under the limit (turbo4/turbo3 alone
    # puts layer 11 at 0.48), and their error is above the bar
    gemma = advisor.advise_probe(probes["gemma3-270m"], budget_bits=4.5)
    assert gemma.config.smooth_k and any("above the quality bar" in r for r in gemma.reasons)
    with pytest.raises(TqError, match="below every candidate"):
        advisor.advise_probe(probes["gemma3-270m"], budget_bits=3)


@pytest.mark.native
@pytest.mark.model
def test_a_context_length_sizes_the_cache_and_long_ones_keep_keys(probes):
    from tq_gguf.kv import plan

    p = probes["smollm2-135m"]
    short = advisor.advise_probe(p, budget_bits=4.5, ctx=4096)
    assert short.config.k.name == "turbo4"  # SmolLM2's keys tolerate turbo4 at short contexts
    k_types, v_types = short.config.layer_types(short.n_layer)
    assert short.recommended.kv_bytes == plan.kv_bytes(p.info, 4096, k_types, v_types)
    assert short.recommended.kv_bytes < short.kv_bytes_f16 / 3
    assert any(r.startswith("At 4096 tokens this cache takes") for r in short.reasons), short.reasons
    # from LONG_CONTEXT on no config under 4.5 bits keeps q8_0 keys
    with pytest.raises(TqError, match="keys at q8_0, as a context of 8192 tokens needs"):
        advisor.advise_probe(p, budget_bits=4.5, ctx=8192)
    long = advisor.advise_probe(p, ctx=8192)
    assert all(t.name == "q8_0" for t in long.config.layer_types(long.n_layer)[0])
    assert long.recommended.kv_bytes == 2 * advisor.advise_probe(p, ctx=4096).recommended.kv_bytes
    # the cheaper alternative it offers keeps q8_0 keys too
    alternative = [r for r in long.reasons if r.startswith("If memory matters more")]
    assert alternative and "turbo4/" not in alternative[0], long.reasons
    with pytest.raises(TqError, match="beyond .*training context"):
        advisor.advise_probe(p, ctx=p.info.n_ctx_train + 1)


@pytest.mark.native
@pytest.mark.model
def test_unsupported_head_size_is_a_clear_error(probes):
    p = probes["smollm2-135m"]
    odd = dataclasses.replace(p, info=dataclasses.replace(p.info, head_dim_k=80, head_dim_v=80))
    with pytest.raises(CacheTypeError, match="head size is 80"):
        advisor.advise_probe(odd)


# --- the command line ------------------------------------------------------------------------------------

def run_cli(*args):
    from tq_gguf.cli import main

    return CliRunner().invoke(main, ["advise", *map(str, args)])


@pytest.mark.native
@pytest.mark.model
def test_cli_json_parses_and_matches_the_library(advice):
    result = run_cli("smollm2-135m", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    want = advice["smollm2-135m"]
    assert data["recommended"]["config"] == want.recommended.config
    assert data["recommended"]["cli"].startswith("-ctk ")
    assert len(data["layers"]) == want.n_layer == 30
    assert data["reasons"] == want.reasons
    assert data["thresholds"]["layer_limit"] == advisor.LAYER_LIMIT
    layer = data["layers"][3]
    assert set(layer["k_attn"]["turbo4"]) == {"logit_err", "attn_kl", "out_err"}
    # the model reads the same text the same way, so the numbers repeat
    assert layer["k"]["rel_mse"]["turbo4"] == pytest.approx(want.layers[3].k.rel_mse["turbo4"], rel=1e-4)


@pytest.mark.native
@pytest.mark.model
def test_cli_text_report(advice):
    result = run_cli("smollm2-135m", "--budget-bits", 4.5, "--layers", "--ctx", 4096)
    assert result.exit_code == 0, result.output
    assert "recommended: compact (turbo4/turbo4:sk)" in result.output
    assert "cache @ 4096" in result.output and "At 4096 tokens this cache takes" in result.output
    assert "why:" in result.output and "K turbo4 err" in result.output
    assert len([ln for ln in result.output.splitlines() if ln.strip().split(" ")[0].isdigit()]) >= 30


@pytest.mark.native
@pytest.mark.model
def test_cli_context_beyond_training_is_one_error_line():
    result = run_cli("smollm2-135m", "--ctx", 100000)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: a context of 100000 tokens is beyond"), lines


def test_cli_missing_model_is_one_error_line(tmp_path):
    result = run_cli(tmp_path / "nope.gguf")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: model file {tmp_path / 'nope.gguf'} does not exist "
                                                  f"(known model names: {', '.join(models.MODELS)})"]


def test_cli_rejects_a_non_positive_budget():
    result = run_cli("smollm2-135m", "--budget-bits", 0)
    assert result.exit_code == 2 and "budget-bits" in result.output


@native
def test_library_rejects_a_non_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="not a GGUF"):
        advisor.advise(bad)
