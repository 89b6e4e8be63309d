"""Self-check of every compiled backend's turbo kernels against the NumPy reference.

For each backend the library reports (ggml.backends()), each kernel variant it can
run here, and each turbo type, four checks:

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
"""

from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from .. import paths
from .. import reference as ref
from ..errors import TqError
from ..kv import cachetypes
from ..native import backendops, ggml, typeids
from ..reference import rotate

QTYPES = cachetypes.TURBO_TYPES
CHECKS = ("quantize", "dequantize", "dot", "attention", "flash_attn")
FLASH_ATTN_TOLERANCE = 2.0**-8  # of max |v|; see the module docstring
KV_ROWS = paths.KV_ROWS
FINITE_LIMIT = 1e20  # rows beyond this magnitude overflow the dot product's float32 sums
N_QUERIES = 4
MAX_KEYS = 128
# Mesa's lavapipe (llvmpipe) compiles each flash-attention pipeline with LLVM on first use; at head
# size 256 that took past 8 GB and 25 CPU-minutes (docs/BACKENDS.md), so on a software device the
# flash-attention check stops at this head size and says so.
SOFTWARE_DEVICE_MAX_HEAD = 128
SOFTWARE_DEVICES = ("llvmpipe",)
# A GPU flash attention may round scores more coarsely than FLASH_ATTN_TOLERANCE allows on inputs
# with large |q|·|k| (ggml-vulkan keeps dequantized K in fp16: Qwen2.5's outlier rows miss the
# tolerance 6.5x with a stock q8_0 cache). There a turbo type is held to the device's own q8_0
# error on the same input, times this margin, and the result says so.
STOCK_MARGIN = 1.25


class VerifyError(TqError):
    """A kernel disagrees with the reference, or the inputs cannot be read."""


@dataclass(frozen=True)
class Kernel:
    """A backend's kernels for the turbo types; None where the backend has no such entry point.

    quantize(rows, qtype) -> bytes per row; dequantize(raw, qtype, n) -> float32 rows of n values;
    dot(raw, q, qtype) -> float32 per row; flash_attn(q, k, v, qtype) -> float32 (n_q, d) for one
    head whose K and V cache rows are stored as qtype."""

    backend: str
    variant: str
    quantize: Callable[[np.ndarray, str], np.ndarray] | None
    dequantize: Callable[[np.ndarray, str, int], np.ndarray] | None
    dot: Callable[[np.ndarray, np.ndarray, str], np.ndarray] | None
    flash_attn: Callable[[np.ndarray, np.ndarray, np.ndarray, str], np.ndarray] | None = None
    flash_attn_max_head: int | None = None  # larger heads are not run (see SOFTWARE_DEVICE_MAX_HEAD)
    # the same op over a stock q8_0 cache on the same device: where that misses the tolerance too,
    # the device's flash attention rounds more than the tolerance allows (see STOCK_MARGIN)
    flash_attn_q8_0: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None


@dataclass(frozen=True)
class Result:
    backend: str
    variant: str
    qtype: str
    check: str
    status: str  # "exact", "ok" (within tolerance), "FAIL", "n/a" (no entry point) or "skipped"
    rows: int = 0  # rows, dot products or attention outputs compared
    worst: float | None = None  # largest |error| / tolerance (dot, attention)
    detail: str = ""


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status == "FAIL"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {"ok": self.ok, "results": [asdict(r) for r in self.results], "inputs": self.inputs,
                "notes": self.notes}

    def table_lines(self) -> list[str]:
        cells: dict[tuple[str, str, str], dict[str, str]] = {}
        for r in self.results:
            text = r.status
            if r.status == "ok" and r.worst is not None:
                text = f"ok {r.worst:.2g}"
            cells.setdefault((r.backend, r.variant, r.qtype), {})[r.check] = text
        lines = [(f"{'backend':<10} {'variant':<10} {'type':<7} " + " ".join(f"{c:<11}" for c in CHECKS)).rstrip()]
        for (backend, variant, qtype), row in cells.items():
            lines.append(f"{backend:<10} {variant:<10} {qtype:<7} "
                         + " ".join(f"{row.get(c, '-'):<11}" for c in CHECKS).rstrip())
        lines.append("")
        lines.append("exact: bit-identical to the reference; ok X: within tolerance, worst error X of it")
        lines += [f"inputs: {i}" for i in self.inputs]
        lines += [f"note: {n}" for n in self.notes]
        for r in self.results:
            if r.status in ("FAIL", "skipped") or (r.status in ("ok", "exact") and r.detail):
                lines.append(f"{r.status}: {r.backend} {r.variant} {r.qtype} {r.check}: {r.detail}")
        return lines


# -- inputs -----------------------------------------------------------------------------------

def random_rows(n: int = 96, width: int = 256, seed: int = 1234) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, width)).astype(np.float32)
    x[::7] *= rng.lognormal(0, 3, size=(len(x[::7]), 1)).astype(np.float32)  # a spread of norms
    x[::11, 5] *= 50  # an outlier channel, as real keys have
    return x


def edge_rows() -> np.ndarray:
    """One 64-value block per row, each a case docs/FORMAT.md defines."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal(64).astype(np.float32)

    def with_(index: int, value: float) -> np.ndarray:
        b = base.copy()
        b[index] = value
        return b

    spike = np.zeros(64, np.float32)
    spike[17] = 3.0
    rows = [
        np.zeros(64, np.float32), np.full(64, -0.0, np.float32), spike, np.full(64, 1.0, np.float32),
        with_(3, np.nan), with_(63, np.inf), with_(0, -np.inf),
        base * np.float32(1e30), base * np.float32(2.0**61),  # beyond the input clamp
        base * np.float32(9000.0), base * np.float32(65504.0 / 8),  # scale near the fp16 limit
        base * np.float32(1e-6), base * np.float32(1e-9), base * np.float32(1e-40),  # subnormal scales and inputs
        with_(9, np.float32(2.0**-63)),  # at the flush threshold
    ]
    return np.stack(rows).astype(np.float32)


def load_rows(path: Path) -> dict[str, np.ndarray]:
    """name -> float32 rows from an .npz whose arrays are (rows, width), width a multiple of 64."""
    try:
        with np.load(path) as data:
            arrays = {name: np.asarray(data[name], dtype=np.float32) for name in sorted(data.files)}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:  # a missing, foreign or damaged file
        raise VerifyError(f"cannot read K/V rows from {path}: {exc}") from None
    except AttributeError:  # np.load read a plain .npy array, not an archive of named arrays
        raise VerifyError(f"cannot read K/V rows from {path}: not an .npz archive of named arrays") from None
    for name, rows in arrays.items():
        if rows.ndim != 2 or rows.shape[1] % 64 or not rows.size:
            raise VerifyError(f"{path}: {name} has shape {rows.shape}; expected (rows, width) with width a multiple of 64")
    return arrays


@dataclass(frozen=True)
class Inputs:
    rows: list[tuple[str, np.ndarray]]  # rotated rows for quantize/dequantize/dot
    attention: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]  # (name, q, k, v), rotated
    described: list[str]
    notes: list[str]


def make_inputs(rows_path: Path | None = KV_ROWS, seed: int = 5) -> Inputs:
    rng = np.random.default_rng(seed)
    rows = [("random", rotate(random_rows())), ("edge", rotate(edge_rows()))]
    described = [f"random {rows[0][1].shape[0]}x{rows[0][1].shape[1]}",
                 f"edge cases {rows[1][1].shape[0]}x{rows[1][1].shape[1]} (docs/FORMAT.md)"]
    notes = []
    k_rand = rotate(random_rows(MAX_KEYS, 128, seed=11))
    v_rand = rotate(random_rows(MAX_KEYS, 128, seed=12))
    attention = [("random", rotate(rng.standard_normal((N_QUERIES, 128)).astype(np.float32)), k_rand, v_rand)]
    real = {}
    if rows_path is not None and Path(rows_path).exists():
        real = load_rows(Path(rows_path))
        rows += [(name, rotate(x)) for name, x in real.items()]
        described.append(", ".join(f"{name} {x.shape[0]}x{x.shape[1]}" for name, x in real.items())
                         + f" ({rows_path})")
    elif rows_path is not None:
        notes.append(f"no real K/V rows ({rows_path} is not here): random rows and edge cases only")
    for name in sorted({n.rsplit("/", 1)[0] for n in real if n.endswith("/K")}):
        k, v = real.get(f"{name}/K"), real.get(f"{name}/V")
        if v is None or k.shape[1] != v.shape[1]:
            continue
        n = min(len(k), len(v), MAX_KEYS)
        q = rng.standard_normal((N_QUERIES, k.shape[1])).astype(np.float32) * np.float32(np.abs(k).mean())
        attention.append((name, rotate(q), rotate(k[:n]), rotate(v[:n])))
    described.append("attention: " + ", ".join(f"{name} {k.shape[0]} keys x {q.shape[0]} queries, head {k.shape[1]}"
                                               for name, q, k, v in attention))
    return Inputs(rows, attention, described, notes)


# -- kernels ------------------------------------------------------------------------------------

def _type_id(qtype: str) -> int:
    return typeids.ggml_id(cachetypes.get(qtype))


def _cpu_kernels() -> list[Kernel]:
    def variant_kernel(variant: str) -> Kernel:
        def quantize(x, qtype):
            tid = _type_id(qtype)
            return np.stack([ggml.cpu_quantize(row, tid, variant) for row in x])

        def dequantize(raw, qtype, n):
            tid = _type_id(qtype)
            return np.stack([ggml.cpu_dequantize(row, tid, n, variant) for row in raw])

        def dot(raw, q, qtype):
            tid = _type_id(qtype)
            return np.array([ggml.cpu_vec_dot(raw[i], q[i], tid, variant) for i in range(len(raw))], np.float32)

        # the graph op runs ggml-cpu's own dispatch, so it belongs to the "default" variant
        flash_attn = _device_flash_attn("CPU") if variant == "default" else None
        return Kernel("CPU", variant, quantize, dequantize, dot, flash_attn)

    # "default" is the dispatch ggml-cpu's type traits use (SET_ROWS, flash attention)
    return [variant_kernel(v) for v in ggml.cpu_variants()]


def _device_flash_attn(device: str):
    def flash_attn(q, k, v, qtype):
        return backendops.flash_attn(device, q[None], k[None], v[None], qtype, qtype)[:, 0, :]

    return flash_attn


def _q8_0_error(kernel: Kernel, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """|error| of the device's flash attention over a q8_0 cache, against exact attention over
    the q8_0 values it read."""
    q8 = _type_id("q8_0")

    def deq(x):
        return ggml.dequantize(ggml.quantize(x, q8), q8, x.size).reshape(x.shape)

    want = attention_over(q, deq(k), deq(v))
    return np.abs(kernel.flash_attn_q8_0(q, k, v).astype(np.float64) - want)


def _device_kernels(backend: str) -> list[Kernel]:
    """A GPU backend's devices, through ggml graphs of one op each (tq_gguf.native.backendops)."""
    def device_kernel(device: str) -> Kernel:
        def quantize(x, qtype):
            return backendops.set_rows(device, x, qtype)

        def dequantize(raw, qtype, n):
            return backendops.get_rows(device, raw, qtype, n)

        software = any(name in backendops.description(device) for name in SOFTWARE_DEVICES)
        flash_attn = _device_flash_attn(device)
        return Kernel(backend, device, quantize, dequantize, None, flash_attn,
                      SOFTWARE_DEVICE_MAX_HEAD if software else None,
                      lambda q, k, v: flash_attn(q, k, v, "q8_0"))

    return [device_kernel(d) for d in backendops.devices() if d.startswith(backend)]


def _base_kernel() -> Kernel:
    """ggml-base's reference C (ggml_quantize_chunk, the type traits' to_float): what llama-quantize
    and the backends' generic paths share."""
    def quantize(x, qtype):
        return ggml.quantize(x, _type_id(qtype))

    def dequantize(raw, qtype, n):
        return ggml.dequantize(raw, _type_id(qtype), raw.shape[0] * n).reshape(raw.shape[0], n)

    return Kernel("ggml-base", "reference", quantize, dequantize, None)


KERNEL_SOURCES: dict[str, Callable[[], list[Kernel]]] = {
    "CPU": _cpu_kernels,
    **{name: (lambda name=name: _device_kernels(name)) for name in ("Vulkan", "CUDA", "Metal")},
}


# Backends with no kernels in this build, so nothing to check here: ggml's RPC client hands every
# op to an rpc-server, which runs its own build's kernels (`tq-gguf verify` on that host checks them).
REMOTE = ("RPC",)


def compiled_kernels() -> tuple[list[Kernel], list[tuple[str, str]]]:
    """Kernels of every backend in the installed build, and (backend, why) for those not checked."""
    kernels, missing = [_base_kernel()], []
    for backend in ggml.backends():
        if backend in REMOTE:
            continue
        source = KERNEL_SOURCES.get(backend)
        if source is None:
            missing.append((backend, f"tq_gguf.analysis.verify has no harness for the {backend} backend yet"))
            continue
        found = source()
        if not found:
            missing.append((backend, f"the build has the {backend} backend but this machine has no {backend} device"))
        kernels += found
    return kernels, missing


# -- checks -------------------------------------------------------------------------------------

def dot_tolerance(q: np.ndarray, y: np.ndarray) -> np.ndarray:
    """FORMAT.md §7: (n + 2) * 2^-24 * sum |q_i * y_i| per row."""
    q64, y64 = np.asarray(q, np.float64), np.asarray(y, np.float64)
    return (q.shape[-1] + 2) * 2.0**-24 * np.abs(q64 * y64).sum(axis=-1)


def attention_tolerance(score_bound: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per output coordinate: (exp(2D) - 1) * max_j |v_j|, D the largest score error allowed,
    plus float64 rounding of the softmax and the sum."""
    vmax = np.abs(np.asarray(v, np.float64)).max(axis=0)
    return np.expm1(2 * float(np.max(score_bound, initial=0.0))) * vmax + 2.0**-40 * vmax


def _finite(x: np.ndarray) -> np.ndarray:
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
    def na(check: str) -> Result:
        return Result(kernel.backend, kernel.variant, qtype, check, "n/a", detail="no entry point")

    out = []
    if kernel.quantize is None:
        out.append(na("quantize"))
    else:
        out.append(_exact(kernel, qtype, "quantize", "bytes", inputs.rows,
                          lambda x: (kernel.quantize(x, qtype), ref.quantize(x, qtype))))
    if kernel.dequantize is None:
        out.append(na("dequantize"))
    else:
        def dequantized(x):
            raw = ref.quantize(x, qtype)
            return (kernel.dequantize(raw, qtype, x.shape[-1]).view(np.uint32),
                    ref.dequantize(raw, qtype).view(np.uint32))

        out.append(_exact(kernel, qtype, "dequantize", "float bits", inputs.rows, dequantized))
    if kernel.dot is None:
        out.append(na("dot"))
    else:
        rng = np.random.default_rng(17)
        ratios = []
        for name, x in inputs.rows:
            x = x[_finite(x)]
            if not len(x):
                continue
            raw = ref.quantize(x, qtype)
            q = ref.rotate(rng.standard_normal(x.shape).astype(np.float32))
            err = np.abs(kernel.dot(raw, q, qtype).astype(np.float64) - ref.dot(raw, q, qtype).astype(np.float64))
            tol = dot_tolerance(q, ref.dequantize(raw, qtype))
            ratios.append((name, np.where(err == 0, 0.0, err / np.maximum(tol, np.finfo(np.float64).tiny))))
        out.append(_tolerance_result(kernel, qtype, "dot", ratios))
    if kernel.quantize is None or kernel.dequantize is None or kernel.dot is None:
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
            v_deq = ref.dequantize(ref.quantize(v, qtype), qtype)
            want = attention_over(q, ref.dequantize(ref.quantize(k, qtype), qtype), v_deq)
            got = kernel.flash_attn(q, k, v, qtype).astype(np.float64)
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
