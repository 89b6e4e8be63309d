"""Measurements kept on disk under the tq-gguf cache dir, keyed by what produced them.

A result is reused only when the model file, the native build and every setting
that shapes it are the same; the key says so by hashing them. Files are written
whole or not at all, so a run killed mid-write leaves nothing that a later run
would take for a result.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .. import paths


def model_id(path: Path) -> str:
    """A name for a model file that changes when the file does, without hashing gigabytes:
    its stem, size and first MiB."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
    return f"{path.stem}-{digest.hexdigest()[:10]}"


def key(*parts: object) -> str:
    """A short hash of the settings that make one result differ from another."""
    return hashlib.sha256(" ".join(map(str, parts)).encode()).hexdigest()[:12]


def directory(kind: str, model: Path, settings: str) -> Path:
    """`<cache>/<kind>/<model id>/<settings key>`."""
    return paths.cache_root() / kind / model_id(model) / settings


def temporary(path: Path) -> Path:
    """A name beside `path` to write to before `os.replace` puts it in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{path.name}.tmp{os.getpid()}")


def write_json(path: Path, data: dict) -> None:
    tmp = temporary(path)
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    """The stored result, or None when there is none (or only an unreadable one)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
