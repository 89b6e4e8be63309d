"""KV-cache types: what each one is called, costs and needs.

The ggml type ids are those of the patched ggml.h (turbo types are appended
after GGML_TYPE_Q2_0 = 42). Whether the turbo types are present is a property
of the installed build, checked through the native library by `available()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CacheTypeError


@dataclass(frozen=True)
class CacheType:
    name: str
    ggml_id: int
    block_size: int   # values per block
    type_size: int    # bytes per block
    turbo: bool = False

    @property
    def bits_per_value(self) -> float:
        return 8 * self.type_size / self.block_size

    def bytes_for(self, n_values: int) -> int:
        return n_values // self.block_size * self.type_size

    def check_head_dim(self, head_dim: int, which: str = "cache") -> None:
        if head_dim % self.block_size:
            raise CacheTypeError(
                f"{which} type {self.name} stores blocks of {self.block_size} values, "
                f"but the model's head size {head_dim} is not a multiple of {self.block_size}"
            )


CACHE_TYPES: dict[str, CacheType] = {t.name: t for t in (
    CacheType("f32", 0, 1, 4),
    CacheType("f16", 1, 1, 2),
    CacheType("bf16", 30, 1, 2),
    CacheType("q8_0", 8, 32, 34),
    CacheType("q5_1", 7, 32, 24),
    CacheType("q5_0", 6, 32, 22),
    CacheType("q4_1", 3, 32, 20),
    CacheType("q4_0", 2, 32, 18),
    CacheType("iq4_nl", 20, 32, 18),
    CacheType("turbo4", 45, 64, 34, turbo=True),
    CacheType("turbo3", 44, 64, 26, turbo=True),
    CacheType("turbo2", 43, 64, 18, turbo=True),
)}


def get(name: str) -> CacheType:
    try:
        return CACHE_TYPES[name.lower()]
    except KeyError:
        raise CacheTypeError(f"unknown cache type {name!r}; choose one of {', '.join(CACHE_TYPES)}") from None


def is_native(ct: CacheType) -> bool:
    """Whether the installed native build knows this type (turbo types need our patches)."""
    from . import ggml

    # ggml_type_name returns "NONE" for ids past GGML_TYPE_COUNT, so an old build answers False.
    return ggml.type_name(ct.ggml_id) == ct.name


def available() -> list[CacheType]:
    return [ct for ct in CACHE_TYPES.values() if not ct.turbo or is_native(ct)]


def require_native(ct: CacheType) -> None:
    if ct.turbo and not is_native(ct):
        raise CacheTypeError(
            f"cache type {ct.name} is not in the installed llama.cpp build; "
            f"this build does not include the turbo types yet (run `tq-gguf build` after updating)"
        )
