"""The turbo types as the generated code sees them: the type table's rows with their derived
block layouts.

Block layout. A block is the fp16 scale `d` followed by bit planes of the indices, the
ggml way: `qs` holds the low 2 or 4 bits of each index (an even number of bits, so that
a byte never splits an index), `qh` the rest, one bit per value (turbo3, like q5_0's
high bits). The sizes must add up to the table's bytes per block; the generator refuses
a row whose layout it cannot derive. Where each index sits inside its plane is the
kernels' business (docs/FORMAT.md, section 4).
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
