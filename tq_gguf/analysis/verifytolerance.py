"""The tolerances of tq_gguf.analysis.verify's checks, derived in that module's docstring, and the
float64 attention they are measured against."""

from __future__ import annotations

import numpy as np

FLASH_ATTN_TOLERANCE = 2.0**-8  # of max |v|; see tq_gguf.analysis.verify's docstring
FINITE_LIMIT = 1e20  # rows beyond this magnitude overflow the dot product's float32 sums
# A GPU flash attention may round scores more coarsely than FLASH_ATTN_TOLERANCE allows on inputs
# with large |q|·|k| (ggml-vulkan keeps dequantized K in fp16: Qwen2.5's outlier rows miss the
# tolerance 6.5x with a stock q8_0 cache). There a turbo type is held to the device's own q8_0
# error on the same input, times this margin, and the result says so.
STOCK_MARGIN = 1.25


def dot_tolerance(q: np.ndarray, y: np.ndarray) -> np.ndarray:
    """FORMAT.md §7: (n + 2) * 2^-24 * sum |q_i * y_i| per row."""
    q64, y64 = np.asarray(q, np.float64), np.asarray(y, np.float64)
    return (q.shape[-1] + 2) * 2.0**-24 * np.abs(q64 * y64).sum(axis=-1)


def attention_tolerance(score_bound: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per output coordinate: (exp(2D) - 1) * max_j |v_j|, D the largest score error allowed,
    plus float64 rounding of the softmax and the sum."""
    vmax = np.abs(np.asarray(v, np.float64)).max(axis=0)
    return np.expm1(2 * float(np.max(score_bound, initial=0.0))) * vmax + 2.0**-40 * vmax


def finite_rows(x: np.ndarray) -> np.ndarray:
    """Rows the dot bound speaks for: finite, and below FINITE_LIMIT."""
    return np.isfinite(x).all(axis=-1) & (np.abs(x).max(axis=-1) < FINITE_LIMIT)


def attention(scores: np.ndarray, v: np.ndarray) -> np.ndarray:
    """softmax(scores) @ v in float64, scores (m, n), v (n, d)."""
    s = np.asarray(scores, np.float64)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ np.asarray(v, np.float64)


def attention_over(q: np.ndarray, k_deq: np.ndarray, v_deq: np.ndarray) -> np.ndarray:
    """Exact (float64) scaled dot-product attention of queries q over dequantized cache rows."""
    scale = 1.0 / np.sqrt(k_deq.shape[-1])
    return attention(np.asarray(q, np.float64) @ np.asarray(k_deq, np.float64).T * scale, v_deq)
