#!/usr/bin/env python3
"""Speed of the trellis-coded types' encoders in C, against the SET_ROWS floor (1 GB/s a core).

tools/studies/sptcq_study.py designed the set-partition trellis in float64; tcq2 and tcq3
(docs/FORMAT.md, section 12) are it as cache types, with a scalar reference encoder in
native/tq-tcq.c and AVX2 / AVX-512 encoders, one block per lane, in
native/cpu/arch/x86/tq-tcq.c. This tool compiles them on their own (tools/tcq_native.py,
here with -O3 -march=native, still without FMA contraction), runs them on the rotated real
K/V rows of tests/data/kv_rows.npz, checks that every variant's bytes equal the NumPy
reference's, and prints each variant's GB/s of float32. For scale, the quantize speed of the
turbo types through the built library in the same run (what SET_ROWS runs today), and the
relative MSE of each type next to the float64 study's and the turbo type's of the same bits.

    python tools/bench/sptcq_speed.py [--types tcq3,tcq2] [--blocks 8192]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tools" / "studies"))

import sptcq_study  # noqa: E402
import tcq_native  # noqa: E402
import tcq_study  # noqa: E402
from tq_gguf import reference as ref  # noqa: E402
from tq_gguf.kv.cachetypes import TRELLIS_TYPES  # noqa: E402
from tq_gguf.reference import trellis  # noqa: E402

N = 64


def rotated_rows(min_blocks: int) -> np.ndarray:
    data = np.load(tcq_study.KV_ROWS)
    rows = np.concatenate([ref.rotate(data[k]).reshape(-1, N) for k in sorted(data.files)]).astype(np.float32)
    reps = -(-min_blocks // len(rows))
    return np.tile(rows, (reps, 1))[: max(min_blocks, len(rows)) // 16 * 16]


def library_speeds(x: np.ndarray, reps: int = 20) -> dict[str, float] | None:
    """GB/s of float32 through the built library's from_float, or None without a build."""
    try:
        from tq_gguf.kv import cachetypes
        from tq_gguf.native import ggml, typeids
        out = {}
        for name in ("q8_0", "q4_0", "turbo4", "turbo3", "turbo2"):
            tid = typeids.ggml_id(cachetypes.get(name))
            ggml.cpu_from_float(x, tid)
            best = np.inf
            for _ in range(reps):
                t = time.perf_counter()
                ggml.cpu_from_float(x, tid)
                best = min(best, time.perf_counter() - t)
            out[name] = x.nbytes / best / 1e9
        return out
    except Exception as e:  # noqa: BLE001 - the benchmark runs without a build too
        print(f"(no library speeds: {e})")
        return None


def best_seconds(fn, reps: int) -> float:
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default="tcq3,tcq2", help="trellis-coded types to time")
    ap.add_argument("--blocks", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=7, help="timed runs of each SIMD encoder (the scalar one runs 2)")
    args = ap.parse_args()

    lib = tcq_native.load(("-O3", "-march=native"))
    if lib is None:
        print("error: no C compiler (cc) on PATH", file=sys.stderr)
        return 2
    x = rotated_rows(args.blocks)
    x64 = x.astype(np.float64)
    print(f"{len(x)} blocks of rotated K/V rows (tests/data/kv_rows.npz, tiled)")
    lib_speeds = library_speeds(x.ravel())
    if lib_speeds:
        print("library from_float, GB/s of float32: " + ", ".join(f"{k} {v:.2f}" for k, v in lib_speeds.items()))
    for qtype in args.types.split(","):
        t = TRELLIS_TYPES[qtype]
        want = trellis.quantize(x, qtype)
        print(f"\n{qtype}: {t.index_bits} bits, {t.states} states, {t.scales} scales")
        ok = True
        for variant in tcq_native.VARIANTS:
            if not lib.has_variant(variant):
                print(f"  {variant:<7} not on this processor")
                continue
            equal = np.array_equal(lib.quantize(x, qtype, variant), want)
            ok &= equal
            secs = best_seconds(lambda: lib.quantize(x, qtype, variant), 2 if variant == "scalar" else args.reps)
            print(f"  {variant:<7} {'equal' if equal else 'DIFFERS'}  {x.nbytes / secs / 1e9:.3f} GB/s of float32  "
                  f"({secs / len(x) * 1e9:.0f} ns a block)")
        if not ok:
            print(f"error: a {qtype} encoder's bytes differ from the NumPy reference's", file=sys.stderr)
            return 1
        code = sptcq_study.Code(t.memory, t.pair_taps, t.branch_taps)
        factors = sptcq_study.grid(t.scales)
        study = sptcq_study.encode_by_metric(x64, sptcq_study.searched_codebook(t.index_bits, code, factors), code,
                                             factors)
        turbo = f"turbo{t.index_bits}"
        fmt = ref.dequantize(ref.quantize(x, turbo), turbo).astype(np.float64)
        mine = trellis.dequantize(want, qtype).astype(np.float64)
        print(f"  relative MSE {sptcq_study.rel_mse(x64, mine):.5f}, of the float64 study "
              f"{sptcq_study.rel_mse(x64, study):.5f}, of {turbo} {sptcq_study.rel_mse(x64, fmt):.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
