"""tq_gguf.gguf.statewrite: a whole-context state written back byte for byte, and made longer.

The states here are built by hand after llama.cpp's state_write (llama-context.cpp and
llama-kv-cache.cpp at the pin): the architecture name, then per cache key smoothing's mu behind
its marker when the cache smooths, the stream count, the cells (position, sequence count, the
M-RoPE extension on models that have one, sequence ids) and the K then V rows of every layer.
tests/model/test_memorybench.py restores what statewrite writes into llama.cpp and reads it back.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from tq_gguf.gguf import statewrite
from tq_gguf.gguf.statefile import StateError
from tq_gguf.reference import smoothing

ROWS = {"k": (8, 34), "v": (41, 26)}  # ggml type id, bytes per cell (the writer does not look the ids up)


def row(layer: int, which: str, cell: int) -> bytes:
    return bytes((layer * 31 + cell * 7 + (which == "v") * 101 + i) % 256 for i in range(ROWS[which][1]))


def cache_bytes(n_cells: int, n_layer: int, mu: bool, ext: bool, positions=None) -> bytes:
    out = b""
    if mu:
        out += struct.pack("<II", smoothing.STATE_MAGIC, n_layer)
        for il in range(n_layer):
            out += struct.pack("<I", 16) + bytes(range(il, il + 16))
    out += struct.pack("<II", 1, n_cells)
    for i, pos in enumerate(positions if positions is not None else range(n_cells)):
        out += struct.pack("<iI", pos, 1) + (bytes(range(i % 50, i % 50 + 12)) if ext else b"") + struct.pack("<i", 0)
    out += struct.pack("<II", 0, n_layer)
    for which in ("k", "v"):
        for il in range(n_layer):
            out += struct.pack("<iQ", ROWS[which][0], ROWS[which][1])
            out += b"".join(row(il, which, i) for i in range(n_cells))
    return out


def state_bytes(n_cells: int, caches=((3, True),), ext: bool = False, positions=None) -> bytes:
    arch = b"llama"
    return struct.pack("<I", len(arch)) + arch + b"".join(
        cache_bytes(n_cells, n_layer, mu, ext, positions) for n_layer, mu in caches)


@pytest.mark.parametrize("caches, ext", [(((3, True),), False), (((3, False),), False),
                                         (((2, True), (4, True)), False),  # an interleaved-SWA model: two caches
                                         (((3, False),), True)])  # M-RoPE cells
def test_a_state_is_written_back_byte_for_byte(caches, ext):
    blob = state_bytes(5, caches, ext)
    state = statewrite.parse(blob)
    assert state.arch == "llama" and len(state.caches) == len(caches)
    assert [c.mu is not None for c in state.caches] == [mu for _, mu in caches]
    assert statewrite.synthesize(state, 5).tobytes() == blob


def test_a_longer_state_repeats_the_rows_at_new_positions():
    state = statewrite.parse(state_bytes(3, ((2, True),), ext=True))
    longer = statewrite.synthesize(state, 8).tobytes()
    assert len(longer) == len(state_bytes(8, ((2, True),), ext=True))  # the layout of 8 cells
    cycle = [0, 1, 2, 0, 1, 2, 0, 1]  # rows and cell extensions repeat in order
    parsed = statewrite.parse(longer)
    for got, base in zip((*parsed.caches[0].k, *parsed.caches[0].v), (*state.caches[0].k, *state.caches[0].v)):
        assert got.type_id == base.type_id and got.row_bytes == base.row_bytes
        assert np.array_equal(got.data, base.data[cycle])
    assert np.array_equal(parsed.caches[0].ext, state.caches[0].ext[cycle])
    assert parsed.caches[0].mu == state.caches[0].mu
    cells = np.frombuffer(longer, dtype=np.uint8)[4 + 5 + 8 + 2 * (4 + 16) + 8:][:8 * 24]
    positions = [struct.unpack_from("<iI", cells, 24 * i) for i in range(8)]
    assert positions == [(i, 1) for i in range(8)]


def test_positions_are_renumbered_from_zero():
    """A state saved after a context shift (positions 100..) is written at 0..n-1."""
    state = statewrite.parse(state_bytes(4, positions=range(100, 104)))
    assert statewrite.synthesize(state, 4).tobytes() == state_bytes(4)


@pytest.mark.parametrize("damage, why", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b[:9] + struct.pack("<I", 2) + b[13:], "2 streams"),  # no smoothing: the stream count is first
])
def test_layouts_it_cannot_write_are_refused(damage, why):
    with pytest.raises(StateError, match=why):
        statewrite.parse(damage(state_bytes(2, ((1, False),))))
    with pytest.raises(StateError, match="at least one cell"):
        statewrite.synthesize(statewrite.parse(state_bytes(2)), 0)
