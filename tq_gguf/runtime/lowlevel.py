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

from ..errors import LlamaCppError, ModelError
from ..gguf import ggufinfo
from ..kv.cacheconfig import CacheConfig
from ..native import llamacpp, llamalog
from .session import resolve_config


def quiet_logs() -> None:
    """Print none of llama.cpp's log lines (the Llama class does the same with verbose=False)."""
    llamalog.silence()


def check_loads(model_path: str | Path) -> None:
    """ModelError with llama.cpp's reason unless it accepts the model's metadata and vocabulary
    (tensors are not read). For callers that hand the model to llama.cpp's tools, whose own
    account of a refusal can be lost (llamatool)."""
    llama_cpp = llamacpp.load()
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with llamalog.capture(quiet=True) as reason:
        model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), params)
    if not model:
        raise ModelError(_refusal(f"llama.cpp cannot load {model_path}", reason()))
    llama_cpp.llama_model_free(model)


class Context:
    """One model and one context; `cb_eval` (a llama_cpp.ggml_backend_sched_eval_callback)
    sees the graph's tensors as they are computed.

    The cache is `cache_k`/`cache_v`, or `cache` (a preset, `K/V[:bN]` spec or CacheConfig),
    which takes precedence and may give layers different types. `info` saves reading the
    model's metadata again when it is already at hand. `n_batch` (the most tokens one decode
    takes) defaults to `n_ctx`, `n_ubatch` to llama.cpp's 512.

    Everything llama.cpp refuses is a TqError: ModelError for a model it cannot load,
    LlamaCppError for a context or an operation, each with the reason it logged."""

    def __init__(self, model_path: str | Path, cache_k: str = "f16", cache_v: str = "f16", n_ctx: int = 512,
                 n_threads: int = 2, cb_eval=None, cache: str | CacheConfig | None = None,
                 info: ggufinfo.ModelInfo | None = None, flash_attn: bool = True, n_batch: int | None = None,
                 n_ubatch: int | None = None):
        llama_cpp = llamacpp.load()
        self._ll = llama_cpp
        self.info = info or ggufinfo.read(model_path)
        if cache is None:
            cache = CacheConfig.of(cache_k, cache_v)
        # the same checks as a Llama session: the build, the types and the head sizes
        self.cache_config, _ = resolve_config(self.info, cache=cache, flash_attn=flash_attn)
        quiet_logs()
        llama_cpp.llama_backend_init()
        with llamalog.capture() as reason:
            self.model = llama_cpp.llama_model_load_from_file(str(model_path).encode(),
                                                              llama_cpp.llama_model_default_params())
        if not self.model:
            raise ModelError(_refusal(f"llama.cpp cannot load {model_path}", reason()))
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch or n_ctx
        if n_ubatch:
            params.n_ubatch = n_ubatch
        params.n_threads = params.n_threads_batch = n_threads
        kwargs = self.cache_config.llama_kwargs(self.info.n_layer)
        params.type_k, params.type_v = kwargs["type_k"], kwargs["type_v"]
        if self.cache_config.mixed:
            # llama_init_from_model copies the per-layer arrays; they need only live until it returns
            self._type_k_layer = (ctypes.c_int * self.info.n_layer)(*kwargs["type_k_layer"])
            self._type_v_layer = (ctypes.c_int * self.info.n_layer)(*kwargs["type_v_layer"])
            params.type_k_layer, params.type_v_layer = self._type_k_layer, self._type_v_layer
            params.n_type_layer = self.info.n_layer
        params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                  else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        params.smooth_k = self.cache_config.smooth_k
        if cb_eval is not None:
            params.cb_eval = cb_eval
        with llamalog.capture() as reason:
            self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            self.model = None
            raise LlamaCppError(_refusal(f"llama.cpp cannot create a {n_ctx}-token context with cache "
                                         f"{self.cache_config} for {model_path}", reason()))
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
        with llamalog.capture() as reason:
            status = self._ll.llama_decode(self.ctx, self._ll.llama_batch_get_one(arr, len(tokens)))
        if status != 0:
            raise LlamaCppError(_refusal(f"llama.cpp could not decode {len(tokens)} tokens (status {status})",
                                         reason()))
        ptr = self._ll.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)).copy()

    def decode_each(self, tokens: list[int]) -> np.ndarray:
        """Append tokens one at a time; the logits after each, one row per token."""
        return np.stack([self.decode([t]) for t in tokens])

    def remove(self, p0: int, p1: int) -> None:
        """Remove positions [p0, p1) of sequence 0; the rest keep their positions."""
        if not self._ll.llama_memory_seq_rm(self._ll.llama_get_memory(self.ctx), 0, p0, p1):
            raise LlamaCppError(f"llama.cpp could not remove positions {p0}..{p1 - 1} from the cache")

    def clear(self) -> None:
        """Empty the cache, so the context can start over without being rebuilt."""
        self._ll.llama_memory_clear(self._ll.llama_get_memory(self.ctx), True)

    def shift(self, p0: int, p1: int, delta: int) -> None:
        """Move positions [p0, p1) by `delta`. llama.cpp applies the RoPE change at the next
        decode (for a turbo K cache: dequantize, unrotate, RoPE, rotate, quantize)."""
        mem = self._ll.llama_get_memory(self.ctx)
        if not self._ll.llama_memory_can_shift(mem):
            raise LlamaCppError("this context's memory cannot shift positions")
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


def _refusal(what: str, reason: str) -> str:
    return f"{what}: {reason}" if reason else what
