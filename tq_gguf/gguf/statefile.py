"""Reading a saved llama.cpp context state: which cache types its layers hold.

llama.cpp serialises a context as its architecture name followed by each KV
cache (two for interleaved sliding-window models such as Gemma 3: the
full-attention layers, then the window layers): the cells (position and
sequences) and then, layer by layer, the K and V rows in the cache's own type
(a turbo3 row is stored as turbo3 blocks, so a saved state is as compact as the
cache). A cache with key smoothing writes its mu first, behind a marker word that no
stream count can equal; its keys mean nothing without that mu. A state only fits a context whose layers have the same types. llama.cpp
checks that per layer while reading, but only after it has emptied the context,
and reports a bare failure. Here the types are read out of a saved state first,
so a mismatch is refused before anything changes, with both configs named.

`read_layout` describes a state in memory (what llama-cpp-python's LlamaState
holds), `read_file_layout` a session file (`llama_state_save_file`), including
what either would take with an f16 cache; `check_fits` refuses a state that
would not load. Saving and restoring live in tq_gguf.runtime.state.
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import CacheTypeError, TqError
from ..kv import cachetypes
from ..kv.cacheconfig import BOUNDARY_TYPE, SMOOTH_FLAG, CacheConfig
from ..native import llamacpp, typeids
from ..reference import smoothing

# llama.cpp session files start with 'ggsn' and a version (LLAMA_SESSION_MAGIC/VERSION in
# llama.h), then the token count, the tokens and the state.
SESSION_MAGIC = 0x6767736E
# A cell's optional 2D position and token (llama_kv_cell_ext: x, y, tok), present for M-RoPE models.
_CELL_EXT_BYTES = 12


class StateError(TqError):
    """A saved state that cannot be loaded into this session (or saved from it)."""


class StateConfigMismatch(StateError):
    """The state was saved from a KV cache with other types than this session's."""

    def __init__(self, saved: str, session: str):
        self.saved, self.session = saved, session
        try:
            hint = f"; load it into a session with cache={str(CacheConfig.parse(saved))!r}"
        except CacheTypeError:  # a per-layer description, not a spec
            hint = ""
        super().__init__(f"this state was saved with KV cache {saved}, but this session uses {session}{hint}")


@dataclass(frozen=True)
class LayerRows:
    """One layer of a saved KV cache: type names and bytes per cell."""

    k_type: str
    k_row_bytes: int
    v_type: str
    v_row_bytes: int

    def bytes_as(self, k: cachetypes.CacheType, v: cachetypes.CacheType) -> int:
        """Bytes per cell if the same values were stored as `k`/`v`."""
        return k.bytes_for(_values(self.k_type, self.k_row_bytes)) + v.bytes_for(_values(self.v_type, self.v_row_bytes))


def _values(type_name: str, row_bytes: int) -> int:
    t = cachetypes.get(type_name)
    return row_bytes // t.type_size * t.block_size


@dataclass(frozen=True)
class CacheBlock:
    """One saved KV cache (one stream): how many cells, and the layers' rows (empty if no cells)."""

    n_cells: int
    layers: tuple[LayerRows, ...]
    smooth_k: bool = False  # the keys are stored as k - mu, with mu saved before the cells


@dataclass(frozen=True)
class StateLayout:
    arch: str
    blocks: tuple[CacheBlock, ...]
    n_bytes: int  # bytes of the state itself (without a session file's header and tokens)

    @property
    def layer_types(self) -> list[tuple[str, str]]:
        """(K, V) type of every saved layer; Gemma-style models list full-attention layers first."""
        return [(r.k_type, r.v_type) for b in self.blocks for r in b.layers]

    @property
    def smooth_k(self) -> bool:
        """Whether the saved keys are smoothed (every cache of a context smooths, or none does)."""
        return any(b.smooth_k for b in self.blocks)

    @property
    def complete(self) -> bool:
        """Whether every cache held cells, so every layer's types are known."""
        return all(b.layers for b in self.blocks)

    def config(self) -> CacheConfig | None:
        """The CacheConfig that gives these layer types (order aside), if one does."""
        config = infer_config(self.layer_types) if self.complete and self.layer_types else None
        return replace(config, smooth_k=self.smooth_k) if config else None

    def describe(self) -> str:
        """The config spec when one fits, else the per-type layer counts."""
        config = self.config()
        if config is not None:
            return str(config)
        if not self.layer_types:
            return "an empty cache (no types recorded)"
        counts = Counter(self.layer_types)
        return ", ".join(f"{n} layer{'s' * (n > 1)} {k}/{v}" for (k, v), n in counts.items())

    def bytes_with(self, k: str = "f16", v: str = "f16") -> int:
        """Bytes of this state if the same cells were held in a `k`/`v` cache (the K and V rows
        are the only part that depends on the cache types)."""
        kt, vt = cachetypes.get(k), cachetypes.get(v)
        delta = sum(b.n_cells * (r.bytes_as(kt, vt) - r.k_row_bytes - r.v_row_bytes)
                    for b in self.blocks for r in b.layers)
        return self.n_bytes + delta


class Unreadable(Exception):
    """The bytes are not a state this reader understands (another memory kind, or damaged)."""


class Reader:
    def __init__(self, buf, offset: int = 0):
        self.buf, self.pos = buf, offset

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise Unreadable("truncated")
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return values[0] if len(values) == 1 else values

    def bytes(self, n: int):
        """The next n bytes (a slice of the buffer)."""
        if n < 0 or self.pos + n > len(self.buf):
            raise Unreadable("truncated")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        self.bytes(n)


def _type_name(type_id: int, ids: dict[int, str]) -> cachetypes.CacheType:
    name = ids.get(type_id)
    if name is None:
        raise Unreadable(f"unknown ggml type {type_id}")
    return cachetypes.get(name)


def _read_rows(r: Reader, n_cells: int, ids: dict[int, str]) -> tuple[LayerRows, ...]:
    v_trans, n_layer = r.take("<II")
    if v_trans not in (0, 1) or not 0 < n_layer < 4096:
        raise Unreadable("bad layer header")
    ks = []
    for _ in range(n_layer):
        k = _type_name(r.take("<i"), ids)
        row = r.take("<Q")
        if row == 0 or row % k.type_size:
            raise Unreadable("bad K row size")
        r.skip(n_cells * row)
        ks.append((k.name, row))
    vs = []
    # a layer without a V tensor (MLA) writes nothing here; then K and V no longer pair up
    for _ in range(n_layer):
        if r.pos >= len(r.buf):
            break
        v = _type_name(r.take("<i"), ids)
        if v_trans:
            el, n_embd = r.take("<II")
            if el != v.type_size or v.block_size != 1:
                raise Unreadable("bad transposed V header")
            row = el * n_embd
        else:
            row = r.take("<Q")
            if row == 0 or row % v.type_size:
                raise Unreadable("bad V row size")
        r.skip(n_cells * row)
        vs.append((v.name, row))
    if len(vs) != n_layer:
        raise Unreadable("K and V layers do not pair up")
    return tuple(LayerRows(k, kr, v, vr) for (k, kr), (v, vr) in zip(ks, vs))


def _read_cells(r: Reader, n_cells: int, ext: bool) -> None:
    for _ in range(n_cells):
        _pos, n_seq = r.take("<iI")
        if n_seq > 1 << 16:
            raise Unreadable("bad sequence count")
        r.skip((_CELL_EXT_BYTES if ext else 0) + 4 * n_seq)


def _read_caches(r: Reader, ext: bool, ids: dict[int, str]) -> tuple[CacheBlock, ...]:
    blocks = []
    while r.pos < len(r.buf):
        n_stream = r.take("<I")
        smooth_k = n_stream == smoothing.STATE_MAGIC  # a smoothed cache's mu comes first
        if smooth_k:
            n_layer = r.take("<I")
            if not 0 < n_layer < 4096:
                raise Unreadable("bad smoothing header")
            for _ in range(n_layer):
                r.skip(r.take("<I"))
            n_stream = r.take("<I")
        if not 0 < n_stream <= 256:
            raise Unreadable("bad stream count")
        streams = []
        for _ in range(n_stream):
            n_cells = r.take("<I")
            if n_cells == 0:
                streams.append(CacheBlock(0, ()))
                continue
            _read_cells(r, n_cells, ext)
            streams.append(CacheBlock(n_cells, _read_rows(r, n_cells, ids)))
        # streams of one cache share its layers; one block per cache keeps the layer list whole
        filled = [s for s in streams if s.layers]
        blocks.append(CacheBlock(sum(s.n_cells for s in streams), filled[0].layers if filled else (), smooth_k))
    return tuple(blocks)


def read_layout(buf, offset: int = 0) -> StateLayout | None:
    """The layout of a llama.cpp context state starting at `offset` of `buf` (bytes, memoryview
    or mmap), or None when it is not a KV-cache state this reader knows (e.g. a recurrent model's)."""
    ids = {v: k for k, v in typeids.ids().items()}
    try:
        r = Reader(buf, offset)
        n = r.take("<I")
        if n > 256:
            raise Unreadable("bad architecture name")
        start = r.pos
        r.skip(n)
        arch = bytes(buf[start:start + n]).decode()
        body = r.pos
    except (Unreadable, UnicodeDecodeError):
        return None
    # cells carry 12 more bytes on M-RoPE models; the variant that parses to the end is the one
    for ext in (False, True):
        r = Reader(buf, body)
        try:
            blocks = _read_caches(r, ext, ids)
        except Unreadable:
            continue
        return StateLayout(arch, blocks, len(buf) - offset)
    return None


@dataclass(frozen=True)
class SessionFile:
    path: Path
    tokens: list[int]
    layout: StateLayout | None
    n_bytes: int

    def bytes_with(self, k: str = "f16", v: str = "f16") -> int | None:
        """Size of the same session file with a `k`/`v` cache (None if the state is unreadable)."""
        return None if self.layout is None else self.n_bytes - self.layout.n_bytes + self.layout.bytes_with(k, v)


def read_file_layout(path: str | Path) -> SessionFile:
    """Header, tokens and state layout of a llama.cpp session file."""
    llama_cpp = llamacpp.load()  # the session file version this llama.cpp reads
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            if size < 12:
                raise StateError(f"{path} is not a llama.cpp session file (only {size} bytes)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                magic, version, n_tokens = struct.unpack_from("<III", mm, 0)
                if magic != SESSION_MAGIC:
                    raise StateError(f"{path} is not a llama.cpp session file (magic {magic:#010x})")
                if version != llama_cpp.LLAMA_SESSION_VERSION:
                    raise StateError(f"{path} is a session file of version {version}; this llama.cpp reads "
                                     f"version {llama_cpp.LLAMA_SESSION_VERSION}")
                start = 12 + 4 * n_tokens
                if start > size:
                    raise StateError(f"{path} is truncated: it declares {n_tokens} tokens but has {size} bytes")
                tokens = list(struct.unpack_from(f"<{n_tokens}i", mm, 12))
                layout = read_layout(mm, start)
    except OSError as exc:
        raise StateError(f"cannot read session file {path}: {exc}") from None
    return SessionFile(path, tokens, layout, size)


def infer_config(layer_types: list[tuple[str, str]]) -> CacheConfig | None:
    """The `K/V[:bN]` config whose layers have these types, in any order (an interleaved
    sliding-window model saves its two caches one after the other, so order cannot be used)."""
    kinds = Counter(layer_types)
    protected = (BOUNDARY_TYPE, BOUNDARY_TYPE)
    main = [kv for kv in kinds if kv != protected]
    try:
        if not main:
            return CacheConfig.of(*protected)
        if len(main) > 1:
            return None
        k, v = main[0]
        boundary, rest = divmod(kinds.get(protected, 0), 2)
        return None if rest else CacheConfig.of(k, v, boundary)
    except CacheTypeError:
        return None


def check_fits(layout: StateLayout, config: CacheConfig, info, declared: str | None = None) -> None:
    """Raise StateError unless a state with this layout loads into a session with `config` on
    the model `info` (a ggufinfo.ModelInfo). `declared` is the config recorded beside the state."""
    if layout.arch != info.arch:
        raise StateError(f"this state was saved from a {layout.arch} model; this session runs a {info.arch} model")
    if layout.smooth_k != config.smooth_k:
        # the saved keys are k - mu (or plain k): read the other way they are wrong, not just lossy
        saved = declared or layout.describe()
        if layout.smooth_k and SMOOTH_FLAG not in saved:
            saved += f" with key smoothing ({SMOOTH_FLAG})"
        raise StateConfigMismatch(saved, str(config))
    if declared is not None:
        try:
            same = CacheConfig.parse(declared).layer_types(info.n_layer) == config.layer_types(info.n_layer)
        except CacheTypeError:
            same = False
        if not same:
            raise StateConfigMismatch(declared, str(config))
    saved = Counter(layout.layer_types)
    if not saved:
        return  # an empty cache records no types; it loads into any config
    if layout.complete and sum(saved.values()) != info.n_layer:
        # a cache that shares or skips layers (or another model): llama.cpp's own per-layer check decides
        return
    k_types, v_types = config.layer_types(info.n_layer)
    expected = Counter((k.name, v.name) for k, v in zip(k_types, v_types))
    fits = saved == expected if layout.complete else not saved - expected
    if not fits:
        raise StateConfigMismatch(declared or layout.describe(), str(config))


