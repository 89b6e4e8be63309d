"""Reference attention with turbo caches, and the research-only QJL estimator and scale study
(tools/studies/qjl.py, tools/studies/study.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tq_gguf.reference import CENTROIDS, dequantize, quantize, rotate
from tq_gguf.reference.attention import float_attention, turbo_attention
from tq_gguf.reference.quants import QTYPES, TYPES

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "studies"))  # research code is a tool, not the package
from qjl import QJLProd, mse_reconstruct, one_bit_centroid  # noqa: E402
from study import reconstruct  # noqa: E402


@pytest.fixture(scope="module")
def head():
    rng = np.random.default_rng(12)
    d, n = 128, 256
    k = rng.standard_t(4, (n, d)).astype(np.float32)
    k[:, 7] *= 15  # an outlier channel, as real keys have
    v = rng.standard_normal((n, d)).astype(np.float32)
    q = (rng.standard_normal((8, d)) + k[rng.integers(0, n, 8)] / 4).astype(np.float32)
    return q, k, v


def test_float_cache_reproduces_float_attention(head):
    q, k, v = head
    ref = float_attention(q, k, v)
    assert np.allclose(turbo_attention(q, k, v, None, None), ref, atol=1e-5)


def test_rotation_leaves_scores_unchanged(head):
    q, k, _ = head
    assert np.allclose(rotate(q) @ rotate(k).T, q.astype(np.float64) @ k.T, rtol=1e-4, atol=1e-3)


def test_error_shrinks_with_bits(head):
    q, k, v = head
    ref = float_attention(q, k, v)
    errs = {}
    for qt in QTYPES:
        out = turbo_attention(q, k, v, qt, qt)
        errs[qt] = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert errs["turbo4"] < errs["turbo3"] < errs["turbo2"] < 0.6
    assert errs["turbo4"] < 0.15
    # K only / V only are each better than both
    both = errs["turbo3"]
    for kt, vt in (("turbo3", None), (None, "turbo3")):
        assert np.linalg.norm(turbo_attention(q, k, v, kt, vt) - ref) / np.linalg.norm(ref) < both


def test_rotation_helps_outlier_keys(head):
    """Without the rotation an outlier channel dominates each block's norm and the
    other channels collapse; with it the block looks like the codebook's law."""
    q, k, v = head
    plain = dequantize(quantize(k, "turbo3"), "turbo3")
    rot = turbo_attention(q, k, v, "turbo3", None)
    ref = float_attention(q, k, v)
    unrot = float_attention(q, plain, v)
    assert np.linalg.norm(rot - ref) < np.linalg.norm(unrot - ref)


def test_one_bit_centroid_is_mean_abs_coordinate():
    rng = np.random.default_rng(13)
    u = rng.standard_normal((200_000, 64))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    assert abs(np.abs(u).mean() / one_bit_centroid(64) - 1) < 2e-3


def test_qjl_estimator_is_unbiased_and_noisier_than_mse():
    rng = np.random.default_rng(14)
    d = 64
    x = rng.standard_normal((1, d))
    x /= np.linalg.norm(x)
    y = x + rng.standard_normal((1, d)) * 0.3
    true = float((y @ x.T)[0, 0])
    # average over many independent sketches: the estimate converges to <y, x>
    ests = []
    for s in range(400):
        prod = QJLProd(3, d, np.random.default_rng(1000 + s))
        ests.append(prod.inner(prod.encode(x), y)[0, 0])
    ests = np.array(ests)
    assert abs(ests.mean() - true) < 4 * ests.std() / np.sqrt(len(ests))


def test_qjl_variance_exceeds_mse_only_at_equal_bits():
    rng = np.random.default_rng(15)
    d = 64
    x = rng.standard_normal((4000, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = rng.standard_normal((1, d)) / np.sqrt(d)
    true = (y @ x.T)[0]
    for bits in (2, 3, 4):
        prod = QJLProd(bits, d, np.random.default_rng(bits))
        err_prod = prod.inner(prod.encode(x), y)[0] - true
        err_mse = (y @ mse_reconstruct(x, bits).T)[0] - true
        assert err_prod.var() > 3 * err_mse.var()


def test_study_preserve_rule_is_the_format():
    """The format stores the study's 'preserve' amplitude, norm / |C[idx]|, for whichever indices its
    scale search picked (up to float64 vs float32 norms and the fp16 rounding)."""
    rng = np.random.default_rng(16)
    x = rng.standard_normal((500, 64)).astype(np.float32)
    norm = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    for bits, qt in ((2, "turbo2"), (3, "turbo3"), (4, "turbo4")):
        raw = quantize(x, qt)
        fmt = dequantize(raw, qt).astype(np.float64)
        c = CENTROIDS[bits][TYPES[qt].indices(raw)].astype(np.float64)
        assert np.allclose(c * norm / np.linalg.norm(c, axis=1, keepdims=True), fmt, rtol=1e-3, atol=0)
        # and the rules really differ, so the study measures something
        assert not np.allclose(reconstruct(x, bits, "norm"), fmt, rtol=1e-3, atol=0)
