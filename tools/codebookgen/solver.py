"""The tables the kernels compute with, solved from the law of one coordinate of a uniform point
on the unit sphere of R^d (d = the block size, no data involved).

Codebook law. For a uniform point on the unit sphere of R^d one coordinate has the
density

    f(x) = Γ(d/2) / (√π Γ((d-1)/2)) · (1 - x²)^((d-3)/2),   -1 ≤ x ≤ 1,

and the codebooks are its Lloyd-Max (MSE-optimal scalar) quantizers at 2^bits levels.

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

Scale search. The encoder tries SEARCH_STEPS scaled copies of each codebook and keeps
the one that fits the block best (docs/FORMAT.md, section 5, step 6). Candidate t scales
the codebook by F[t] = f32(2^((t - SEARCH_CENTRE) / SEARCH_PER_OCTAVE)), so F rises
from 2^(-4/12) ≈ 0.794 to 2^(3/12) ≈ 1.189 and F[SEARCH_CENTRE] = 1 is the plain
codebook. Every backend compares against the same products, tabulated here: the
positive midpoints of candidate t are f32(F[t] · M[j]), each one correctly rounded
float32 product (the float64 product of two float32 values is exact). The grid was
measured in docs/FORMAT.md, section 11.5; eight steps keep 97-99 % of what 32 give.
"""

from __future__ import annotations

import math

import numpy as np

from .layout import BITS, DIM

QUAD_POINTS = 96
TOL = 1e-16
MAX_ITER = 200_000

SEARCH_STEPS = 8       # candidate scales per block
SEARCH_CENTRE = 4      # the candidate that is the plain codebook (factor 1)
SEARCH_PER_OCTAVE = 12 # candidate factors are 2^(1/12) apart


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


def search_factors() -> np.ndarray:
    """F[t] = f32(2^((t - SEARCH_CENTRE) / SEARCH_PER_OCTAVE)), ascending; F[SEARCH_CENTRE] = 1."""
    t = np.arange(SEARCH_STEPS, dtype=np.float64)
    return np.exp2((t - SEARCH_CENTRE) / SEARCH_PER_OCTAVE).astype(np.float32)


def search_midpoints(m32: np.ndarray) -> np.ndarray:
    """(SEARCH_STEPS, levels/2 - 1) float32: the positive midpoints of each candidate, f32(F[t] · M[j])."""
    positive = m32[len(m32) // 2 + 1:].astype(np.float64)
    return (search_factors().astype(np.float64)[:, None] * positive[None, :]).astype(np.float32)


def build_tables() -> list[dict]:
    tables = []
    for bits in BITS:
        c64, iters = solve(1 << bits)
        c32, m32 = float32_tables(c64)
        if not np.array_equal(c32, -c32[::-1]) or m32[len(m32) // 2] != 0:
            raise SystemExit(f"{bits}-bit codebook is not exactly symmetric in float32")
        tables.append(
            {
                "bits": bits,
                "centroids": c32,
                "midpoints": m32,
                "search": search_midpoints(m32),
                "iterations": iters,
                "distortion": distortion(c32, m32),
            }
        )
    return tables
