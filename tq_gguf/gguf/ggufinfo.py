"""Read what the KV cache depends on from a GGUF file, refusing damaged files clearly.

`read(path)` returns a ModelInfo: the attention shape llama.cpp derives from the
metadata (layers, query and KV heads per layer, head sizes, which layers attend
through a sliding window and how wide it is), the file type and size, and the
`tq.cache` tag (written by tq_gguf.gguf.gguftag). It reads the header only (ggufheader).

The sliding-window layers are not stored in most GGUFs: llama.cpp decides them
per architecture (src/models/<arch>.cpp at the pinned commit); SWA_RULES
transcribes those rules, and architectures whose cache llama.cpp builds
differently are named in ModelInfo.kv_layout instead of being sized wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import gguf

from ..errors import ModelError
from ..kv import plan
from . import ggufheader

TQ_CACHE_KEY = "tq.cache"  # the recommended cache config spec, written by `tq-gguf tag`
LLAMA_FTYPE_GUESSED = 1024  # llama.cpp's flag for a file type it inferred rather than read


@dataclass(frozen=True)
class SwaRule:
    """How llama.cpp marks an architecture's sliding-window layers.

    Layer `il` uses the window when `il % pattern < pattern - 1` (the full-attention
    layer closes each group), or `il % pattern != 0` with `dense_first`. A
    `{arch}.attention.sliding_window_pattern` key overrides the pattern: an array
    flags each layer, an integer replaces `pattern`.
    """

    pattern: int
    dense_first: bool = False
    when: str = "window"  # "window": only if sliding_window > 0; "always"; "unless-zero": unless sliding_window == 0
    default_window: int | None = None  # the window when the file has no sliding_window key
    fixed_window: int | None = None  # llama.cpp replaces the file's window with this one
    chunked: bool = False  # chunked attention (llama4) rather than a sliding window; sized the same


SWA_RULES: dict[str, SwaRule] = {
    "gemma2": SwaRule(2, when="always", default_window=4096),
    "gemma3": SwaRule(6),
    "cohere2": SwaRule(4, when="always"),
    "olmo2": SwaRule(4),
    "gpt-oss": SwaRule(2, when="always"),
    "llama4": SwaRule(4, when="unless-zero", fixed_window=8192, chunked=True),
    "smallthinker": SwaRule(4, dense_first=True, fixed_window=4096),
    "plamo3": SwaRule(8),
    "afmoe": SwaRule(4),
    "mellum": SwaRule(4),
}

# llama.cpp reads a sliding window for these, then runs every layer with full attention.
SWA_IGNORED = {"phi3"}

# Caches llama.cpp builds in ways ModelInfo does not describe (shared or skipped layers,
# per-layer window rules not transcribed above, recurrent state, latent attention).
_OTHER_SWA = {"cohere2moe", "dflash", "dots3note", "exaone-moe", "exaone4", "granite_swa", "laguna", "maple",
              "mimo2", "muse-glimmer", "spark2_5", "step35"}
_SHARED_KV = {"gemma3n", "gemma4", "gemma4-assistant"}
_RECURRENT = {"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7", "jamba", "falcon-h1", "plamo2",
              "granitehybrid", "lfm2", "lfm2moe", "nemotron_h", "nemotron_h_moe", "qwen3next", "kimi-linear",
              "bailingmoe3", "kimi-k3", "glm5-next", "qwen35", "qwen35moe", "qwen4exp", "deepseek4", "minimax-01"}
_NO_CACHE = {"bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert", "jina-bert-v2", "jina-bert-v3",
             "eurobert", "gemma-embedding", "wavtokenizer-dec", "dream", "llada", "llada-moe", "rnd1"}
_SPARSE = {"minimax-m3", "glm-dsa", "deepseek32"}


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    arch: str
    name: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ctx_train: int
    sliding_window: int | None  # the file's {arch}.attention.sliding_window, as written
    n_tensors: int
    file_size: int
    tq_cache: str | None = None  # a cache config spec tagged into the file (`tq-gguf tag`)
    n_head_kv_layers: tuple[int, ...] = ()  # KV heads of every layer, when the file gives a per-layer array
    head_dim_k_swa: int | None = None  # head sizes of the sliding-window layers, when the file sets them
    head_dim_v_swa: int | None = None
    swa_layers: tuple[int, ...] = ()  # the layers llama.cpp runs with a sliding window
    swa_window: int = 0  # the window llama.cpp uses for them (its n_swa), in tokens
    swa_chunked: bool = False
    n_layer_nextn: int = 0  # trailing next-token-prediction layers, outside the main context's cache
    kv_layout: str | None = None  # why llama.cpp's cache for this model is not one K and V tensor per layer
    notes: tuple[str, ...] = ()  # what a reader of the metadata should know (rules applied, keys ignored)
    file_type: int | None = None  # general.file_type (gguf.LlamaFileType)
    gguf_version: int | None = None
    n_metadata: int = 0

    @property
    def file_type_name(self) -> str | None:
        """general.file_type as llama.cpp names it (MOSTLY_Q4_K_M -> Q4_K_M)."""
        file_type = self.file_type
        if file_type is None:
            return None
        guessed = bool(file_type & LLAMA_FTYPE_GUESSED)
        try:
            name = gguf.LlamaFileType(file_type & ~LLAMA_FTYPE_GUESSED).name
        except ValueError:
            return f"unknown ({file_type})"
        name = name.removeprefix("MOSTLY_").removeprefix("ALL_")
        return f"{name} (guessed)" if guessed else name

    @property
    def n_layer_kv(self) -> int:
        """Layers the main context caches K and V for."""
        return self.n_layer - self.n_layer_nextn

    def is_swa(self, il: int) -> bool:
        return il in self.swa_layers

    def head_kv(self, il: int) -> int:
        return self.n_head_kv_layers[il] if self.n_head_kv_layers else self.n_head_kv

    def head_dims(self, il: int) -> tuple[int, int]:
        """(K, V) head size of layer `il`."""
        if self.is_swa(il):
            return self.head_dim_k_swa or self.head_dim_k, self.head_dim_v_swa or self.head_dim_v
        return self.head_dim_k, self.head_dim_v

    def kv_widths(self, il: int) -> tuple[int, int]:
        """Values per cell that layer `il` stores for K and for V (llama.cpp's n_embd_k_gqa/n_embd_v_gqa)."""
        k, v = self.head_dims(il)
        return k * self.head_kv(il), v * self.head_kv(il)

    def kv_bytes(self, n_ctx: int, k_type, v_type, **params) -> int:
        """KV-cache bytes llama.cpp allocates for context `n_ctx` (k_type/v_type: CacheType)."""
        return self.kv_bytes_layers(n_ctx, [k_type] * self.n_layer, [v_type] * self.n_layer, **params)

    def kv_bytes_layers(self, n_ctx: int, k_types, v_types, **params) -> int:
        """KV-cache bytes llama.cpp allocates for context `n_ctx` with a K and V type per layer.

        Exact, padding included (tq_gguf.kv.plan); `params` are plan.ContextParams fields, by default
        what tq_gguf.Llama and llama-cpp-python pass: one sequence, full-size sliding-window caches."""
        return plan.kv_size(self, n_ctx, k_types, v_types, plan.ContextParams(**params)).total

    def kv_cell_bytes(self, k_types, v_types) -> int:
        """Bytes one cell holds over all cached layers (no padding): what each cached token costs."""
        total = 0
        for il in range(self.n_layer_kv):
            k_width, v_width = self.kv_widths(il)
            total += k_types[il].bytes_for(k_width) + v_types[il].bytes_for(v_width)
        return total


def read(path: str | Path) -> ModelInfo:
    """The model facts of a GGUF, from its header alone (ggufheader skips the vocabulary).
    Results are kept per file (path, size, modification time, inode), so the several
    reads of one command cost one."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        st = None
    if st is None or path.is_dir():
        return info_of(ggufheader.read_checked(path))
    return _read_cached(path, (st.st_size, st.st_mtime_ns, st.st_ino))


@lru_cache(maxsize=16)
def _read_cached(path: Path, stamp: tuple[int, int, int]) -> ModelInfo:
    return info_of(ggufheader.read_checked(path))


def info_of(header: ggufheader.Header) -> ModelInfo:
    """The ModelInfo of a header already read."""
    return _Metadata(header).info()


class _Metadata:
    """Typed access to a header's keys: a key of the wrong type is a ModelError naming it."""

    def __init__(self, header: ggufheader.Header):
        self.path = header.path
        self.header = header
        self.fields = header.fields

    def get(self, key: str, default: Any = None) -> Any:
        field = self.fields.get(key)
        if field is None:
            return default
        if field.skipped:
            raise ModelError(f"{self.path}: {key} holds {field.count} values, more than a model setting can")
        values = field.value if isinstance(field.value, list) else [field.value]
        if any(isinstance(v, bytes) for v in values):
            raise ModelError(f"{self.path} has an unreadable {key}: a string that is not UTF-8 text")
        return field.value

    def uint(self, key: str, default: int | None = None) -> int | None:
        if key not in self.fields:
            return default
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ModelError(f"{self.path}: {key} is {value!r}, expected a non-negative integer")
        return value

    def per_layer(self, key: str, n_layer: int, default: int) -> tuple[int, ...]:
        """A key llama.cpp reads with get_key_or_arr: one integer, or one per layer."""
        value = self.get(key, default)
        values = value if isinstance(value, list) else [value] * n_layer
        if len(values) != n_layer or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise ModelError(f"{self.path}: {key} is {value!r}, expected an integer or {n_layer} of them")
        return tuple(values)

    def info(self) -> ModelInfo:
        arch = self.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise ModelError(f"{self.path} has no general.architecture; not a model GGUF")
        n_layer = self.uint(f"{arch}.block_count")
        if not n_layer:
            raise ModelError(f"{self.path} has no {arch}.block_count; not a model GGUF llama.cpp can load")
        n_embd = self.uint(f"{arch}.embedding_length", 0)
        heads = self.per_layer(f"{arch}.attention.head_count", n_layer, 0)
        # llama.cpp: KV heads default to the query heads, and head sizes to n_embd / heads of layer 0
        heads_kv = self.per_layer(f"{arch}.attention.head_count_kv", n_layer, 0) \
            if self.get(f"{arch}.attention.head_count_kv") is not None else heads
        default_head = n_embd // heads[0] if heads[0] else 0
        head_k = self.uint(f"{arch}.attention.key_length", default_head)
        head_v = self.uint(f"{arch}.attention.value_length", default_head)
        window = self.uint(f"{arch}.attention.sliding_window")
        nextn = self.uint(f"{arch}.nextn_predict_layers", 0)
        if nextn > n_layer:
            raise ModelError(f"{self.path}: {arch}.nextn_predict_layers = {nextn} exceeds block_count = {n_layer}")
        swa_layers, swa_window, notes = self._swa(arch, n_layer - nextn, window)
        tq_cache = self.get(TQ_CACHE_KEY)
        if tq_cache is not None and not isinstance(tq_cache, str):
            raise ModelError(f"{self.path}: {TQ_CACHE_KEY} is {tq_cache!r}, expected a cache config string")
        uniform_kv = len(set(heads_kv)) == 1
        return ModelInfo(
            path=self.path, arch=arch, name=self.get("general.name", self.path.stem),
            n_layer=n_layer, n_embd=n_embd, n_head=max(heads), n_head_kv=max(heads_kv),
            head_dim_k=head_k, head_dim_v=head_v,
            n_ctx_train=self.uint(f"{arch}.context_length", 0), sliding_window=window,
            n_tensors=len(self.header.tensors), file_size=self.header.file_size, tq_cache=tq_cache,
            n_head_kv_layers=() if uniform_kv else heads_kv,
            head_dim_k_swa=self.uint(f"{arch}.attention.key_length_swa"),
            head_dim_v_swa=self.uint(f"{arch}.attention.value_length_swa"),
            swa_layers=swa_layers, swa_window=swa_window,
            swa_chunked=bool(swa_layers) and SWA_RULES[arch].chunked,
            n_layer_nextn=nextn, kv_layout=self._kv_layout(arch, heads), notes=notes,
            file_type=self.uint("general.file_type"), gguf_version=self.header.version,
            n_metadata=len(self.fields),
        )

    def _swa(self, arch: str, n_layer: int, window: int | None) -> tuple[tuple[int, ...], int, tuple[str, ...]]:
        """llama.cpp's sliding-window layers and window size for this file (SWA_RULES)."""
        rule = SWA_RULES.get(arch)
        if rule is None:
            if window and arch in SWA_IGNORED:
                return (), 0, (f"llama.cpp runs every {arch} layer with full attention "
                               f"and ignores {arch}.attention.sliding_window = {window}",)
            if window and arch not in _OTHER_SWA:
                return (), 0, (f"llama.cpp does not use {arch}.attention.sliding_window = {window} for {arch} models",)
            return (), 0, ()
        enabled = {"window": bool(window), "always": True, "unless-zero": window != 0}[rule.when]
        if not enabled:
            return (), 0, (f"llama.cpp's {arch} rule: no sliding-window layers without {arch}.attention.sliding_window > 0",)
        n_swa = rule.fixed_window or (window if window is not None else rule.default_window)
        if not n_swa:
            raise ModelError(f"{self.path} has no {arch}.attention.sliding_window, which llama.cpp requires for {arch}")
        key = f"{arch}.attention.sliding_window_pattern"
        pattern = self.get(key, rule.pattern)
        if isinstance(pattern, list):
            if len(pattern) < n_layer:
                raise ModelError(f"{self.path}: {key} has {len(pattern)} entries for {n_layer} layers")
            layers = tuple(il for il in range(n_layer) if pattern[il])
            how = f"{key} flags each layer"
        elif isinstance(pattern, int) and not isinstance(pattern, bool):
            if pattern == 0:
                layers = tuple(range(n_layer))
            elif rule.dense_first:
                layers = tuple(il for il in range(n_layer) if il % pattern != 0)
            else:
                layers = tuple(il for il in range(n_layer) if il % pattern < pattern - 1)
            which = "first" if rule.dense_first else "last"
            source = f"{key} = {pattern}" if key in self.fields else f"llama.cpp's {arch} pattern"
            how = f"{source}: the {which} layer of every {pattern} attends fully" if pattern else f"{source}: every layer"
        else:
            raise ModelError(f"{self.path}: {key} is {pattern!r}, expected an integer or one flag per layer")
        notes = [how]
        if window is None:
            notes.append(f"window {n_swa}: llama.cpp's {arch} default (the file has no {arch}.attention.sliding_window)")
        elif n_swa != window:
            notes.append(f"window {n_swa}: llama.cpp's fixed {arch} value, not the file's {window}")
        return layers, n_swa, tuple(notes)

    def _kv_layout(self, arch: str, heads: tuple[int, ...]) -> str | None:
        if arch in _NO_CACHE:
            return f"llama.cpp keeps no KV cache for {arch} models (non-causal attention)"
        if arch in _RECURRENT or any(k.startswith((f"{arch}.ssm.", f"{arch}.wkv.")) for k in self.fields):
            return f"{arch} models keep recurrent state beside (or instead of) a KV cache"
        if self.get(f"{arch}.attention.kv_lora_rank") is not None or arch in _SPARSE:
            return f"{arch} models cache a compressed latent (MLA) rather than per-head K and V"
        if arch in _SHARED_KV or self.get(f"{arch}.attention.shared_kv_layers") is not None:
            return f"{arch} models share KV layers between blocks"
        if arch in _OTHER_SWA:
            return f"llama.cpp chooses {arch}'s sliding-window layers by a rule tq-gguf does not transcribe"
        if not heads[0]:
            return f"{self.path} has no {arch}.attention.head_count; a model without attention heads has no KV cache"
        return None
