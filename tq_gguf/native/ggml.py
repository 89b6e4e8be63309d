"""cffi (ABI mode) bindings to the small part of libggml-base that we call.

Used by the tests and by anything that quantizes NumPy arrays with the native
kernels. The library is the one inside the installed, patched `llama_cpp`
package; `ggml_tq_build_id()` proves it is ours and current.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
from cffi import FFI

from .errors import NativeLibraryError

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
"""

# From libggml-cpu: its type traits, and the turbo kernel variants (generic C, AVX2, AVX-512, ...).
CDEF_CPU = """
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
"""

# From libggml (the backend registry), loaded separately from libggml-base.
CDEF_REGISTRY = """
typedef struct ggml_backend_reg * ggml_backend_reg_t;
size_t             ggml_backend_reg_count(void);
ggml_backend_reg_t ggml_backend_reg_get(size_t index);
const char *       ggml_backend_reg_name(ggml_backend_reg_t reg);
"""

ffi = FFI()
ffi.cdef(CDEF)
ffi.cdef(CDEF_REGISTRY)
ffi.cdef(CDEF_CPU)

_SUFFIX = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
_PREFIX = "" if sys.platform == "win32" else "lib"
_LIB_NAME = f"{_PREFIX}ggml-base{_SUFFIX}"
_REGISTRY_LIB_NAME = f"{_PREFIX}ggml{_SUFFIX}"
_CPU_LIB_NAME = f"{_PREFIX}ggml-cpu{_SUFFIX}"

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
    """The loaded libggml-base; refuses a library that is not our current build."""
    path = library_dir() / _LIB_NAME
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
        from .build import current_key

        backend = build_id.split("-", 1)[0]
        expected = current_key(backend)
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
    lib()
    reg = ffi.dlopen(str(library_dir() / _REGISTRY_LIB_NAME))
    return [ffi.string(reg.ggml_backend_reg_name(reg.ggml_backend_reg_get(i))).decode()
            for i in range(reg.ggml_backend_reg_count())]


@lru_cache(maxsize=None)
def cpu_lib():
    """libggml-cpu, for the turbo kernel variants."""
    lib()
    return ffi.dlopen(str(library_dir() / _CPU_LIB_NAME))


def cpu_from_float(x: np.ndarray, type_id: int) -> np.ndarray:
    """One row through the CPU backend's from_float for any type (what SET_ROWS runs)."""
    _check_id(type_id)
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    out = np.zeros(lib().ggml_row_size(type_id, x.size), dtype=np.uint8)
    traits = cpu_lib().ggml_get_type_traits_cpu(type_id)
    if traits.from_float == ffi.NULL:
        raise NativeLibraryError(f"type {type_name(type_id)} has no CPU from_float")
    traits.from_float(ffi.from_buffer("float[]", x), ffi.from_buffer(out), x.size)
    return out


def cpu_variants() -> list[str]:
    """Kernel variants this build and this processor can run."""
    return [name for name, v in CPU_VARIANTS.items() if cpu_lib().ggml_tq_cpu_has_variant(v)]


def cpu_quantize(x: np.ndarray, type_id: int, variant: str) -> np.ndarray:
    """One row of float32 through a CPU kernel variant's quantize_row (ggml-cpu's from_float)."""
    x = np.ascontiguousarray(x, dtype=np.float32).ravel()
    out = np.zeros(lib().ggml_row_size(type_id, x.size), dtype=np.uint8)
    cpu_lib().ggml_tq_cpu_quantize_row(type_id, CPU_VARIANTS[variant], ffi.from_buffer("float[]", x), ffi.from_buffer(out), x.size)
    return out


def cpu_dequantize(raw: np.ndarray, type_id: int, n: int, variant: str) -> np.ndarray:
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    out = np.empty(n, dtype=np.float32)
    cpu_lib().ggml_tq_cpu_dequantize_row(type_id, CPU_VARIANTS[variant], ffi.from_buffer(raw), ffi.from_buffer("float[]", out), n)
    return out


def cpu_vec_dot(raw: np.ndarray, q: np.ndarray, type_id: int, variant: str) -> float:
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    q = np.ascontiguousarray(q, dtype=np.float32).ravel()
    return float(cpu_lib().ggml_tq_cpu_vec_dot(type_id, CPU_VARIANTS[variant], q.size, ffi.from_buffer(raw),
                                                ffi.from_buffer("float[]", q)))


def rotation_matrix(n: int) -> np.ndarray:
    out = np.empty(n * n, dtype=np.float32)
    lib().ggml_tq_rotation_matrix(ffi.from_buffer("float[]", out), n)
    return out.reshape(n, n)
