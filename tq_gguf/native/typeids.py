"""Which cache types the installed build has, and the ggml enum value behind each name.

The values are read from the library, so Python never depends on where the patched ggml.h
placed the turbo types (kv.cachetypes holds everything else about a type).
"""

from __future__ import annotations

from functools import lru_cache

from ..errors import CacheTypeError
from ..kv.cachetypes import CACHE_TYPES, CacheType
from . import ggml


@lru_cache(maxsize=1)
def ids() -> dict[str, int]:
    """Type name -> ggml enum value, as the installed library names its types."""
    return {name: type_id for name, type_id in ggml.type_ids().items() if name in CACHE_TYPES}


def ggml_id(ct: CacheType) -> int:
    """The ggml enum value of this type in the installed build."""
    type_id = ids().get(ct.name)
    if type_id is None:
        raise CacheTypeError(
            f"cache type {ct.name} is not in the installed llama.cpp build; "
            f"run `tq-gguf build` to build one with the turbo types"
        )
    return type_id


def has(ct: CacheType) -> bool:
    """Whether the installed native build knows this type (turbo types need our patches)."""
    return ct.name in ids()


def available() -> list[CacheType]:
    return [ct for ct in CACHE_TYPES.values() if not ct.rotated or has(ct)]


def require(ct: CacheType) -> None:
    if ct.rotated and not has(ct):
        raise CacheTypeError(
            f"cache type {ct.name} is not in the installed llama.cpp build; "
            f"this build does not include the turbo types yet (run `tq-gguf build` after updating)"
        )
