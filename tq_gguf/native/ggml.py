"""cffi (ABI mode) bindings to the part of ggml that we call: one FFI, one library handle.

Quantizing NumPy arrays with the native kernels, running single ops on a backend
(backendops), reading graph nodes from an eval callback (kvprobe, cachewrites) all go
through `ffi` and `lib()`. The library is the one inside the installed, patched
`llama_cpp` package; `ggml_tq_build_id()` proves it is ours and current.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
from cffi import FFI

from ..nativebuild import builder
from ..errors import NativeLibraryError

# Every declaration the package makes, on one FFI: the functions are spread over libggml-base
# (types, quantizers, tensors, graphs, backend buffers), libggml-cpu (its type traits and the
# turbo kernel variants) and libggml (the backend and device registry).
CDEF = """
typedef uint16_t ggml_fp16_t;
typedef void (*ggml_to_float_t)(const void * x, float * y, int64_t k);
typedef void (*ggml_from_float_t)(const float * x, void * y, int64_t k);

struct ggml_type_traits {
    const char        * type_name;
    int64_t             blck_size;
    int64_t             blck_size_interleave;
    size_t              type_size;
    bool                is_quantized;
    ggml_to_float_t     to_float;
    ggml_from_float_t   from_float_ref;
};

const struct ggml_type_traits * ggml_get_type_traits(int type);
const char * ggml_type_name(int type);
size_t ggml_row_size(int type, int64_t ne);
void   ggml_quantize_init(int type);
bool   ggml_quantize_requires_imatrix(int type);
size_t ggml_quantize_chunk(int type, const float * src, void * dst, int64_t start,
                           int64_t nrows, int64_t n_per_row, const float * imatrix);
bool   ggml_validate_row_data(int type, const void * data, size_t nbytes);

const char * ggml_tq_build_id(void);
int ggml_tq_type_count(void);
void ggml_tq_rotation_signs(float * signs, int n);
void ggml_tq_rotation_matrix(float * dst, int n);

/* ggml.h's struct ggml_tensor (GGML_MAX_DIMS 4, GGML_MAX_OP_PARAMS 64 bytes, GGML_MAX_SRC 10,
   GGML_MAX_NAME 64 in the pinned ggml), so an eval callback can read a node and follow src[]. */
struct ggml_tensor {
    int type;
    void * buffer;
    int64_t ne[4];
    size_t nb[4];
    int op;
    int32_t op_params[16];
    int32_t flags;
    struct ggml_tensor * src[10];
    struct ggml_tensor * view_src;
    size_t view_offs;
    void * data;
    char name[64];
    void * extra;
    char padding[8];
};
const char * ggml_get_name(const struct ggml_tensor * tensor);
void *       ggml_get_data(const struct ggml_tensor * tensor);
int64_t      ggml_nelements(const struct ggml_tensor * tensor);
size_t       ggml_nbytes(const struct ggml_tensor * tensor);
bool         ggml_is_contiguous(const struct ggml_tensor * tensor);
const char * ggml_op_desc(const struct ggml_tensor * tensor);

struct ggml_context;
struct ggml_cgraph;
typedef struct ggml_backend * ggml_backend_t;
typedef struct ggml_backend_device * ggml_backend_dev_t;
typedef struct ggml_backend_buffer * ggml_backend_buffer_t;
typedef struct ggml_backend_reg * ggml_backend_reg_t;

struct ggml_init_params {
    size_t mem_size;
    void * mem_buffer;
    bool   no_alloc;
};

struct ggml_context * ggml_init(struct ggml_init_params params);
void   ggml_free(struct ggml_context * ctx);
size_t ggml_tensor_overhead(void);
size_t ggml_graph_overhead(void);
struct ggml_tensor * ggml_new_tensor_4d(struct ggml_context * ctx, int type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3);
struct ggml_tensor * ggml_set_rows(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b, struct ggml_tensor * c);
struct ggml_tensor * ggml_get_rows(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
struct ggml_tensor * ggml_permute(struct ggml_context * ctx, struct ggml_tensor * a, int axis0, int axis1, int axis2,
                                  int axis3);
struct ggml_tensor * ggml_flash_attn_ext(struct ggml_context * ctx, struct ggml_tensor * q, struct ggml_tensor * k,
                                         struct ggml_tensor * v, struct ggml_tensor * mask, float scale,
                                         float max_bias, float logit_softcap);
void ggml_flash_attn_ext_set_prec(struct ggml_tensor * a, int prec);
struct ggml_cgraph * ggml_new_graph(struct ggml_context * ctx);
void ggml_build_forward_expand(struct ggml_cgraph * cgraph, struct ggml_tensor * tensor);

ggml_backend_t ggml_backend_dev_init(ggml_backend_dev_t device, const char * params);
void ggml_backend_free(ggml_backend_t backend);
ggml_backend_buffer_t ggml_backend_alloc_ctx_tensors(struct ggml_context * ctx, ggml_backend_t backend);
void   ggml_backend_buffer_free(ggml_backend_buffer_t buffer);
size_t ggml_backend_buffer_get_size(ggml_backend_buffer_t buffer);
int    ggml_backend_buffer_get_usage(ggml_backend_buffer_t buffer); /* enum ggml_backend_buffer_usage */
void ggml_backend_tensor_set(struct ggml_tensor * tensor, const void * data, size_t offset, size_t size);
void ggml_backend_tensor_get(const struct ggml_tensor * tensor, void * data, size_t offset, size_t size);
int  ggml_backend_graph_compute(ggml_backend_t backend, struct ggml_cgraph * cgraph);

/* libggml-cpu */
struct ggml_type_traits_cpu {
    ggml_from_float_t from_float;
    void *            vec_dot;
    int               vec_dot_type;
    int64_t           nrows;
};
const struct ggml_type_traits_cpu * ggml_get_type_traits_cpu(int type);

bool  ggml_tq_cpu_has_variant(int variant);
void  ggml_tq_cpu_quantize_row(int type, int variant, const float * x, void * y, int64_t k);
void  ggml_tq_cpu_dequantize_row(int type, int variant, const void * x, float * y, int64_t k);
float ggml_tq_cpu_vec_dot(int type, int variant, int n, const void * x, const float * y);
size_t       ggml_tq_cpu_fa_work_size(const struct ggml_tensor * dst, int n_threads);
const char * ggml_tq_cpu_fa_decline_reason(int i);
bool         ggml_tq_cpu_fa_declined(int i);

/* libggml: the backend registry */
size_t             ggml_backend_reg_count(void);
ggml_backend_reg_t ggml_backend_reg_get(size_t index);
const char *       ggml_backend_reg_name(ggml_backend_reg_t reg);
size_t             ggml_backend_dev_count(void);
ggml_backend_dev_t ggml_backend_dev_get(size_t index);
const char *       ggml_backend_dev_name(ggml_backend_dev_t device);
const char *       ggml_backend_dev_description(ggml_backend_dev_t device);
ggml_backend_dev_t ggml_backend_dev_by_name(const char * name);
ggml_backend_reg_t ggml_backend_dev_backend_reg(ggml_backend_dev_t device);
void *             ggml_backend_reg_get_proc_address(ggml_backend_reg_t reg, const char * name);
ggml_backend_reg_t ggml_backend_reg_by_name(const char * name);
typedef void (*ggml_abort_callback_t)(const char * error_message);
ggml_abort_callback_t ggml_set_abort_callback(ggml_abort_callback_t callback);
size_t             ggml_backend_reg_dev_count(ggml_backend_reg_t reg);
ggml_backend_dev_t ggml_backend_reg_dev_get(ggml_backend_reg_t reg, size_t index);
"""

ffi = FFI()
ffi.cdef(CDEF)

# libggml depends on libggml-base and on the compiled backends (libggml-cpu, ...), and a
# symbol lookup through a dlopen handle searches the library and its dependencies (ELF and
# Mach-O), so one handle reaches every function declared above.
_SUFFIX = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
LIB_NAME = f"{'' if sys.platform == 'win32' else 'lib'}ggml{_SUFFIX}"

# Kernel variants of the CPU backend (enum ggml_tq_cpu_variant in native/cpu/tq-cpu-quants.h).
CPU_VARIANTS = {"generic": 0, "avx2": 1, "avx512": 2, "neon": 3, "default": 15}
_REBUILD = "run `tq-gguf build`"


def library_dir() -> Path:
    """`llama_cpp/lib` of the installed package (or $TQ_GGUF_LIB_DIR)."""
    override = os.environ.get("TQ_GGUF_LIB_DIR")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise NativeLibraryError(f"llama_cpp is not installed; {_REBUILD}")
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


@lru_cache(maxsize=None)
def lib(check_current: bool = True):
    """The one handle on the installed ggml; refuses a library that is not our current build."""
    path = library_dir() / LIB_NAME
    if not path.exists():
        raise NativeLibraryError(f"{path} does not exist; {_REBUILD}")
    try:
        handle = ffi.dlopen(str(path))
    except OSError as exc:
        raise NativeLibraryError(f"cannot load {path}: {exc}; {_REBUILD}") from exc
    try:
        build_id = ffi.string(handle.ggml_tq_build_id()).decode()
    except AttributeError:
        raise NativeLibraryError(f"{path} is a stock llama.cpp without tq-gguf's patches; {_REBUILD}") from None
    if check_current:
        backend = build_id.split("-", 1)[0]
        expected = builder.current_key(backend)
        if build_id != expected:
            raise NativeLibraryError(
                f"the installed native build {build_id} is stale: the sources now hash to {expected}; {_REBUILD}"
            )
    return handle


def build_id() -> str:
    return ffi.string(lib().ggml_tq_build_id()).decode()


def type_count() -> int:
    return int(lib().ggml_tq_type_count())


def type_name(type_id: int) -> str | None:
    """The type's name, or None for ids this build does not have (ggml would only assert)."""
    if not 0 <= type_id < type_count():
        return None
    name = lib().ggml_type_name(type_id)
    return ffi.string(name).decode() if name != ffi.NULL else None


@lru_cache(maxsize=1)
def type_ids() -> dict[str, int]:
    """Every type name this build has -> its ggml enum value."""
    ids = {}
    for type_id in range(type_count()):
        name = type_name(type_id)
        if name:
            ids.setdefault(name, type_id)
    return ids


def _check_id(type_id: int) -> None:
    if not 0 <= type_id < type_count():
        raise NativeLibraryError(f"ggml type id {type_id} does not exist in this build (GGML_TYPE_COUNT = {type_count()})")


def type_traits(type_id: int) -> tuple[int, int]:
    """(block size, bytes per block) as ggml reports them."""
    _check_id(type_id)
    tr = lib().ggml_get_type_traits(type_id)
    return int(tr.blck_size), int(tr.type_size)


def quantize(x: np.ndarray, type_id: int) -> np.ndarray:
    """Quantize float32 rows (the last axis is a row) with ggml_quantize_chunk."""
    _check_id(type_id)
    x = np.ascontiguousarray(x, dtype=np.float32)
    n_per_row = x.shape[-1]
    nrows = x.size // n_per_row if n_per_row else 0
    L = lib()
    row_bytes = L.ggml_row_size(type_id, n_per_row)
    out = np.zeros(nrows * row_bytes, dtype=np.uint8)
    L.ggml_quantize_init(type_id)
    written = L.ggml_quantize_chunk(type_id, ffi.from_buffer("float[]", x), ffi.from_buffer(out), 0,
                                   nrows, n_per_row, ffi.NULL)
    if written != out.size:
        raise NativeLibraryError(f"ggml_quantize_chunk wrote {written} bytes, expected {out.size}")
    return out.reshape(*x.shape[:-1], row_bytes)


def dequantize(raw: np.ndarray, type_id: int, n: int) -> np.ndarray:
    """Convert `n` values of type `type_id` back to float32 with the type's to_float."""
    _check_id(type_id)
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    tr = lib().ggml_get_type_traits(type_id)
    if tr.to_float == ffi.NULL:
        raise NativeLibraryError(f"type {type_name(type_id)} has no to_float")
    out = np.empty(n, dtype=np.float32)
    tr.to_float(ffi.from_buffer(raw), ffi.from_buffer("float[]", out), n)
    return out


def validate_row_data(raw: np.ndarray, type_id: int) -> bool:
    _check_id(type_id)
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    return bool(lib().ggml_validate_row_data(type_id, ffi.from_buffer(raw), raw.size))


def backends() -> list[str]:
    """Names of the ggml backends compiled into the installed build ("CPU", "Vulkan", ...)."""
    L = lib()
    return [ffi.string(L.ggml_backend_reg_name(L.ggml_backend_reg_get(i))).decode()
            for i in range(L.ggml_backend_reg_count())]


def cpu_from_float(x: np.ndarray, type_id: int) -> np.ndarray:
    """One row through the CPU backend's from_float for any type (what SET_ROWS runs)."""
    _check_id(type_id)
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    out = np.zeros(lib().ggml_row_size(type_id, x.size), dtype=np.uint8)
    traits = lib().ggml_get_type_traits_cpu(type_id)
    if traits.from_float == ffi.NULL:
        raise NativeLibraryError(f"type {type_name(type_id)} has no CPU from_float")
    traits.from_float(ffi.from_buffer("float[]", x), ffi.from_buffer(out), x.size)
    return out


def cpu_variants() -> list[str]:
    """Kernel variants this build and this processor can run."""
    return [name for name, v in CPU_VARIANTS.items() if lib().ggml_tq_cpu_has_variant(v)]


def cpu_quantize(x: np.ndarray, type_id: int, variant: str) -> np.ndarray:
    """One row of float32 through a CPU kernel variant's quantize_row (ggml-cpu's from_float)."""
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    out = np.zeros(lib().ggml_row_size(type_id, x.size), dtype=np.uint8)
    lib().ggml_tq_cpu_quantize_row(type_id, CPU_VARIANTS[variant], ffi.from_buffer("float[]", x), ffi.from_buffer(out), x.size)
    return out


def cpu_dequantize(raw: np.ndarray, type_id: int, n: int, variant: str) -> np.ndarray:
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    out = np.empty(n, dtype=np.float32)
    lib().ggml_tq_cpu_dequantize_row(type_id, CPU_VARIANTS[variant], ffi.from_buffer(raw), ffi.from_buffer("float[]", out), n)
    return out


def cpu_vec_dot(raw: np.ndarray, q: np.ndarray, type_id: int, variant: str) -> float:
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    q = np.ascontiguousarray(q, dtype=np.float32).ravel()
    return float(lib().ggml_tq_cpu_vec_dot(type_id, CPU_VARIANTS[variant], q.size, ffi.from_buffer(raw),
                                                ffi.from_buffer("float[]", q)))


def rotation_matrix(n: int) -> np.ndarray:
    out = np.empty(n * n, dtype=np.float32)
    lib().ggml_tq_rotation_matrix(ffi.from_buffer("float[]", out), n)
    return out.reshape(n, n)
