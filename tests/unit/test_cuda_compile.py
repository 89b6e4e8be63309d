"""The CUDA sources of the series compile for sm_80 and sm_90 (tools/cuda_compile_check.py).

No GPU is needed, only nvcc; skipped where nvcc is not installed. Results are cached
by content hash, so after the first run (several minutes on two cores) this takes
seconds until a CUDA source, header, flag or nvcc changes."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")


def _tool():
    spec = importlib.util.spec_from_file_location("cuda_compile_check", REPO / "tools" / "cuda_compile_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tool():
    return _tool()


@pytest.fixture(scope="module")
def cuda_tree(tool):
    return tool.stage_tree(echo=lambda _: None)


def test_touched_cuda_sources_compile_for_sm80_and_sm90(tool, cuda_tree):
    files = [cuda_tree / tool.CUDA_DIR / n for n in tool.TOUCHED] + [cuda_tree / p for p in tool.instance_files()]
    log: list[str] = []
    ok = tool.check(cuda_tree, files, ["80", "90"], jobs=2, echo=log.append)
    assert ok, "\n".join(log)


@pytest.mark.parametrize("body,error", [
    # a syntax error
    ('DECL_FATTN_VEC_CASE(128, GGML_TYPE_TURBO3, GGML_TYPE_TURBO3);\nint broken = ;\n', "expected an expression"),
    # a template error: a head size the turbo vector kernel cannot be instantiated for
    ('DECL_FATTN_VEC_CASE(96, GGML_TYPE_TURBO3, GGML_TYPE_TURBO3);\n', "static assertion failed"),
])
def test_a_broken_file_fails_the_check(tool, cuda_tree, tmp_path, body, error):
    bad = tmp_path / "broken.cu"
    bad.write_text('#include "fattn-vec.cuh"\n\n' + body)
    log: list[str] = []
    assert not tool.check(cuda_tree, [bad], ["80"], jobs=1, echo=log.append)
    text = "\n".join(log)
    assert "FAILED" in text and error in text, text
