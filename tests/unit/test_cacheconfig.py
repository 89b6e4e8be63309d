"""CacheConfig specs, presets, validation and sizing (no build needed)."""

from __future__ import annotations

import dataclasses

import pytest

from tq_gguf.errors import CacheTypeError
from tq_gguf.gguf import ggufinfo
from tq_gguf.kv.cacheconfig import BOUNDARY_TYPE, PRESETS, CacheConfig, resolve


def test_specs_round_trip():
    for spec in ("q8_0/turbo3", "turbo4/turbo3", "f16/f16", "q8_0/turbo2:b2", "q4_0/turbo4:b1"):
        assert str(CacheConfig.parse(spec)) == spec
    assert CacheConfig.parse(" Q8_0/TURBO3 ") == CacheConfig.of("q8_0", "turbo3")


def test_key_smoothing_flag():
    for spec in ("turbo4/turbo4:sk", "q8_0/turbo3:b2:sk", "f16/f16:sk"):
        config = CacheConfig.parse(spec)
        assert config.smooth_k and str(config) == spec
    assert not CacheConfig.parse("turbo4/turbo4").smooth_k
    # a preset takes the flag too, and is then no longer the preset itself
    smoothed = CacheConfig.parse("balanced:sk")
    assert smoothed == dataclasses.replace(PRESETS["balanced"].config, smooth_k=True) and smoothed.preset is None
    assert resolve("turbo4/turbo3", smooth_k=True) == CacheConfig.parse("turbo4/turbo3:sk")
    assert resolve("turbo4/turbo3:sk").smooth_k  # smooth_k=False never turns a spec's flag off
    assert resolve("q8_0/turbo2:b2:sk", cache_v="turbo3") == CacheConfig.parse("q8_0/turbo3:b2:sk")
    assert str(resolve("max", cache_v="turbo4")) == "turbo4/turbo4:sk"  # a preset's smoothing stays too
    assert CacheConfig.parse("turbo4/turbo4:sk").cli_args(30)[-1] == "-sk"
    assert "-sk" not in CacheConfig.parse("turbo4/turbo4").cli_args(30)


def test_presets():
    assert {name: str(p.config) for name, p in PRESETS.items()} == {
        "lossless": "q8_0/q8_0", "quality": "q8_0/turbo4", "balanced": "q8_0/tcq3",
        "compact": "turbo4/turbo4:sk", "max": "turbo4/tcq3:sk",
    }
    for name, p in PRESETS.items():
        assert CacheConfig.parse(name) == p.config
        assert p.config.preset == name
    assert CacheConfig.parse("q8_0/turbo2:b3").preset is None


def test_resolve_precedence():
    tagged = CacheConfig.parse("turbo4/turbo3")
    assert resolve() == PRESETS["balanced"].config
    assert resolve(default=tagged) == tagged
    assert resolve("max", default=tagged) == PRESETS["max"].config
    # explicit sides win over the spec's and keep its boundary layers
    assert str(resolve("q8_0/turbo2:b2", cache_v="turbo3")) == "q8_0/turbo3:b2"
    assert str(resolve(cache_k="f16", default=tagged)) == "f16/turbo3"


@pytest.mark.parametrize("spec, message", [
    ("q8_0", "cannot read cache config 'q8_0'"),
    ("q8_0/turbo3:x2", "cannot read cache config"),
    ("q8_0/turbo5", "unknown cache type 'turbo5'"),
    ("fast", "cannot read cache config 'fast'"),
    ("q8_0/turbo3:sk:b2", "cannot read cache config"),  # the flags go in one order
    ("q8_0/turbo3:sk:sk", "cannot read cache config"),
])
def test_bad_specs(spec, message):
    with pytest.raises(CacheTypeError, match=message):
        CacheConfig.parse(spec)


def test_layer_types_protect_both_ends():
    k, v = CacheConfig.parse("turbo4/turbo2:b2").layer_types(7)
    assert [t.name for t in k] == ["q8_0", "q8_0", "turbo4", "turbo4", "turbo4", "q8_0", "q8_0"]
    assert [t.name for t in v] == ["q8_0", "q8_0", "turbo2", "turbo2", "turbo2", "q8_0", "q8_0"]
    bk, bv = CacheConfig.parse("q8_0/turbo2:b2").bits_per_value(10)
    assert bk == 8.5 and bv == pytest.approx((4 * 8.5 + 6 * 2.25) / 10)
    assert not CacheConfig.parse(f"{BOUNDARY_TYPE}/{BOUNDARY_TYPE}:b2").mixed


def _info(**changes) -> ggufinfo.ModelInfo:
    base = ggufinfo.ModelInfo(path=None, arch="llama", name="t", n_layer=4, n_embd=256, n_head=4, n_head_kv=2,
                              head_dim_k=64, head_dim_v=64, n_ctx_train=2048, sliding_window=None,
                              n_tensors=1, file_size=1)
    return dataclasses.replace(base, **changes)


def test_validation_names_the_problem():
    with pytest.raises(CacheTypeError, match="V cache type turbo3 stores blocks of 64 values, but the model's head size 80"):
        CacheConfig.parse("q8_0/turbo3").validate(_info(head_dim_v=80), native=False)
    with pytest.raises(CacheTypeError, match="K cache type q8_0 stores blocks of 32"):
        CacheConfig.parse("f16/f16:b1").validate(_info(n_layer=6, head_dim_k=48), native=False)
    with pytest.raises(CacheTypeError, match="leaves none of the model's 4 layers"):
        CacheConfig.parse("q8_0/turbo2:b2").validate(_info(), native=False)
    with pytest.raises(CacheTypeError, match="needs flash attention"):
        CacheConfig.parse("f16/q4_0").validate(_info(), flash_attn=False, native=False)
    CacheConfig.parse("q8_0/f16").validate(_info(), flash_attn=False, native=False)


def test_kv_bytes_sum_the_layers():
    info = _info(n_layer=6)
    row = info.n_head_kv * info.head_dim_k  # 128 values per cell and layer
    # llama.cpp rounds the cell count up to a multiple of 256 (tq_gguf.kv.plan has the rules)
    expected = 256 * (2 * 2 * row // 32 * 34 + 4 * (row // 32 * 34 + row // 64 * 18))
    assert CacheConfig.parse("q8_0/turbo2:b1").kv_bytes(info, 256) == expected
    assert CacheConfig.parse("q8_0/turbo2:b1").kv_bytes(info, 100) == expected


def test_key_smoothing_adds_one_f32_mu_per_layer():
    info = _info(n_layer=6)
    row = info.n_head_kv * info.head_dim_k  # 128 values: 512 bytes of mu, a multiple of the alignment
    plain = CacheConfig.parse("turbo4/turbo4").kv_bytes(info, 256)
    assert CacheConfig.parse("turbo4/turbo4:sk").kv_bytes(info, 256) == plain + 6 * 4 * row
    # mu does not grow with the context
    grown = CacheConfig.parse("turbo4/turbo4").kv_bytes(info, 1024)
    assert CacheConfig.parse("turbo4/turbo4:sk").kv_bytes(info, 1024) == grown + 6 * 4 * row


def test_trellis_types_are_values_only():
    """tcq2/tcq3 have no dot product with a query: V accepts them, K refuses them with one line
    naming the type and what to write instead, however the config is given."""
    assert str(CacheConfig.parse("q8_0/tcq3")) == "q8_0/tcq3"
    assert CacheConfig.parse("turbo4/tcq2:b1:sk").v.name == "tcq2"
    assert resolve(cache_v="tcq3").v.bits_per_value == 3.25
    for make in (lambda: CacheConfig.parse("tcq3/tcq3"), lambda: CacheConfig.parse("tcq2/turbo3:sk"),
                 lambda: resolve(cache_k="tcq3"), lambda: CacheConfig.of("tcq2", "q8_0")):
        with pytest.raises(CacheTypeError, match=r"is a value type .* use it for V, e\.g\. q8_0/tcq[23]"):
            make()
