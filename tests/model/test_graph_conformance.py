"""The real llama.cpp graph stores what docs/FORMAT.md says, for every turbo type on K and on V.

tq_gguf.analysis.cachewrites stops a real context at each layer's SET_ROWS into the cache and reads
the float rows fed in, the cache rows written, and the attention input before rotation.
Two properties, per layer and side:

* the stored bytes equal the NumPy reference quantization of the rows fed in, byte for byte;
* the rows fed in are the reference rotation of the unrotated attention input. Each rotated
  value is a float32 dot of 64 terms with coefficients ±1/8, so its rounding error is at
  most 63·2^-24·Σ|x|/8 < 2^-17·Σ|x| over the 64-value group: the bound asserted.

A graph that skipped the rotation of K (and of Q with it) or of V (and of the output)
stores the unrotated rows, still quantized exactly: the second property catches it, and
the quality tests would not (the result is only somewhat worse).

A per-layer config with a different type in the first, middle and last layers checks that
each layer's cache has the type asked for it, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from tq_gguf.analysis import cachewrites
from tq_gguf.analysis.evaltext import git_release_notes
from tq_gguf.gguf import models
from tq_gguf.kv import cachetypes
from tq_gguf.kv.cacheconfig import CacheConfig
from tq_gguf.reference import quants, rotation

N_TOKENS = 40
# Each turbo type on K and on V; SmolLM2 has head 64, Gemma 3 head 256 (one KV head,
# sliding-window layers in a second cache).
CASES = [("smollm2-135m", "turbo2/turbo4"), ("smollm2-135m", "turbo4/turbo3"),
         ("smollm2-135m", "turbo3/turbo2"), ("smollm2-135m", "q8_0/turbo3"),
         ("gemma3-270m", "turbo4/turbo3")]


def rotation_bound(before: np.ndarray) -> np.ndarray:
    groups = np.abs(before.astype(np.float64)).reshape(*before.shape[:-1], -1, rotation.GROUP)
    return np.repeat(groups.sum(axis=-1) * 2.0**-17, rotation.GROUP, axis=-1).reshape(before.shape)


@pytest.fixture(scope="module")
def text():
    return git_release_notes(4000)


@pytest.mark.parametrize("model,config", CASES)
def test_cache_holds_reference_bytes_of_rotated_rows(model, config, text):
    cfg = CacheConfig.parse(config)
    writes = cachewrites.capture(models.fetch(model), cfg, text, N_TOKENS)
    n_layer = max(il for _, il in writes) + 1
    assert set(writes) == {(side, il) for side in "kv" for il in range(n_layer)}
    for (side, il), w in sorted(writes.items()):
        expected = cfg.k if side == "k" else cfg.v
        assert w.type_name == expected.name, (side, il)
        if not expected.turbo:
            continue
        fed, stored, before = w.arrays()
        assert fed.shape[0] >= N_TOKENS
        ref = quants.quantize(fed, expected.name)
        bad = np.flatnonzero((ref != stored).any(axis=1))
        assert bad.size == 0, f"{side} layer {il}: rows {bad[:5]} differ from the reference quantization"
        assert np.isfinite(before).all(), f"{side} layer {il}: no {side.upper()}cur input captured"
        err = np.abs(fed.astype(np.float64) - rotation.rotate(before).astype(np.float64))
        excess = err - rotation_bound(before)
        assert (excess <= 0).all(), (f"{side} layer {il}: rows fed to the cache are not the rotated "
                                     f"attention input (worst excess {excess.max():.3g})")


@dataclass(frozen=True)
class PerLayer(CacheConfig):
    """A config naming every layer's types, which the spec language cannot write."""
    k_layers: tuple[str, ...] = ()
    v_layers: tuple[str, ...] = ()

    @property
    def mixed(self) -> bool:
        return True

    def layer_types(self, n_layer: int):
        assert len(self.k_layers) == len(self.v_layers) == n_layer
        return [cachetypes.get(t) for t in self.k_layers], [cachetypes.get(t) for t in self.v_layers]


def test_each_layer_gets_its_own_type_in_order(text):
    path = models.fetch("smollm2-135m")
    n_layer = 30
    # first, second, middle and last layers all differ, so a reversed or shifted list shows
    k = ["q8_0"] * n_layer
    v = ["turbo3"] * n_layer
    k[0], k[1], k[15], k[-1] = "turbo2", "turbo4", "f16", "turbo3"
    v[0], v[1], v[15], v[-1] = "q8_0", "turbo2", "turbo4", "f16"
    cfg = PerLayer(cachetypes.get("q8_0"), cachetypes.get("turbo3"), k_layers=tuple(k), v_layers=tuple(v))
    writes = cachewrites.capture(path, cfg, text, 16)
    got_k = [writes[("k", il)].type_name for il in range(n_layer)]
    got_v = [writes[("v", il)].type_name for il in range(n_layer)]
    assert got_k == k
    assert got_v == v
