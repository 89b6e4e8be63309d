#!/usr/bin/env python3
"""Throughput of the NumPy reference quantizer and dequantizer.

Prints MB/s of float32 input (4 bytes per value) for each turbo type. The
reference is the ground truth, not a fast path; this number tells how much data
a test can afford to push through it.

    python3 tools/bench_reference.py [--mib 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tq_gguf.reference import QTYPES, dequantize, quantize  # noqa: E402


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=float, default=16, help="float32 input size in MiB (default 16)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    args = ap.parse_args(argv)

    n_values = int(args.mib * 2**20 / 4) // 128 * 128
    x = np.random.default_rng(0).standard_normal((n_values // 128, 128)).astype(np.float32)
    mb = x.nbytes / 1e6
    print(f"input: {x.shape[0]} rows x 128 float32 = {mb:.1f} MB")
    print(f"{'type':8} {'quantize MB/s':>14} {'dequantize MB/s':>16}")
    for qt in QTYPES:
        raw = quantize(x, qt)
        tq = best_of(lambda: quantize(x, qt), args.repeat)
        td = best_of(lambda: dequantize(raw, qt), args.repeat)
        print(f"{qt:8} {mb / tq:14.1f} {mb / td:16.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
