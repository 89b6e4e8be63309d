"""Running a needle-in-a-haystack sweep through `tq_gguf.Llama` sessions, with a result cache.

Every (config, length, depth, trial) is one cell: a prompt from tq_gguf.analysis.needle,
greedy generation, an exact-match score. Finished cells are written one file each
under the tq-gguf cache dir, keyed by the model, the task and the native build, so
an interrupted sweep resumes where it stopped and a sweep that adds a config only
runs that config.

Within one config the cells run by length, then depth from 1 down to 0, then
trial. Each prompt then shares with the one before it the haystack up to the
needle, and llama-cpp-python's prefix matching keeps that part of the KV cache:
a depth-d cell evaluates only the (1 - d) of the haystack after its needle. This
is exact because attention is causal: the kept cells hold what a fresh session
would compute for those tokens (tests/model/test_needle.py compares the logits).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..gguf import ggufinfo
from ..kv.cacheconfig import CacheConfig
from ..native import ggml
from ..runtime.session import Llama
from . import needle, resultcache
from .evaltext import RELNOTES_DIR, git_release_notes

# Generation that is not prompt evaluation, in prompt tokens of work, for the ETA: one decode step
# costs about as much as this many tokens of a prompt batch on a CPU.
_DECODE_STEP_WORK = 8


@dataclass(frozen=True)
class Cell:
    config: CacheConfig
    length: int
    depth: float
    trial: int

    @property
    def secret_seed(self) -> str:
        # The config is left out on purpose: every config answers the same prompts.
        return f"{self.length} {self.depth:g} {self.trial}"


@dataclass
class Sweep:
    """What a sweep asked for and what it found; `results` has one row per cell (see docs/LONG_CONTEXT.md)."""

    model: str
    model_name: str
    n_ctx_train: int
    kind: str
    text: str
    text_sha256: str
    configs: list[str]
    lengths: list[int]
    depths: list[float]
    trials: int
    build: str
    cache_dir: str
    results: list[dict] = field(default_factory=list)
    reused: int = 0       # cells read from the cache
    computed: int = 0     # cells run now
    seconds: float = 0.0  # time spent running cells now

    def as_dict(self) -> dict:
        return asdict(self)

    def share(self, config: str, length: int, depth: float) -> tuple[int, int]:
        """(found, trials) of one heatmap cell."""
        rows = [r for r in self.results if r["config"] == config and r["length"] == length and r["depth"] == depth]
        return sum(r["found"] for r in rows), len(rows)


@dataclass(frozen=True)
class Progress:
    done: int          # cells finished, reused ones included
    total: int
    row: dict          # the cell just finished
    reused: bool
    elapsed: float     # seconds spent running cells so far
    eta: float | None  # seconds left, estimated from the work done so far; None before any cell ran


def load_text(text: Path | None) -> tuple[str, str]:
    """(text, where it came from): a file, or git's release notes, newest first."""
    if text is None:
        # All of them, not just what the longest length needs: the cache key hashes the text, and
        # it should not change with the lengths asked for.
        return git_release_notes(max_bytes=1 << 30), f"git release notes ({RELNOTES_DIR})"
    try:
        return text.read_text(errors="replace"), str(text)
    except OSError as exc:
        raise needle.NeedleError(f"cannot read {text}: {exc.strerror}") from None


def check(info: ggufinfo.ModelInfo, configs: Sequence[CacheConfig], lengths: Sequence[int],
          depths: Sequence[float], trials: int, kind: str, allow_beyond_train: bool) -> None:
    """Everything that can be refused before a model is loaded."""
    if kind not in needle.KINDS:
        raise needle.NeedleError(f"unknown needle kind {kind!r}; choose one of {', '.join(needle.KINDS)}")
    if not configs or not lengths or not depths or trials < 1:
        raise needle.NeedleError("give at least one config, length and depth, and one trial or more")
    for depth in depths:
        if not 0.0 <= depth <= 1.0:
            raise needle.NeedleError(f"depth {depth:g} is outside 0..1 (0: the needle first, 1: just before "
                                     f"the question)")
    for length in lengths:
        if length < 256:
            raise needle.NeedleError(f"length {length} is too short for a haystack; use 256 tokens or more")
    too_long = [n for n in lengths if info.n_ctx_train and n > info.n_ctx_train]
    if too_long and not allow_beyond_train:
        raise needle.NeedleError(
            f"length {max(too_long)} is beyond {info.path.name}'s training context ({info.n_ctx_train} tokens); "
            f"retrieval there says nothing about the cache; pass --allow-beyond-train to run it anyway")
    for config in configs:
        config.validate(info, flash_attn=True)


def cache_dir(path: Path, kind: str, text_sha256: str, build: str) -> Path:
    """Where this model's cells live for this task, text and build."""
    return resultcache.directory("needle", path, resultcache.key(
        "task", needle.TASK_VERSION, "kind", kind, "text", text_sha256, "answer", needle.ANSWER_TOKENS, "build", build))


def cell_file(root: Path, cell: Cell) -> Path:
    config = str(cell.config).replace("/", "_").replace(":", "_")
    return root / config / f"L{cell.length}-d{cell.depth:g}-t{cell.trial}.json"


def cells(configs: Sequence[CacheConfig], lengths: Sequence[int], depths: Sequence[float], trials: int) -> list[Cell]:
    """All cells in run order: per config, lengths up, depths down (prefix reuse), trials."""
    return [Cell(c, n, d, t) for c in configs for n in sorted(lengths)
            for d in sorted(depths, reverse=True) for t in range(trials)]


def _work(cell: Cell, previous: Cell | None) -> float:
    """Estimated prompt tokens `cell` evaluates after `previous` (the ETA's unit of work)."""
    shared = 0.0
    if previous and previous.config == cell.config and previous.length == cell.length:
        shared = min(previous.depth, cell.depth) * cell.length
    return cell.length - shared + _DECODE_STEP_WORK * needle.ANSWER_TOKENS


class _Runner:
    """One session per config, opened when its first uncached cell comes, and the haystack."""

    def __init__(self, path: Path, n_ctx: int, threads: int | None, text: str, source: str, kind: str):
        self.path, self.n_ctx, self.threads = path, n_ctx, threads
        self.text, self.source, self.kind = text, source, kind
        self.config: CacheConfig | None = None
        self.llm = None
        self.haystack: needle.Haystack | None = None

    def session(self, config: CacheConfig):
        if self.config != config:
            self.close()
            # Flash attention for every config, f16 included, so that only the cache type differs.
            self.llm = Llama(self.path, cache=config, n_ctx=self.n_ctx, flash_attn=True, seed=0,
                             **({"n_threads": self.threads, "n_threads_batch": self.threads} if self.threads else {}))
            self.config = config
            if self.haystack is None:
                # The tokenizer is the model's whatever the cache, so one haystack serves every config;
                # it tokenizes through whichever session is open (a closed one has no model left).
                self.haystack = needle.Haystack(
                    self.text, lambda s: self.llm.tokenize(s.encode(), add_bos=False, special=False),
                    prefix=self.llm.tokenize(b"", add_bos=True, special=False), source=self.source)
        return self.llm

    def run(self, cell: Cell) -> dict:
        llm = self.session(cell.config)
        secret = needle.make_secret(self.kind, cell.secret_seed)
        prompt = self.haystack.prompt(cell.length, cell.depth, self.kind, secret)
        kept = llm.longest_token_prefix(llm.input_ids[:llm.n_tokens].tolist(), prompt.tokens)
        start = time.perf_counter()
        out = llm.create_completion(prompt.tokens, max_tokens=needle.ANSWER_TOKENS, temperature=0.0,
                                    repeat_penalty=1.0, stop=["\n"])
        seconds = time.perf_counter() - start
        return needle.scored({
            "config": str(cell.config), "length": cell.length, "depth": cell.depth, "trial": cell.trial,
            # answer and found are the scorer's (set by needle.scored), kept here in the rows' key order
            "needle": secret, "answer": None, "found": None, "generated": out["choices"][0]["text"],
            "prompt_tokens": len(prompt.tokens), "needle_token": prompt.needle_at,
            "needle_depth": round(prompt.depth, 4),
            # at least one token is evaluated again even when the whole prompt is cached: its logits
            "evaluated_tokens": len(prompt.tokens) - min(kept, len(prompt.tokens) - 1),
            "seconds": round(seconds, 3),
        })

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None
            self.config = None


def sweep(path: Path, configs: Sequence[CacheConfig], lengths: Sequence[int], depths: Sequence[float], *,
          trials: int = 1, kind: str = "passphrase", text: Path | None = None, threads: int | None = None,
          allow_beyond_train: bool = False, progress: Callable[[Progress], None] | None = None) -> Sweep:
    """Run (or read from the cache) every cell; raises NeedleError/CacheTypeError before any work."""
    info = ggufinfo.read(path)
    configs = list(dict.fromkeys(configs))
    lengths = sorted(set(lengths))
    depths = sorted(set(depths))
    check(info, configs, lengths, depths, trials, kind, allow_beyond_train)
    body, source = load_text(text)
    text_sha = hashlib.sha256(body.encode()).hexdigest()
    build = ggml.build_id()
    root = cache_dir(path, kind, text_sha, build)
    result = Sweep(model=str(path), model_name=info.name or path.name, n_ctx_train=info.n_ctx_train, kind=kind,
                   text=source, text_sha256=text_sha, configs=[str(c) for c in configs], lengths=lengths,
                   depths=depths, trials=trials, build=build, cache_dir=str(root))

    todo = cells(configs, lengths, depths, trials)
    cached = {cell: resultcache.read_json(cell_file(root, cell)) for cell in todo}
    pending = [cell for cell in todo if cached[cell] is None]
    work = {cell: _work(cell, prev) for prev, cell in zip([None, *pending], pending)}
    work_left, work_done = sum(work.values()), 0.0

    runner = _Runner(path, max(lengths), threads, body, source, kind)
    rows: dict[Cell, dict] = {}
    try:
        for done, cell in enumerate(todo, 1):
            row = cached[cell] and needle.scored(cached[cell])
            if row is None:
                row = runner.run(cell)
                resultcache.write_json(cell_file(root, cell), row)
                result.computed += 1
                result.seconds += row["seconds"]
                work_done += work[cell]
                work_left -= work[cell]
            else:
                result.reused += 1
            rows[cell] = row
            if progress:
                eta = result.seconds / work_done * work_left if work_done else None
                progress(Progress(done=done, total=len(todo), row=row, reused=cached[cell] is not None,
                                  elapsed=result.seconds, eta=eta))
    finally:
        runner.close()
    # Report in reading order (config as given, then length, depth, trial ascending).
    result.results = [rows[c] for c in sorted(todo, key=lambda c: (configs.index(c.config), c.length, c.depth,
                                                                    c.trial))]
    return result
