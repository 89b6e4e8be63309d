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
    sees the graph's tensors as they are computed."""

    def __init__(self, model_path: str | Path, cache_k: str = "f16", cache_v: str = "f16", n_ctx: int = 512,
                 n_threads: int = 2, cb_eval=None):
        from .session import resolve_cache_types  # checks the build, the types and the head sizes
        import llama_cpp

        self._ll = llama_cpp
        self.info = ggufinfo.read(model_path)
        k, v = resolve_cache_types(self.info, cache_k, cache_v)
        quiet_logs()
        llama_cpp.llama_backend_init()
        self.model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), llama_cpp.llama_model_default_params())
        if not self.model:
            raise RuntimeError(f"cannot load {model_path}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx
        params.n_threads = params.n_threads_batch = n_threads
        params.type_k, params.type_v = k.ggml_id, v.ggml_id
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        if cb_eval is not None:
            params.cb_eval = cb_eval
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise RuntimeError(f"cannot create a context with K {cache_k} / V {cache_v}")
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

    def drop_and_shift(self, n_drop: int, n_past: int) -> None:
        """Remove positions [0, n_drop) and move [n_drop, n_past) down by n_drop (a context shift)."""
        mem = self._ll.llama_get_memory(self.ctx)
        if not self._ll.llama_memory_seq_rm(mem, 0, 0, n_drop):
            raise RuntimeError("llama_memory_seq_rm failed")
        self._ll.llama_memory_seq_add(mem, 0, n_drop, n_past, -n_drop)

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
