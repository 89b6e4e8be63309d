"""The f16 base logits of `tq-gguf eval`, computed once per model, text, context and chunk count.

llama-perplexity's `--kl-divergence-base` file holds the f16 cache's log-probabilities
for every scored token (about 2 bytes per vocabulary entry per token: hundreds of MB
at 4096 tokens, GBs at 16K on a large vocabulary). Long windows make it the slowest
run of an evaluation, and every config is scored against the same file, so it is
kept under the tq-gguf cache dir and reused by later runs with other configs. Its
perplexity is kept beside it, since a reused base is not run again.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .. import atomicfile

from ..native import ggml
from . import resultcache


@dataclass(frozen=True)
class BaseLogits:
    path: Path        # the --kl-divergence-base file
    stats_path: Path  # {"ppl", "ppl_err", "chunks"} of the run that wrote it

    def stats(self) -> dict | None:
        """The stored base run's statistics, or None when there is no complete base yet."""
        stats = resultcache.read_json(self.stats_path)
        return stats if stats is not None and self.path.exists() else None

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @contextmanager
    def writing(self) -> Iterator[Path]:
        """A path for llama-perplexity to write the base to, moved into place when the block ends
        without error (and removed when it does not), so a failed or killed run, or a full disk,
        never leaves a partial base nor harms the one there; `keep_stats` follows."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomicfile.replacing(self.path) as written:
            yield written

    def keep_stats(self, stats: dict) -> None:
        """Record the base run's statistics: last, since a base without them is not reused."""
        resultcache.write_json(self.stats_path, stats)


def locate(model: Path, text_sha256: str, n_ctx: int, chunks: int) -> BaseLogits:
    # The build is part of the key: logits from other kernels are not this build's f16 reference.
    root = resultcache.directory("eval-base", model, resultcache.key(
        "text", text_sha256, "ctx", n_ctx, "chunks", chunks, "build", ggml.build_id()))
    return BaseLogits(path=root / "f16.kld", stats_path=root / "f16.json")
