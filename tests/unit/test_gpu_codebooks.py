"""The GPU copies of the codebooks equal native/tq-codebooks.h bit for bit.

Device code cannot read the host arrays of tq-codebooks.h, so native/cuda/tq-cuda.cuh
and native/metal/tq-metal.h carry their own tables (hex floats for CUDA, decimal
literals for Metal); both must round to exactly the normative float32 values."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
NATIVE = REPO / "native"


def _tables(path: Path, prefix: str) -> dict[str, np.ndarray]:
    text = path.read_text()
    out = {}
    for m in re.finditer(rf"{prefix}(centroids|midpoints)_(\d)bit\[(\d+)\]\s*=\s*\{{([^}}]*)\}}", text):
        values = [v.strip() for v in m.group(4).replace("\n", " ").split(",") if v.strip()]
        parsed = [float.fromhex(v.rstrip("f")) if "0x" in v else float(v.rstrip("f")) for v in values]
        arr = np.array(parsed, dtype=np.float64).astype(np.float32)
        assert len(arr) == int(m.group(3))
        out[f"{m.group(1)}_{m.group(2)}"] = arr
    return out


REFERENCE = _tables(NATIVE / "tq-codebooks.h", "tq_")


@pytest.mark.parametrize("path,prefix", [
    (NATIVE / "cuda" / "tq-cuda.cuh", "tq_cuda_"),
    (NATIVE / "metal" / "tq-metal.h", "tq_metal_"),
])
def test_gpu_tables_match_the_reference(path, prefix):
    tables = _tables(path, prefix)
    assert sorted(tables) == sorted(REFERENCE)
    for name, ref in REFERENCE.items():
        assert tables[name].view(np.uint32).tolist() == ref.view(np.uint32).tolist(), name
