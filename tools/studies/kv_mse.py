#!/usr/bin/env python3
"""Backs docs/FORMAT.md 11.5 "The scale search", its table: `python tools/studies/kv_mse.py`.

Relative MSE of cache types on real K/V rows (tests/data/kv_rows.npz), after the rotation.

For each turbo type it prints the error of
  plain   the indices of the plain codebook (search candidate 4 alone), as before the search;
  format  the format itself, from the native encoder (8 candidates, FORMAT.md 5.6);
  32      a float64 search over 32 candidates spanning the same range: how much a finer
          grid could still add;
beside q4_0 and q4_1 from the native library, and on Gaussian rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tq_gguf import paths  # noqa: E402
from tq_gguf import reference as ref  # noqa: E402
from tq_gguf.kv import cachetypes  # noqa: E402
from tq_gguf.native import ggml, typeids  # noqa: E402
from tq_gguf.reference.codebooks import SEARCH_FACTORS  # noqa: E402
from tq_gguf.reference.quants import select_indices  # noqa: E402

KV_ROWS = paths.KV_ROWS
TURBO = ("turbo4", "turbo3", "turbo2")


def rel_mse(x: np.ndarray, y: np.ndarray) -> float:
    return float(((y - x) ** 2).sum() / (x**2).sum())


def native_mse(x: np.ndarray, name: str) -> float:
    tid = typeids.ggml_id(cachetypes.get(name))
    return rel_mse(x, ggml.dequantize(ggml.quantize(x, tid), tid, x.size).reshape(x.shape))


def search_mse(x: np.ndarray, bits: int, factors: np.ndarray) -> float:
    """float64 search: per block the candidate (codebook scaled by f) of least norm-preserving error."""
    cb = ref.CENTROIDS[bits].astype(np.float64)
    mids = ref.MIDPOINTS[bits][1 << (bits - 1):].astype(np.float64)
    b = x.reshape(-1, 64).astype(np.float64)
    norm = np.linalg.norm(b, axis=1, keepdims=True)
    u = b / np.where(norm == 0, 1, norm)
    best = np.full(len(b), np.inf)
    for f in factors:
        c = cb[select_indices(u, bits, f * mids)]
        rec = c * norm / np.linalg.norm(c, axis=1, keepdims=True)
        best = np.minimum(best, ((b - rec) ** 2).sum(1))
    return float(best.sum() / (b * b).sum())


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    data = np.load(KV_ROWS)
    sets = {k: ref.rotate(data[k]) for k in sorted(data.files)}
    sets["gauss"] = np.random.default_rng(0).standard_normal((2000, 128)).astype(np.float32)
    fine = np.geomspace(SEARCH_FACTORS[0], SEARCH_FACTORS[-1], 32)
    head = ["q4_0", "q4_1"] + [f"{t} {kind}" for t in TURBO for kind in ("plain", "format", "32")]
    print("| rows | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 1) + "|")
    for name, x in sets.items():
        cells = [native_mse(x, "q4_0"), native_mse(x, "q4_1")]
        for t in TURBO:
            bits = cachetypes.get(t).index_bits
            cells += [search_mse(x, bits, [1.0]), native_mse(x, t), search_mse(x, bits, fine)]
        print(f"| {name} | " + " | ".join(f"{v:.5f}" for v in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
