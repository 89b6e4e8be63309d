"""Checks of the turbo types on one ggml GPU device, shared by test_vulkan.py and test_cuda.py.

Every check runs in a child process: ggml enumerates devices once per process, and a
driver fault must fail one check, not the whole test session.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tq_gguf import paths
from tq_gguf.kv.cachetypes import TURBO_TYPES

TESTS_DIR = Path(__file__).parent
QTYPES = list(TURBO_TYPES)


@dataclass(frozen=True)
class Device:
    name: str                 # ggml's device name, e.g. Vulkan0, CUDA0
    backend: str              # ggml's backend name, e.g. Vulkan, CUDA
    build_hint: str           # how to get a build with this backend
    env: dict[str, str] = field(default_factory=dict)
    ci_required: bool = False  # under CI=true a missing device fails the run instead of skipping it

    def run_py(self, code: str, timeout: int = 1800) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                              env=self.env, cwd=str(paths.REPO_ROOT))

    def skip_reason(self) -> str | None:
        """Why this machine cannot run the device's checks, or None."""
        from tq_gguf.native import ggml

        if self.backend not in ggml.backends():
            return f"the installed build has no {self.backend} backend ({self.build_hint})"
        res = self.run_py("from tq_gguf.native import backendops; print(' '.join(backendops.devices()))", timeout=300)
        if res.returncode != 0:
            return f"listing ggml devices failed: {res.stderr[-500:]}"
        if self.name not in res.stdout.split():
            return f"no {self.name} device here (ggml lists: {res.stdout.strip()})"
        return None

    def require(self) -> None:
        """Skip the calling test when this machine cannot run the device's checks, naming why; in
        CI (CI=true) fail instead if the device is required there, since a run whose device
        checks all skip would pass having checked nothing."""
        reason = self.skip_reason()
        if reason is None:
            return
        if self.ci_required and os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs the {self.name} device and it is missing: {reason}", pytrace=False)
        pytest.skip(reason)

    def backend_ops(self, op: str, pattern: str = "turbo", timeout: int = 2400) -> tuple[int, int, str]:
        """test-backend-ops on this device against the CPU: (passed, total, output)."""
        from tq_gguf.nativebuild.builder import tool_path

        res = subprocess.run([str(tool_path("test-backend-ops")), "test", "-b", self.name, "-o", op, "-p", pattern],
                             capture_output=True, text=True, timeout=timeout, env=self.env)
        out = res.stdout + res.stderr
        assert res.returncode == 0, out[-4000:]
        m = re.search(r"(\d+)/(\d+) tests passed", out)
        assert m, out[-3000:]
        return int(m.group(1)), int(m.group(2)), out


def assert_rows_and_copies_pass(device: Device, op: str) -> None:
    passed, total, out = device.backend_ops(op)
    assert passed == total, out[-3000:]
    for qtype in QTYPES:
        assert re.search(rf"{op}\(type[^)]*{qtype}.*OK", out), f"no passing {op} case for {qtype} on {device.name}"


_EXACT_WORKER = r"""
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from helpers import edge_blocks, random_rows, real_rows
from tq_gguf.native import backendops
from tq_gguf import reference as ref

cases = [("random", random_rows()), ("edge", edge_blocks())]
cases += [("real%d" % i, r) for i, r in enumerate(real_rows())]
report = {{}}
for qtype in {qtypes!r}:
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


def assert_quantize_and_decode_exact(device: Device) -> None:
    """SET_ROWS gives the reference's bytes and GET_ROWS its float32 values, bit for bit, on
    random rows, the spec's edge cases and real K/V rows of three models."""
    res = device.run_py(_EXACT_WORKER.format(tests=str(TESTS_DIR), qtypes=QTYPES, device=device.name))
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    line = next(l for l in res.stdout.splitlines() if l.startswith("REPORT "))
    report = json.loads(line[len("REPORT "):])
    n_real = len(np.load(paths.KV_ROWS).files)
    assert len(report) == len(QTYPES) * (2 + n_real), sorted(report)
    bad = {k: v for k, v in report.items() if v[1] or v[2]}
    assert not bad, f"rows differing from the reference (rows, bad quantized, bad decoded): {bad}"
    assert sum(v[0] for v in report.values()) > 2000


_VERIFY_WORKER = """
import json
from tq_gguf.analysis import verify
from tq_gguf.native import backendops
inputs = verify.make_inputs()
kernel = next(k for k in verify.compiled_kernels()[0] if k.variant == "%s")
print(json.dumps({"description": backendops.description(kernel.variant), "max_head": kernel.flash_attn_max_head,
                  "results": [r.__dict__ for t in verify.QTYPES for r in verify.check_kernel(kernel, t, inputs)]}))
"""


def verify_harness(device: Device) -> tuple[dict, dict]:
    """`tq-gguf verify`'s harness on the device: (output, {(qtype, check): result}), with
    quantize and dequantize asserted exact and flash attention within its tolerance."""
    res = device.run_py(_VERIFY_WORKER % device.name, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    mine = {(r["qtype"], r["check"]): r for r in out["results"]}
    for qtype in QTYPES:
        assert mine[qtype, "quantize"]["status"] == "exact", mine[qtype, "quantize"]
        assert mine[qtype, "dequantize"]["status"] == "exact", mine[qtype, "dequantize"]
        fa = mine[qtype, "flash_attn"]
        assert fa["status"] in ("ok", "exact"), fa
        assert fa["rows"] > 0
    return out, mine


# --- the trellis-coded value types tcq2/tcq3 (docs/FORMAT.md, section 12) ---------------------

_TCQ_EXACT_WORKER = r"""
import json
import numpy as np
from tq_gguf.native import backendops, ggml
from tq_gguf.reference import trellis as ref

ffi = ggml.ffi
DEVICE = {device!r}
try:  # CPY is not in tq_gguf's declarations; declare it here for the f32 -> tcq copy
    ffi.cdef("struct ggml_tensor * ggml_cpy(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);")
except Exception:
    pass


def quantize_with(rows, qtype, how):
    # SET_ROWS from f16 rows, or CPY of f32 rows, on the device: the destination's bytes
    n_rows, n = rows.shape
    with backendops._Graph(DEVICE) as g:
        dst = g.tensor(qtype, n, n_rows)
        if how == "set_rows_f16":
            src = g.tensor("f16", n, n_rows)
            ids = g.tensor("i64", n_rows)
            out = g.base.ggml_set_rows(g.ctx, dst, src, ids)
        else:
            src = g.tensor("f32", n, n_rows)
            out = g.base.ggml_cpy(g.ctx, src, dst)
        g.alloc()
        g.set(dst, np.zeros(n_rows * int(g.base.ggml_row_size(backendops.type_id(qtype), n)), np.uint8))
        if how == "set_rows_f16":
            g.set(src, rows.astype(np.float16))
            g.set(ids, np.arange(n_rows, dtype=np.int64))
        else:
            g.set(src, rows)
        g.compute(out)
        return g.get(dst, np.uint8).reshape(n_rows, -1)


def same_floats(a, b):
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


data = np.load({inputs!r})
report = {{}}
for qtype in {qtypes!r}:
    for name in sorted(data.files):
        rows = np.ascontiguousarray(data[name], dtype=np.float32)
        want = ref.quantize(rows, qtype)
        got = backendops.set_rows(DEVICE, rows, qtype)
        entry = {{"rows": int(rows.shape[0]), "set_rows": int(np.count_nonzero(np.any(got != want, axis=1)))}}
        wide = rows.astype(np.float16).astype(np.float32)
        entry["set_rows_f16"] = int(np.count_nonzero(np.any(quantize_with(rows, qtype, "set_rows_f16") != ref.quantize(wide, qtype), axis=1)))
        entry["cpy"] = int(np.count_nonzero(np.any(quantize_with(rows, qtype, "cpy") != want, axis=1)))
        vals = backendops.get_rows(DEVICE, want, qtype, rows.shape[1])
        entry["get_rows"] = int(np.count_nonzero(~np.all(same_floats(vals, ref.dequantize(want, qtype)), axis=1)))
        report["%s/%s" % (qtype, name)] = entry
    # any bytes decode as the reference decodes them: NaN, Inf and subnormal scales, every branch pattern
    noise = np.random.default_rng(5).integers(0, 256, (300, 4 * ref.trellis(qtype).type_size), dtype=np.uint8)
    noise[:3, :2] = [[0x00, 0x7E], [0x00, 0x7C], [0x01, 0x00]]
    vals = backendops.get_rows(DEVICE, noise, qtype, 256)
    report["%s/any-bytes" % qtype] = {{"rows": 300, "get_rows": int(np.count_nonzero(~np.all(same_floats(vals, ref.dequantize(noise, qtype)), axis=1)))}}
print("REPORT " + json.dumps(report))
"""


def tcq_quantize_and_decode_report(device: Device, inputs: Path, qtypes: list[str]) -> dict[str, dict[str, int]]:
    """The device's tcq encoder (SET_ROWS from f32 and f16, CPY from f32) and decoder (GET_ROWS)
    against the NumPy reference, on every (rows, width) array of the npz `inputs`, and the decoder
    on random bytes: {"qtype/case": {"rows": n, check: rows that differ}}."""
    res = device.run_py(_TCQ_EXACT_WORKER.format(device=device.name, inputs=str(inputs), qtypes=qtypes))
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    line = next(l for l in res.stdout.splitlines() if l.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])


_TCQ_FA_WORKER = r"""
import json
import numpy as np
from tq_gguf.native import backendops
from tq_gguf import reference
from tq_gguf.reference import trellis as ref

rng = np.random.default_rng(5)
q = rng.standard_normal((4, 3, 128)).astype(np.float32)
k = rng.standard_normal((2, 113, 128)).astype(np.float32)
v = reference.rotate(rng.standard_normal((2 * 113, 128)).astype(np.float32)).reshape(2, 113, 128)
mask = np.zeros((3, 113), np.float32); mask[:, 100:] = -np.inf


def decoded(x, qtype):
    flat = x.reshape(-1, x.shape[-1])
    if qtype == "f16":
        return flat.astype(np.float16).astype(np.float64).reshape(x.shape)
    mod = ref if qtype in ref.QTYPES else reference
    return mod.dequantize(mod.quantize(flat, qtype), qtype).astype(np.float64).reshape(x.shape)


def attention(kd, vd):
    # float64 attention over the decoded cache, ggml's layout (n_q, n_head, d_v); head h reads KV head h // 2
    out = np.empty((q.shape[1], q.shape[0], vd.shape[2]))
    for h in range(q.shape[0]):
        s = q[h].astype(np.float64) @ kd[h // 2].T / np.sqrt(q.shape[2]) + mask
        p = np.exp(s - s.max(axis=1, keepdims=True))
        out[:, h] = (p / p.sum(axis=1, keepdims=True)) @ vd[h // 2]
    return out


def nmse(a, b):
    return float(((a - b) ** 2).sum() / (b ** 2).sum())


report = {{}}
for qtype in {qtypes!r}:
    for k_type in {k_types!r}:
        want = attention(decoded(k, k_type), decoded(v, qtype))
        got = backendops.flash_attn({device!r}, q, k, v, k_type, qtype, mask=mask).astype(np.float64)
        cpu = backendops.flash_attn("CPU", q, k, v, k_type, qtype, mask=mask).astype(np.float64)
        report["%s/%s" % (k_type, qtype)] = [nmse(got, want), nmse(got, cpu), float(np.abs(want).max())]
print("REPORT " + json.dumps(report))
"""


def tcq_flash_attn_report(device: Device, qtypes: list[str], k_types: list[str]) -> dict[str, list[float]]:
    """Flash attention with a tcq V on the device: {"k_type/qtype": [NMSE against float64 attention
    over the reference-decoded cache, NMSE against the CPU backend, max |reference|]}."""
    res = device.run_py(_TCQ_FA_WORKER.format(device=device.name, qtypes=qtypes, k_types=k_types))
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    line = next(l for l in res.stdout.splitlines() if l.startswith("REPORT "))
    return json.loads(line[len("REPORT "):])
