"""The turbo types and the trellis-coded value types on ggml's CUDA backend, on a CUDA device.

The same checks as test_vulkan.py: test-backend-ops against the CPU for every turbo
SET_ROWS, GET_ROWS, CPY and FLASH_ATTN_EXT case; SET_ROWS bytes and GET_ROWS floats bit
for bit against the NumPy reference; the verify harness on the device. For tcq2 and tcq3
(the tests at the end): SET_ROWS bytes and GET_ROWS floats against the reference, and flash
attention with a tcq V. They need a build with the CUDA backend and a GPU, so on a machine
without one they skip and say why (docs/BACKENDS.md gives the one command for a GPU
machine). Here CUDA is only compiled (tests/unit/test_cuda_compile.py).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from gpu_device import (QTYPES, TESTS_DIR, Device, assert_quantize_and_decode_exact, assert_rows_and_copies_pass,
                        verify_harness)
from tq_gguf import paths


CUDA = Device("CUDA0", "CUDA", "tq-gguf build --backend cuda, on a machine with an NVIDIA GPU", dict(os.environ))


@pytest.fixture(scope="module")
def cuda(native_lib):
    reason = CUDA.skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.mark.parametrize("op", ["SET_ROWS", "GET_ROWS", "CPY"])
def test_backend_ops_rows_and_copies(cuda, op):
    assert_rows_and_copies_pass(CUDA, op)


def test_backend_ops_flash_attn(cuda):
    """Every turbo FLASH_ATTN_EXT case (turbo K and/or V, head sizes 64 to 576) against the CPU."""
    passed, total, out = CUDA.backend_ops("FLASH_ATTN_EXT")
    assert passed == total, out[-3000:]
    assert total >= 100, total
    for qtype in QTYPES:
        assert f"type_K={qtype}" in out and f"type_V={qtype}" in out, qtype


def test_quantize_and_decode_are_exact(cuda):
    assert_quantize_and_decode_exact(CUDA)


def test_verify_harness_passes_on_cuda(cuda):
    out, _ = verify_harness(CUDA)
    assert out["max_head"] is None, out  # a real GPU runs every head size, 256 included


# -- the trellis-coded value types tcq2 and tcq3 (docs/FORMAT.md, section 12) -------------------
#
# V-only types: no K*Q dot product, so they are checked as SET_ROWS (the Viterbi encoder, bytes
# equal to the NumPy reference), GET_ROWS (each value decoded from its window of branch bits,
# floats equal bit for bit) and as the V of FLASH_ATTN_EXT beside the K types the CUDA build
# pairs them with (tq_gguf.nativebuild.builder.CUDA_FA_PAIRS), against float64 attention.

TCQ_TYPES = ("tcq2", "tcq3")


@pytest.mark.parametrize("op", ["SET_ROWS", "GET_ROWS", "CPY", "FLASH_ATTN_EXT"])
def test_backend_ops_tcq(cuda, op):
    """test-backend-ops' tcq cases (patch 0003: rows, copies, and flash attention with a tcq V
    beside f16, q8_0, q4_0 and turbo K, head sizes 64 to 256) on the device against the CPU."""
    passed, total, out = CUDA.backend_ops(op, pattern="tcq")
    assert total > 0 and passed == total, out[-3000:]
    for qtype in TCQ_TYPES:
        assert re.search(rf"{op}\([^\n]*{qtype}[^\n]*OK", out), f"no passing {op} case for {qtype} on CUDA0"

_TCQ_EXACT_WORKER = r"""
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
sys.path.insert(0, {unit!r})
from helpers import edge_blocks, random_rows, real_rows
from test_tcq import (MIDPOINT_SEEDS, SCALE_TIES, golden_input, midpoint_block, random_blocks, real_v_rows,
                      special_blocks)
from tq_gguf.native import backendops
from tq_gguf.reference import trellis as ref

def scale_tie(qtype):
    seed, x0, _ = SCALE_TIES[qtype]
    x = np.random.default_rng(seed).standard_normal(64).astype(np.float32)
    x[0] = np.float32(float.fromhex(x0))
    return x[None]

report = {{}}
for qtype in {qtypes!r}:
    cases = [("random_rows", random_rows()), ("edge_blocks", edge_blocks()),
             ("spec_random", random_blocks(np.random.default_rng(17), 40)), ("spec_special", special_blocks()),
             ("golden", golden_input()[None]), ("midpoint", midpoint_block(qtype, MIDPOINT_SEEDS[qtype])[None]),
             ("scale_tie", scale_tie(qtype)), ("real_v", real_v_rows())]
    cases += [("real%d" % i, r) for i, r in enumerate(real_rows())]
    for name, rows in cases:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        want = ref.quantize(rows, qtype)
        got = backendops.set_rows({device!r}, rows, qtype)
        bad_q = int(np.count_nonzero(np.any(got != want, axis=1)))
        vals = backendops.get_rows({device!r}, want, qtype, rows.shape[1])
        exp = ref.dequantize(want, qtype)
        same = (vals.view(np.uint32) == exp.view(np.uint32)) | (np.isnan(vals) & np.isnan(exp))
        bad_d = int(np.count_nonzero(~np.all(same, axis=1)))
        report["%s/%s" % (qtype, name)] = [int(rows.shape[0]), bad_q, bad_d]
print("REPORT " + json.dumps(report))
"""


def test_tcq_quantize_and_decode_are_exact(cuda):
    """SET_ROWS into tcq2/tcq3 gives the NumPy reference's bytes and GET_ROWS its floats, bit for
    bit: random rows, the turbo edge blocks, the spec's random, special, midpoint and scale-tie
    blocks of tests/unit/test_tcq.py, its test vector and the real (rotated) K/V rows."""
    code = _TCQ_EXACT_WORKER.format(tests=str(TESTS_DIR), unit=str(TESTS_DIR / "unit"), qtypes=TCQ_TYPES,
                                    device=CUDA.name)
    res = CUDA.run_py(code)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    report = json.loads(next(l for l in res.stdout.splitlines() if l.startswith("REPORT "))[len("REPORT "):])
    n_real = len(np.load(paths.KV_ROWS).files)
    assert len(report) == len(TCQ_TYPES) * (8 + n_real), sorted(report)
    bad = {k: v for k, v in report.items() if v[1] or v[2]}
    assert not bad, f"rows differing from the reference (rows, bad quantized, bad decoded): {bad}"
    assert sum(v[0] for v in report.values()) > 4000


_TCQ_FA_WORKER = r"""
import json
import numpy as np
from tq_gguf.analysis.verifyinputs import make_inputs
from tq_gguf.analysis.verifytolerance import FLASH_ATTN_TOLERANCE, STOCK_MARGIN, attention_over
from tq_gguf.native import backendops, ggml
from tq_gguf import reference
from tq_gguf.reference import trellis as ref

dev = {device!r}
pairs = {pairs!r}

def k_values(k, k_type):
    if k_type == "f16":
        return k.astype(np.float16).astype(np.float32)
    if k_type in reference.QTYPES:
        return reference.dequantize(reference.quantize(k, k_type), k_type)
    tid = backendops.type_id(k_type)
    return ggml.dequantize(ggml.quantize(k, tid), tid, k.size).reshape(k.shape)

rng = np.random.default_rng(5)
inputs = [(name, q, k, v) for name, q, k, v in make_inputs().attention]
for d in (64, 128, 256):
    # 512 keys: the vector kernel (n_kv a multiple of 256) with 1 query, the tile/MMA kernels
    # (V converted to f16 by the tcq decoder) with 24
    k = reference.rotate(rng.standard_normal((512, d)).astype(np.float32))
    v = reference.rotate((rng.standard_normal((512, d)) * rng.lognormal(0, 1, (512, 1))).astype(np.float32))
    for n_q in (1, 24):
        q = reference.rotate(rng.standard_normal((n_q, d)).astype(np.float32))
        inputs.append(("synthetic d%d q%d" % (d, n_q), q, k, v))

report = {{}}
for k_type, v_type in pairs:
    for name, q, k, v in inputs:
        if not (np.isfinite(k).all() and np.isfinite(v).all()):
            continue
        # the op's V bytes come from ggml's CPU quantizer: they must be the reference's
        tid = backendops.type_id(v_type)
        host = ggml.quantize(np.ascontiguousarray(v, np.float32), tid).reshape(v.shape[0], -1)
        same_bytes = bool(np.array_equal(host, ref.quantize(v, v_type)))
        v_deq = ref.dequantize(ref.quantize(v, v_type), v_type)
        want = attention_over(q, k_values(k, k_type), v_deq)
        got = backendops.flash_attn(dev, q[None], k[None], v[None], k_type, v_type)[:, 0, :].astype(np.float64)
        tol = FLASH_ATTN_TOLERANCE * np.abs(np.asarray(v_deq, np.float64)).max()
        ratio = float(np.max(np.abs(got - want)) / tol)
        bound = 1.0
        if ratio > 1:
            # large scores: hold the pair to the device's own q8_0/q8_0 error, as tq-gguf verify does
            q8 = backendops.type_id("q8_0")
            deq = lambda x: ggml.dequantize(ggml.quantize(x, q8), q8, x.size).reshape(x.shape)
            stock = backendops.flash_attn(dev, q[None], k[None], v[None], "q8_0", "q8_0")[:, 0, :]
            stock = float(np.max(np.abs(stock.astype(np.float64) - attention_over(q, deq(k), deq(v)))) / tol)
            bound = max(1.0, STOCK_MARGIN * stock)
        report["%s-%s/%s" % (k_type, v_type, name)] = [same_bytes, ratio, bound, int(k.shape[0]), int(q.shape[0])]
print("REPORT " + json.dumps(report))
"""


def test_tcq_v_flash_attn_within_tolerance(cuda):
    """FLASH_ATTN_EXT with a tcq V and each K type the CUDA build compiles a vector kernel for
    beside it (f16, q8_0, turbo), at head sizes 64 to 256, on the verify harness's attention
    inputs and on synthetic caches that take the vector kernel (one query) and the tile/MMA
    kernels (24 queries): within tq-gguf verify's flash-attention tolerance of float64
    attention over the reference's decoded V."""
    from tq_gguf.nativebuild.builder import CUDA_FA_PAIRS

    pairs = [tuple(p.split("-")) for p in CUDA_FA_PAIRS if p.split("-")[1] in TCQ_TYPES]
    assert {v for _, v in pairs} == set(TCQ_TYPES) and {k for k, _ in pairs} >= {"f16", "q8_0"}, pairs
    res = CUDA.run_py(_TCQ_FA_WORKER.format(device=CUDA.name, pairs=pairs))
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    report = json.loads(next(l for l in res.stdout.splitlines() if l.startswith("REPORT "))[len("REPORT "):])
    assert {key.split("/")[0] for key in report} == {f"{k}-{v}" for k, v in pairs}, sorted(report)
    bad_bytes = [key for key, r in report.items() if not r[0]]
    assert not bad_bytes, f"ggml's CPU quantizer differs from the reference for: {bad_bytes}"
    over = {key: r for key, r in report.items() if r[1] > r[2]}
    assert not over, f"beyond the tolerance (same bytes, error/tolerance, bound, keys, queries): {over}"
    assert any("synthetic d256 q24" in key for key in report)
