#!/usr/bin/env python3
"""Backs docs/FORMAT.md 11.5 "The scale search", "Tried and not kept": `python tools/studies/search_study.py`.

Candidates for a better turbo encoder that were measured and not kept.

Relative MSE on the rotated real K/V rows (tests/data/kv_rows.npz) and Gaussian rows,
float64, with the format's eight-candidate scale search as the baseline:

  refit   codebooks re-fitted to the searching encoder: a Lloyd fixed point in which each
          centroid is the scale-weighted mean of the values assigned to it by the search,
          on 20,000 unit Gaussian blocks (kept symmetric);
  rot128, rot256
          one 128- or 256-point randomized Hadamard transform over the whole head
          (where the head is a multiple of it) before cutting 64-value blocks;
  lsq     the least-squares amplitude <x, c>/|c|^2 for the winning indices instead of
          the norm-preserving one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tq_gguf import paths  # noqa: E402
from tq_gguf import reference as ref  # noqa: E402
from tq_gguf.reference.codebooks import SEARCH_FACTORS  # noqa: E402
from tq_gguf.reference.rotation import hadamard  # noqa: E402

KV_ROWS = paths.KV_ROWS


def encode(b: np.ndarray, cb: np.ndarray, lsq: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """float64 search over the format's factors: (centroids of the winner, amplitude per block)."""
    half = len(cb) // 2
    mids = (cb[half:-1] + cb[half + 1:]) / 2
    norm = np.linalg.norm(b, axis=1, keepdims=True)
    u = b / np.where(norm == 0, 1, norm)
    best, best_c = np.full(len(b), -np.inf), None
    for f in SEARCH_FACTORS.astype(np.float64):
        cnt = (np.abs(u)[..., None] > f * mids).sum(-1)
        c = np.where(u > 0, cb[half + cnt], cb[half - 1 - cnt])
        cos = (u * c).sum(1) / np.linalg.norm(c, axis=1)
        better = cos > best
        best_c = c if best_c is None else np.where(better[:, None], c, best_c)
        best = np.where(better, cos, best)
    amp = ((b * best_c).sum(1, keepdims=True) / (best_c**2).sum(1, keepdims=True) if lsq
           else norm / np.linalg.norm(best_c, axis=1, keepdims=True))
    return best_c, amp


def rel_mse(b: np.ndarray, cb: np.ndarray, lsq: bool = False) -> float:
    c, amp = encode(b, cb, lsq)
    return float(((b - amp * c) ** 2).sum() / (b * b).sum())


def refit(cb: np.ndarray, iters: int = 30, n: int = 20_000) -> np.ndarray:
    b = np.random.default_rng(1).standard_normal((n, 64))
    for _ in range(iters):
        c, amp = encode(b, cb, lsq=True)
        idx = np.searchsorted(cb, c)  # c holds exact codebook values
        num, den = np.zeros(len(cb)), np.zeros(len(cb))
        np.add.at(num, idx.ravel(), (amp * b).ravel())
        np.add.at(den, idx.ravel(), np.broadcast_to(amp * amp, b.shape).ravel())
        cb = num / den
        cb = (cb - cb[::-1]) / 2
    return cb


def rotate_wide(x: np.ndarray, n: int) -> np.ndarray | None:
    if x.shape[-1] % n:
        return None
    signs = np.random.default_rng(5).choice([-1.0, 1.0], n)
    return (x.reshape(-1, n) @ (hadamard(n).astype(np.float64) * signs).T).reshape(-1, 64)


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    data = np.load(KV_ROWS)
    raw = {k: data[k].astype(np.float64) for k in sorted(data.files)}
    raw["gauss"] = np.random.default_rng(0).standard_normal((2000, 128))
    print("| bits | variant | " + " | ".join(raw) + " |")
    print("|---|---" + "|---" * len(raw) + "|")
    for bits in (4, 3, 2):
        cb = ref.CENTROIDS[bits].astype(np.float64)
        rows = {name: ref.rotate(x.astype(np.float32)).astype(np.float64).reshape(-1, 64) for name, x in raw.items()}
        variants = {
            "format": lambda b: rel_mse(b, cb),
            "refit": lambda b, cr=refit(cb): rel_mse(b, cr),
            "lsq": lambda b: rel_mse(b, cb, lsq=True),
        }
        for name, fn in variants.items():
            print(f"| {bits} | {name} | " + " | ".join(f"{fn(b):.5f}" for b in rows.values()) + " |")
        for n in (128, 256):
            cells = []
            for x in raw.values():
                b = rotate_wide(x, n)
                cells.append("-" if b is None else f"{rel_mse(b, cb):.5f}")
            print(f"| {bits} | rot{n} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
