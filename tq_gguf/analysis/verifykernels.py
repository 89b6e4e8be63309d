"""The kernels tq_gguf.analysis.verify checks: one Kernel per backend and variant, each a set of
entry points into the installed build. A backend joins by adding an entry to KERNEL_SOURCES;
a GPU backend's devices are reached through tq_gguf.native.backendops (SET_ROWS for quantize,
GET_ROWS for dequantize, FLASH_ATTN_EXT)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..kv import cachetypes
from ..native import backendops, ggml, typeids

# Mesa's lavapipe (llvmpipe) compiles each flash-attention pipeline with LLVM on first use; at head
# size 256 that took past 8 GB and 25 CPU-minutes (docs/BACKENDS.md), so on a software device the
# flash-attention check stops at this head size and says so.
SOFTWARE_DEVICE_MAX_HEAD = 128
SOFTWARE_DEVICES = ("llvmpipe",)


@dataclass(frozen=True)
class Kernel:
    """A backend's kernels for the turbo types; None where the backend has no such entry point.

    quantize(rows, qtype) -> bytes per row; dequantize(raw, qtype, n) -> float32 rows of n values;
    dot(raw, q, qtype) -> float32 per row; flash_attn(q, k, v, k_type, v_type) -> float32 (n_q, d) for
    one head whose K and V cache rows are stored as k_type and v_type."""

    backend: str
    variant: str
    quantize: Callable[[np.ndarray, str], np.ndarray] | None
    dequantize: Callable[[np.ndarray, str, int], np.ndarray] | None
    dot: Callable[[np.ndarray, np.ndarray, str], np.ndarray] | None
    flash_attn: Callable[[np.ndarray, np.ndarray, np.ndarray, str, str], np.ndarray] | None = None
    flash_attn_max_head: int | None = None  # larger heads are not run (see SOFTWARE_DEVICE_MAX_HEAD)
    # the same op over a stock q8_0 cache on the same device: where that misses the tolerance too,
    # the device's flash attention rounds more than the tolerance allows (see STOCK_MARGIN)
    flash_attn_q8_0: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None


def type_id(qtype: str) -> int:
    return typeids.ggml_id(cachetypes.get(qtype))


def _cpu_kernels() -> list[Kernel]:
    def variant_kernel(variant: str) -> Kernel:
        def quantize(x, qtype):
            tid = type_id(qtype)
            return np.stack([ggml.cpu_quantize(row, tid, variant) for row in x])

        def dequantize(raw, qtype, n):
            tid = type_id(qtype)
            return np.stack([ggml.cpu_dequantize(row, tid, n, variant) for row in raw])

        def dot(raw, q, qtype):
            tid = type_id(qtype)
            return np.array([ggml.cpu_vec_dot(raw[i], q[i], tid, variant) for i in range(len(raw))], np.float32)

        # the graph op runs ggml-cpu's own dispatch, so it belongs to the "default" variant
        flash_attn = _device_flash_attn("CPU") if variant == "default" else None
        return Kernel("CPU", variant, quantize, dequantize, dot, flash_attn)

    # "default" is the dispatch ggml-cpu's type traits use (SET_ROWS, flash attention)
    return [variant_kernel(v) for v in ggml.cpu_variants()]


def _device_flash_attn(device: str):
    def flash_attn(q, k, v, k_type, v_type):
        return backendops.flash_attn(device, q[None], k[None], v[None], k_type, v_type)[:, 0, :]

    return flash_attn


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
                      lambda q, k, v: flash_attn(q, k, v, "q8_0", "q8_0"))

    return [device_kernel(d) for d in backendops.devices() if d.startswith(backend)]


def _base_kernel() -> Kernel:
    """ggml-base's reference C (ggml_quantize_chunk, the type traits' to_float): what llama-quantize
    and the backends' generic paths share."""
    def quantize(x, qtype):
        return ggml.quantize(x, type_id(qtype))

    def dequantize(raw, qtype, n):
        return ggml.dequantize(raw, type_id(qtype), raw.shape[0] * n).reshape(raw.shape[0], n)

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
