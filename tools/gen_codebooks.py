#!/usr/bin/env python3
"""Solve the turbo Lloyd-Max codebooks and emit them for C and for Python.

The turbo types quantize each coordinate of a (rotated, normalised) block of
d = 64 values. For a uniform point on the unit sphere of R^d one coordinate has
the density

    f(x) = Γ(d/2) / (√π Γ((d-1)/2)) · (1 - x²)^((d-3)/2),   -1 ≤ x ≤ 1,

and the codebooks are the Lloyd-Max (MSE-optimal scalar) quantizers of that law
at 4, 8 and 16 levels. No data is involved.

Solver (float64 NumPy, deterministic):

* Start from the quantiles of the density's Gaussian approximation N(0, 1/d),
  nudged into symmetric order.
* Lloyd iteration: boundaries = midpoints of neighbouring centroids; each
  centroid = conditional mean of f over its cell. The cell integrals
  ∫f and ∫x·f are computed with 96-point Gauss-Legendre quadrature on each
  cell. The integrand (1-x²)^30.5 is analytic inside (-1, 1) and its mass near
  the endpoint singularities is below 1e-30, so the rule is accurate to
  float64 rounding; solving again with 200 points and iterating to an exact
  fixed point gives the same float32 tables bit for bit.
* Symmetry is imposed after every step (c ← (c - reverse(c)) / 2).
* Stop when no centroid moves by more than 1e-16 (or 200000 iterations).

Output rounding: centroids are the float64 solution rounded to float32 (round
to nearest even). Midpoints are (c32[k] + c32[k+1]) / 2 evaluated exactly in
float64 and rounded to float32, so an index chosen by comparison with them is
the nearest float32 centroid (up to that final rounding, which the spec makes
normative). The centre midpoint of these symmetric codebooks is exactly 0.

Usage:

    python3 tools/gen_codebooks.py            # rewrite the two files in the repo
    python3 tools/gen_codebooks.py --out DIR  # write DIR/tq-codebooks.h and DIR/codebooks.py
    python3 tools/gen_codebooks.py --check    # exit 1 if the repo files are stale

The outputs are byte-for-byte reproducible: same NumPy float64 arithmetic, fixed
iteration rule, values printed as exact hex floats.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

DIM = 64
BITS = (2, 3, 4)
QUAD_POINTS = 96
TOL = 1e-16
MAX_ITER = 200_000

REPO = Path(__file__).resolve().parent.parent
HEADER_PATH = REPO / "native" / "tq-codebooks.h"
MODULE_PATH = REPO / "tq_gguf" / "reference" / "codebooks.py"
COMMAND = "python3 tools/gen_codebooks.py"


def log_norm_const(d: int) -> float:
    """log of Γ(d/2) / (√π Γ((d-1)/2)), the normaliser of the coordinate density."""
    return math.lgamma(d / 2) - 0.5 * math.log(math.pi) - math.lgamma((d - 1) / 2)


def density(x: np.ndarray, d: int = DIM) -> np.ndarray:
    """Density of one coordinate of a uniform unit vector in R^d."""
    x = np.asarray(x, dtype=np.float64)
    inside = np.clip(1.0 - x * x, 0.0, None)
    return np.exp(log_norm_const(d)) * inside ** ((d - 3) / 2)


_GL_X, _GL_W = np.polynomial.legendre.leggauss(QUAD_POINTS)


def cell_moments(edges: np.ndarray, d: int = DIM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """∫f, ∫x f and ∫x² f over each cell [edges[k], edges[k+1]] (Gauss-Legendre)."""
    a, b = edges[:-1, None], edges[1:, None]
    half = (b - a) / 2
    x = (a + b) / 2 + half * _GL_X[None, :]
    w = half * _GL_W[None, :] * density(x, d)
    return w.sum(axis=1), (w * x).sum(axis=1), (w * x * x).sum(axis=1)


def solve(levels: int, d: int = DIM) -> tuple[np.ndarray, int]:
    """Lloyd-Max centroids (ascending, float64) for `levels` levels; returns (centroids, iterations)."""
    # Gaussian-approximation start: centres of equal-probability cells of N(0, 1/d).
    p = (np.arange(levels) + 0.5) / levels
    # inverse normal CDF by bisection on math.erf (deterministic, no SciPy)
    lo, hi = np.full(levels, -10.0), np.full(levels, 10.0)
    for _ in range(200):
        mid = (lo + hi) / 2
        cdf = 0.5 * (1 + np.vectorize(math.erf)(mid / math.sqrt(2)))
        lo, hi = np.where(cdf < p, mid, lo), np.where(cdf < p, hi, mid)
    c = (lo + hi) / 2 / math.sqrt(d)
    c = (c - c[::-1]) / 2
    for it in range(1, MAX_ITER + 1):
        edges = np.concatenate(([-1.0], (c[:-1] + c[1:]) / 2, [1.0]))
        m0, m1, _ = cell_moments(edges, d)
        new = m1 / m0
        new = (new - new[::-1]) / 2
        delta = np.max(np.abs(new - c))
        c = new
        if delta <= TOL:
            return c, it
    raise RuntimeError(f"Lloyd-Max did not converge for {levels} levels")


def distortion(centroids: np.ndarray, midpoints: np.ndarray, d: int = DIM) -> float:
    """E‖u - Q(u)‖² for a uniform unit vector u in R^d: d times the per-coordinate MSE."""
    edges = np.concatenate(([-1.0], midpoints, [1.0]))
    m0, m1, m2 = cell_moments(edges, d)
    c = centroids.astype(np.float64)
    return float(d * np.sum(m2 - 2 * c * m1 + c * c * m0))


def float32_tables(c64: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The normative float32 centroids and midpoints derived from a float64 solution."""
    c32 = c64.astype(np.float32)
    wide = c32.astype(np.float64)
    m32 = ((wide[:-1] + wide[1:]) / 2).astype(np.float32)
    return c32, m32


def hexf(v: np.float32) -> str:
    """Shortest exact hex-float spelling of a float32 value (C99 and float.fromhex)."""
    v = float(v)
    if v == 0.0:
        return "-0x0p+0" if math.copysign(1.0, v) < 0 else "0x0p+0"
    h = v.hex()  # e.g. '-0x1.7ffe9c0000000p-3'
    mant, exp = h.split("p")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}p{int(exp)}"


def build_tables() -> list[dict]:
    tables = []
    for bits in BITS:
        c64, iters = solve(1 << bits)
        c32, m32 = float32_tables(c64)
        tables.append(
            {
                "bits": bits,
                "centroids": c32,
                "midpoints": m32,
                "iterations": iters,
                "distortion": distortion(c32, m32),
            }
        )
    return tables


def render_header(tables: list[dict]) -> str:
    out = [
        "// tq-gguf: Lloyd-Max codebooks of the turbo KV-cache types (docs/FORMAT.md).",
        "//",
        f"// GENERATED by `{COMMAND}` -- do not edit. The same values are in",
        "// tq_gguf/reference/codebooks.py; tests/test_codebooks.py checks that they agree.",
        "//",
        f"// Law: one coordinate of a uniform unit vector in R^{DIM}, density ∝ (1 - x²)^((d-3)/2).",
        "// Index selection: idx = number of midpoints m[j] with u > m[j] (ties go to the lower index).",
        "#pragma once",
        "",
    ]
    for t in tables:
        b, n = t["bits"], 1 << t["bits"]
        out.append(f"// {b}-bit: {n} levels, E|u - Q(u)|^2 = {t['distortion']:.6f} for unit u in R^{DIM}")
        cs = ", ".join(hexf(v) + "f" for v in t["centroids"])
        ms = ", ".join(hexf(v) + "f" for v in t["midpoints"])
        out.append(f"static const float tq_centroids_{b}bit[{n}] = {{ {cs} }};")
        out.append(f"static const float tq_midpoints_{b}bit[{n - 1}] = {{ {ms} }};")
        out.append("")
    return "\n".join(out)


def render_module(tables: list[dict]) -> str:
    out = [
        '"""Lloyd-Max codebooks of the turbo types (float32, exact).',
        "",
        f"GENERATED by `{COMMAND}` -- do not edit. The C header",
        "native/tq-codebooks.h carries the same values; docs/FORMAT.md lists them.",
        "",
        "CENTROIDS[bits] holds the 2**bits levels in ascending order, MIDPOINTS[bits]",
        "the 2**bits - 1 decision thresholds between neighbours, both float32.",
        "DISTORTION[bits] is E|u - Q(u)|^2 of the float32 codebook for a uniform unit",
        f"vector u in R^{DIM} (exact quadrature, plain-norm reconstruction).",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import numpy as np",
        "",
        f"DIM = {DIM}",
        "",
        "",
        "def _f32(values: list[str]) -> np.ndarray:",
        "    arr = np.array([float.fromhex(v) for v in values], dtype=np.float64).astype(np.float32)",
        "    arr.setflags(write=False)",
        "    return arr",
        "",
        "",
        "CENTROIDS: dict[int, np.ndarray] = {",
    ]
    for t in tables:
        vals = ", ".join(f'"{hexf(v)}"' for v in t["centroids"])
        out.append(f"    {t['bits']}: _f32([{vals}]),")
    out.append("}")
    out.append("")
    out.append("MIDPOINTS: dict[int, np.ndarray] = {")
    for t in tables:
        vals = ", ".join(f'"{hexf(v)}"' for v in t["midpoints"])
        out.append(f"    {t['bits']}: _f32([{vals}]),")
    out.append("}")
    out.append("")
    out.append("DISTORTION: dict[int, float] = {")
    for t in tables:
        out.append(f"    {t['bits']}: {t['distortion']!r},")
    out.append("}")
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write both files into this directory instead of the repo")
    ap.add_argument("--check", action="store_true", help="fail if the repo files differ from a fresh solve")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    tables = build_tables()
    header, module = render_header(tables), render_module(tables)
    if args.verbose:
        for t in tables:
            print(f"{t['bits']}-bit: {t['iterations']} iterations, distortion {t['distortion']:.6f}")

    if args.check:
        stale = [p for p, text in ((HEADER_PATH, header), (MODULE_PATH, module))
                 if not p.exists() or p.read_text() != text]
        for p in stale:
            print(f"stale: {p.relative_to(REPO)} (run {COMMAND})", file=sys.stderr)
        return 1 if stale else 0

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        targets = ((args.out / HEADER_PATH.name, header), (args.out / MODULE_PATH.name, module))
    else:
        targets = ((HEADER_PATH, header), (MODULE_PATH, module))
    for path, text in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
