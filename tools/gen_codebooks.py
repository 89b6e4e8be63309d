#!/usr/bin/env python3
"""Generate every table of the turbo and trellis-coded types: codebooks and block layouts.

One source, three parts:

* the type table, `tq_gguf/kv/cachetypes.py`: name, values per block, bytes per block and
  codebook index bits of each turbo type (`CACHE_TYPES`), and of each trellis-coded type
  its code and candidate scales too (`TRELLIS_TYPES`);
* the turbo types' Lloyd-Max codebooks, solved from the law of one coordinate of a
  uniform point on the unit sphere of R^d, d = the block size (no data involved);
* the trellis-coded types' union codebooks, trained for their own encoder on Gaussian
  blocks from a fixed seed, and their candidate scale factors.

From them this tool writes the files that C, CUDA, Metal, GLSL and Python compile or
import (`OUTPUTS` below). Each one says it is generated; none is edited by hand.

The parts live in tools/codebookgen/: layout.py derives each type's block layout from its
row, solver.py solves the turbo codebooks and the scale search's tables, trellis.py trains
the trellis-coded types' tables (the methods are in their docstrings), emitters.py writes
each language's file.

Usage:

    python3 tools/gen_codebooks.py            # rewrite the generated files in the repo
    python3 tools/gen_codebooks.py --out DIR  # write them under DIR, at their repo paths
    python3 tools/gen_codebooks.py --check    # exit 1, one line per stale file, if any is stale

The outputs are byte-for-byte reproducible: same NumPy float64 arithmetic, fixed
iteration rules and seeds, values printed exactly (hex floats, float32 bit patterns, or decimals
that round to the same float32).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tq_gguf, for the type table
sys.path.insert(0, str(Path(__file__).resolve().parent))  # codebookgen, beside this script

from codebookgen.emitters import (COMMAND, render_blocks_header, render_cuda, render_glsl_blocks,  # noqa: E402
                                  render_glsl_codebooks, render_header, render_metal, render_module,
                                  render_public_header, render_tcq_header, render_tcq_module)
from codebookgen.emitters import render_glsl_tcq  # noqa: E402
from codebookgen.emitters import render_tcq_cuda, render_tcq_metal  # noqa: E402
from codebookgen.layout import trellis_types, turbo_types  # noqa: E402
from codebookgen.solver import build_tables, cell_moments  # noqa: E402
from codebookgen.trellis import build_trellis_tables  # noqa: E402

# What the tests use from the generator, wherever it is defined.
__all__ = ["OUTPUTS", "cell_moments", "main", "render_all", "stale", "trellis_types", "turbo_types"]

# The tables a renderer reads: the turbo types' (solver.py) or the trellis-coded types' (trellis.py).
TURBO, TRELLIS = "turbo", "trellis"

# Every generated file: repo path -> (renderer, the tables it renders).
OUTPUTS: dict[str, tuple[Callable[[list[dict]], str], str]] = {
    "native/include/ggml-tq-types.h": (render_public_header, TURBO),
    "native/tq-blocks.h": (render_blocks_header, TURBO),
    "native/tq-codebooks.h": (render_header, TURBO),
    "native/cuda/tq-codebooks.cuh": (render_cuda, TURBO),
    "native/metal/tq-metal-types.h": (render_metal, TURBO),
    "native/vulkan/tq-blocks.glsl": (render_glsl_blocks, TURBO),
    "native/vulkan/tq-codebooks.glsl": (render_glsl_codebooks, TURBO),
    "tq_gguf/reference/codebooks.py": (render_module, TURBO),
    "native/tq-tcq-tables.h": (render_tcq_header, TRELLIS),
    "tq_gguf/reference/trellistables.py": (render_tcq_module, TRELLIS),
    "native/vulkan/tq-tcq-tables.glsl": (render_glsl_tcq, TRELLIS),
    "native/cuda/tq-tcq-tables.cuh": (render_tcq_cuda, TRELLIS),
    "native/metal/tq-metal-tcq.h": (render_tcq_metal, TRELLIS),
}


def render_all() -> dict[str, str]:
    tables = {TURBO: build_tables(), TRELLIS: build_trellis_tables(trellis_types())}
    return {rel: render(tables[which]) for rel, (render, which) in OUTPUTS.items()}


def stale(root: Path = REPO) -> list[str]:
    """Generated files under `root` that differ from what this tool writes."""
    return [rel for rel, text in render_all().items()
            if not (root / rel).is_file() or (root / rel).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the files under this directory instead of the repo")
    ap.add_argument("--check", action="store_true", help="fail if a generated file in the repo is stale")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    if args.verbose:
        for t in build_tables():
            print(f"{t['bits']}-bit: {t['iterations']} iterations, distortion {t['distortion']:.6f}")
    if args.check:
        bad = stale()
        for rel in bad:
            print(f"stale: {rel} (run {COMMAND})", file=sys.stderr)
        return 1 if bad else 0

    root = args.out if args.out is not None else REPO
    for rel, text in render_all().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
