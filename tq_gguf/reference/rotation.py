"""The fixed random rotation of turbo caches (docs/FORMAT.md, "Rotation").

R = H · diag(s) over each consecutive group of GROUP = 64 values, with H the
orthonormal Sylvester-Hadamard matrix (entries ±1/8, exact in binary floating
point) and s the first GROUP signs of a splitmix64 stream. R is orthogonal, so
rotating q and k together leaves q·k unchanged; its inverse is Rᵀ = diag(s) · H
(H · diag(s) is not its own inverse).

The rotation is not part of the turbo block format: llama.cpp applies it to
Q, K and V as a graph operation before the cache write, and applies the inverse
to the attention output. The quantizer in quants.py quantizes what it is given.
"""

from __future__ import annotations

import numpy as np

GROUP = 64
SIGN_SEED = 0x7475726271756174  # ASCII "turbquat", big-endian

_MASK64 = (1 << 64) - 1


def splitmix64(seed: int, n: int) -> list[int]:
    """The first n outputs of splitmix64 (Steele, Lea & Flood 2014) from `seed`.

    Pure 64-bit unsigned integer arithmetic (wrapping add and multiply, xor,
    logical shift right), so any language reproduces it exactly.
    """
    state = seed & _MASK64
    out = []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        out.append(z ^ (z >> 31))
    return out


def rotation_signs(n: int = GROUP, seed: int = SIGN_SEED) -> np.ndarray:
    """s[i] = -1 if bit 63 of splitmix64 output i is set, else +1 (float32)."""
    return np.array([-1.0 if (z >> 63) else 1.0 for z in splitmix64(seed, n)], dtype=np.float32)


def hadamard(n: int = GROUP) -> np.ndarray:
    """Orthonormal Sylvester-Hadamard matrix: H[i, j] = (-1)^popcount(i & j) / √n (float64)."""
    if n <= 0 or n & (n - 1):
        raise ValueError(f"Hadamard size must be a power of two, got {n}")
    i = np.arange(n)
    v = i[:, None] & i[None, :]
    parity = np.zeros_like(v)
    while np.any(v):
        parity ^= v & 1
        v = v >> 1
    return np.where(parity == 1, -1.0, 1.0) / np.sqrt(n)


def rotation_matrix(n: int = GROUP) -> np.ndarray:
    """R = H · diag(s) as a float64 matrix acting on column vectors (y = R x)."""
    return hadamard(n) * rotation_signs(n).astype(np.float64)[None, :]


def _grouped(x: np.ndarray, group: int) -> np.ndarray:
    x = np.asarray(x)
    if x.shape[-1] % group:
        raise ValueError(f"last dimension {x.shape[-1]} is not a multiple of the rotation group {group}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // group, group)


def rotate(x: np.ndarray, group: int = GROUP) -> np.ndarray:
    """Apply R to every consecutive `group`-slice of the last axis (same signs in each slice).

    Evaluated in float64 and returned as float32: the rotation's own rounding
    is not normative (backends run it as a matrix multiplication).
    """
    r = rotation_matrix(group)
    y = _grouped(x, group).astype(np.float64) @ r.T
    return y.reshape(np.shape(x)).astype(np.float32)


def unrotate(y: np.ndarray, group: int = GROUP) -> np.ndarray:
    """Apply R⁻¹ = diag(s) · H to every `group`-slice of the last axis."""
    r = rotation_matrix(group)
    x = _grouped(y, group).astype(np.float64) @ r
    return x.reshape(np.shape(y)).astype(np.float32)
