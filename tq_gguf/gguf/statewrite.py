"""Writing a llama.cpp context state: the inverse of statefile's reader, for states of any length.

`parse` reads a whole-context state (`llama_state_get_data`) down to its bytes: the architecture
name, then per KV cache (two for interleaved sliding-window models) key smoothing's mu behind its
marker word (reference.smoothing.STATE_MAGIC) when the cache smooths, the cells (position, sequences
and, on M-RoPE models, a 12-byte extension) and, layer by layer, the K rows and then the V rows in
the cache's own types. `synthesize` writes a state of that layout holding `n_cells` cells of
sequence 0 at positions 0..n_cells-1, each cache's rows the parsed rows repeated in order, its mu
kept: what `tq-gguf bench --memory --fill state` restores instead of prefilling a long context
(analysis/memorybench.py). The rows are real rows of the cache's types, so the values are
plausible; attention over repeated rows is not the attention of a real text, which a memory
measurement does not care about.

Only the layout a one-sequence, flash-attention context writes is handled (one stream per cache,
V rows not transposed); anything else is a StateError.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..reference import smoothing
from .statefile import _CELL_EXT_BYTES, Reader, StateError, Unreadable


@dataclass(frozen=True)
class Rows:
    """One layer's K or V tensor in a state: ggml type id, bytes per cell, and the cells' rows."""

    type_id: int
    row_bytes: int
    data: np.ndarray  # uint8 [n_cells, row_bytes]


@dataclass(frozen=True)
class CacheState:
    mu: tuple[bytes, ...] | None  # key smoothing's per-layer mu, as saved (None: the cache does not smooth)
    n_cells: int
    ext: np.ndarray | None  # uint8 [n_cells, 12]: the M-RoPE cell extension, when the model has one
    k: tuple[Rows, ...]
    v: tuple[Rows, ...]


@dataclass(frozen=True)
class ContextState:
    arch: str
    caches: tuple[CacheState, ...]


def _rows(c: Reader, n_cells: int) -> Rows:
    type_id, row = c.take("<iQ")
    if not 0 < row < 1 << 24:
        raise Unreadable("bad row size")
    return Rows(type_id, row, c.bytes(n_cells * row).reshape(n_cells, row))


def _cache(c: Reader, ext: bool) -> CacheState:
    n_stream = c.take("<I")
    mu = None
    if n_stream == smoothing.STATE_MAGIC:
        n_layer = c.take("<I")
        if not 0 < n_layer < 4096:
            raise Unreadable("bad smoothing header")
        mu = tuple(c.bytes(c.take("<I")).tobytes() for _ in range(n_layer))
        n_stream = c.take("<I")
    if n_stream != 1:
        raise Unreadable(f"{n_stream} streams")
    n_cells = c.take("<I")
    if n_cells == 0:
        raise Unreadable("an empty cache")
    exts = []
    for _ in range(n_cells):
        _pos, n_seq = c.take("<iI")
        if n_seq > 1 << 16:
            raise Unreadable("bad sequence count")
        if ext:
            exts.append(c.bytes(_CELL_EXT_BYTES))
        c.bytes(4 * n_seq)
    v_trans, n_layer = c.take("<II")
    if v_trans != 0 or not 0 < n_layer < 4096:
        raise Unreadable("transposed V rows" if v_trans == 1 else "bad layer header")
    k = tuple(_rows(c, n_cells) for _ in range(n_layer))
    v = tuple(_rows(c, n_cells) for _ in range(n_layer))
    return CacheState(mu, n_cells, np.stack(exts) if ext else None, k, v)


def parse(blob) -> ContextState:
    """The whole-context state `blob` (bytes or a uint8 array), rows included (as views of it)."""
    buf = np.frombuffer(blob, dtype=np.uint8) if not isinstance(blob, np.ndarray) else blob
    why = None
    for ext in (False, True):  # cells carry 12 more bytes on M-RoPE models; the variant that parses to the end
        try:
            c = Reader(buf)
            n = c.take("<I")
            arch = c.bytes(n).tobytes().decode()
            caches = []
            while c.pos < len(buf):
                caches.append(_cache(c, ext))
            if not caches:
                raise Unreadable("no KV cache")
            return ContextState(arch, tuple(caches))
        except (Unreadable, UnicodeDecodeError, ValueError) as exc:
            why = why or str(exc)  # most models have no cell extension: the first reason is the telling one
    raise StateError(f"cannot synthesize a state from this context's ({why}): only one sequence's KV cache "
                     f"in one stream, with flash attention (V rows not transposed), is supported")


def _size(cache: CacheState, n_cells: int) -> int:
    mu = 8 + sum(4 + len(m) for m in cache.mu) if cache.mu is not None else 0
    cell = 12 + (_CELL_EXT_BYTES if cache.ext is not None else 0)
    rows = sum(12 + n_cells * r.row_bytes for r in (*cache.k, *cache.v))
    return mu + 8 + n_cells * cell + 8 + rows


def _tile(dst: np.ndarray, src: np.ndarray) -> None:
    """Fill dst's rows with src's rows repeated in order, without a temporary of dst's size."""
    for start in range(0, len(dst), len(src)):
        part = dst[start:start + len(src)]
        part[:] = src[:len(part)]


def synthesize(state: ContextState, n_cells: int) -> np.ndarray:
    """A whole-context state of the same layout with `n_cells` cells of sequence 0, positions
    0..n_cells-1 in cells 0..n_cells-1, each layer's rows the parsed rows repeated (uint8 array)."""
    if n_cells < 1:
        raise StateError(f"a synthesized state needs at least one cell, not {n_cells}")
    arch = state.arch.encode()
    out = np.empty(4 + len(arch) + sum(_size(c, n_cells) for c in state.caches), dtype=np.uint8)
    pos = 0

    def put(fmt: str, *values) -> None:
        nonlocal pos
        struct.pack_into(fmt, out, pos, *values)
        pos += struct.calcsize(fmt)

    def region(n: int) -> np.ndarray:
        nonlocal pos
        pos += n
        return out[pos - n:pos]

    put("<I", len(arch))
    region(len(arch))[:] = np.frombuffer(arch, dtype=np.uint8)
    for cache in state.caches:
        if cache.mu is not None:
            put("<II", smoothing.STATE_MAGIC, len(cache.mu))
            for m in cache.mu:
                put("<I", len(m))
                region(len(m))[:] = np.frombuffer(m, dtype=np.uint8)
        put("<II", 1, n_cells)  # one stream; its cell count
        ext = cache.ext is not None
        cell = np.dtype([("pos", "<i4"), ("n_seq", "<u4")] + ([("ext", "u1", _CELL_EXT_BYTES)] if ext else [])
                        + [("seq", "<i4")])
        cells = region(n_cells * cell.itemsize).view(cell)
        cells["pos"] = np.arange(n_cells, dtype=np.int32)
        cells["n_seq"] = 1
        cells["seq"] = 0
        if ext:
            _tile(cells["ext"], cache.ext)
        put("<II", 0, len(cache.k))  # V not transposed; layers
        for rows in (*cache.k, *cache.v):
            put("<iQ", rows.type_id, rows.row_bytes)
            _tile(region(n_cells * rows.row_bytes).reshape(n_cells, rows.row_bytes), rows.data)
    assert pos == len(out)
    return out
