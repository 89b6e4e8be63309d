"""NumPy ground truth for the turbo KV-cache types (docs/FORMAT.md).

Small API that native tests compare against:

    quantize(x, qtype)    float32 (..., k*64) -> uint8 (..., k*TYPE_SIZE[qtype]), ggml row layout
    dequantize(raw, qtype) uint8 -> float32
    dot(raw, q, qtype)    rotated-domain dot products in the reference order
    rotate / unrotate     the fixed randomized Hadamard transform (groups of 64)

The modules each do one job: codebooks (generated tables), rotation, quants
(block format), attention (one-head reference attention), qjl (research-only
TurboQuant_prod estimator, not part of any type), study (the measurements
recorded in FORMAT.md). trellis is the reference of the trellis-coded value
types tcq2 and tcq3 (FORMAT.md section 12), with their generated tables in
trellistables; its quantize and dequantize take those names.
"""

from __future__ import annotations

from .codebooks import CENTROIDS, MIDPOINTS
from .quants import BLOCK_SIZE, QTYPES, TYPE_SIZE, Turbo2, Turbo3, Turbo4, dequantize, dot, quantize
from .rotation import GROUP, SIGN_SEED, rotate, rotation_matrix, rotation_signs, splitmix64, unrotate

__all__ = [
    "BLOCK_SIZE",
    "CENTROIDS",
    "GROUP",
    "MIDPOINTS",
    "QTYPES",
    "SIGN_SEED",
    "TYPE_SIZE",
    "Turbo2",
    "Turbo3",
    "Turbo4",
    "dequantize",
    "dot",
    "quantize",
    "rotate",
    "rotation_matrix",
    "rotation_signs",
    "splitmix64",
    "unrotate",
]
