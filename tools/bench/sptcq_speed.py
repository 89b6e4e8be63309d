#!/usr/bin/env python3
"""Speed of the set-partition trellis encoder in C, against the SET_ROWS floor (1 GB/s a core).

tools/studies/sptcq_study.py designs the encoder in float64; native/study/sptcq-encode.c is it in
C, a scalar reference and AVX2 / AVX-512 versions with one block per lane. This tool
writes the C tables (the searched codebook, the centred factors, the code), compiles
that file with the system compiler (-O3 -march=native, no FMA contraction, so every
variant does the reference's float operations), runs it on the rotated real K/V rows of
tests/data/kv_rows.npz, and prints for each variant whether its bytes equal the
reference's and its GB/s of float32. For scale, the quantize speed of the format's own
types through the built library in the same run (what SET_ROWS runs today), and the
relative MSE of the C encoder next to the float64 study's on the same rows.

    python tools/bench/sptcq_speed.py [--bits 3] [--memory 3] [--scales 1,2,4,8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools" / "studies"))

import sptcq_study  # noqa: E402
import tcq_study  # noqa: E402
from tq_gguf import reference as ref  # noqa: E402

SOURCE = ROOT / "native" / "study" / "sptcq-encode.c"
N = 64


def hexf(v: float) -> str:
    return float(np.float32(v)).hex() + "f"


def tables(bits: int, code: sptcq_study.Code, factors: np.ndarray, book: np.ndarray) -> str:
    rows = ", ".join("{%d, %d}" % tuple(r) for r in code.subset)
    return (f"// written by tools/bench/sptcq_speed.py\n#define SP_BITS {bits}\n#define SP_M {code.m}\n"
            f"#define SP_SCALES {len(factors)}\n"
            f"static const float SP_BOOK[{len(book)}] = {{{', '.join(hexf(v) for v in book)}}};\n"
            f"static const float SP_FACTOR[{len(factors)}] = {{{', '.join(hexf(v) for v in factors)}}};\n"
            f"static const int SP_SUBSET[{1 << code.m}][2] = {{{rows}}};\n")


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
    except Exception as e:  # noqa: BLE001 - the study runs without a build too
        print(f"(no library speeds: {e})")
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bits", type=int, default=3, choices=(2, 3, 4))
    ap.add_argument("--memory", type=int, default=3, choices=(2, 3))
    ap.add_argument("--scales", default="1,2,4,8", help="candidate scale counts to compile and time")
    ap.add_argument("--blocks", type=int, default=8192)
    args = ap.parse_args()

    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        print("error: no C compiler (cc) on PATH", file=sys.stderr)
        return 2
    code = sptcq_study.CODES[args.memory]
    x = rotated_rows(args.blocks)
    nb = len(x)
    print(f"{nb} blocks of rotated K/V rows (tests/data/kv_rows.npz, tiled); {args.bits} bits, "
          f"{1 << args.memory} states")
    qtype = f"turbo{args.bits}"
    fmt = ref.dequantize(ref.quantize(x, qtype), qtype).astype(np.float64)
    print(f"relative MSE of {qtype} (the format, with its scale search) on these rows: "
          f"{sptcq_study.rel_mse(x.astype(np.float64), fmt):.5f}")
    lib = library_speeds(x.ravel())
    if lib:
        print("library from_float, GB/s of float32: " + ", ".join(f"{k} {v:.2f}" for k, v in lib.items()))
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / "rows.f32"
        x.tofile(rows)
        for n in (int(s) for s in args.scales.split(",")):
            factors = sptcq_study.grid(n)
            book = sptcq_study.searched_codebook(args.bits, code, factors)
            (Path(tmp) / "sptcq-tables.h").write_text(tables(args.bits, code, factors, book))
            x64 = x.astype(np.float64)
            study = sptcq_study.encode_by_metric(x64, book, code, factors)
            for envelope in (0, 1):
                exe, out = Path(tmp) / f"enc{n}-{envelope}", Path(tmp) / "levels.bin"
                built = subprocess.run([cc, "-O3", "-march=native", "-ffp-contract=off", f"-DSP_ENVELOPE={envelope}",
                                        "-I", tmp, str(SOURCE), "-o", str(exe), "-lm"], capture_output=True, text=True)
                if built.returncode != 0:
                    print(f"error: {SOURCE.name} does not compile here: {built.stderr.strip().splitlines()[-1]}",
                          file=sys.stderr)
                    return 2
                done = subprocess.run([str(exe), str(rows), str(out)], capture_output=True, text=True)
                print(done.stdout, end="")
                if done.returncode != 0:
                    why = done.stderr.strip() or f"a vectorised encoder differs from the reference ({n} scales)"
                    print(why if why.startswith("error:") else f"error: {why}", file=sys.stderr)
                    return 1
                raw = out.read_bytes()
                lev = np.frombuffer(raw[: nb * N], np.uint8).reshape(nb, N)
                amp = np.frombuffer(raw[nb * N:], np.float16).astype(np.float64)
                rec = amp[:, None] * book.astype(np.float32).astype(np.float64)[lev]
                print(f"  relative MSE of the C encoder {sptcq_study.rel_mse(x64, rec):.5f}, "
                      f"of the float64 study {sptcq_study.rel_mse(x64, study):.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
