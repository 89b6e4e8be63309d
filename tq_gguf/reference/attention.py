"""Reference attention for one head with turbo-quantized K and/or V.

This is what llama.cpp does with a turbo cache, written out: Q and K are rotated
by the same orthogonal R (so q·k is unchanged), K and V rows are stored rotated
and quantized, the softmax-weighted sum of the rotated values is rotated back.
Scores, softmax and the weighted sum run in float64 so that the only errors
left are the quantization's own.
"""

from __future__ import annotations

import numpy as np

from .quants import dequantize, quantize
from .rotation import GROUP, rotate, unrotate


def softmax(scores: np.ndarray) -> np.ndarray:
    z = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def float_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float | None = None) -> np.ndarray:
    """softmax(q kᵀ · scale) v for q (..., m, d), k (n, d), v (n, d); scale defaults to 1/√d."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    return softmax(q @ k.T * scale) @ v


def turbo_cache(x: np.ndarray, qtype: str | None, group: int = GROUP) -> np.ndarray:
    """What a cache row reads back as (in the rotated domain): rotate, then quantize and dequantize."""
    r = rotate(x, group)
    return r if qtype is None else dequantize(quantize(r, qtype), qtype)


def turbo_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    k_type: str | None,
    v_type: str | None,
    scale: float | None = None,
    group: int = GROUP,
) -> np.ndarray:
    """Attention with K stored as `k_type` and V as `v_type` (None = float32), output unrotated."""
    qr = rotate(q, group)
    kr = turbo_cache(k, k_type, group)
    vr = turbo_cache(v, v_type, group)
    out_rot = float_attention(qr, kr, vr, scale)
    return unrotate(out_rot, group).astype(np.float64)
