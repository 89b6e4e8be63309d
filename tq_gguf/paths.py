"""Where tq-gguf keeps what it downloads and builds.

Everything lives under one cache root so that CI can keep it between runs and a
user can delete it in one go. `TQ_GGUF_CACHE` overrides the location.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PATCHES_DIR = REPO_ROOT / "patches"
NATIVE_DIR = REPO_ROOT / "native"


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
