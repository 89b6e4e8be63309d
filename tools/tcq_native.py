"""The trellis-coded types' C as a standalone shared library, for the tests and the encoder's benchmark.

native/tq-tcq.c (the reference encoder and the decoder), native/cpu/tq-cpu-tcq.c and, on
x86-64, native/cpu/arch/x86/tq-tcq.c (the AVX2 and AVX-512 encoders) do not need ggml. This
module compiles them with the system compiler into one shared library, as the library
build compiles the tq sources (no FMA contraction, no fast math), keeps it under the temp
directory by the sha256 of the sources and the command, and loads it with cffi.

    lib = tcq_native.load()                        # None without a C compiler
    raw = lib.quantize(rows, "tcq3", "avx512")     # float32 (n, k*64) -> uint8 (n, k*26)
    y = lib.dequantize(raw, "tcq3")
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import cffi
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tq_gguf, for the type table

from tq_gguf.kv.cachetypes import TRELLIS_TYPES  # noqa: E402

NATIVE = REPO / "native"
SOURCES = [NATIVE / "tq-tcq.c", NATIVE / "cpu" / "tq-cpu-tcq.c"]
X86_SOURCES = [NATIVE / "cpu" / "arch" / "x86" / "tq-tcq.c"]
HEADERS = [NATIVE / "tq-tcq.h", NATIVE / "tq-tcq-tables.h", NATIVE / "cpu" / "tq-cpu-tcq.h",
           NATIVE / "cpu" / "tq-arch-fallback.h"]
# the flags the library compiles the tq sources with that decide the bytes, and a shared object's
FLAGS = ["-std=gnu11", "-O2", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared"]
CACHE = Path(tempfile.gettempdir()) / "tq-gguf-tcq"

# Encoder and decoder variants, numbered as native/cpu/tq-cpu-tcq.h numbers them ("default": the entry point
# ggml's type traits call, the widest variant the compile flags target).
VARIANTS = {"scalar": 0, "avx2": 1, "avx512": 2, "default": 15}

CDEF = """
typedef void (*tq_tcq_quantize_row_t)(const float * x, void * y, int64_t k);
tq_tcq_quantize_row_t tq_tcq_cpu_quantize_row(int bits, int variant);
typedef void (*tq_tcq_dequantize_row_t)(const void * x, float * y, int64_t k);
tq_tcq_dequantize_row_t tq_tcq_cpu_dequantize_row(int bits, int variant);
void dequantize_row_tcq2(const void * x, float * y, int64_t k);
void dequantize_row_tcq3(const void * x, float * y, int64_t k);
"""


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


def sources() -> list[Path]:
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    return SOURCES + (X86_SOURCES if x86 else [])


def build(cc: str, extra_flags: tuple[str, ...] = ()) -> Path:
    """The shared library for these sources and flags, compiled once and then found by its hash."""
    cmd = [cc, *FLAGS, *extra_flags]
    digest = hashlib.sha256("\0".join(cmd).encode())
    for path in sources() + HEADERS:
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    out = CACHE / digest.hexdigest()[:20] / "libtq-tcq.so"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f"{out.name}.{os.getpid()}.part")
    done = subprocess.run([*cmd, "-o", str(part), *map(str, sources()), "-lm"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{cc} could not compile the tcq sources:\n{done.stderr}")
    part.replace(out)   # whole or not at all, when two processes build at once
    return out


class TcqLibrary:
    """The compiled encoders and decoder, on NumPy arrays of whole rows."""

    def __init__(self, path: Path):
        self.ffi = cffi.FFI()
        self.ffi.cdef(CDEF)
        self.lib = self.ffi.dlopen(str(path))
        self.path = path

    def has_variant(self, variant: str) -> bool:
        return self.lib.tq_tcq_cpu_quantize_row(2, VARIANTS[variant]) != self.ffi.NULL

    def quantize(self, x: np.ndarray, qtype: str, variant: str = "scalar") -> np.ndarray:
        """float32 (..., k*64) -> uint8 (..., k*type_size), through one encoder variant."""
        t = TRELLIS_TYPES[qtype]
        fn = self.lib.tq_tcq_cpu_quantize_row(t.index_bits, VARIANTS[variant])
        if fn == self.ffi.NULL:
            raise RuntimeError(f"the {variant} encoder is not available on this machine")
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros((*x.shape[:-1], x.shape[-1] // t.block_size * t.type_size), np.uint8)
        fn(self.ffi.from_buffer("float[]", x), self.ffi.from_buffer(out), x.size)
        return out

    def dequantize(self, raw: np.ndarray, qtype: str, variant: str | None = None) -> np.ndarray:
        """uint8 (..., k*type_size) -> float32 (..., k*64): the reference decoder, or a CPU variant."""
        t = TRELLIS_TYPES[qtype]
        if variant is None:
            fn = getattr(self.lib, f"dequantize_row_{qtype}")
        else:
            fn = self.lib.tq_tcq_cpu_dequantize_row(t.index_bits, VARIANTS[variant])
            if fn == self.ffi.NULL:
                raise RuntimeError(f"the {variant} decoder is not available on this machine")
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        y = np.empty((*raw.shape[:-1], raw.shape[-1] // t.type_size * t.block_size), np.float32)
        fn(self.ffi.from_buffer(raw), self.ffi.from_buffer("float[]", y), y.size)
        return y


def load(extra_flags: tuple[str, ...] = ()) -> TcqLibrary | None:
    """The library, compiled if need be; None where there is no C compiler."""
    cc = compiler()
    return None if cc is None else TcqLibrary(build(cc, extra_flags))
