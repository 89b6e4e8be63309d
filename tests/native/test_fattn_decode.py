"""Single-token flash attention over turbo caches on the CPU (native/cpu/tq-fattn.c).

Decode with a turbo K and/or V takes the grouped kernel: one pass over each K/V row
serves every query head of its GQA group, the KV range split between threads. Here
its output is held to exact (float64) attention over the rows the cache holds (the query
stays float whatever K's type), within
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
    want = _exact(q, _stored(k, k_type), _stored(v, v_type), g)
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
    want = _exact(q, _stored(k, k_type), _stored(v, v_type), g, mask=mask.astype(np.float16).astype(np.float64))
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


# Batch invariance (FORMAT.md §7.1): a query row's output depends only on the row, the cache and
# its mask row, so the last prompt token decoded alone (a session continued from a saved state
# or a reused prefix) gives the floats it got inside the prompt's batch.
INVARIANCE = [("q8_0", "turbo3", 3, 64), ("turbo4", "turbo4", 6, 128), ("turbo2", "f16", 4, 256),
              ("f16", "turbo4", 1, 128), ("turbo3", "q8_0", 8, 64)]


def _causal(n_q: int, n_kv: int) -> np.ndarray:
    """The mask of a batch whose last query sits at cell n_kv - 1 (the cache padded by 40 cells)."""
    last = n_kv - 41
    pos = np.arange(last - n_q + 1, last + 1)[:, None]
    return np.where(np.arange(n_kv)[None, :] <= pos, 0.0, -np.inf).astype(np.float32)


@pytest.mark.parametrize("k_type,v_type,g,d", INVARIANCE, ids=[f"{k}-{v}-gqa{g}-d{d}" for k, v, g, d in INVARIANCE])
def test_a_row_gives_the_same_floats_alone_and_in_a_batch(native_lib, k_type, v_type, g, d):
    n_q, n_kv = 21, 1100
    rng = np.random.default_rng(g * 31 + d)
    q = (rng.standard_normal((N_KV_HEADS * g, n_q, d)) * 2.0).astype(np.float32)
    _, k, v = _inputs(g, d, n_kv, seed=g + d)
    mask = _causal(n_q, n_kv)
    batch = backendops.flash_attn("CPU", q, k, v, k_type, v_type, mask=mask, n_threads=2)
    for i in (0, 7, n_q - 1):
        alone = backendops.flash_attn("CPU", q[:, i:i + 1], k, v, k_type, v_type, mask=mask[i:i + 1], n_threads=2)
        assert np.array_equal(alone[0].view(np.uint32), batch[i].view(np.uint32)), f"row {i} differs"


@pytest.mark.parametrize("n_q", [1, 9])
def test_the_thread_count_does_not_change_a_bit(native_lib, n_q):
    g, d, n_kv = 3, 128, 3000
    rng = np.random.default_rng(n_q)
    q = (rng.standard_normal((N_KV_HEADS * g, n_q, d)) * 2.0).astype(np.float32)
    _, k, v = _inputs(g, d, n_kv, seed=11)
    mask = _causal(n_q, n_kv)
    outs = [backendops.flash_attn("CPU", q, k, v, "q8_0", "turbo3", mask=mask, n_threads=t) for t in (1, 2, 3)]
    assert np.array_equal(outs[0].view(np.uint32), outs[1].view(np.uint32))
    assert np.array_equal(outs[0].view(np.uint32), outs[2].view(np.uint32))


@pytest.mark.parametrize("k_type,v_type", [("turbo3", "q8_0"), ("q8_0", "turbo2"), ("turbo4", "turbo3"),
                                           ("f16", "turbo4"), ("turbo2", "f16")])
def test_one_key_gives_its_v_row_bit_for_bit(native_lib, k_type, v_type):
    """With one cell the softmax weight is exactly 1, so the output is the cell's V row as the
    kernel expands it: this holds the kernel's K/V row expansion (its own SIMD q8_0 one
    included) to ggml's dequantizer exactly."""
    g, d = 3, 128
    q, k, v = _inputs(g, d, 1, seed=5)
    got = backendops.flash_attn("CPU", q, k, v, k_type, v_type)[0]
    want = _stored(v, v_type)
    for h in range(N_KV_HEADS * g):
        assert np.array_equal(got[h].view(np.uint32), want[h // g, 0].view(np.uint32))
