"""Where tq-gguf keeps what it downloads and builds.

Everything lives under one cache root so that CI can keep it between runs and a
user can delete it in one go. `TQ_GGUF_CACHE` overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# An installed wheel carries what `tq-gguf build` and `verify` read under tq_gguf/_data/,
# laid out as in the repository (setup.py copies it there); a checkout reads the repository.
PACKAGE_DATA = Path(__file__).resolve().parent / "_data"
SOURCE_ROOT = PACKAGE_DATA if (PACKAGE_DATA / "patches").is_dir() else REPO_ROOT
# (path inside SOURCE_ROOT, whole folder?) for everything the wheel must carry: the build's
# sources, verify's real K/V rows, and the evidence the untested backends' warnings point to.
SHIPPED = (("patches", True), ("native", True), ("tests/data/kv_rows.npz", False), ("docs/BACKENDS.md", False))
PATCHES_DIR = SOURCE_ROOT / "patches"
NATIVE_DIR = SOURCE_ROOT / "native"
KV_ROWS = SOURCE_ROOT / "tests" / "data" / "kv_rows.npz"
BACKENDS_DOC = SOURCE_ROOT / "docs" / "BACKENDS.md"


def cache_root() -> Path:
    env = os.environ.get("TQ_GGUF_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tq-gguf"


def sdist_dir() -> Path:
    return cache_root() / "sdist"


def pristine_dir() -> Path:
    """The extracted, unpatched sdist (read by tools/make_patches.py too)."""
    return cache_root() / "pristine"


def work_dir(backend: str) -> Path:
    """One patched source tree and CMake build tree per backend, kept for incremental builds."""
    return cache_root() / "work" / backend


def builds_dir() -> Path:
    """Finished builds, one folder per content hash."""
    return cache_root() / "builds"


def models_dir() -> Path:
    return cache_root() / "models"
