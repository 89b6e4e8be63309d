"""`Llama`: llama-cpp-python's Llama with the KV cache chosen by name.

    from tq_gguf import Llama
    llm = Llama("model.gguf", cache_k="q8_0", cache_v="turbo3")
    llm = Llama("model.gguf", cache="max")            # a preset
    llm = Llama("model.gguf", cache="q8_0/turbo2:b2")  # boundary layers at q8_0
    llm = Llama("model.gguf", cache="balanced", rpc=["10.0.0.2:50052", "10.0.0.3:50052"])

Checks happen before llama.cpp sees the model, so a bad choice is one clear
error instead of an assertion deep in ggml: unknown type, a head size the type
cannot split into blocks, a quantized V cache without flash attention, a type
the installed build lacks, a stale build. Type names become ggml enum values
read from the built library; flash attention follows from the types.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import CacheTypeError, LlamaCppError, ModelError, TqError
from ..gguf import ggufinfo
from ..kv import cachetypes
from ..kv.cacheconfig import CacheConfig, resolve
from ..kv.plan import padded_ctx
from ..native import llamacpp, llamalog, rpcdevices
from ..native.rpcwire import parse_endpoints
from . import state

# The recommended configuration: keys need precision (q8_0), values compress well
# (turbo3: within 2% of f16 perplexity on the three test models, docs/QUALITY.md).
DEFAULT_CACHE_K = "q8_0"
DEFAULT_CACHE_V = "turbo3"


def resolve_config(info: ggufinfo.ModelInfo, cache: str | CacheConfig | None = None, cache_k: str | None = None,
                   cache_v: str | None = None, flash_attn: bool | None = None,
                   smooth_k: bool = False) -> tuple[CacheConfig, bool]:
    """The validated config for this model and whether flash attention is on.

    Explicit `cache_k`/`cache_v` override `cache`; with neither, the model's `tq.cache` tag
    (written by `tq-gguf tag`) applies, else the default preset. `smooth_k` adds key smoothing."""
    tagged = None
    if info.tq_cache:
        try:
            tagged = CacheConfig.parse(info.tq_cache)
        except CacheTypeError as exc:
            raise CacheTypeError(f"{info.path} carries an unreadable {ggufinfo.TQ_CACHE_KEY} tag: {exc}") from None
    config = resolve(cache, cache_k, cache_v, default=tagged, smooth_k=smooth_k)
    wants_fa = any(ct.quantized for ct in config.types())
    if flash_attn is None:
        flash_attn = wants_fa
    config.validate(info, flash_attn=flash_attn)
    if not flash_attn and config.k.turbo:
        raise CacheTypeError(f"a {config.k.name} K cache needs flash attention; drop flash_attn=False")
    return config, flash_attn


@dataclass(frozen=True)
class CacheInfo:
    """What a session's KV cache holds and costs."""

    config: str
    preset: str | None
    k_type: str
    v_type: str
    boundary_layers: int
    bits_per_value_k: float
    bits_per_value_v: float
    n_ctx: int
    n_cells_used: int
    bytes_allocated: int
    bytes_used: int
    bytes_f16_allocated: int
    bytes_f16_used: int

    @property
    def ratio_to_f16(self) -> float:
        return self.bytes_f16_allocated / self.bytes_allocated

    def as_dict(self) -> dict:
        return asdict(self) | {"ratio_to_f16": self.ratio_to_f16}


def _refusal(model_path, message: str, reason: str) -> TqError:
    """The TqError for a ValueError llama-cpp-python raised while building a session."""
    why = f": {reason}" if reason else ""
    if message.startswith("Failed to load model"):
        return ModelError(f"llama.cpp cannot load {model_path}{why}")
    if message.startswith("Failed to create llama_context"):
        return LlamaCppError(f"llama.cpp cannot create a context for {model_path}{why}")
    return LlamaCppError(f"llama-cpp-python refused {model_path}: {message}{why}")


class Llama(llamacpp.load().Llama):  # type: ignore[misc]
    """A llama_cpp.Llama whose KV cache is given by name: `cache` (a preset or `K/V[:bN][:sk]` spec)
    and/or `cache_k`, `cache_v`; `smooth_k=True` is `:sk`, key smoothing. `rpc` ("host:port" of each rpc-server) places the model's layers,
    and their caches, on those servers (`tq-gguf rpc-server`), split by their free memory.
    Everything else is llama_cpp.Llama's API."""

    def __init__(self, model_path: str | Path, *, cache: str | CacheConfig | None = None,
                 cache_k: str | None = None, cache_v: str | None = None, n_ctx: int = 4096,
                 flash_attn: bool | None = None, rpc: list[str] | None = None, verbose: bool = False,
                 smooth_k: bool = False, **kwargs):
        for raw in ("type_k", "type_v", "type_k_layer", "type_v_layer", "devices"):
            if raw in kwargs:
                raise TypeError(f"tq_gguf.Llama takes cache types by name (cache=, cache_k=, cache_v=) and "
                                f"servers as rpc=, not {raw}=")
        self.model_info = ggufinfo.read(model_path)
        self.cache_config, flash_attn = resolve_config(self.model_info, cache, cache_k, cache_v, flash_attn, smooth_k)
        self.rpc_servers = list(rpc or [])
        if rpc:
            # every layer goes to the servers unless told otherwise (llama.cpp's tools do the same)
            kwargs = {"n_gpu_layers": -1, **kwargs,
                      "devices": rpcdevices.devices(parse_endpoints(rpc), self.cache_config.types())}
        # llama.cpp pads the context to whole cell blocks, but llama-cpp-python sizes its token
        # buffer from the n_ctx it was given: a prompt between the two would overflow the buffer
        # instead of being refused. Asking for the padded size keeps both the same.
        n_ctx = padded_ctx(n_ctx)
        # llama-cpp-python raises a bare ValueError when llama.cpp refuses the model or the
        # context; the reason is only in llama.cpp's log, which llamalog keeps.
        with llamalog.capture() as reason:
            try:
                super().__init__(
                    model_path=str(model_path), n_ctx=n_ctx, flash_attn=flash_attn, verbose=verbose,
                    **self.cache_config.llama_kwargs(self.model_info.n_layer), **kwargs,
                )
            except ValueError as exc:
                raise _refusal(model_path, str(exc), reason()) from None

    @property
    def cache_k(self) -> cachetypes.CacheType:
        return self.cache_config.k

    @property
    def cache_v(self) -> cachetypes.CacheType:
        return self.cache_config.v

    def close(self) -> None:
        # A session refused by our checks never reached llama_cpp's __init__; nothing to free.
        if hasattr(self, "_stack"):
            super().close()

    def __getstate__(self):
        state = super().__getstate__()
        # the cache spec says it all, smoothing included
        for raw in ("type_k", "type_v", "type_k_layer", "type_v_layer", "devices", "smooth_k"):
            state.pop(raw, None)
        # device addresses mean nothing in another process; the servers they came from do
        return state | {"cache": str(self.cache_config), "rpc": self.rpc_servers or None}

    # Saved state (tq_gguf.runtime.state). K and V rows are saved in the cache's own types, so a state
    # loads only into a session with the same cache config; anything else is refused by name
    # before llama.cpp (which empties the context first, then fails) touches the session.
    def save_state(self):
        """The session as a LlamaState that also records its cache config (tq_gguf.runtime.state.TqLlamaState)."""
        return state.capture(self)

    def load_state(self, saved) -> None:
        """Load a LlamaState; raises tq_gguf.gguf.statefile.StateError (StateConfigMismatch for other cache
        types, tq_gguf.gguf.stateorigin.StateOriginMismatch for another model, build or state format)."""
        state.restore(self, saved)

    def save_state_file(self, path: str | Path) -> int:
        """Write a llama.cpp session file (tokens and KV cache, as llama_state_save_file), and its fingerprint
        beside it as `<path>.tq.json` (tq_gguf.gguf.statesidecar); returns the session file's size."""
        return state.save_file(self, path)

    def load_state_file(self, path: str | Path) -> list[int]:
        """Load a llama.cpp session file after checking its cache types; returns the tokens it holds."""
        return state.load_file(self, path)

    def kv_cache_bytes(self) -> int:
        """Bytes of the K and V caches for the context this session allocated."""
        return self.cache_config.kv_bytes(self.model_info, self.n_ctx())

    def kv_cache_bytes_f16(self) -> int:
        return CacheConfig.of("f16", "f16").kv_bytes(self.model_info, self.n_ctx())

    def cache_info(self) -> CacheInfo:
        info, config = self.model_info, self.cache_config
        f16 = CacheConfig.of("f16", "f16")
        bpv_k, bpv_v = config.bits_per_value(info.n_layer)
        used = int(self.n_tokens)
        # allocation is padded (tq_gguf.kv.plan); what the tokens in the cache hold is per cell
        return CacheInfo(
            config=str(config), preset=config.preset, k_type=config.k.name, v_type=config.v.name,
            boundary_layers=config.boundary, bits_per_value_k=bpv_k, bits_per_value_v=bpv_v,
            n_ctx=self.n_ctx(), n_cells_used=used,
            bytes_allocated=config.kv_bytes(info, self.n_ctx()),
            bytes_used=used * info.kv_cell_bytes(*config.layer_types(info.n_layer)),
            bytes_f16_allocated=f16.kv_bytes(info, self.n_ctx()),
            bytes_f16_used=used * info.kv_cell_bytes(*f16.layer_types(info.n_layer)),
        )


__all__ = ["Llama", "CacheInfo", "resolve_config", "TqError"]
