"""Backs docs/FORMAT.md 11.2 "No QJL residual stage" through study.py: `python tools/studies/study.py`.

Research only: TurboQuant_prod, the MSE quantizer plus a 1-bit QJL residual.

TurboQuant's inner-product variant spends b-1 bits per coordinate on the MSE
(Lloyd-Max) quantizer and 1 bit on a Quantized Johnson-Lindenstrauss sketch of
the residual r = x - x̂: it stores sign(S r) for a Gaussian matrix S and ‖r‖,
and estimates

    <y, x> ≈ <y, x̂> + ‖r‖ · √(π/2) / m · <S y, sign(S r)>,

which is unbiased over S. The turbo types do not use it: at equal bits its
variance is larger than the MSE-only quantizer's error, and softmax turns that
variance into attention error (numbers in docs/FORMAT.md, "Rationale"). This
module exists to reproduce that measurement; nothing in the format depends on it.
S comes from NumPy's generator here because it is not part of any format.
"""

from __future__ import annotations

import math

import numpy as np

from tq_gguf.reference.codebooks import CENTROIDS, MIDPOINTS


def one_bit_centroid(d: int) -> float:
    """The 1-bit Lloyd-Max level ±E|u₁| for a uniform unit vector in R^d: Γ(d/2) / (√π Γ((d+1)/2))."""
    return math.exp(math.lgamma(d / 2) - 0.5 * math.log(math.pi) - math.lgamma((d + 1) / 2))


def mse_reconstruct(x: np.ndarray, bits: int) -> np.ndarray:
    """Paper-style MSE quantizer on rows of x (float64): ‖x‖ · C[nearest(x / ‖x‖)], bits in 1..4."""
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[-1]
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    u = x / np.where(norm == 0, 1, norm)
    if bits == 1:
        c = np.where(u > 0, 1.0, -1.0) * one_bit_centroid(d)
    else:
        c = CENTROIDS[bits].astype(np.float64)[np.searchsorted(MIDPOINTS[bits], u)]
    return norm * c


class QJLProd:
    """TurboQuant_prod with `bits` total per coordinate: (bits-1)-bit MSE stage + 1-bit QJL."""

    def __init__(self, bits: int, d: int, rng: np.random.Generator, sketch: int | None = None):
        if not 2 <= bits <= 5:
            raise ValueError("TurboQuant_prod needs 2..5 total bits (1..4 for the MSE stage)")
        self.bits, self.d = bits, d
        self.m = d if sketch is None else sketch
        self.S = rng.standard_normal((self.m, d))

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of x → (x̂ from the MSE stage, residual norms, residual sign sketch)."""
        x = np.asarray(x, dtype=np.float64)
        xh = mse_reconstruct(x, self.bits - 1)
        r = x - xh
        return xh, np.linalg.norm(r, axis=-1), np.where(r @ self.S.T >= 0, 1.0, -1.0)

    def inner(self, code: tuple[np.ndarray, np.ndarray, np.ndarray], y: np.ndarray) -> np.ndarray:
        """Unbiased estimates of <y_j, x_i> for every stored row i and query j: shape (n_y, n_x)."""
        xh, gamma, signs = code
        y = np.asarray(y, dtype=np.float64)
        qjl = (y @ self.S.T) @ signs.T * (math.sqrt(math.pi / 2) / self.m)
        return y @ xh.T + qjl * gamma[None, :]
