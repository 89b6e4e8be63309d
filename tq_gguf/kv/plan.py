"""Exact KV-cache sizes: the bytes llama.cpp allocates for a model, a cache config and a context.

llama.cpp at the pinned commit (src/llama-context.cpp, llama-kv-cache.cpp,
llama-kv-cache-iswa.cpp) sizes the cache in four steps:

1. the requested n_ctx is padded up to a multiple of 256 (llama.cpp reads 0 as
   the model's training context; plan() does too, kv_size() sizes 0 cells);
2. with P sequences in separate streams (kv_unified = false, the default of
   llama_context_default_params) every stream holds n_ctx_seq = pad256(n_ctx / P)
   cells and n_ctx becomes P · n_ctx_seq; a unified cache is one stream of n_ctx;
3. a model with sliding-window layers gets a second cache for them, of
   pad256(min(n_ctx_seq, n_swa · (P if unified else 1) + n_ubatch)) cells per
   stream, or as many as the first with swa_full. llama_context_default_params()
   sets swa_full = true, and llama-cpp-python and tq_gguf.Llama keep it;
   llama.cpp's own tools (llama-cli, llama-server) pass false;
4. each cached layer holds a K tensor [n_head_kv · head_k, cells, streams] and a V
   tensor likewise, each of its layer's type; a cache's buffer is the sum of its
   tensors, each padded to the buffer's alignment (32 bytes on the CPU backend);
   with key smoothing each layer also holds its mu, an f32 [head_k, n_head_kv]
   tensor shared by all streams.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace

from ..errors import CacheTypeError, ModelError
from .cacheconfig import MU_BYTES_PER_VALUE, PRESETS, CacheConfig
from .cachetypes import CACHE_TYPES, get

CELL_PAD = 256  # llama.cpp pads n_ctx, n_ctx_seq and the SWA cache to this many cells


def padded_ctx(n_ctx: int) -> int:
    """`n_ctx` rounded up to the whole cells llama.cpp allocates (0 stays 0: the model's own)."""
    return -(-n_ctx // CELL_PAD) * CELL_PAD
CPU_ALIGNMENT = 32  # ggml's TENSOR_ALIGNMENT, the CPU buffer type's alignment
MAX_SEQ = 256  # LLAMA_MAX_SEQ
N_CTX_MAX = 2**32 - CELL_PAD  # n_ctx is a uint32 that llama.cpp pads up to 256

# Mixed K/V configs worth comparing (docs/QUALITY.md's table), beside every uniform type and preset.
MIXED = ("f16/q8_0", "q8_0/q4_0", "q8_0/turbo4", "q8_0/turbo3", "q8_0/turbo2", "q8_0/tcq3", "q8_0/tcq2",
         "turbo4/turbo3")


@dataclass(frozen=True)
class ContextParams:
    """The llama.cpp context parameters that decide the KV cache's size.

    Defaults are what tq_gguf.Llama and llama-cpp-python pass; llama.cpp's tools
    differ in swa_full (false) and, for llama-server, kv_unified."""

    n_seq: int = 1  # n_seq_max: sequences decoded in parallel
    unified: bool = False  # kv_unified: one cell pool shared by all sequences
    swa_full: bool = True  # sliding-window layers get as many cells as the others
    n_ubatch: int = 512  # physical batch; the SWA cache keeps this many cells beyond the window
    flash_attn: bool = True  # without it V is stored transposed, at the widest layer's width
    alignment: int = CPU_ALIGNMENT
    smooth_k: bool = False  # key smoothing: each layer's buffer also holds its f32 mu

    def __post_init__(self):
        if not 1 <= self.n_seq <= MAX_SEQ:
            raise ModelError(f"the number of parallel sequences must be 1 to {MAX_SEQ}, got {self.n_seq}")
        if self.n_ubatch < 1:
            raise ModelError(f"n_ubatch must be at least 1, got {self.n_ubatch}")


@dataclass(frozen=True)
class CacheBuffer:
    """One llama_kv_cache: its layers, cells and the buffer llama.cpp allocates for it."""

    kind: str  # "full" or "sliding-window"
    layers: tuple[int, ...]
    cells: int  # per stream
    streams: int
    k_bytes: int
    v_bytes: int
    bytes: int  # the buffer: every tensor padded to the alignment


@dataclass(frozen=True)
class KvSize:
    n_ctx: int  # the context llama.cpp ends up with (llama_n_ctx)
    n_ctx_seq: int  # cells per sequence in the full-attention cache
    buffers: tuple[CacheBuffer, ...]

    @property
    def total(self) -> int:
        return sum(b.bytes for b in self.buffers)


def pad(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def context_cells(n_ctx: int, params: ContextParams) -> tuple[int, int]:
    """(llama_n_ctx, n_ctx_seq) for a requested context (0 cells for 0; llama.cpp's own
    "0 = the training context" is for callers to resolve)."""
    if n_ctx < 0 or n_ctx > N_CTX_MAX:
        raise ModelError(f"context size must be 0 to {N_CTX_MAX}, got {n_ctx}")
    n_ctx = pad(n_ctx, CELL_PAD)
    if params.unified:
        return n_ctx, n_ctx
    n_ctx_seq = pad(n_ctx // params.n_seq, CELL_PAD)
    if n_ctx and not n_ctx_seq:
        raise ModelError(f"a context of {n_ctx} cells leaves none for each of {params.n_seq} sequences")
    return n_ctx_seq * params.n_seq, n_ctx_seq


def kv_size(info, n_ctx: int, k_types, v_types, params: ContextParams = ContextParams()) -> KvSize:
    """The KV buffers llama.cpp allocates for `info` (a ggufinfo.ModelInfo) at requested context `n_ctx`,
    with K/V types per layer (cachetypes.CacheType)."""
    if info.kv_layout:
        raise ModelError(f"cannot size the KV cache of {info.path}: {info.kv_layout}")
    if len(k_types) != info.n_layer or len(v_types) != info.n_layer:
        raise CacheTypeError(f"need a K and a V type for each of the {info.n_layer} layers, "
                             f"got {len(k_types)} and {len(v_types)}")
    requested = n_ctx
    n_ctx, n_ctx_seq = context_cells(n_ctx, params)
    streams = 1 if params.unified else params.n_seq
    layers = range(info.n_layer_kv)
    groups = [("full", tuple(il for il in layers if not info.is_swa(il)), n_ctx_seq)]
    if info.swa_layers:
        # llama.cpp caps n_batch, and so n_ubatch, at the context requested (before padding)
        ubatch = min(params.n_ubatch, requested)
        window = info.swa_window * (params.n_seq if params.unified else 1) + ubatch
        cells = n_ctx_seq if params.swa_full else pad(min(n_ctx_seq, window), CELL_PAD)
        groups.append(("sliding-window", tuple(il for il in layers if info.is_swa(il)), cells))
    v_width_max = max(info.kv_widths(il)[1] for il in range(info.n_layer))
    buffers = []
    for kind, members, cells in groups:
        k_bytes = v_bytes = buffer = 0
        for il in members:
            k_width, v_width = info.kv_widths(il)
            if not params.flash_attn:
                v_width = v_width_max  # the transposed V cache is as wide as the widest layer
            k = _tensor_bytes(k_types[il], k_width, il, "K") * cells * streams
            v = _tensor_bytes(v_types[il], v_width, il, "V") * cells * streams
            mu = k_width * MU_BYTES_PER_VALUE if params.smooth_k else 0  # one mu for all streams
            k_bytes, v_bytes = k_bytes + k + mu, v_bytes + v
            buffer += pad(k, params.alignment) + pad(v, params.alignment) + pad(mu, params.alignment)
        buffers.append(CacheBuffer(kind, members, cells, streams, k_bytes, v_bytes, buffer))
    return KvSize(n_ctx, n_ctx_seq, tuple(buffers))


def _tensor_bytes(ct, width: int, il: int, which: str) -> int:
    """Bytes of one cell of a layer's K or V (ggml_row_size); ggml cannot split a row into partial blocks."""
    if width % ct.block_size:
        raise CacheTypeError(f"{which} cache type {ct.name} stores blocks of {ct.block_size} values, "
                             f"but layer {il} has {width} {which} values per cell")
    return ct.bytes_for(width)


def kv_bytes(info, n_ctx: int, k_types, v_types, params: ContextParams = ContextParams()) -> int:
    return kv_size(info, n_ctx, k_types, v_types, params).total


def max_context(info, k_types, v_types, budget: int, params: ContextParams = ContextParams()) -> int:
    """The largest n_ctx whose cache fits in `budget` bytes (0: not even the smallest does).

    The size never shrinks as n_ctx grows, so a bisection finds the exact edge."""
    def fits(n: int) -> bool:
        return kv_bytes(info, n, k_types, v_types, params) <= budget

    if not fits(1):
        return 0
    lo, hi = 1, N_CTX_MAX
    if fits(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


@dataclass(frozen=True)
class PlanRow:
    config: str
    kind: str  # "uniform", "mixed" or "preset"
    preset: str | None
    bits_k: float | None
    bits_v: float | None
    bytes: int | None  # None when the config cannot hold this model
    max_ctx: int | None  # the largest context fitting the budget (None without a budget)
    problem: str | None = None


@dataclass(frozen=True)
class Plan:
    n_ctx: int  # as requested (the training context for 0)
    size_f16: KvSize
    params: ContextParams
    budget: int | None
    rows: tuple[PlanRow, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return {
            "n_ctx_requested": self.n_ctx, "n_ctx": self.size_f16.n_ctx, "n_ctx_seq": self.size_f16.n_ctx_seq,
            "params": asdict(self.params), "budget": self.budget,
            "caches": [{"kind": b.kind, "layers": list(b.layers), "cells": b.cells, "streams": b.streams}
                       for b in self.size_f16.buffers],
            "rows": [asdict(r) for r in self.rows],
        }


def candidate_configs() -> list[tuple[str, str]]:
    """(spec, kind) for every uniform type (a value-only type has no uniform config: it is V only),
    the common mixed configs and every preset, each config once."""
    out: dict[CacheConfig, tuple[str, str]] = {}
    for name, ct in CACHE_TYPES.items():
        if not ct.value_only:
            out.setdefault(CacheConfig.of(name, name), (f"{name}/{name}", "uniform"))
    for spec in MIXED:
        out.setdefault(CacheConfig.parse(spec), (spec, "mixed"))
    for preset in PRESETS.values():
        out.setdefault(preset.config, (str(preset.config), "preset"))
    return list(out.values())


def plan(info, n_ctx: int, budget: int | None = None, params: ContextParams = ContextParams(),
         configs: list[str] | None = None) -> Plan:
    """KV bytes of each config at `n_ctx`, and the largest context each fits into `budget`."""
    if not n_ctx:
        n_ctx = info.n_ctx_train  # llama.cpp's n_ctx = 0
        if not n_ctx:
            raise ModelError(f"{info.path} states no training context; give a context size")
    f16 = get("f16")
    size_f16 = kv_size(info, n_ctx, [f16] * info.n_layer, [f16] * info.n_layer, params)
    specs = [(spec, "given") for spec in configs] if configs else candidate_configs()
    rows = []
    for spec, kind in specs:
        config = CacheConfig.parse(spec)
        config_params = replace(params, smooth_k=config.smooth_k)
        try:
            config.validate(info, flash_attn=params.flash_attn, native=False)
            k_types, v_types = config.layer_types(info.n_layer)
            size = kv_bytes(info, n_ctx, k_types, v_types, config_params)
        except CacheTypeError as exc:
            rows.append(PlanRow(str(config), kind, config.preset, None, None, None, None, str(exc)))
            continue
        bits_k, bits_v = config.bits_per_value(info.n_layer)
        fit = max_context(info, k_types, v_types, budget, config_params) if budget is not None else None
        rows.append(PlanRow(str(config), kind, config.preset, bits_k, bits_v, size, fit))
    return Plan(n_ctx, size_f16, params, budget, tuple(rows))


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'8GiB', '512 MiB', '1.5GB', '4g' (binary), '1000000' (bytes) -> bytes."""
    m = _SIZE.match(text)
    unit = m and _UNITS.get(m[2].lower())
    if not m or unit is None:
        raise ValueError(f"cannot read size {text!r}: write a number and a unit, e.g. 8GiB, 512MiB or 1.5GB")
    value = int(float(m[1]) * unit)
    if value <= 0:
        raise ValueError(f"size {text!r} is not positive")
    return value


def format_size(n: int) -> str:
    """Bytes for people: '512 B', '47.8 MiB', '8.0 GiB'."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if round(value, 1) < 1024 or unit == "PiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
