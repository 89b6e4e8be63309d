#!/usr/bin/env python3
"""Relative MSE of cache types on real K/V rows (tests/data/kv_rows.npz), after the rotation.

Shows why turbo4 trails q4_0 on KL (README, "Quality") and what a format
revision could gain: for the turbo codebooks it also prints the least-squares
scale and a prototype joint scale search (re-select the indices for 19
candidate scales from 0.8 to 1.25 x the norm, keep the least-squares scale of
the best). The prototype is float64 NumPy, not part of any format.

    python tools/kv_mse.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tq_gguf import reference as ref  # noqa: E402
from tq_gguf.kv import cachetypes  # noqa: E402
from tq_gguf.native import ggml, typeids  # noqa: E402

KV_ROWS = Path(__file__).resolve().parent.parent / "tests" / "data" / "kv_rows.npz"


def rel_mse(x: np.ndarray, y: np.ndarray) -> float:
    return float(((y - x) ** 2).sum() / (x**2).sum())


def native_mse(x: np.ndarray, name: str) -> float:
    tid = typeids.ggml_id(cachetypes.get(name))
    return rel_mse(x, ggml.dequantize(ggml.quantize(x, tid), tid, x.size).reshape(x.shape))


def scale_rules(x: np.ndarray, bits: int) -> dict[str, float]:
    cb, mid = np.array(ref.CENTROIDS[bits], np.float64), np.array(ref.MIDPOINTS[bits], np.float64)
    b = x.reshape(-1, 64).astype(np.float64)
    norm = np.linalg.norm(b, axis=1, keepdims=True)
    c = cb[np.searchsorted(mid, b / np.where(norm == 0, 1, norm), side="left")]
    lsq = (b * c).sum(1, keepdims=True) / (c * c).sum(1, keepdims=True)
    best = None
    for f in np.linspace(0.8, 1.25, 19):
        cc = cb[np.searchsorted(mid, b / np.where(norm == 0, 1, norm * f), side="left")]
        s = (b * cc).sum(1, keepdims=True) / (cc * cc).sum(1, keepdims=True)
        err = ((b - s * cc) ** 2).sum(1)
        best = err if best is None else np.minimum(best, err)
    total = (b * b).sum()
    return {"lsq": float(((b - lsq * c) ** 2).sum() / total), "search": float(best.sum() / total)}


def main() -> int:
    data = np.load(KV_ROWS)
    sets = {k: ref.rotate(data[k]) for k in sorted(data.files)}
    sets["gauss"] = np.random.default_rng(0).standard_normal((2000, 128)).astype(np.float32)
    print("| rows | q4_0 | q4_1 | turbo4 | turbo4 lsq | turbo4 search | turbo3 | turbo3 lsq | turbo3 search |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, x in sets.items():
        r4, r3 = scale_rules(x, 4), scale_rules(x, 3)
        cells = [native_mse(x, "q4_0"), native_mse(x, "q4_1"), native_mse(x, "turbo4"), r4["lsq"], r4["search"],
                 native_mse(x, "turbo3"), r3["lsq"], r3["search"]]
        print(f"| {name} | " + " | ".join(f"{v:.5f}" for v in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
