"""Single-token flash attention over turbo caches on the CPU (native/cpu/tq-fattn.c).

Decode with a turbo K and/or V takes the grouped kernel: one pass over each K/V row
serves every query head of its GQA group, the KV range split between threads. Here
its output is held to exact (float64) attention over the rows the cache holds (and the
query as the op uses it: rounded to q8_0 or f16 for such K, as ggml's path does), within
the flash-attention tolerance of `tq-gguf verify` (2^-8 of max |v| per coordinate),
for GQA ratios 1 to 8, head sizes 64/128/256, caches of 512 to 8192 cells and turbo
K/V next to each other, q8_0 and f16. test-backend-ops holds the same kernel to
ggml's per-head reference path (tests/native/test_backend_ops.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from tq_gguf.analysis.verify import FLASH_ATTN_TOLERANCE, attention
from tq_gguf.native import backendops, ggml

TURBO = ("turbo2", "turbo3", "turbo4")
PAIRS = ([(k, v) for k in TURBO for v in TURBO]
         + [(p, t) for p in ("q8_0", "f16") for t in TURBO]
         + [(t, p) for p in ("q8_0", "f16") for t in TURBO])
GQA = (1, 2, 3, 4, 6, 8)
HEADS = (64, 128, 256)
CELLS = (512, 1500, 4096, 8192)
N_KV_HEADS = 2

CASES = [(kt, vt, g, HEADS[(i + j) % 3], CELLS[(i + 2*j) % 4])
         for i, (kt, vt) in enumerate(PAIRS) for j, g in enumerate(GQA)]


def _stored(x: np.ndarray, type_name: str) -> np.ndarray:
    """The float32 values a cache of `type_name` holds for rows x (n_head, n, d)."""
    if type_name == "f16":
        return x.astype(np.float16).astype(np.float32)
    tid = backendops.type_id(type_name)
    rows = x.reshape(-1, x.shape[-1])
    return ggml.dequantize(ggml.quantize(rows, tid), tid, rows.size).reshape(x.shape)


def _query(q: np.ndarray, k_type: str) -> np.ndarray:
    """The query as the op uses it: ggml's CPU converts it to K's vec_dot type (q8_0 for q8_0 K,
    f16 for f16 K, as its reference path does; float for turbo K)."""
    return _stored(q, k_type) if k_type in ("q8_0", "f16") else q


def _exact(q, k, v, g, mask=None):
    """float64 attention of every query head over its KV head's rows: (n_head, d_v)."""
    scale = 1.0 / np.sqrt(k.shape[-1])
    out = []
    for h in range(q.shape[0]):
        s = np.asarray(q[h], np.float64) @ np.asarray(k[h // g], np.float64).T * scale
        if mask is not None:
            s = s + mask
        out.append(attention(s, v[h // g])[0])
    return np.array(out)


def _inputs(g, d, n_kv, seed):
    rng = np.random.default_rng(seed)
    # rotated cache rows look Gaussian; a spread of norms and some peaked scores
    q = (rng.standard_normal((N_KV_HEADS * g, 1, d)) * 2.0).astype(np.float32)
    k = (rng.standard_normal((N_KV_HEADS, n_kv, d)) * rng.uniform(0.5, 2.0, (N_KV_HEADS, n_kv, 1))).astype(np.float32)
    v = rng.standard_normal((N_KV_HEADS, n_kv, d)).astype(np.float32)
    return q, k, v


@pytest.mark.parametrize("k_type,v_type,g,d,n_kv", CASES,
                         ids=[f"{kt}-{vt}-gqa{g}-d{d}-kv{n}" for kt, vt, g, d, n in CASES])
def test_decode_within_the_flash_attention_tolerance(native_lib, k_type, v_type, g, d, n_kv):
    q, k, v = _inputs(g, d, n_kv, seed=g * 1000 + d + n_kv)
    got = backendops.flash_attn("CPU", q, k, v, k_type, v_type)[0]
    want = _exact(_query(q, k_type), _stored(k, k_type), _stored(v, v_type), g)
    v_deq = _stored(v, v_type)
    tol = FLASH_ATTN_TOLERANCE * np.abs(v_deq).max()
    err = np.abs(got.astype(np.float64) - want).max()
    assert err <= tol, f"max error {err:.3g} > tolerance {tol:.3g}"


@pytest.mark.parametrize("k_type,v_type", [("q8_0", "turbo3"), ("turbo4", "turbo3"), ("turbo2", "f16")])
def test_decode_with_a_mask(native_lib, k_type, v_type):
    g, d, n_kv = 3, 64, 1000
    q, k, v = _inputs(g, d, n_kv, seed=7)
    mask = np.zeros((1, n_kv), np.float32)
    mask[0, 700:] = -np.inf            # unused cells at the end of the cache
    mask[0, 100:140] = -np.inf         # and a hole
    mask[0, :50] = -2.0                # a finite bias
    got = backendops.flash_attn("CPU", q, k, v, k_type, v_type, mask=mask)[0]
    want = _exact(_query(q, k_type), _stored(k, k_type), _stored(v, v_type), g, mask=mask.astype(np.float16).astype(np.float64))
    tol = FLASH_ATTN_TOLERANCE * np.abs(_stored(v, v_type)).max()
    assert np.abs(got - want).max() <= tol


def test_a_wrong_level_is_beyond_the_tolerance(native_lib):
    """The check is tight enough to catch a decode off by one codebook level in one V block."""
    g, d, n_kv = 4, 128, 512
    q, k, v = _inputs(g, d, n_kv, seed=3)
    # peaked attention on one key, so its V row dominates the output
    k[0, 5] *= 3.0 * np.sqrt(d) / np.linalg.norm(k[0, 5])
    q[:, 0, :] = k[0, 5] * 4.0 / np.sqrt(d)
    got = backendops.flash_attn("CPU", q, k, v, "turbo4", "turbo4")[0]
    v_deq = _stored(v, "turbo4")
    tol = FLASH_ATTN_TOLERANCE * np.abs(v_deq).max()
    want = _exact(q, _stored(k, "turbo4"), v_deq, g)
    assert np.abs(got - want).max() <= tol
    # one value of the dominant row one level up (turbo4 levels are ~0.06 of a unit row apart)
    wrong = v_deq.copy()
    wrong[0, 5, 0] += 0.06 * np.linalg.norm(v_deq[0, 5, :64])
    assert np.abs(got - _exact(q, _stored(k, "turbo4"), wrong, g)).max() > tol
