"""`tq-gguf run`: generation or a chat with chosen cache types, and what it cost."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

from ..errors import TqError
from ..gguf import models
from ..kv.cacheconfig import BOUNDARY_TYPE, CacheConfig
from ..kv.plan import format_size
from ..native import llamacpp
from .session import Llama

MIB = 1024 * 1024

Echo = Callable[..., None]  # click.echo's signature: echo(text, nl=...)


def describe(config: CacheConfig) -> str:
    """'K q8_0 / V turbo2, first and last 2 layers q8_0', 'K turbo4 / V turbo3, keys smoothed (preset max)'."""
    text = f"K {config.k.name} / V {config.v.name}"
    if config.mixed:
        text += f", first and last {config.boundary} layers {BOUNDARY_TYPE}"
    if config.smooth_k:
        text += ", keys smoothed"
    return text + (f" (preset {config.preset})" if config.preset else "")


@dataclass(frozen=True)
class RunStats:
    text: str
    cache_k: str
    cache_v: str
    config: str            # the whole cache config, as CacheConfig.parse reads it
    description: str       # describe(config)
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

    def as_dict(self) -> dict:
        """Plain data for JSON: a speed that was not measured is None, not NaN."""
        def rate(value: float) -> float | None:
            return None if math.isnan(value) else value

        return asdict(self) | {"prompt_tps": rate(self.prompt_tps), "generate_tps": rate(self.generate_tps)}

    def summary(self) -> str:
        prompt = f"{self.prompt_tps:.1f} tok/s" if self.prompt_seconds > 0 else "n/a"
        return (
            f"\n--\n{self.description}: "
            f"prompt {self.n_prompt} tokens at {prompt}, "
            f"generated {self.n_generated} tokens, decode {self.generate_tps:.1f} tok/s\n"
            f"KV cache {self.kv_bytes / MIB:.2f} MiB (f16 would take {self.kv_bytes_f16 / MIB:.2f} MiB, "
            f"{self.kv_bytes_f16 / self.kv_bytes:.2f}x smaller)"
        )


@dataclass(frozen=True)
class ChatStats:
    description: str
    turns: int
    n_tokens: int          # tokens of the conversation in the cache at the end
    n_ctx: int
    kv_bytes_used: int     # what the conversation's cells hold
    kv_bytes_allocated: int
    kv_bytes_f16_allocated: int

    def summary(self) -> str:
        ratio = self.kv_bytes_f16_allocated / self.kv_bytes_allocated
        return (
            f"\n--\n{self.description}: {self.turns} turn{'s' * (self.turns != 1)}, "
            f"{self.n_tokens} of {self.n_ctx} tokens in the cache\n"
            f"KV cache {format_size(self.kv_bytes_used)} in use of {format_size(self.kv_bytes_allocated)} "
            f"(f16 would take {format_size(self.kv_bytes_f16_allocated)}, {ratio:.2f}x smaller)"
        )


def open_session(model: str | None, *, cache: str | None = None, cache_k: str | None = None,
                 cache_v: str | None = None, n_ctx: int = 4096, seed: int = 0,
                 n_threads: int | None = None, rpc: list[str] | None = None, smooth_k: bool = False) -> Llama:
    """A session on MODEL (a name, a path, or None for the default model). Explicit K/V types win over
    `cache`; with neither, the model's tq.cache tag applies, else the default preset. `n_threads`, when
    given, serves both single-token decoding and prompt batches; `rpc` lists rpc-servers for the layers."""
    return Llama(models.resolve(model), cache=cache, cache_k=cache_k, cache_v=cache_v, n_ctx=n_ctx,
                 seed=seed, n_threads=n_threads, n_threads_batch=n_threads, rpc=rpc, smooth_k=smooth_k)



@contextmanager
def _fits_context(message: str) -> Iterator[None]:
    """llama-cpp-python refuses a prompt longer than the context with a ValueError: one line instead."""
    try:
        yield
    except ValueError as exc:
        if "context window" not in str(exc):
            raise
        raise TqError(message) from None

def complete(llm: Llama, prompt: str, *, n_predict: int, seed: int = 0, temp: float = 0.0,
             echo: Echo | None = None) -> RunStats:
    """Continue `prompt` by `n_predict` tokens; streams text through `echo(text, nl=False)` when given."""
    llama_cpp = llamacpp.load()
    pieces: list[str] = []
    with _fits_context(f"the prompt does not fit the {llm.n_ctx()}-token context; give a larger --ctx"):
        for chunk in llm.create_completion(prompt, max_tokens=n_predict, temperature=temp, seed=seed, stream=True):
            piece = chunk["choices"][0]["text"]
            if not piece:  # the closing chunk only carries finish_reason
                continue
            pieces.append(piece)
            if echo:
                echo(piece, nl=False)
    perf = llama_cpp.llama_perf_context(llm.ctx)
    return RunStats(
        text="".join(pieces), cache_k=llm.cache_k.name, cache_v=llm.cache_v.name, config=str(llm.cache_config),
        description=describe(llm.cache_config),
        n_prompt=perf.n_p_eval, n_generated=len(pieces), n_decoded=perf.n_eval,
        prompt_seconds=perf.t_p_eval_ms / 1000, generate_seconds=perf.t_eval_ms / 1000,
        kv_bytes=llm.kv_cache_bytes(), kv_bytes_f16=llm.kv_cache_bytes_f16(),
    )


def generate(model: str | None, *, prompt: str, n_predict: int, cache: str | None = None,
             cache_k: str | None = None, cache_v: str | None = None, n_ctx: int = 4096, seed: int = 0,
             temp: float = 0.0, n_threads: int | None = None, echo: Echo | None = None) -> RunStats:
    """Open a session on MODEL and continue `prompt` (see complete)."""
    llm = open_session(model, cache=cache, cache_k=cache_k, cache_v=cache_v, n_ctx=n_ctx, seed=seed,
                       n_threads=n_threads)
    return complete(llm, prompt, n_predict=n_predict, seed=seed, temp=temp, echo=echo)


EXIT_COMMANDS = ("/exit", "/quit")


def chat(llm: Llama, messages: Iterable[str], *, system: str | None = None, n_predict: int = 512,
         seed: int = 0, temp: float = 0.0, echo: Echo) -> ChatStats:
    """A conversation in the model's chat template: each of `messages` (e.g. lines read from stdin) is
    a user turn, answered by streaming through `echo`. Blank messages are skipped; /exit or /quit ends."""
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    turns = 0
    for message in messages:
        text = message.strip()
        if not text:
            continue
        if text in EXIT_COMMANDS:
            break
        history.append({"role": "user", "content": text})
        reply: list[str] = []
        with _fits_context(f"the conversation no longer fits the {llm.n_ctx()}-token context; "
                           f"start again with a larger --ctx"):
            for chunk in llm.create_chat_completion(history, max_tokens=n_predict, temperature=temp, seed=seed,
                                                    stream=True):
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    reply.append(piece)
                    echo(piece, nl=False)
        echo("")
        history.append({"role": "assistant", "content": "".join(reply)})
        turns += 1
    info = llm.cache_info()
    return ChatStats(description=describe(llm.cache_config), turns=turns, n_tokens=info.n_cells_used,
                     n_ctx=info.n_ctx, kv_bytes_used=info.bytes_used, kv_bytes_allocated=info.bytes_allocated,
                     kv_bytes_f16_allocated=info.bytes_f16_allocated)
