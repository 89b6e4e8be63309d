"""Read what the KV cache depends on from a GGUF file, refusing damaged files clearly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError

GGUF_MAGIC = b"GGUF"
TQ_CACHE_KEY = "tq.cache"  # the recommended cache config spec, written by `tq-gguf tag`


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
    sliding_window: int | None
    n_tensors: int
    file_size: int
    tq_cache: str | None = None  # a cache config spec tagged into the file (`tq-gguf tag`)

    def kv_bytes(self, n_ctx: int, k_type, v_type) -> int:
        """KV-cache bytes for `n_ctx` cells over all layers (k_type/v_type: CacheType)."""
        return self.kv_bytes_layers(n_ctx, [k_type] * self.n_layer, [v_type] * self.n_layer)

    def kv_bytes_layers(self, n_ctx: int, k_types, v_types) -> int:
        """KV-cache bytes for `n_ctx` cells with a K and V type per layer."""
        per_k = self.n_head_kv * self.head_dim_k
        per_v = self.n_head_kv * self.head_dim_v
        return n_ctx * sum(k.bytes_for(per_k) + v.bytes_for(per_v) for k, v in zip(k_types, v_types))


def read(path: str | Path) -> ModelInfo:
    from gguf import GGUFReader

    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # the reader fails in many ways on cut or corrupt headers
        raise ModelError(f"{path} is a corrupt or truncated GGUF: {exc}") from None
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > size:
        raise ModelError(f"{path} is a truncated GGUF: its tensors need {end} bytes but the file has {size}")

    def field(key: str, default=None):
        f = reader.get_field(key)
        return default if f is None else f.contents()

    arch = field("general.architecture")
    if arch is None:
        raise ModelError(f"{path} has no general.architecture; not a model GGUF")
    n_head = field(f"{arch}.attention.head_count", 0)
    n_embd = field(f"{arch}.embedding_length", 0)
    n_head = n_head if isinstance(n_head, int) else max(n_head)
    n_head_kv = field(f"{arch}.attention.head_count_kv", n_head)
    n_head_kv = n_head_kv if isinstance(n_head_kv, int) else max(n_head_kv)
    default_head = n_embd // n_head if n_head else 0
    return ModelInfo(
        path=path, arch=arch, name=field("general.name", path.stem),
        n_layer=field(f"{arch}.block_count", 0), n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv,
        head_dim_k=field(f"{arch}.attention.key_length", default_head),
        head_dim_v=field(f"{arch}.attention.value_length", default_head),
        n_ctx_train=field(f"{arch}.context_length", 0),
        sliding_window=field(f"{arch}.attention.sliding_window"),
        n_tensors=len(reader.tensors), file_size=size, tq_cache=field(TQ_CACHE_KEY),
    )
