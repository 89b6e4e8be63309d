"""KV-cache types: what each one is called, costs and needs.

Names, block sizes, bytes per block and (turbo types) index bits are format facts
(docs/FORMAT.md, ggml's type traits; a test checks them against the library). This
table is where the package learns them: the NumPy reference, verify, the CLI and the
build derive theirs from it (docs/ADDING_A_TYPE.md). The ggml enum value
behind a name is read from the built library at run time (tq_gguf.native.typeids),
so Python never depends on where the patched ggml.h placed the turbo types.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import CacheTypeError


@dataclass(frozen=True)
class CacheType:
    name: str
    block_size: int   # values per block
    type_size: int    # bytes per block
    index_bits: int = 0  # turbo types: bits of the codebook index per value (0: not a turbo type)
    value_only: bool = False  # no dot product with a query (the trellis-coded types): V caches only

    @property
    def turbo(self) -> bool:
        return self.index_bits > 0

    @property
    def trellis(self) -> bool:
        return self.name in TRELLIS_TYPES

    @property
    def rotated(self) -> bool:
        """Rows the cache rotates first (docs/FORMAT.md, sections 2 and 12)."""
        return self.turbo or self.trellis

    @property
    def quantized(self) -> bool:
        return self.block_size > 1

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
    CacheType("f32", 1, 4),
    CacheType("f16", 1, 2),
    CacheType("bf16", 1, 2),
    CacheType("q8_0", 32, 34),
    CacheType("q5_1", 32, 24),
    CacheType("q5_0", 32, 22),
    CacheType("q4_1", 32, 20),
    CacheType("q4_0", 32, 18),
    CacheType("iq4_nl", 32, 18),
    CacheType("turbo4", 64, 34, index_bits=4),
    CacheType("turbo3", 64, 26, index_bits=3),
    CacheType("turbo2", 64, 18, index_bits=2),
    CacheType("tcq3", 64, 26, value_only=True),
    CacheType("tcq2", 64, 18, value_only=True),
)}

# The turbo types, fewest bits first.
TURBO_TYPES: tuple[str, ...] = tuple(sorted((t.name for t in CACHE_TYPES.values() if t.turbo),
                                            key=lambda n: CACHE_TYPES[n].index_bits))


@dataclass(frozen=True)
class TrellisType:
    """A set-partition trellis-coded value type (docs/FORMAT.md, section 12).

    A block stores an fp16 scale and, per value, `index_bits` bits: its branch bit and the
    rank of its level in one of four subsets of a union codebook of 2^(index_bits + 1)
    levels. The state, the last `memory` branch bits, picks the subset with the code's
    taps: the pair D0/D2 or D1/D3 by parity(pair_taps & state), the branch bit's place in
    the pair offset by parity(branch_taps & state). The encoder runs a Viterbi for each of
    `scales` candidate factors of the union codebook and keeps the best.
    """
    name: str
    block_size: int   # values per block
    type_size: int    # bytes per block
    index_bits: int   # bits per value: the branch bit, then index_bits - 1 bits of rank
    memory: int       # the state holds the last `memory` branch bits: 2^memory states
    pair_taps: int    # a of the code: the subset pair is parity(a & state)
    branch_taps: int  # g of the code: the branch bit's offset in the pair is parity(g & state)
    scales: int       # candidate scale factors searched per block

    @property
    def states(self) -> int:
        return 1 << self.memory

    @property
    def levels(self) -> int:
        """Levels of the union codebook: four subsets of 2^(index_bits - 1)."""
        return 1 << (self.index_bits + 1)

    @property
    def bits_per_value(self) -> float:
        return 8 * self.type_size / self.block_size


# The trellis-coded value types, fewest bits first. The codes are the best of their memory
# on Gaussian blocks and the states and scales the ones chosen from the measurements of
# docs/FORMAT.md 11.5. Each is also a value-only row of CACHE_TYPES.
TRELLIS_TYPES: dict[str, TrellisType] = {t.name: t for t in (
    TrellisType("tcq2", 64, 18, index_bits=2, memory=2, pair_taps=1, branch_taps=2, scales=4),
    TrellisType("tcq3", 64, 26, index_bits=3, memory=3, pair_taps=2, branch_taps=5, scales=4),
)}


# The trellis-coded value types, fewest bits first (their sizes agree with TRELLIS_TYPES:
# tests/unit/test_tcq.py).
TCQ_TYPES: tuple[str, ...] = tuple(sorted(TRELLIS_TYPES, key=lambda n: TRELLIS_TYPES[n].index_bits))

# The types only tq-gguf's kernels read: turbo, then trellis-coded.
TQ_TYPES: tuple[str, ...] = TURBO_TYPES + TCQ_TYPES


def get(name: str) -> CacheType:
    try:
        return CACHE_TYPES[name.lower()]
    except KeyError:
        raise CacheTypeError(f"unknown cache type {name!r}; choose one of {', '.join(CACHE_TYPES)}") from None
