"""The turbo types on ggml's Vulkan backend.

Needs a build with the Vulkan backend (`tq-gguf build --backend vulkan`) and a Vulkan
device; on a machine without a GPU, Mesa's lavapipe (mesa-vulkan-drivers) is one. Every
check runs in a child process: ggml enumerates Vulkan devices once per process and only
lists CPU-type devices such as lavapipe when GGML_VK_VISIBLE_DEVICES names them, and a
driver fault must fail one check, not the whole test session.

* test-backend-ops compares the Vulkan results of every turbo SET_ROWS, GET_ROWS, CPY and
  FLASH_ATTN_EXT case with the CPU backend;
* SET_ROWS (the Vulkan quantizer) must give the NumPy reference's bytes and GET_ROWS (the
  Vulkan decoder) its float32 values bit for bit, on random rows, the spec's edge cases
  and real K/V rows of three models.

The trellis-coded value types tcq2 and tcq3 (FORMAT.md section 12) are held to the same: their
Viterbi encoder (SET_ROWS from f32 and f16, CPY from f32) gives the reference's bytes and their
decoder (GET_ROWS) its floats on random rows, the real V rows, the spec's edge cases, ties of two
paths and of two scales and values on a subset midpoint; flash attention with a tcq V beside the
K types stays within the turbo bound of float64 attention over the decoded cache and of the CPU;
test-backend-ops runs their SET_ROWS, GET_ROWS, CPY and FLASH_ATTN_EXT cases against the CPU.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

import helpers
from gpu_device import (QTYPES, Device, assert_quantize_and_decode_exact, assert_rows_and_copies_pass,
                        tcq_flash_attn_report, tcq_quantize_and_decode_report, verify_harness)
from tq_gguf import paths
from tq_gguf.kv.cachetypes import TCQ_TYPES
from tq_gguf.reference import rotate


def vulkan_env() -> dict[str, str]:
    env = dict(os.environ)
    # ggml skips CPU-type Vulkan devices (lavapipe) unless they are named here
    env.setdefault("GGML_VK_VISIBLE_DEVICES", "0")
    # lavapipe compiles every pipeline on first use (10-80 s each); keep them across runs
    env.setdefault("MESA_SHADER_CACHE_DIR", str(paths.cache_root() / "mesa-shader-cache"))
    env.setdefault("MESA_SHADER_CACHE_MAX_SIZE", "4G")
    return env


VULKAN = Device("Vulkan0", "Vulkan", "tq-gguf build --backend vulkan; without a GPU, apt-get install mesa-vulkan-drivers",
                vulkan_env(), ci_required=True)  # .ci/run builds Vulkan and has lavapipe: its checks must run
DEVICE = VULKAN.name


@pytest.fixture(scope="module")
def vulkan(native_lib):
    VULKAN.require()


# --- test-backend-ops -----------------------------------------------------------------

@pytest.mark.parametrize("op", ["SET_ROWS", "GET_ROWS", "CPY"])
def test_backend_ops_rows_and_copies(vulkan, op):
    assert_rows_and_copies_pass(VULKAN, op)


# lavapipe compiles each flash-attention pipeline (head size x K type x V type x tiling) on
# first use, 10-80 s apiece, so the CI set is every K/V pairing at head size 128 plus the
# head-size-192 cases. The 576/512 (MLA) cases are left out: lavapipe's LLVM needed more
# than 9 GB and 15 CPU-minutes for that one pipeline (docs/BACKENDS.md). The full turbo set
# is `test-backend-ops test -b Vulkan0 -o FLASH_ATTN_EXT -p turbo`.
FA_PAIRINGS = r"hsk=128,hsv=128,nh=4,nr23=\[2,1\],kv=113,nb=1,.*type_{side}={qtype},"


@pytest.mark.parametrize("side", ["K", "V"])
@pytest.mark.parametrize("qtype", QTYPES)
def test_backend_ops_flash_attn_pairings(vulkan, qtype, side):
    """A turbo K (or V) with every other cache type, against the CPU backend (a turbo K also
    beside each trellis-coded V, which are values only)."""
    passed, total, out = VULKAN.backend_ops("FLASH_ATTN_EXT", pattern=FA_PAIRINGS.format(side=side, qtype=qtype))
    assert passed == total, out[-3000:]
    others = ["f16", "q8_0", "q4_0"] + QTYPES + (list(TCQ_TYPES) if side == "K" else [])
    assert total == len(others), total
    for other in others:
        k, v = (qtype, other) if side == "K" else (other, qtype)
        assert re.search(rf"type_K={k},type_V={v},[^\n]*OK", out), f"no passing case with K {k}, V {v}"


def test_backend_ops_flash_attn_head_size_192(vulkan):
    """Head size 192 (3 blocks) with softcap and sinks, q8_0 K and turbo V."""
    passed, total, out = VULKAN.backend_ops("FLASH_ATTN_EXT", pattern=r"hsk=192,.*turbo")
    assert passed == total, out[-3000:]
    assert total == 3, total


# --- exact bytes against the reference -------------------------------------------------

def test_quantize_and_decode_are_exact(vulkan):
    assert_quantize_and_decode_exact(VULKAN)


# --- no FMA contraction, by construction ------------------------------------------------

def _fmul_feeding_fadd(spv: Path) -> int:
    dis = subprocess.run(["spirv-dis", str(spv)], capture_output=True, text=True, check=True).stdout
    defs = {}
    for line in dis.splitlines():
        m = re.match(r"\s*(%\w+) = (Op\w+) \S+ (.*)", line)
        if m:
            defs[m.group(1)] = (m.group(2), m.group(3).split())
    return sum(1 for op, args in defs.values() if op in ("OpFAdd", "OpFSub")
               for a in args if defs.get(a, ("",))[0] == "OpFMul")


@pytest.mark.parametrize("qtype", QTYPES + list(TCQ_TYPES))
def test_quantizer_spirv_has_no_multiply_feeding_an_add(qtype, tmp_path):
    """FORMAT.md forbids FMA in the sums; the shader computes the squares on integers, so the
    optimised SPIR-V (glslc -O, as the build compiles it) has no float product that a driver
    could fuse into the following addition."""
    import shutil

    ggml_src = paths.work_dir("vulkan") / "src" / "vendor" / "llama.cpp" / "ggml" / "src"
    shaders = ggml_src / "ggml-vulkan" / "vulkan-shaders"
    if shutil.which("glslc") is None or shutil.which("spirv-dis") is None:
        pytest.skip("needs glslc and spirv-dis (apt-get install glslc spirv-tools)")
    if not (ggml_src / "tq" / "vulkan" / "turbo_funcs.glsl").exists():
        pytest.skip("no patched Vulkan source tree (tq-gguf build --backend vulkan)")
    out = tmp_path / f"{qtype}.spv"
    subprocess.run(["glslc", "-fshader-stage=compute", "--target-env=vulkan1.2", "-O", str(shaders / "copy_to_quant.comp"),
                    "-o", str(out), "-DSET_ROWS=1", f"-DDATA_A_{qtype.upper()}=1", "-DB_TYPE=uint", "-DB_SIZE=32",
                    "-DS_TYPE=float", "-DTURBO_SRC_F16=0", "-DD_TYPE=float", "-DFLOAT_TYPE=float"], check=True)
    assert _fmul_feeding_fadd(out) == 0


FA_WORKER = r"""
import json
import numpy as np
from tq_gguf.native import backendops
rng = np.random.default_rng(5)
q = rng.standard_normal((4, 3, 128)).astype(np.float32)
k = rng.standard_normal((2, 113, 128)).astype(np.float32)
v = rng.standard_normal((2, 113, 128)).astype(np.float32)
mask = np.zeros((3, 113), np.float32); mask[:, 100:] = -np.inf
out = {{}}
for dev in ("CPU", {device!r}):
    out[dev] = backendops.flash_attn(dev, q, k, v, "turbo4", "turbo3", mask=mask)
a, b = out["CPU"].astype(np.float64), out[{device!r}].astype(np.float64)
nmse = float(((a - b) ** 2).sum() / (a ** 2).sum())
print("FA " + json.dumps([nmse, float(np.abs(a).max()), list(a.shape)]))
"""


def test_backendops_flash_attn_matches_cpu(vulkan):
    """tq_gguf.native.backendops.flash_attn: turbo4 K and turbo3 V on Vulkan against the CPU backend."""
    res = VULKAN.run_py(FA_WORKER.format(device=DEVICE))
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    nmse, scale, shape = json.loads(next(l for l in res.stdout.splitlines() if l.startswith("FA "))[3:])
    assert shape == [3, 4, 128]
    assert scale > 0.05
    # both read the same cache bytes; ggml-vulkan's flash attention works in fp16 where the
    # device has it (lavapipe does), so hold it to test-backend-ops' FLASH_ATTN_EXT bound
    assert nmse <= 5e-4, nmse


def test_verify_harness_passes_on_vulkan(vulkan):
    """`tq-gguf verify`'s harness on the Vulkan device: quantize bytes and dequantized floats
    exact on every input set; ggml's flash attention within the harness's tolerance, or where
    the device's stock q8_0 misses it (Qwen2.5's outlier rows), within that q8_0 error. On
    lavapipe the harness itself leaves head size 256 out and says so (compiling that pipeline
    takes lavapipe's LLVM past 8 GB and half an hour), so `tq-gguf verify` finishes there."""
    out, mine = verify_harness(VULKAN)
    software = "llvmpipe" in out["description"]
    assert out["max_head"] == (128 if software else None), out["description"]
    for qtype in QTYPES:
        fa = mine[qtype, "flash_attn"]
        assert ("head 256" in fa["detail"]) == software, fa


# --- the trellis-coded value types ---------------------------------------------------------

TCQ = list(TCQ_TYPES)


def _test_tcq():
    """tests/unit/test_tcq.py, for the blocks it builds for the spec's edge cases."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "unit" / "test_tcq.py"
    spec = importlib.util.spec_from_file_location("tcq_unit_cases", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("tcq_unit_cases", mod)
    spec.loader.exec_module(mod)
    return mod


def tcq_inputs() -> dict[str, np.ndarray]:
    """Rows for the exactness checks, each array (rows, width): the spec's test vector and edge
    cases (FORMAT.md 12.5 and 12.7), the turbo edge blocks, blocks where two paths tie exactly
    (sparse), where two candidate scales tie and with values on a subset midpoint of their path
    (for both types), random rows, and the real V rows of three models rotated as the cache
    rotates them."""
    t = _test_tcq()
    ties = []
    for qtype in TCQ:
        seed, x0, _ = t.SCALE_TIES[qtype]
        x = np.random.default_rng(seed).standard_normal(64).astype(np.float32)
        x[0] = float.fromhex(x0)
        ties += [x, t.midpoint_block(qtype, t.MIDPOINT_SEEDS[qtype])]
    data = np.load(paths.KV_ROWS)
    out = {
        "golden": t.golden_input()[None],
        "special": t.special_blocks(),
        "edge": helpers.edge_blocks(),
        "blocks": t.random_blocks(np.random.default_rng(17), 12),  # the last 12 are sparse: path ties
        "ties": np.stack(ties),
        "random": helpers.random_rows(),
    }
    for name in sorted(data.files):
        if name.endswith("/V"):
            out["real-" + name.split("/")[0]] = rotate(data[name])
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


@pytest.mark.parametrize("op", ["SET_ROWS", "GET_ROWS", "CPY"])
def test_backend_ops_tcq_rows_and_copies(vulkan, op):
    """test-backend-ops' tcq cases of the op on Vulkan against the CPU backend."""
    passed, total, out = VULKAN.backend_ops(op, pattern="tcq")
    assert passed == total, out[-3000:]
    for qtype in TCQ:
        assert re.search(rf"{op}\(type[^)]*{qtype}.*OK", out), f"no passing {op} case for {qtype}"


@pytest.mark.parametrize("qtype", TCQ)
def test_backend_ops_flash_attn_tcq_values(vulkan, qtype):
    """A tcq V beside every K type Vulkan has for turbo (f16, q8_0, q4_0, turbo2/3/4), against the CPU."""
    passed, total, out = VULKAN.backend_ops("FLASH_ATTN_EXT", pattern=FA_PAIRINGS.format(side="V", qtype=qtype))
    assert passed == total, out[-3000:]
    assert total == 6, total
    for k in ["f16", "q8_0", "q4_0"] + QTYPES:
        assert re.search(rf"type_K={k},type_V={qtype},[^\n]*OK", out), f"no passing case with K {k}, V {qtype}"


def test_tcq_quantize_and_decode_are_exact(vulkan, tmp_path):
    """The Viterbi encoder's bytes (SET_ROWS from f32 and f16, CPY from f32) and the decoder's
    floats (GET_ROWS) equal the NumPy reference's on every input, the spec's test vector included."""
    inputs = tcq_inputs()
    np.savez(tmp_path / "tcq_inputs.npz", **inputs)
    report = tcq_quantize_and_decode_report(VULKAN, tmp_path / "tcq_inputs.npz", TCQ)
    assert len(report) == len(TCQ) * (len(inputs) + 1), sorted(report)
    bad = {k: v for k, v in report.items() if any(n for c, n in v.items() if c != "rows")}
    assert not bad, f"rows differing from the reference (rows that differ, per check): {bad}"
    assert sum(v["rows"] for k, v in report.items() if k.startswith(TCQ[0] + "/")) > 1000


def test_tcq_golden_vector_on_vulkan(vulkan, tmp_path):
    """FORMAT.md 12.7's test vector, quantized by Vulkan's SET_ROWS, is the spec's bytes."""
    t = _test_tcq()
    res = VULKAN.run_py("import numpy as np\nfrom tq_gguf.native import backendops\n"
                        f"x = np.array({t.golden_input().tolist()!r}, np.float32)[None]\n"
                        f"for q in {TCQ!r}: print(q, backendops.set_rows({DEVICE!r}, x, q).tobytes().hex())")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    got = dict(line.split() for line in res.stdout.splitlines() if line.split()[:1] and line.split()[0] in TCQ)
    assert got == t.GOLDEN


def test_tcq_flash_attn_matches_reference(vulkan):
    """Flash attention with a tcq V (rotated rows) and an f16 or turbo4 K: within the turbo bound
    (test_backendops_flash_attn_matches_cpu) of float64 attention over the reference-decoded cache,
    and of the CPU backend."""
    report = tcq_flash_attn_report(VULKAN, TCQ, ["f16", "turbo4"])
    assert len(report) == 2 * len(TCQ), report
    for case, (to_ref, to_cpu, scale) in report.items():
        assert scale > 0.05, case
        assert to_ref <= 5e-4, (case, to_ref)
        assert to_cpu <= 5e-4, (case, to_cpu)
