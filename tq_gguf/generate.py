"""`tq-gguf run`: one generation with chosen cache types, and what it cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import models

MIB = 1024 * 1024


@dataclass(frozen=True)
class RunStats:
    text: str
    cache_k: str
    cache_v: str
    n_prompt: int          # tokens llama.cpp evaluated as the prompt batch
    n_generated: int       # tokens streamed back
    n_decoded: int         # single-token decode steps, what generate_tps counts
    prompt_seconds: float
    generate_seconds: float
    kv_bytes: int
    kv_bytes_f16: int

    @property
    def prompt_tps(self) -> float:
        return self.n_prompt / self.prompt_seconds if self.prompt_seconds > 0 else float("nan")

    @property
    def generate_tps(self) -> float:
        return self.n_decoded / self.generate_seconds if self.generate_seconds > 0 else float("nan")

    def summary(self) -> str:
        prompt = f"{self.prompt_tps:.1f} tok/s" if self.prompt_seconds > 0 else "n/a"
        return (
            f"\n--\nK {self.cache_k} / V {self.cache_v}: "
            f"prompt {self.n_prompt} tokens at {prompt}, "
            f"generated {self.n_generated} tokens, decode {self.generate_tps:.1f} tok/s\n"
            f"KV cache {self.kv_bytes / MIB:.2f} MiB (f16 would take {self.kv_bytes_f16 / MIB:.2f} MiB, "
            f"{self.kv_bytes_f16 / self.kv_bytes:.2f}x smaller)"
        )


def generate(model: str | None, *, cache_k: str, cache_v: str, prompt: str, n_predict: int, n_ctx: int = 4096,
             seed: int = 0, temp: float = 0.0, n_threads: int | None = None,
             echo: Callable[..., None] | None = None) -> RunStats:
    """Generate `n_predict` tokens; streams text through `echo(text, nl=False)` when given."""
    import llama_cpp

    from .session import Llama

    path = models.resolve(model)
    llm = Llama(path, cache_k=cache_k, cache_v=cache_v, n_ctx=n_ctx, seed=seed, n_threads=n_threads)
    pieces: list[str] = []
    for chunk in llm.create_completion(prompt, max_tokens=n_predict, temperature=temp, seed=seed, stream=True):
        piece = chunk["choices"][0]["text"]
        if not piece:  # the closing chunk only carries finish_reason
            continue
        pieces.append(piece)
        if echo:
            echo(piece, nl=False)
    perf = llama_cpp.llama_perf_context(llm.ctx)
    return RunStats(
        text="".join(pieces), cache_k=llm.cache_k.name, cache_v=llm.cache_v.name,
        n_prompt=perf.n_p_eval, n_generated=len(pieces), n_decoded=perf.n_eval,
        prompt_seconds=perf.t_p_eval_ms / 1000, generate_seconds=perf.t_eval_ms / 1000,
        kv_bytes=llm.kv_cache_bytes(), kv_bytes_f16=llm.kv_cache_bytes_f16(),
    )
