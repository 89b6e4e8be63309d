"""Content hash that names a native build.

Two builds with the same key are interchangeable, so a finished build is
reused whenever the key matches: the sdist, the patch series, our native
sources, the backend and the CMake flags are all part of it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import patches, upstream

# Bump when the layout of a build folder changes.
BUILD_FORMAT = 1

# Written by the build into the copied native tree; not a source, never hashed.
GENERATED_NATIVE = frozenset({"tq-build-id.h"})

# native/<name>/ holds sources that only the backend of that name compiles, so they are part
# of that backend's key and no other's: a CUDA edit leaves the CPU and Vulkan builds current.
BACKEND_ONLY_DIRS = ("cuda", "metal", "vulkan")


def native_files(native_dir: Path) -> list[Path]:
    return sorted(
        p for p in native_dir.rglob("*")
        if p.is_file() and p.name not in GENERATED_NATIVE and "__pycache__" not in p.parts
    )


def backend_sources(native_dir: Path, backend: str) -> list[Path]:
    """The native files a build of `backend` compiles: all but the other backends' own folders."""
    foreign = {d for d in BACKEND_ONLY_DIRS if d != backend}
    return [p for p in native_files(native_dir) if p.relative_to(native_dir).parts[0] not in foreign]


def native_hash(native_dir: Path, backend: str) -> str:
    digest = hashlib.sha256()
    for p in backend_sources(native_dir, backend):
        digest.update(p.relative_to(native_dir).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return digest.hexdigest()


def build_key(backend: str, defines: dict[str, str], patches_dir: Path, native_dir: Path) -> str:
    material = {
        "format": BUILD_FORMAT,
        "sdist": upstream.SDIST_SHA256,
        "patches": patches.series_hash(patches_dir),
        "native": native_hash(native_dir, backend),
        "backend": backend,
        "defines": dict(sorted(defines.items())),
    }
    blob = json.dumps(material, sort_keys=True).encode()
    return f"{backend}-{hashlib.sha256(blob).hexdigest()[:16]}"
