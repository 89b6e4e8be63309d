"""The CUDA FlashAttention instances in native/cuda/template-instances are current
(tools/gen_cuda_instances.py) and cover what the CUDA build compiles, turbo and tcq pairs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tq_gguf.nativebuild import builder
from tq_gguf.kv import cachetypes

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "gen_cuda_instances.py"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_cuda_instances", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_check_passes_on_the_repo():
    res = subprocess.run([sys.executable, str(TOOL), "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_every_turbo_and_tcq_pair_of_the_build_has_an_instance(gen):
    tq_pairs = [p for p in builder.CUDA_FA_PAIRS if any(t in p.split("-") for t in cachetypes.TQ_TYPES)]
    assert any(p.split("-")[1] in cachetypes.TCQ_TYPES for p in tq_pairs)
    for pair in tq_pairs:
        k, v = pair.split("-")
        assert (gen.OUT_DIR / gen.file_name(k, v)).is_file(), pair


def test_pairs_are_each_turbo_type_with_every_vector_kernel_type(gen):
    n_up, n_tq = len(gen.UPSTREAM_TYPES), len(cachetypes.TURBO_TYPES)
    n_tcq = len(cachetypes.TCQ_TYPES)
    assert len(gen.pairs()) == 2 * n_up * n_tq + n_tq * n_tq + (n_up + n_tq) * n_tcq


def test_a_tcq_type_is_never_k(gen):
    """The trellis-coded types have no dot product with Q: V in every instance and build pair."""
    assert all(k not in cachetypes.TCQ_TYPES for k, _ in gen.pairs())
    assert all(p.split("-")[0] not in cachetypes.TCQ_TYPES for p in builder.CUDA_FA_PAIRS)
    for v in cachetypes.TCQ_TYPES:
        assert {f"f16-{v}", f"q8_0-{v}"} <= set(builder.CUDA_FA_PAIRS), v


@pytest.mark.parametrize("edit", ["change", "remove", "add"])
def test_check_names_a_stale_file(gen, tmp_path, edit):
    assert gen.main(["--out", str(tmp_path)]) == 0
    assert gen.stale(tmp_path) == []
    name = gen.file_name("q8_0", "turbo3")
    if edit == "change":
        path = tmp_path / name
        path.write_text(path.read_text().replace("DECL_FATTN_VEC_CASE(256", "DECL_FATTN_VEC_CASE(192"))
    elif edit == "remove":
        (tmp_path / name).unlink()
    else:
        name = gen.file_name("q8_0", "turbo9")
        (tmp_path / name).write_text("")
    assert gen.stale(tmp_path) == [name]
