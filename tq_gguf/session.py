"""`Llama`: llama-cpp-python's Llama with KV-cache types chosen by name.

    from tq_gguf import Llama
    llm = Llama("model.gguf", cache_k="q8_0", cache_v="turbo3")

Checks happen before llama.cpp sees the model, so a bad choice is one clear
error instead of an assertion deep in ggml: unknown type, a head size the type
cannot split into blocks, a type the installed build lacks, a stale build.
"""

from __future__ import annotations

from pathlib import Path

from . import cachetypes, ggml, ggufinfo
from .cachetypes import CacheType
from .errors import CacheTypeError

UNQUANTIZED = frozenset({"f32", "f16", "bf16"})

# The recommended configuration: keys need precision (q8_0), values compress well
# (turbo3: within 2% of f16 perplexity on the three test models, README "Quality").
DEFAULT_CACHE_K = "q8_0"
DEFAULT_CACHE_V = "turbo3"


def needs_flash_attn(v: CacheType) -> bool:
    """llama.cpp can only hold a quantized V cache with flash attention on."""
    return v.name not in UNQUANTIZED


def resolve_cache_types(info: ggufinfo.ModelInfo, cache_k: str, cache_v: str) -> tuple[CacheType, CacheType]:
    k, v = cachetypes.get(cache_k), cachetypes.get(cache_v)
    k.check_head_dim(info.head_dim_k, "K cache")
    v.check_head_dim(info.head_dim_v, "V cache")
    cachetypes.require_native(k)
    cachetypes.require_native(v)
    return k, v


def _llama_base():
    ggml.lib()  # a missing or stale native build fails here, with the fix in the message
    import llama_cpp

    return llama_cpp.Llama


class Llama(_llama_base()):  # type: ignore[misc]
    """A llama_cpp.Llama whose KV cache types are given by name (`cache_k`, `cache_v`)."""

    def __init__(self, model_path: str | Path, *, cache_k: str = DEFAULT_CACHE_K, cache_v: str = DEFAULT_CACHE_V,
                 n_ctx: int = 4096, flash_attn: bool | None = None, verbose: bool = False, **kwargs):
        self.model_info = ggufinfo.read(model_path)
        self.cache_k, self.cache_v = resolve_cache_types(self.model_info, cache_k, cache_v)
        if flash_attn is None:
            flash_attn = True
        if not flash_attn and needs_flash_attn(self.cache_v):
            raise CacheTypeError(f"a {self.cache_v.name} V cache needs flash attention; drop flash_attn=False")
        super().__init__(
            model_path=str(model_path), n_ctx=n_ctx, flash_attn=flash_attn,
            type_k=self.cache_k.ggml_id, type_v=self.cache_v.ggml_id, verbose=verbose, **kwargs,
        )

    def close(self) -> None:
        # A session refused by our checks never reached llama_cpp's __init__; nothing to free.
        if hasattr(self, "_stack"):
            super().close()

    def kv_cache_bytes(self) -> int:
        """Bytes of the K and V caches for the context this session allocated."""
        return self.model_info.kv_bytes(self.n_ctx(), self.cache_k, self.cache_v)

    def kv_cache_bytes_f16(self) -> int:
        f16 = cachetypes.get("f16")
        return self.model_info.kv_bytes(self.n_ctx(), f16, f16)
