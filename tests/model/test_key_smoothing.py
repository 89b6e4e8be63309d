"""Key smoothing in the real llama.cpp graph (docs/FORMAT.md, "Key smoothing").

With `:sk` the K cache stores `k - mu`, mu one fixed f32 vector per layer and KV head
taken from the first ubatch written into the empty cache (tq_gguf.reference.smoothing).
Attention does not change: q.mu moves every score of a query alike. What is checked here, per layer:

* conformance: the rows fed to the cache are the (rotated) keys minus mu, and a turbo
  cache stores the NumPy reference quantization of exactly those rows;
* mu is the mean of the window's rows less the RoPE pairs that turn by more than pi/3 over
  the context (zeroed before the cache's rotation), and stays the same at every later write: later
  one-token ubatches reuse their graphs, and a graph that learned mu once must not be
  reused to learn it again;
* exactness: on an f32 cache smoothing moves the logits only by float rounding.

Context shift and saved state of smoothed caches are tested beside their unsmoothed
forms (test_context_shift.py, test_session_state.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from tq_gguf.analysis import cachewrites
from tq_gguf.analysis.evaltext import git_release_notes
from tq_gguf.gguf import models
from tq_gguf.kv.cacheconfig import CacheConfig
from tq_gguf.reference import quants, rotation, smoothing

N_PROMPT, N_EACH = 100, 4
# turbo K with a rotation (SmolLM2, head 64; Gemma 3, head 256 and two caches), q8_0 K with
# llama.cpp's own rotation of quantized keys, and f16 K with none
CASES = [("smollm2-135m", "turbo4/turbo3:sk"), ("smollm2-135m", "turbo3/turbo3:sk"),
         ("gemma3-270m", "turbo4/turbo3:sk"), ("smollm2-135m", "q8_0/turbo3:sk"),
         ("smollm2-135m", "f16/f16:sk")]


@pytest.fixture(scope="module")
def text():
    return git_release_notes(4000)


def _rows_bound(x: np.ndarray) -> np.ndarray:
    """Rounding of a float32 difference a - b with |a|, |b| <= |x| + |mu|: half an ulp each way."""
    return np.abs(x) * 2.0**-23 + 1e-30


class _Rope:
    """How llama.cpp turns each layer's keys, from the file: the RoPE width and base, and for
    sliding-window layers the base llama.cpp gives them when the file names none (10^4, Gemma 3's);
    the pair layout is llama.cpp's own for the architecture."""

    def __init__(self, path, n_ctx: int):
        from tq_gguf.gguf import ggufheader, ggufinfo
        from tq_gguf.native import llamacpp
        from tq_gguf.runtime.lowlevel import Context

        info = ggufinfo.read(path)
        fields = ggufheader.read_checked(path).fields
        value = lambda key, default: fields[key].value if key in fields else default  # noqa: E731
        self.info, self.n_ctx, self.head = info, n_ctx, info.head_dim_k
        self.n_rot = value(f"{info.arch}.rope.dimension_count", info.head_dim_k)
        self.base = value(f"{info.arch}.rope.freq_base", 10000.0)
        self.base_swa = value(f"{info.arch}.rope.freq_base_swa", 10000.0)
        llama_cpp = llamacpp.load()
        with Context(path, n_ctx=256) as ctx:
            self.neox = llama_cpp.llama_model_rope_type(ctx.model) == llama_cpp.LLAMA_ROPE_TYPE_NEOX

    def pair0(self, il: int) -> int:
        base = self.base_swa if self.info.is_swa(il) else self.base
        return smoothing.first_pair(self.n_rot, base, 1.0, self.n_ctx)


def _storage_rotation(cfg: CacheConfig, head: int):
    """(group, R) of the cache's K rows: the turbo rotation, llama.cpp's Walsh-Hadamard of
    quantized keys (the largest power of two from 64 that divides the head), or none."""
    if cfg.k.turbo:
        return rotation.GROUP, lambda x: rotation.rotate(x).astype(np.float64)
    if cfg.k.name in ("f16", "f32", "bf16"):
        return head, lambda x: np.asarray(x, dtype=np.float64)
    n = 64
    while head % (2 * n) == 0:
        n *= 2
    h = rotation.hadamard(n)
    return n, lambda x: (np.asarray(x, dtype=np.float64).reshape(-1, n) @ h.T).reshape(np.shape(x))


def _mu_bound(window: np.ndarray, mean: np.ndarray, group: int) -> np.ndarray:
    """How far the graph's float32 mu may be from the float64 one: rotating each key row, the
    mean (ggml sums in double, rounds once), and taking mu out of the rotation and in again. A
    rotation's float32 products are within 2^-17 of the group's sum of |x| (test_graph_conformance)."""
    def per_group(x: np.ndarray) -> np.ndarray:
        return np.repeat(np.abs(x).reshape(*x.shape[:-1], -1, group).sum(axis=-1), group, axis=-1)
    rows = per_group(window).mean(axis=0) * 2.0**-17
    twice = per_group(mean) * 2.0**-16
    return rows + twice + 2.0**-20 * np.abs(window).max() + 1e-12


@pytest.mark.parametrize("model,config", CASES)
def test_cache_holds_keys_minus_a_fixed_mu(model, config, text):
    cfg = CacheConfig.parse(config)
    path = models.fetch(model)
    writes = cachewrites.capture(path, cfg, text, N_PROMPT, n_each=N_EACH)
    rope = _Rope(path, cachewrites.context_size(N_PROMPT, N_EACH))
    layers = sorted(il for side, il in writes if side == "k")
    assert layers
    dropped = 0
    for il in layers:
        w = writes["k", il]
        assert len(w.mu) == 1 + N_EACH, f"layer {il}: {len(w.mu)} of {1 + N_EACH} writes subtracted a mu"
        mu = w.mu[0]
        for i, later in enumerate(w.mu[1:], 1):
            assert np.array_equal(later, mu), f"layer {il}: write {i} used another mu than the first"
        fed = np.concatenate(w.fed)
        first = w.fed[0].shape[0]
        assert first == N_PROMPT
        # fed = (R) k - mu, so fed + mu is the key the graph had
        keys = fed.astype(np.float64) + mu.astype(np.float64)
        before = np.concatenate(w.before)
        assert np.isfinite(before).all(), f"layer {il}: the keys before the cache's rotation were not captured"
        # mu is R (the window's mean of the keys, less the pairs RoPE turns too far) in float64
        group, rotate = _storage_rotation(cfg, before.shape[1])
        pair0 = rope.pair0(il)
        dropped = max(dropped, pair0)
        window = before[:first][smoothing.window(first)].astype(np.float64)
        mean = window.mean(axis=0)
        expected = rotate(smoothing.drop_pairs(mean, rope.head, rope.n_rot, pair0, rope.neox))
        assert np.all(np.abs(mu - expected) <= _mu_bound(window, mean, group)), \
            f"layer {il}: mu is not the window's mean less its {pair0} fastest RoPE pairs"
        assert np.abs(mu).max() > 0, f"layer {il}: mu is zero"
        # the key the graph had is the rotated attention input (test_graph_conformance's bound)
        err = np.abs(keys - rotate(before))
        bound = np.repeat(np.abs(before.astype(np.float64)).reshape(len(before), -1, group)
                          .sum(axis=-1) * 2.0**-17, group, axis=-1) + _rows_bound(keys) * 2
        assert (err <= bound).all(), f"layer {il}: rows fed are not the rotated keys minus mu"
        if cfg.k.turbo:
            stored = np.concatenate(w.stored)
            ref = quants.quantize(fed, cfg.k.name)
            bad = np.flatnonzero((ref != stored).any(axis=1))
            assert bad.size == 0, f"layer {il}: rows {bad[:5]} differ from the reference quantization of k - mu"
    for (side, il), w in writes.items():
        assert side == "k" or not w.mu, f"V layer {il} was smoothed"
    assert dropped > 0, "no layer dropped a RoPE pair: the context is too short to test that mu does"


def test_unsmoothed_cache_subtracts_nothing(text):
    writes = cachewrites.capture(models.fetch("smollm2-135m"), CacheConfig.parse("turbo4/turbo3"), text, 20)
    assert all(not w.mu for w in writes.values())


# Exactness, where float32 rounding is all that differs: f32 keys and the non-flash path (the
# CPU flash attention turns f32 keys into f16 first), so every score is a float32 dot product
# q.(k - mu) against q.k. The attention output of the first layer (the one whose input is the
# same in both runs) then moves by float32 rounding only: measured at most 1 ulp of its largest
# value on SmolLM2 (head 64) and 3 on Gemma 3 (head 256), over the prompt's batch and each
# single-token decode after it. Later layers see it through quantized matrix products, whose 8-bit rounding of the
# activations turns any change, however small, into a ~1e-2 one; so the logits are compared
# with the noise of another change of the same size (storing K in f16 instead of f32).
ULP_BOUND = 8  # 2.7x the measured worst case
N_DECODE = 8


def _layer0_attention(path, cache: str, tokens: list[int]) -> list[np.ndarray]:
    """kqv_out-0 of each graph: the prompt's batch, then each single-token decode."""
    from tq_gguf.native import ggml, llamacpp
    from tq_gguf.runtime.lowlevel import Context

    llama_cpp = llamacpp.load()
    out: list[np.ndarray] = []

    @llama_cpp.ggml_backend_sched_eval_callback
    def on_eval(tensor, ask, user_data):
        t = ggml.ffi.cast("struct ggml_tensor *", tensor)
        if ggml.ffi.string(t.name) != b"kqv_out-0":
            return False
        if not ask:
            n = int(t.ne[0]) * int(t.ne[1]) * int(t.ne[2]) * int(t.ne[3])
            out.append(np.frombuffer(ggml.ffi.buffer(ggml.ffi.cast("float *", t.data), 4 * n), np.float32).copy())
        return True

    with Context(path, cache=cache, n_ctx=256, n_threads=1, cb_eval=on_eval, flash_attn=False) as ctx:
        ctx.decode(tokens[:N_PROMPT])
        ctx.decode_each(tokens[N_PROMPT:N_PROMPT + N_DECODE])
    return out


@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m"])
def test_smoothing_f32_keys_moves_attention_only_by_rounding(model, text):
    from tq_gguf.runtime.lowlevel import Context

    path = models.fetch(model)
    with Context(path, cache="f32/f32", n_ctx=256) as ctx:
        tokens = ctx.tokenize(text)
    plain = _layer0_attention(path, "f32/f32", tokens)
    smoothed = _layer0_attention(path, "f32/f32:sk", tokens)
    assert len(plain) == len(smoothed) == 1 + N_DECODE
    for step, (a, b) in enumerate(zip(plain, smoothed)):
        ulp = np.spacing(np.abs(a).max())
        worst = np.abs(a - b).max()
        assert worst <= ULP_BOUND * ulp, f"graph {step}: layer 0's attention moved {worst:.3g} ({worst / ulp:.1f} ulp)"


def test_smoothing_moves_logits_no_more_than_rounding_noise(default_model_path, text):
    """KL(f32 || f32:sk) against KL(f32 || f16): both are rounding-sized changes of K."""
    from tq_gguf.runtime.lowlevel import Context

    from test_turbo_models import mean_kl

    out = {}
    for cache in ("f32/f32", "f32/f32:sk", "f16/f16"):
        with Context(default_model_path, cache=cache, n_ctx=256, n_threads=1, flash_attn=False) as ctx:
            tokens = ctx.tokenize(text)[:N_PROMPT + 32]
            ctx.decode(tokens[:N_PROMPT])
            out[cache] = ctx.decode_each(tokens[N_PROMPT:]).astype(np.float64)
    smoothed = mean_kl(out["f32/f32"], out["f32/f32:sk"])
    f16 = mean_kl(out["f32/f32"], out["f16/f16"])
    # measured: 0.0051 against 0.0060
    assert smoothed <= 2 * f16, (smoothed, f16)
