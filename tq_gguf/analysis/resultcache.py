"""Measurements kept on disk under the tq-gguf cache dir, keyed by what produced them.

A result is reused only when the model file, the native build and every setting
that shapes it are the same; the key says so by hashing them (the model by the
sha256 of its whole file: an edited model is another model). Files are written
whole or not at all (tq_gguf.atomicfile), so a run killed mid-write, or a full
disk, leaves nothing that a later run would take for a result.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import atomicfile, paths
from ..gguf import filehash


def model_id(path: Path) -> str:
    """A name for a model file that changes when any byte of it does: its stem and the
    sha256 of the whole file."""
    return f"{path.stem}-{filehash.sha256(path)[:16]}"


def key(*parts: object) -> str:
    """A short hash of the settings that make one result differ from another."""
    return hashlib.sha256(" ".join(map(str, parts)).encode()).hexdigest()[:12]


def directory(kind: str, model: Path, settings: str) -> Path:
    """`<cache>/<kind>/<model id>/<settings key>`."""
    return paths.cache_root() / kind / model_id(model) / settings


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomicfile.write_text(path, json.dumps(data, indent=1))


def read_json(path: Path) -> dict | None:
    """The stored result, or None when there is none (or only an unreadable one)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
