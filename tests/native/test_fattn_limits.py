"""The CPU's turbo flash-attention kernel (native/cpu/tq-fattn.c) at its limits: non-finite
values in cells a query masks, a thread stack smaller than some C libraries give, prompts
whose K and V rows outgrow its expansion budget, and the ops it declines.

- A masked key never touches a row: an inf or NaN in the V row (or K row) of a cell a query
  masks leaves that query's output exactly as with a finite row there, as in ggml's own path.
- Its scratch comes from ggml's work buffer, none from the stack: it runs on a 96 KiB
  thread stack (it needed some 140 KiB of stack at head size 1024).
- A batch expands its rows one window of cells at a time, so the work buffer it asks for
  does not grow with the context, and the windows change no bit of the result.
- A declined op is logged once per reason, and the reasons can be listed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tq_gguf.analysis.verify import FLASH_ATTN_TOLERANCE, attention
from tq_gguf.native import backendops, ggml

N_KV_HEADS = 2
EXPAND_BUDGET = 8 << 20  # TQ_FA_EXPAND_BUDGET in tq-fattn.c


def _causal(n_q: int, n_kv: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch's mask with its last query at cell n_kv - 41, and each query's cell."""
    last = n_kv - 41
    pos = np.arange(last - n_q + 1, last + 1)
    mask = np.where(np.arange(n_kv)[None, :] <= pos[:, None], 0.0, -np.inf).astype(np.float32)
    return mask, pos


def _rows(g: int, d: int, n_q: int, n_kv: int, seed: int):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((N_KV_HEADS * g, n_q, d)) * 2.0).astype(np.float32)
    k = rng.standard_normal((N_KV_HEADS, n_kv, d)).astype(np.float32)
    v = rng.standard_normal((N_KV_HEADS, n_kv, d)).astype(np.float32)
    return q, k, v


# A pass of the kernel holds max(1, 16 // g) positions, so with the bad cells at the cells of
# queries 11 and 13, queries 10 and 12 share a pass with a query that sees a bad cell while
# masking it themselves (with g = 1, 3 and 8 alike).
BAD_AT = (11, 13)
NONFINITE = [("turbo3", "f16", 3, 128), ("turbo4", "f32", 1, 64), ("turbo2", "f16", 8, 128),
             ("turbo4", "f16", 2, 256)]


@pytest.mark.parametrize("k_type,v_type,g,d", NONFINITE, ids=[f"{k}-{v}-gqa{g}-d{d}" for k, v, g, d in NONFINITE])
def test_a_masked_v_row_never_reaches_a_query(native_lib, k_type, v_type, g, d):
    n_q, n_kv = 21, 1100
    q, k, v = _rows(g, d, n_q, n_kv, seed=g * 7 + d)
    mask, pos = _causal(n_q, n_kv)
    bad, clean = v.copy(), v.copy()
    bad[:, pos[BAD_AT[0]], 5] = np.inf
    bad[:, pos[BAD_AT[1]], :3] = (np.nan, -np.inf, np.inf)
    clean[:, pos[list(BAD_AT)]] = 0.0
    got = backendops.flash_attn("CPU", q, k, bad, k_type, v_type, mask=mask, n_threads=2)
    want = backendops.flash_attn("CPU", q, k, clean, k_type, v_type, mask=mask, n_threads=2)
    first = BAD_AT[0]
    assert np.isfinite(got[:first]).all(), "a query that masks the bad cells got a non-finite value"
    assert np.array_equal(got[:first].view(np.uint32), want[:first].view(np.uint32))
    # a query that sees an inf or NaN V row gets it, as with ggml's path
    assert not np.isfinite(got[first:]).all(axis=(1, 2)).any()


def test_a_masked_k_row_never_reaches_a_query(native_lib):
    g, d, n_q, n_kv = 3, 128, 21, 1100
    q, k, v = _rows(g, d, n_q, n_kv, seed=3)
    mask, pos = _causal(n_q, n_kv)
    bad, clean = k.copy(), k.copy()
    bad[:, pos[BAD_AT[0]], 9] = np.inf
    bad[:, pos[BAD_AT[1]], 2] = np.nan
    clean[:, pos[list(BAD_AT)]] = 0.0
    got = backendops.flash_attn("CPU", q, bad, v, "f16", "turbo3", mask=mask, n_threads=2)
    want = backendops.flash_attn("CPU", q, clean, v, "f16", "turbo3", mask=mask, n_threads=2)
    assert np.array_equal(got[:BAD_AT[0]].view(np.uint32), want[:BAD_AT[0]].view(np.uint32))


STACK_SCRIPT = textwrap.dedent("""
    import threading, numpy as np
    from tq_gguf.native import backendops
    rng = np.random.default_rng(0)
    q = rng.standard_normal((4, 40, 1024)).astype(np.float32)
    k = rng.standard_normal((2, 600, 1024)).astype(np.float32)
    v = rng.standard_normal((2, 600, 1024)).astype(np.float32)
    backendops.flash_attn("CPU", q[:, :1], k[:, :2], v[:, :2], "turbo4", "turbo3", n_threads=1)  # loads the library
    out = {}
    def run():
        out["batch"] = backendops.flash_attn("CPU", q, k, v, "turbo4", "turbo3", n_threads=1)
        out["decode"] = backendops.flash_attn("CPU", q[:, :1], k, v, "turbo4", "turbo3", n_threads=1)
    threading.stack_size(96 * 1024)
    t = threading.Thread(target=run)
    t.start()
    t.join()
    print("finite", bool(np.isfinite(out["batch"]).all() and np.isfinite(out["decode"]).all()))
""")


def test_the_kernel_runs_on_a_small_thread_stack(native_lib):
    """With one thread ggml computes on the calling thread, here one with a 96 KiB stack
    (musl gives a thread 128 KiB); the kernel's scratch at head size 1024 is some 140 KiB."""
    run = subprocess.run([sys.executable, "-c", STACK_SCRIPT], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"exit {run.returncode}: {run.stderr[-500:]}"
    assert run.stdout.strip() == "finite True"


def test_a_prompts_scratch_does_not_grow_with_the_context(native_lib):
    """Eight KV heads of 128 (8 KiB of float K and V per cell): a window holds 1024 cells."""
    sizes = {n_kv: backendops.flash_attn_work_size(16, 512, 128, 8, n_kv, "q8_0", "turbo3", n_threads=2)
             for n_kv in (1024, 8192, 65536)}
    assert len(set(sizes.values())) == 1, sizes
    per_thread = 100 << 10  # a thread's tiles at head size 128 take about 63 KiB
    assert EXPAND_BUDGET < sizes[65536] <= EXPAND_BUDGET + 2 * per_thread


def _exact(q, k, v, g, mask):
    scale = 1.0 / np.sqrt(k.shape[-1])
    out = []
    for h in range(q.shape[0]):
        s = np.asarray(q[h], np.float64) @ np.asarray(k[h // g], np.float64).T * scale + mask
        out.append(attention(s, v[h // g]))
    return np.stack(out, axis=1)  # (n_q, n_head, d)


def _stored(x: np.ndarray, type_name: str) -> np.ndarray:
    tid = backendops.type_id(type_name)
    rows = x.reshape(-1, x.shape[-1])
    return ggml.dequantize(ggml.quantize(rows, tid), tid, rows.size).reshape(x.shape)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_windows_change_no_bit(native_lib, n_threads):
    """3000 cells over eight KV heads of 128 take three windows of 1024 cells: every row of the
    batch gets the floats it gets decoded alone (one walk, no windows), on any thread count,
    and the exact attention within the flash-attention tolerance."""
    g, d, n_q, n_kv, n_kv_heads = 2, 128, 13, 3000, 8
    rng = np.random.default_rng(n_threads)
    q = (rng.standard_normal((n_kv_heads * g, n_q, d)) * 2.0).astype(np.float32)
    k = rng.standard_normal((n_kv_heads, n_kv, d)).astype(np.float32)
    v = rng.standard_normal((n_kv_heads, n_kv, d)).astype(np.float32)
    mask, _ = _causal(n_q, n_kv)
    batch = backendops.flash_attn("CPU", q, k, v, "q8_0", "turbo3", mask=mask, n_threads=n_threads)
    for i in (0, 6, n_q - 1):
        alone = backendops.flash_attn("CPU", q[:, i:i + 1], k, v, "q8_0", "turbo3", mask=mask[i:i + 1], n_threads=2)
        assert np.array_equal(alone[0].view(np.uint32), batch[i].view(np.uint32)), f"row {i} differs"
    want = _exact(q, _stored(k, "q8_0"), _stored(v, "turbo3"), g, mask)
    assert np.abs(batch - want).max() <= FLASH_ATTN_TOLERANCE * np.abs(_stored(v, "turbo3")).max()


DECLINE_SCRIPT = textwrap.dedent("""
    import numpy as np
    from tq_gguf.native import backendops
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 3, 64)).astype(np.float32)
    k = rng.standard_normal((1, 70, 64)).astype(np.float32)
    for _ in range(3):
        backendops.flash_attn("CPU", q, k, k, "turbo3", "turbo3", n_threads=1)
        # a V head size of 32: not a whole 64-value block
        backendops.flash_attn("CPU", q, k, k[:, :, :32].copy(), "turbo3", "f16", n_threads=1)
    print([declined for _, declined in backendops.flash_attn_declines()])
""")


def test_a_declined_op_is_logged_once_per_reason(native_lib):
    env = dict(os.environ, GGML_TQ_FA="0")
    run = subprocess.run([sys.executable, "-c", DECLINE_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-500:]
    lines = [ln for ln in run.stderr.splitlines() if "per-row path" in ln]
    reasons = backendops.flash_attn_declines()
    assert lines == [f"tq-gguf: flash attention over a turbo cache takes ggml's slower per-row path: {reasons[0][0]}"]
    assert run.stdout.strip() == str([True] + [False] * (len(reasons) - 1))

    run = subprocess.run([sys.executable, "-c", DECLINE_SCRIPT], capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "GGML_TQ_FA"})
    assert run.returncode == 0, run.stderr[-500:]
    lines = [ln for ln in run.stderr.splitlines() if "per-row path" in ln]
    assert len(lines) == 1 and "head size" in lines[0], run.stderr[-500:]
    declined = [text for text, _ in reasons if "head size" in text]
    assert run.stdout.strip() == str([text in declined for text, _ in reasons])

