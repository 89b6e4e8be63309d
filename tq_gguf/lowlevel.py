"""A thin context over llama.cpp's C API for what the Llama class does not expose:
explicit KV-cache edits (remove and shift positions) and raw logits.

Used by tests and tools that check the cache itself, e.g. that a context shift
of a turbo K cache (dequantize, unrotate, RoPE, rotate, quantize) keeps the
model's predictions.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from . import ggufinfo
from .cacheconfig import CacheConfig


_QUIET = None


def quiet_logs() -> None:
    """Route llama.cpp's log lines nowhere (the Llama class does the same with verbose=False)."""
    global _QUIET
    import llama_cpp

    if _QUIET is None:
        _QUIET = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_QUIET, ctypes.c_void_p(0))


class Context:
    """One model and one context; `cb_eval` (a llama_cpp.ggml_backend_sched_eval_callback)
    sees the graph's tensors as they are computed.

    The cache is `cache_k`/`cache_v`, or `cache` (a preset, `K/V[:bN]` spec or CacheConfig),
    which takes precedence and may give layers different types. `info` saves reading the
    model's metadata again (seconds for a large vocabulary) when it is already at hand."""

    def __init__(self, model_path: str | Path, cache_k: str = "f16", cache_v: str = "f16", n_ctx: int = 512,
                 n_threads: int = 2, cb_eval=None, cache: str | CacheConfig | None = None,
                 info: ggufinfo.ModelInfo | None = None):
        from .session import resolve_config  # checks the build, the types and the head sizes
        import llama_cpp

        self._ll = llama_cpp
        self.info = info or ggufinfo.read(model_path)
        if cache is None:
            cache = CacheConfig.of(cache_k, cache_v)
        self.cache_config, _ = resolve_config(self.info, cache=cache, flash_attn=True)
        quiet_logs()
        llama_cpp.llama_backend_init()
        self.model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), llama_cpp.llama_model_default_params())
        if not self.model:
            raise RuntimeError(f"cannot load {model_path}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx
        params.n_threads = params.n_threads_batch = n_threads
        kwargs = self.cache_config.llama_kwargs(self.info.n_layer)
        params.type_k, params.type_v = kwargs["type_k"], kwargs["type_v"]
        if self.cache_config.mixed:
            # llama_init_from_model copies the per-layer arrays; they need only live until it returns
            self._type_k_layer = (ctypes.c_int * self.info.n_layer)(*kwargs["type_k_layer"])
            self._type_v_layer = (ctypes.c_int * self.info.n_layer)(*kwargs["type_v_layer"])
            params.type_k_layer, params.type_v_layer = self._type_k_layer, self._type_v_layer
            params.n_type_layer = self.info.n_layer
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        if cb_eval is not None:
            params.cb_eval = cb_eval
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise RuntimeError(f"cannot create a context with cache {self.cache_config}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        raw = text.encode()
        buf = (self._ll.llama_token * (len(raw) + 8))()
        n = self._ll.llama_tokenize(self.vocab, raw, len(raw), buf, len(buf), add_bos, False)
        return list(buf[:n])

    def decode(self, tokens: list[int]) -> np.ndarray:
        """Append tokens after the last cached position; returns the last token's logits."""
        arr = (self._ll.llama_token * len(tokens))(*tokens)
        if self._ll.llama_decode(self.ctx, self._ll.llama_batch_get_one(arr, len(tokens))) != 0:
            raise RuntimeError("llama_decode failed")
        ptr = self._ll.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)).copy()

    def decode_each(self, tokens: list[int]) -> np.ndarray:
        """Append tokens one at a time; the logits after each, one row per token."""
        return np.stack([self.decode([t]) for t in tokens])

    def remove(self, p0: int, p1: int) -> None:
        """Remove positions [p0, p1) of sequence 0; the rest keep their positions."""
        if not self._ll.llama_memory_seq_rm(self._ll.llama_get_memory(self.ctx), 0, p0, p1):
            raise RuntimeError("llama_memory_seq_rm failed")

    def clear(self) -> None:
        """Empty the cache, so the context can start over without being rebuilt."""
        self._ll.llama_memory_clear(self._ll.llama_get_memory(self.ctx), True)

    def shift(self, p0: int, p1: int, delta: int) -> None:
        """Move positions [p0, p1) by `delta`. llama.cpp applies the RoPE change at the next
        decode (for a turbo K cache: dequantize, unrotate, RoPE, rotate, quantize)."""
        mem = self._ll.llama_get_memory(self.ctx)
        if not self._ll.llama_memory_can_shift(mem):
            raise RuntimeError("this context's memory cannot shift positions")
        self._ll.llama_memory_seq_add(mem, 0, p0, p1, delta)

    def drop_and_shift(self, n_drop: int, n_past: int, n_keep: int = 0) -> None:
        """A context shift: keep positions [0, n_keep), remove the next `n_drop` and move
        [n_keep + n_drop, n_past) down by n_drop."""
        self.remove(n_keep, n_keep + n_drop)
        self.shift(n_keep + n_drop, n_past, -n_drop)

    def close(self) -> None:
        if getattr(self, "ctx", None):
            self._ll.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            self._ll.llama_model_free(self.model)
            self.model = None

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
