"""Self-check of every compiled backend's turbo and tcq kernels against the NumPy reference.

For each backend the library reports (ggml.backends()), each kernel variant it can
run here, and each turbo and tcq type, these checks (a tcq type is a value type: it has no
dot product, so no dot or attention check, and its flash attention reads K as q8_0):

  quantize    the kernel's bytes are the reference's (tq_gguf.reference.quantize), row for row;
  dequantize  from the reference's bytes, the kernel's floats are the reference's, bit for bit;
  dot         the kernel's rotated-domain dot product of a float32 query with a row is within
              docs/FORMAT.md §7's bound of the reference value:
                  |dot - ref| <= (n + 2) * 2^-24 * sum_i |q_i * y_i|     (n values, y dequantized)
              (zero error for kernels that keep the spec's order, as the CPU kernels do);
  attention   one head of attention over a cache the kernel quantized itself: scores from its
              dot product, softmax and the weighted sum of its dequantized V rows in float64,
              against the same from the reference. Score errors within the dot bound, scaled
              (|e_j| <= D), move each softmax weight by at most a factor exp(+-2D), so every
              output coordinate may move by at most (exp(2D) - 1) * max_j |v_j| (plus float64
              rounding); that is the tolerance.
  flash_attn  ggml's FLASH_ATTN_EXT op on the backend's device, K and V in the turbo type (bytes
              from the reference), against float64 attention over the reference's dequantized
              rows: |out - ref| <= 2^-8 * max_j |v_j| per coordinate. Backends may round Q, the
              scores or the softmax weights to fp16 inside the op (2^-11 relative each); 2^-8 is
              eight such steps. A decode that is wrong by one codebook level moves the output by
              percents of max |v|, far beyond it. Where the scores are large (Qwen2.5's outlier
              rows: |q|·|k| in the thousands) a device that keeps dequantized K in fp16
              (ggml-vulkan) misses this bound with a stock q8_0 cache too; there the turbo
              type is held to STOCK_MARGIN times the device's own q8_0 error on that input, and
              the result names the input and both figures. On a software Vulkan device
              (lavapipe) head sizes above 128 are left out, and the result says which.

Inputs: random rows (a spread of norms, outlier channels), the spec's edge cases
(zeros, NaN, Inf, overflowing and subnormal scales) and the real K/V rows of the
three models in tests/data/kv_rows.npz (tools/dump_kv.py) when that file is there,
each rotated as llama.cpp rotates cache rows. The dot and attention checks skip
rows with non-finite or beyond-clamp values, for which the bound says nothing.

Backends join by adding an entry to KERNEL_SOURCES that returns their Kernels; a GPU
backend's devices are checked through tq_gguf.native.backendops (SET_ROWS for quantize,
GET_ROWS for dequantize, FLASH_ATTN_EXT), so every backend ggml registers has a harness.

This module runs the checks; the pieces live beside it: verifyinputs (the rows above),
verifykernels (each backend's entry points, KERNEL_SOURCES), verifytolerance (the bounds
above) and verifyreport (the results and their table).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import reference as ref
from ..kv import cachetypes
from ..reference import trellis
from ..native import ggml
from .verifyinputs import KV_ROWS, Inputs, VerifyError, make_inputs
from .verifykernels import KERNEL_SOURCES, Kernel, _cpu_kernels, compiled_kernels, type_id
from .verifyreport import CHECKS, Report, Result
from .verifytolerance import (FLASH_ATTN_TOLERANCE, STOCK_MARGIN, attention, attention_over, attention_tolerance,
                              dot_tolerance, finite_rows)

# What callers and tests use from the harness, wherever it is defined.
__all__ = ["CHECKS", "FLASH_ATTN_TOLERANCE", "KERNEL_SOURCES", "KV_ROWS", "QTYPES", "STOCK_MARGIN", "Inputs",
           "Kernel", "Report", "Result", "VerifyError", "_cpu_kernels", "attention", "attention_tolerance",
           "check_kernel", "compiled_kernels", "dot_tolerance", "make_inputs", "run"]

QTYPES = cachetypes.TQ_TYPES
# The K type beside a value-only (tcq) type in the flash-attention check.
VALUE_ONLY_KEY = "q8_0"


def _ref_quantize(x: np.ndarray, qtype: str) -> np.ndarray:
    return (trellis if cachetypes.get(qtype).trellis else ref).quantize(x, qtype)


def _ref_dequantize(raw: np.ndarray, qtype: str) -> np.ndarray:
    return (trellis if cachetypes.get(qtype).trellis else ref).dequantize(raw, qtype)


def _ref_cache(x: np.ndarray, qtype: str) -> np.ndarray:
    """What a cache of qtype gives back for rows x: the reference's, or the host ggml's for stock types."""
    if cachetypes.get(qtype).rotated:
        return _ref_dequantize(_ref_quantize(x, qtype), qtype)
    tid = type_id(qtype)
    return ggml.dequantize(ggml.quantize(x, tid), tid, x.size).reshape(x.shape)


def _q8_0_error(kernel: Kernel, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|error| of the device's flash attention over a q8_0 cache, against exact attention over
    the q8_0 values it read."""
    q8 = type_id("q8_0")

    def deq(x):
        return ggml.dequantize(ggml.quantize(x, q8), q8, x.size).reshape(x.shape)

    want = attention_over(q, deq(k), deq(v))
    return np.abs(kernel.flash_attn_q8_0(q, k, v).astype(np.float64) - want)


def _mismatch(name_rows: list[tuple[str, int]], n_total: int, what: str) -> str:
    name, row = name_rows[0]
    return f"{len(name_rows)} of {n_total} rows differ in {what}; first: {name} row {row}"


def _tolerance_result(kernel: Kernel, qtype: str, check: str, ratios: list[tuple[str, np.ndarray]]) -> Result:
    n = sum(r.size for _, r in ratios)
    if not n:
        return Result(kernel.backend, kernel.variant, qtype, check, "skipped", detail="no finite rows to compare")
    worst_name, worst = max(((name, float(r.max(initial=0.0))) for name, r in ratios), key=lambda t: t[1])
    exact = all(not r.any() for _, r in ratios)
    if worst > 1 or not np.isfinite(worst):
        return Result(kernel.backend, kernel.variant, qtype, check, "FAIL", n, worst,
                      f"error {worst:.3g} times the tolerance ({worst_name})")
    return Result(kernel.backend, kernel.variant, qtype, check, "exact" if exact else "ok", n, worst)


def _exact(kernel, qtype: str, check: str, unit: str, rows, got_and_want) -> "Result":
    """One exact check: every row's output equals the reference's, bit for bit."""
    bad, total = [], 0
    for name, x in rows:
        got, want = got_and_want(x)
        bad += [(name, int(i)) for i in np.flatnonzero((got != want).any(axis=-1))]
        total += len(x)
    return Result(kernel.backend, kernel.variant, qtype, check, "FAIL" if bad else "exact", total,
                  detail=_mismatch(bad, total, unit) if bad else "")


def check_kernel(kernel: Kernel, qtype: str, inputs: Inputs) -> list[Result]:
    value_only = cachetypes.get(qtype).value_only

    def na(check: str) -> Result:
        why = "a value type: no dot product" if value_only and check in ("dot", "attention") else "no entry point"
        return Result(kernel.backend, kernel.variant, qtype, check, "n/a", detail=why)

    out = []
    if kernel.quantize is None:
        out.append(na("quantize"))
    else:
        out.append(_exact(kernel, qtype, "quantize", "bytes", inputs.rows,
                          lambda x: (kernel.quantize(x, qtype), _ref_quantize(x, qtype))))
    if kernel.dequantize is None:
        out.append(na("dequantize"))
    else:
        def dequantized(x):
            raw = _ref_quantize(x, qtype)
            return (kernel.dequantize(raw, qtype, x.shape[-1]).view(np.uint32),
                    _ref_dequantize(raw, qtype).view(np.uint32))

        out.append(_exact(kernel, qtype, "dequantize", "float bits", inputs.rows, dequantized))
    if kernel.dot is None or value_only:
        out.append(na("dot"))
    else:
        rng = np.random.default_rng(17)
        ratios = []
        for name, x in inputs.rows:
            x = x[finite_rows(x)]
            if not len(x):
                continue
            raw = ref.quantize(x, qtype)
            q = ref.rotate(rng.standard_normal(x.shape).astype(np.float32))
            err = np.abs(kernel.dot(raw, q, qtype).astype(np.float64) - ref.dot(raw, q, qtype).astype(np.float64))
            tol = dot_tolerance(q, ref.dequantize(raw, qtype))
            ratios.append((name, np.where(err == 0, 0.0, err / np.maximum(tol, np.finfo(np.float64).tiny))))
        out.append(_tolerance_result(kernel, qtype, "dot", ratios))
    if kernel.quantize is None or kernel.dequantize is None or kernel.dot is None or value_only:
        out.append(na("attention"))
    else:
        ratios = []
        for name, q, k, v in inputs.attention:
            scale = 1.0 / np.sqrt(k.shape[-1])
            k_raw, v_raw = kernel.quantize(k, qtype), kernel.quantize(v, qtype)
            scores = np.stack([kernel.dot(k_raw, np.broadcast_to(qi, k.shape), qtype) for qi in q]) * scale
            got = attention(scores, kernel.dequantize(v_raw, qtype, v.shape[-1]))
            k_ref, v_ref = ref.quantize(k, qtype), ref.quantize(v, qtype)
            want_scores = np.stack([ref.dot(k_ref, qi, qtype) for qi in q]).astype(np.float64) * scale
            v_deq = ref.dequantize(v_ref, qtype)
            want = attention(want_scores, v_deq)
            bound = np.stack([dot_tolerance(np.broadcast_to(qi, k.shape), ref.dequantize(k_ref, qtype)) for qi in q])
            tol = attention_tolerance(bound * scale, v_deq)
            err = np.abs(got - want)
            ratios.append((name, np.where(err == 0, 0.0, err / np.maximum(tol, np.finfo(np.float64).tiny))))
        out.append(_tolerance_result(kernel, qtype, "attention", ratios))
    if kernel.flash_attn is None:
        out.append(na("flash_attn"))
    else:
        ratios, left_out, stock_bounds = [], [], []
        for name, q, k, v in inputs.attention:
            if kernel.flash_attn_max_head is not None and k.shape[-1] > kernel.flash_attn_max_head:
                left_out.append(f"{name} (head {k.shape[-1]})")
                continue
            k_type = VALUE_ONLY_KEY if value_only else qtype
            v_deq = _ref_cache(v, qtype)
            want = attention_over(q, _ref_cache(k, k_type), v_deq)
            got = kernel.flash_attn(q, k, v, k_type, qtype).astype(np.float64)
            tol = FLASH_ATTN_TOLERANCE * np.abs(np.asarray(v_deq, np.float64)).max()
            ratio = np.abs(got - want) / tol
            if ratio.max() > 1 and kernel.flash_attn_q8_0 is not None:
                stock = float(_q8_0_error(kernel, q, k, v).max() / tol)
                bound = max(1.0, STOCK_MARGIN * stock)
                stock_bounds.append(f"{name} held to {bound:.3g}x the tolerance "
                                    f"(the device's q8_0 flash attention: {stock:.3g}x)")
                ratio = ratio / bound
            ratios.append((name, ratio))
        why = "; ".join(stock_bounds + ([f"not run on this software device above head size "
                                         f"{kernel.flash_attn_max_head}: " + ", ".join(left_out)] if left_out else []))
        if ratios:
            result = _tolerance_result(kernel, qtype, "flash_attn", ratios)
            out.append(replace(result, detail="; ".join(d for d in (result.detail, why) if d)))
        else:
            out.append(Result(kernel.backend, kernel.variant, qtype, "flash_attn", "skipped", detail=why))
    return out


def run(types: tuple[str, ...] = QTYPES, rows_path: Path | None = KV_ROWS,
        kernels: list[Kernel] | None = None) -> Report:
    """Check `kernels` (default: every compiled backend's) on every type in `types`."""
    missing: list[tuple[str, str]] = []
    if kernels is None:
        kernels, missing = compiled_kernels()
    inputs = make_inputs(rows_path)
    report = Report(inputs=inputs.described, notes=list(inputs.notes))
    for kernel in kernels:
        for qtype in types:
            report.results += check_kernel(kernel, qtype, inputs)
    for backend, why in missing:
        for qtype in types:
            report.results.append(Result(backend, "-", qtype, "quantize", "skipped", detail=why))
    return report
