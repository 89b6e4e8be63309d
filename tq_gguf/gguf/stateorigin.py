"""Where a saved state came from: the package's state format, the cache formats, the model.

llama.cpp's state bytes say which ggml type each layer's rows have (statefile reads them), not
what those types mean: a build with other codebooks, rotation signs or type ids writes rows of
the same size that decode to other values, and another model of the same architecture and shape
writes a state that fits this one's cache exactly. Either would load silently and decode
garbage. So every state the package saves carries a fingerprint of all three:

- `version`: FORMAT_VERSION, how the package records a state and its fingerprint;
- `formats`: the sha256 of `canonical_formats`, the values that define the cache formats;
- `trellis`: the sha256 of `canonical_trellis_formats`, the same for the trellis-coded value
  types. It is a field of its own so that adding those types left `formats`, and so every
  state saved before them, as it was; a state without it holds no trellis-coded rows;
- the model's whole-file sha256 (gguf.filehash, remembered after the first time) and file name.

`check_format` runs before the layout checks (under other type ids the layout may be misread),
`check_model` after them (another architecture or cache config is the more telling message).
A state without a fingerprint (saved before this, or by plain llama.cpp or llama-cpp-python)
is checked by its layout only (statefile.check_fits).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from ..kv import cachetypes
from ..native import typeids
from ..reference import codebooks, rotation, trellistables
from . import filehash
from .statefile import StateError

# Raised whenever a saved state or its fingerprint comes to mean something else.
FORMAT_VERSION = 1


class StateOriginMismatch(StateError):
    """The state was saved by another build's cache formats, another state format or another model."""


def canonical_formats(ids: Mapping[str, int]) -> bytes:
    """The values that define the cache formats, as canonical JSON: types by name with their ggml
    id in `ids` (None if the build lacks them), block size, bytes per block and index bits; the
    codebook centroids as exact float32 hex; the rotation's signs. Sorted keys and no spacing,
    so the bytes depend on the values only, not on dict order or the process."""
    doc = {
        "types": [[t.name, ids.get(t.name), t.block_size, t.type_size, t.index_bits]
                  for t in sorted(cachetypes.CACHE_TYPES.values(), key=lambda t: t.name) if not t.trellis],
        "centroids": {str(bits): [float(v).hex() for v in codebooks.CENTROIDS[bits]]
                      for bits in sorted(codebooks.CENTROIDS)},
        "rotation": {"group": rotation.GROUP, "signs": [int(s) for s in rotation.rotation_signs(rotation.GROUP)]},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def canonical_trellis_formats(ids: Mapping[str, int]) -> bytes:
    """The values that define the trellis-coded types (docs/FORMAT.md, section 12), as canonical JSON:
    each type by name with its ggml id in `ids`, sizes, code and scales, and its tables (union
    codebook and scale factors as exact float32 hex, the subset table)."""
    doc = {}
    for t in sorted(cachetypes.TRELLIS_TYPES.values(), key=lambda t: t.name):
        doc[t.name] = {
            "type": [ids.get(t.name), t.block_size, t.type_size, t.index_bits, t.memory, t.pair_taps,
                     t.branch_taps, t.scales],
            "levels": [float(v).hex() for v in trellistables.LEVELS[t.name]],
            "factors": [float(v).hex() for v in trellistables.FACTORS[t.name]],
            "subset": [[int(v) for v in row] for row in trellistables.SUBSET[t.name]],
        }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@lru_cache(maxsize=1)
def formats_hash() -> str:
    """sha256 of this build's canonical_formats (the ids are read from the installed library)."""
    return hashlib.sha256(canonical_formats(typeids.ids())).hexdigest()


@lru_cache(maxsize=1)
def trellis_formats_hash() -> str:
    """sha256 of this build's canonical_trellis_formats."""
    return hashlib.sha256(canonical_trellis_formats(typeids.ids())).hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    version: int
    formats: str
    model_sha256: str
    model_name: str
    trellis: str = ""  # "" in a state saved before the trellis-coded types

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> Fingerprint:
        """A fingerprint read back; ValueError names what is missing or malformed, and a state format
        this package does not read is refused as such (its other fields may mean something else)."""
        if not isinstance(d, dict) or not isinstance(d.get("version"), int):
            raise ValueError("no format version")
        if d["version"] != FORMAT_VERSION:
            raise StateOriginMismatch(_version_message(d["version"]))
        names = [f.name for f in fields(cls) if f.name not in ("version", "trellis")]
        bad = [name for name in names if not isinstance(d.get(name), str)]
        if not isinstance(d.get("trellis", ""), str):
            bad.append("trellis")
        if bad:
            raise ValueError(f"missing or malformed {', '.join(bad)}")
        return cls(FORMAT_VERSION, **{name: d[name] for name in names}, trellis=d.get("trellis", ""))


def of_model(model_path: str | Path) -> Fingerprint:
    """The fingerprint a state saved now, from a session on this model file, carries."""
    path = Path(model_path)
    return Fingerprint(FORMAT_VERSION, formats_hash(), filehash.sha256(path), path.name, trellis_formats_hash())


def _version_message(version: int) -> str:
    return f"this state was saved in tq-gguf state format {version}; this tq-gguf reads format {FORMAT_VERSION}"


def check_format(saved: Fingerprint, here: Fingerprint) -> None:
    """Refuse a state recorded in another state format or with other cache formats."""
    if saved.version != here.version:
        raise StateOriginMismatch(_version_message(saved.version))
    if saved.formats != here.formats:
        raise StateOriginMismatch(
            f"this state was saved by a build with other cache formats (type table and codebooks hash "
            f"{saved.formats[:12]}; this build's is {here.formats[:12]}), so its rows would decode to other "
            f"values; load it with the build that saved it")
    if saved.trellis and saved.trellis != here.trellis:
        raise StateOriginMismatch(
            f"this state was saved by a build with other trellis-coded types (tcq types and tables hash "
            f"{saved.trellis[:12]}; this build's is {here.trellis[:12]}), so its rows would decode to other "
            f"values; load it with the build that saved it")


def check_model(saved: Fingerprint, here: Fingerprint) -> None:
    """Refuse a state saved from another model file (by content: a copy of the same file is the same model)."""
    if saved.model_sha256 != here.model_sha256:
        raise StateOriginMismatch(
            f"this state was saved from {saved.model_name} (sha256 {saved.model_sha256[:12]}); "
            f"this session runs {here.model_name} (sha256 {here.model_sha256[:12]})")
