"""The turbo and trellis-coded types as the generated code sees them: the type table's rows
with their derived block layouts.

Block layout. A block is the fp16 scale `d` followed by bit planes of the indices, the
ggml way: `qs` holds the low 2 or 4 bits of each index (an even number of bits, so that
a byte never splits an index), `qh` the rest, one bit per value (turbo3, like q5_0's
high bits). The sizes must add up to the table's bytes per block; the generator refuses
a row whose layout it cannot derive. Where each index sits inside its plane is the
kernels' business (docs/FORMAT.md, section 4).

Trellis-coded blocks (docs/FORMAT.md, section 12) are the fp16 scale, a `qs` plane of the
ranks (index_bits - 1 bits per value: 2 in turbo2's arrangement, 1 as bit i of the plane)
and a `qb` plane of the branch bits, bit i for value i.
"""

from __future__ import annotations

from dataclasses import dataclass

from tq_gguf.kv import cachetypes


@dataclass(frozen=True)
class Turbo:
    """One turbo type as the generated code sees it."""
    name: str    # "turbo3"
    bits: int    # codebook index bits per value
    block: int   # values per block
    size: int    # bytes per block
    qs: int      # bytes of the low-bit plane
    qh: int      # bytes of the high-bit plane (0: none)

    @property
    def enum(self) -> str:
        return f"GGML_TYPE_{self.name.upper()}"


def turbo_types() -> list[Turbo]:
    """The turbo rows of the type table, fewest bits first, with their derived layouts."""
    out = []
    for name in cachetypes.TURBO_TYPES:
        ct = cachetypes.get(name)
        bits = ct.index_bits
        low = min(bits & ~1, 4)
        qs, qh = ct.block_size * low // 8, ct.block_size * (bits - low) // 8
        if low == 0 or bits - low > 1 or 2 + qs + qh != ct.type_size:
            raise SystemExit(f"{name}: no fp16 scale + qs/qh layout of {bits}-bit indices gives "
                             f"{ct.type_size} bytes per {ct.block_size} values")
        out.append(Turbo(name, bits, ct.block_size, ct.type_size, qs, qh))
    if len({t.block for t in out}) != 1 or len({t.bits for t in out}) != len(out):
        raise SystemExit("the turbo types must share one block size and differ in index bits")
    return out


TYPES = turbo_types()
DIM = TYPES[0].block  # the codebook law's dimension: one block, one rotation group
BITS = tuple(t.bits for t in TYPES)


@dataclass(frozen=True)
class Trellis:
    """One trellis-coded type as the generated code sees it."""
    name: str         # "tcq3"
    bits: int         # bits per value: the branch bit and bits - 1 bits of rank
    block: int        # values per block
    size: int         # bytes per block
    memory: int       # 2^memory states
    pair_taps: int    # the code's a
    branch_taps: int  # the code's g
    scales: int       # candidate scale factors
    qs: int           # bytes of the rank plane
    qb: int           # bytes of the branch-bit plane

    @property
    def enum(self) -> str:
        return f"GGML_TYPE_{self.name.upper()}"

    @property
    def states(self) -> int:
        return 1 << self.memory

    @property
    def levels(self) -> int:
        return 1 << (self.bits + 1)

    @property
    def ranks(self) -> int:
        """Levels per subset."""
        return self.levels // 4


# rank bits per value whose plane arrangement the format defines (FORMAT.md 12.4)
RANK_PLANE_BITS = (1, 2)


def trellis_types() -> list[Trellis]:
    """The trellis rows of the type table, fewest bits first, with their derived layouts."""
    out = []
    for ct in sorted(cachetypes.TRELLIS_TYPES.values(), key=lambda t: t.index_bits):
        rank_bits = ct.index_bits - 1
        qs, qb = ct.block_size * rank_bits // 8, ct.block_size // 8
        if ct.block_size != DIM or rank_bits not in RANK_PLANE_BITS or 2 + qs + qb != ct.type_size:
            raise SystemExit(f"{ct.name}: no fp16 scale + rank plane + branch plane of {ct.index_bits}-bit values "
                             f"gives {ct.type_size} bytes per {ct.block_size} values (block {DIM})")
        out.append(Trellis(ct.name, ct.index_bits, ct.block_size, ct.type_size, ct.memory, ct.pair_taps,
                           ct.branch_taps, ct.scales, qs, qb))
    return out


TRELLIS = trellis_types()
