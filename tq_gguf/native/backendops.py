"""Run one ggml op on a named backend ("CPU", "Vulkan0", "CUDA0", "Metal", ...).

The same small graph (SET_ROWS, GET_ROWS or FLASH_ATTN_EXT) runs on any device the
installed build registered, so a backend's quantizer and decoder can be held to the
NumPy reference byte for byte, and its attention compared with the CPU's. Tensors are
created in a no_alloc context, allocated in the backend's buffer, filled and read back
with ggml_backend_tensor_set/get, and the graph runs with ggml_backend_graph_compute.
"""

from __future__ import annotations

import numpy as np

from ..errors import NativeLibraryError
from . import ggml

ffi = ggml.ffi

GGML_PREC_F32 = 10


def type_id(name: str) -> int:
    try:
        return ggml.type_ids()[name]
    except KeyError:
        raise NativeLibraryError(f"ggml type {name!r} does not exist in this build") from None


def devices() -> list[str]:
    """Device names as ggml registers them ("CPU", "Vulkan0", ...)."""
    L = ggml.lib()
    return [ffi.string(L.ggml_backend_dev_name(L.ggml_backend_dev_get(i))).decode()
            for i in range(L.ggml_backend_dev_count())]


def description(device: str) -> str:
    """ggml's description of a device ("llvmpipe (LLVM 15.0.6, 256 bits)", "NVIDIA H100 ...")."""
    L = ggml.lib()
    dev = L.ggml_backend_dev_by_name(device.encode())
    if dev == ffi.NULL:
        raise NativeLibraryError(f"ggml has no device {device!r} (it has: {', '.join(devices())})")
    return ffi.string(L.ggml_backend_dev_description(dev)).decode()


class _Graph:
    """A no_alloc context on one backend; tensors are allocated by `alloc()`."""

    def __init__(self, device: str, n_tensors: int = 16, n_threads: int | None = None):
        self.base = ggml.lib()
        dev = self.base.ggml_backend_dev_by_name(device.encode())
        if dev == ffi.NULL:
            raise NativeLibraryError(f"no ggml device named {device!r}; this build has {', '.join(devices())}")
        self.backend = self.base.ggml_backend_dev_init(dev, ffi.NULL)
        if self.backend == ffi.NULL:
            raise NativeLibraryError(f"ggml could not initialise device {device!r}")
        if n_threads is not None:
            set_n_threads = self.base.ggml_backend_reg_get_proc_address(self.base.ggml_backend_dev_backend_reg(dev),
                                                                        b"ggml_backend_set_n_threads")
            if set_n_threads == ffi.NULL:
                raise NativeLibraryError(f"device {device!r} has no thread count to set")
            ffi.cast("void (*)(ggml_backend_t, int)", set_n_threads)(self.backend, n_threads)
        size = n_tensors * self.base.ggml_tensor_overhead() + self.base.ggml_graph_overhead()
        params = ffi.new("struct ggml_init_params *", {"mem_size": size, "mem_buffer": ffi.NULL, "no_alloc": True})
        self.ctx = self.base.ggml_init(params[0])
        self.buffer = ffi.NULL

    def tensor(self, type_name: str, *ne: int):
        ne4 = list(ne) + [1] * (4 - len(ne))
        return self.base.ggml_new_tensor_4d(self.ctx, type_id(type_name), *ne4)

    def alloc(self) -> None:
        self.buffer = self.base.ggml_backend_alloc_ctx_tensors(self.ctx, self.backend)
        if self.buffer == ffi.NULL:
            raise NativeLibraryError("ggml_backend_alloc_ctx_tensors failed")

    def set(self, t, data: np.ndarray) -> None:
        data = np.ascontiguousarray(data)
        n = self.base.ggml_nbytes(t)
        if data.nbytes != n:
            raise ValueError(f"tensor holds {n} bytes, data has {data.nbytes}")
        self.base.ggml_backend_tensor_set(t, ffi.from_buffer(data), 0, n)

    def get(self, t, dtype) -> np.ndarray:
        out = np.empty(self.base.ggml_nbytes(t), dtype=np.uint8)
        self.base.ggml_backend_tensor_get(t, ffi.from_buffer(out), 0, out.size)
        return out.view(dtype)

    def compute(self, out) -> None:
        gf = self.base.ggml_new_graph(self.ctx)
        self.base.ggml_build_forward_expand(gf, out)
        status = self.base.ggml_backend_graph_compute(self.backend, gf)
        if status != 0:
            raise NativeLibraryError(f"ggml_backend_graph_compute returned status {status}")

    def close(self) -> None:
        if self.buffer != ffi.NULL:
            self.base.ggml_backend_buffer_free(self.buffer)
        self.base.ggml_free(self.ctx)
        self.base.ggml_backend_free(self.backend)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _row_bytes(type_name: str, n: int) -> int:
    return int(ggml.lib().ggml_row_size(type_id(type_name), n))


def set_rows(device: str, rows: np.ndarray, type_name: str) -> np.ndarray:
    """Quantize float32 rows (n_rows, n) into `type_name` with SET_ROWS on `device`.

    Returns the destination's bytes, shape (n_rows, row_bytes). The rows are written in
    reverse order through the index tensor, so the index path is exercised too.
    """
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    n_rows, n = rows.shape
    idx = np.arange(n_rows - 1, -1, -1, dtype=np.int64)
    with _Graph(device) as g:
        dst = g.tensor(type_name, n, n_rows)
        src = g.tensor("f32", n, n_rows)
        ids = g.tensor("i64", n_rows)
        out = g.base.ggml_set_rows(g.ctx, dst, src, ids)
        g.alloc()
        g.set(dst, np.zeros(n_rows * _row_bytes(type_name, n), dtype=np.uint8))
        g.set(src, rows[::-1].copy())
        g.set(ids, idx)
        g.compute(out)
        return g.get(dst, np.uint8).reshape(n_rows, -1)


def get_rows(device: str, raw: np.ndarray, type_name: str, n: int) -> np.ndarray:
    """Decode rows of `type_name` bytes (n_rows, row_bytes) to float32 with GET_ROWS on `device`."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    n_rows = raw.shape[0]
    with _Graph(device) as g:
        src = g.tensor(type_name, n, n_rows)
        ids = g.tensor("i32", n_rows)
        out = g.base.ggml_get_rows(g.ctx, src, ids)
        g.alloc()
        g.set(src, raw)
        g.set(ids, np.arange(n_rows, dtype=np.int32))
        g.compute(out)
        return g.get(out, np.float32).reshape(n_rows, n)


def flash_attn(device: str, q: np.ndarray, k: np.ndarray, v: np.ndarray, k_type: str, v_type: str,
               mask: np.ndarray | None = None, scale: float | None = None,
               n_threads: int | None = None) -> np.ndarray:
    """FLASH_ATTN_EXT on `device` with K and V stored as `k_type`/`v_type`.

    q: (n_head, n_q, d); k, v: (n_head_kv, n_kv, d) float32, quantized on the host with
    ggml's own CPU quantizer (identical bytes to the reference for the turbo types), so every
    device sees the same cache. mask: (n_q, n_kv) float32 or None. Returns (n_q, n_head, d_v)
    float32, ggml's output layout. n_threads: the CPU backend's thread count (its default if None).
    """
    q = np.ascontiguousarray(q, dtype=np.float32)
    n_head, n_q, d = q.shape
    n_head_kv, n_kv, dk = k.shape
    dv = v.shape[2]
    scale = 1.0 / np.sqrt(d) if scale is None else scale

    def cache_bytes(x: np.ndarray, type_name: str) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if type_name == "f32":
            return x
        if type_name == "f16":
            return x.astype(np.float16)
        return ggml.quantize(x.reshape(-1, x.shape[-1]), type_id(type_name))

    with _Graph(device, n_threads=n_threads) as g:
        tq = g.tensor("f32", d, n_q, n_head)
        tk = g.tensor(k_type, dk, n_kv, n_head_kv)
        tv = g.tensor(v_type, dv, n_kv, n_head_kv)
        tm = ffi.NULL
        if mask is not None:
            tm = g.tensor("f16", n_kv, n_q)
        out = g.base.ggml_flash_attn_ext(g.ctx, tq, tk, tv, tm, float(scale), 0.0, 0.0)
        g.base.ggml_flash_attn_ext_set_prec(out, GGML_PREC_F32)
        g.alloc()
        g.set(tq, q)
        g.set(tk, cache_bytes(k, k_type))
        g.set(tv, cache_bytes(v, v_type))
        if mask is not None:
            g.set(tm, np.asarray(mask, dtype=np.float16))
        g.compute(out)
        return g.get(out, np.float32).reshape(n_q, n_head, dv)


def flash_attn_work_size(n_head: int, n_q: int, d: int, n_head_kv: int, n_kv: int, k_type: str, v_type: str,
                         n_threads: int) -> int:
    """Bytes of work buffer the CPU's turbo flash-attention kernel asks ggml for, for an op of
    these shapes on n_threads threads (0 where the kernel does not take the op)."""
    with _Graph("CPU") as g:
        tq = g.tensor("f32", d, n_q, n_head)
        tk = g.tensor(k_type, d, n_kv, n_head_kv)
        tv = g.tensor(v_type, d, n_kv, n_head_kv)
        tm = g.tensor("f16", n_kv, n_q)
        out = g.base.ggml_flash_attn_ext(g.ctx, tq, tk, tv, tm, 1.0 / np.sqrt(d), 0.0, 0.0)
        return int(g.base.ggml_tq_cpu_fa_work_size(out, n_threads))


def flash_attn_declines() -> list[tuple[str, bool]]:
    """Why the CPU's turbo flash-attention kernel can leave an op to ggml's per-row path: each
    reason's text, and whether it did so for that reason in this process."""
    L = ggml.lib()
    reasons = []
    while (text := L.ggml_tq_cpu_fa_decline_reason(len(reasons))) != ffi.NULL:
        reasons.append((ffi.string(text).decode(), bool(L.ggml_tq_cpu_fa_declined(len(reasons)))))
    return reasons
