"""`CacheConfig`: which KV-cache type every layer's K and V use.

One object serves the CLI, `Llama`, GGUF metadata (`tq.cache`) and the advisor.
A config is written as a spec string:

    q8_0/turbo3          K type / V type, every layer
    q8_0/turbo2:b2       the same, but the first and last 2 layers keep q8_0/q8_0
    turbo4/turbo4:sk     key smoothing: the K cache stores k - mu (any K type can take it)
    q8_0/turbo3:b2:sk    both flags, in this order
    balanced             a preset name (PRESETS)

Boundary layers are protected because the first and last layers of a model are
the ones whose K/V errors cost the most (docs/QUALITY.md has the measurements).
Key smoothing subtracts mu, one fixed per-layer, per-KV-head mean of the first keys
written into the empty cache; attention is unchanged because q.mu moves every score
of a query alike, and the keys left to quantize are small (docs/FORMAT.md, "Key smoothing").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from types import ModuleType

from ..errors import CacheTypeError
from . import cachetypes
from .cachetypes import CacheType

# The protected type of boundary layers, for both K and V.
BOUNDARY_TYPE = "q8_0"

_SPEC = re.compile(r"^(?P<k>[\w.]+)/(?P<v>[\w.]+)(?::b(?P<boundary>\d+))?(?P<smooth>:sk)?$")
SMOOTH_FLAG = ":sk"
# mu is one f32 per K value of a cell, per layer (llama.cpp's cache_k_mu_l* tensors)
MU_BYTES_PER_VALUE = 4


@dataclass(frozen=True)
class CacheConfig:
    k: CacheType
    v: CacheType
    boundary: int = 0  # the first and last `boundary` layers use BOUNDARY_TYPE for K and V
    smooth_k: bool = False  # the K cache stores k - mu

    @classmethod
    def of(cls, k: str, v: str, boundary: int = 0, smooth_k: bool = False) -> "CacheConfig":
        if boundary < 0:
            raise CacheTypeError(f"boundary layer count must be >= 0, got {boundary}")
        k_type = cachetypes.get(k)
        if k_type.value_only:
            raise CacheTypeError(
                f"{k_type.name} is a value type (no dot product with a query): use it for V, "
                f"e.g. q8_0/{k_type.name}; K types are {', '.join(n for n, t in cachetypes.CACHE_TYPES.items() if not t.value_only)}"
            )
        return cls(k_type, cachetypes.get(v), boundary, smooth_k)

    @classmethod
    def parse(cls, spec: str) -> "CacheConfig":
        """A preset name, `K/V`, `K/V:bN`, and either with `:sk` after it."""
        spec = spec.strip().lower()
        if spec in PRESETS:
            return PRESETS[spec].config
        preset, _, flag = spec.rpartition(SMOOTH_FLAG)
        if preset in PRESETS and not flag:
            return replace(PRESETS[preset].config, smooth_k=True)
        return cls._of_spec(spec)

    @classmethod
    def _of_spec(cls, spec: str) -> "CacheConfig":
        """`K/V[:bN][:sk]` alone (the presets are written in it)."""
        m = _SPEC.match(spec)
        if not m:
            raise CacheTypeError(
                f"cannot read cache config {spec!r}: write K/V (e.g. q8_0/turbo3), K/V:bN to keep the first "
                f"and last N layers at {BOUNDARY_TYPE}, either with {SMOOTH_FLAG} for key smoothing, "
                f"or a preset ({', '.join(PRESETS)})"
            )
        return cls.of(m["k"], m["v"], int(m["boundary"] or 0), bool(m["smooth"]))

    def __str__(self) -> str:
        base = f"{self.k.name}/{self.v.name}"
        if self.boundary:
            base += f":b{self.boundary}"
        return base + SMOOTH_FLAG if self.smooth_k else base

    @property
    def preset(self) -> str | None:
        """The preset this config is, if any."""
        return next((name for name, p in PRESETS.items() if p.config == self), None)

    @property
    def mixed(self) -> bool:
        """Whether layers differ in type (llama.cpp then needs per-layer types)."""
        protected = cachetypes.get(BOUNDARY_TYPE)
        return self.boundary > 0 and (self.k, self.v) != (protected, protected)

    def layer_types(self, n_layer: int) -> tuple[list[CacheType], list[CacheType]]:
        """K and V type of every layer."""
        protected = cachetypes.get(BOUNDARY_TYPE)
        k = [self.k] * n_layer
        v = [self.v] * n_layer
        for il in range(n_layer):
            if il < self.boundary or il >= n_layer - self.boundary:
                k[il] = v[il] = protected
        return k, v

    def types(self) -> set[CacheType]:
        used = {self.k, self.v}
        if self.boundary:
            used.add(cachetypes.get(BOUNDARY_TYPE))
        return used

    def needs_flash_attn(self) -> bool:
        """llama.cpp can hold a quantized V cache only with flash attention on."""
        return self.v.quantized or (self.boundary > 0 and cachetypes.get(BOUNDARY_TYPE).quantized)

    def validate(self, info, flash_attn: bool = True, native: bool = True) -> None:
        """Raise CacheTypeError for anything the model (a ggufinfo.ModelInfo) or build cannot do."""
        k_types, v_types = self.layer_types(info.n_layer)
        for ct in set(k_types):
            ct.check_head_dim(info.head_dim_k, "K cache")
        for ct in set(v_types):
            ct.check_head_dim(info.head_dim_v, "V cache")
        if self.boundary and 2 * self.boundary >= info.n_layer:
            raise CacheTypeError(
                f"{self} protects the first and last {self.boundary} layers, "
                f"which leaves none of the model's {info.n_layer} layers to compress"
            )
        if not flash_attn and any(ct.quantized for ct in v_types):
            raise CacheTypeError(
                f"a quantized V cache ({self}) needs flash attention; turn flash attention on or use an f16 V cache"
            )
        if native:
            typeids = _typeids()
            for ct in self.types():
                typeids.require(ct)

    def kv_bytes(self, info, n_ctx: int) -> int:
        """Bytes of the K and V caches at `n_ctx` cells, smoothing's mu included (see ModelInfo.kv_bytes_layers)."""
        k_types, v_types = self.layer_types(info.n_layer)
        return info.kv_bytes_layers(n_ctx, k_types, v_types, smooth_k=self.smooth_k)

    def bits_per_value(self, n_layer: int) -> tuple[float, float]:
        """Mean bits per stored value of K and of V over the layers."""
        k_types, v_types = self.layer_types(n_layer)
        return (sum(t.bits_per_value for t in k_types) / n_layer,
                sum(t.bits_per_value for t in v_types) / n_layer)

    def llama_kwargs(self, n_layer: int) -> dict:
        """Keyword arguments for llama_cpp.Llama: type_k/type_v, plus per-layer lists when mixed."""
        ggml_id = _typeids().ggml_id
        kwargs = {"type_k": ggml_id(self.k), "type_v": ggml_id(self.v)}
        if self.smooth_k:
            kwargs["smooth_k"] = True
        if self.mixed:
            k_types, v_types = self.layer_types(n_layer)
            kwargs["type_k_layer"] = [ggml_id(t) for t in k_types]
            kwargs["type_v_layer"] = [ggml_id(t) for t in v_types]
        return kwargs

    def cli_args(self, n_layer: int) -> list[str]:
        """Arguments for llama.cpp's tools (llama-perplexity, llama-completion)."""
        args = ["-ctk", self.k.name, "-ctv", self.v.name]
        if self.smooth_k:
            args.append("-sk")
        if self.mixed:
            k_types, v_types = self.layer_types(n_layer)
            args += ["-ctkl", ",".join(t.name for t in k_types), "-ctvl", ",".join(t.name for t in v_types)]
        return args


@dataclass(frozen=True)
class Preset:
    config: CacheConfig
    summary: str


def _preset(spec: str, summary: str) -> Preset:
    return Preset(CacheConfig._of_spec(spec), summary)


# Measured in docs/QUALITY.md ("Presets"): with smoothed keys, 4-bit turbo keys hold on all three
# test models (Qwen2.5's collapse under compressed keys came from a constant key offset that
# smoothing takes out), so the two smallest presets compress keys too; at 3 bits the
# trellis-coded tcq3 values beat turbo3's on all three (8-18% less KL divergence), so the
# presets with 3-bit values take tcq3.
PRESETS: dict[str, Preset] = {
    "lossless": _preset("q8_0/q8_0", "q8_0 keys and values: indistinguishable from f16, half its size"),
    "quality": _preset("q8_0/turbo4", "q8_0 keys, 4-bit turbo values"),
    "balanced": _preset("q8_0/tcq3", "q8_0 keys, 3-bit trellis-coded values: the default for turbo use"),
    "compact": _preset("turbo4/turbo4:sk", "smoothed 4-bit turbo keys, 4-bit turbo values: 28% less than balanced"),
    "max": _preset("turbo4/tcq3:sk", "smoothed 4-bit turbo keys, 3-bit trellis-coded values: the smallest preset"),
}

DEFAULT_PRESET = "balanced"


def resolve(cache: str | CacheConfig | None = None, cache_k: str | None = None, cache_v: str | None = None,
            default: CacheConfig | None = None, smooth_k: bool = False) -> CacheConfig:
    """The config a user asked for: `cache` (spec, preset or CacheConfig), then explicit K/V types
    overriding its sides; with neither, `default` (e.g. a GGUF's tq.cache tag) or the default preset.
    `smooth_k` turns key smoothing on (it never turns off a `:sk` the spec asked for)."""
    if isinstance(cache, CacheConfig):
        base = cache
    elif cache:
        base = CacheConfig.parse(cache)
    else:
        base = default or PRESETS[DEFAULT_PRESET].config
    if cache_k is not None or cache_v is not None:
        base = CacheConfig.of(cache_k or base.k.name, cache_v or base.v.name, base.boundary, base.smooth_k)
    return replace(base, smooth_k=True) if smooth_k else base


def _typeids() -> ModuleType:
    """The installed build's type ids (tq_gguf.native.typeids), for the two methods that need them."""
    from ..native import typeids  # deferred: cffi and numpy; the CLI's option help reads this module without them

    return typeids
