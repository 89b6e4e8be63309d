"""Quality of KV-cache configs: perplexity and KL divergence against an f16 cache.

llama-perplexity runs once with an f16/f16 cache and saves its logits
(`--kl-divergence-base`, kept for later runs by tq_gguf.analysis.evalbase); every config
is then run on the same tokens and scored against those logits
(`--kl-divergence`): mean KL divergence, how often the most likely token stays
the same (top-1 agreement), perplexity and its ratio to f16's.
Flash attention is on throughout, as a quantized V cache needs it. Mixed configs
(`K/V:bN`, presets such as `max`) reach the tool as per-layer type lists.

The default text is git's release notes (tq_gguf.analysis.evaltext).
"""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import TqError
from ..gguf import ggufinfo
from ..kv.cacheconfig import CacheConfig
from ..runtime import lowlevel
from . import evalbase, llamatool
from .evaltext import RELNOTES_DIR, git_release_notes

DEFAULT_CTX = 512
DEFAULT_CHUNKS = 8
BASE = CacheConfig.of("f16", "f16")
# Context at which KV sizes are reported when a model does not state its training context.
FALLBACK_KV_CTX = 4096
# Release notes run about 4 bytes per token; twice that leaves room for any tokenizer.
_TEXT_BYTES_PER_TOKEN = 8

# progress(config, n): n more chunks of `config` are done.
Progress = Callable[[str, int], None]

_NUM = r"([-\d.]+(?:e[-+]?\d+)?)"
_PM = r"\s*±\s*"


@dataclass(frozen=True)
class Score:
    """One config's result. KLD, top-1 and the PPL ratio are None for the base run itself."""

    config: str
    preset: str | None
    bits_per_value: float  # stored bits per K/V value, over all layers
    kv_bytes: int          # K and V caches at Evaluation.kv_ctx cells
    ppl: float
    ppl_err: float
    ppl_ratio: float | None = None      # PPL(config) / PPL(f16), paired per chunk
    ppl_ratio_err: float | None = None
    kld: float | None = None            # mean KL(f16 || config) per token, in nats
    kld_err: float | None = None
    top1: float | None = None           # % of tokens whose most likely next token is f16's
    top1_err: float | None = None


@dataclass
class Evaluation:
    model: str
    n_ctx: int
    chunks: int            # chunks actually evaluated (fewer than asked when the text is short)
    text: str              # where the text came from
    kv_ctx: int
    base: Score
    scores: list[Score] = field(default_factory=list)
    base_logits: str = ""        # the f16 logits file every config is scored against (tq_gguf.analysis.evalbase)
    base_logits_bytes: int = 0
    base_reused: bool = False    # read from an earlier run instead of computed now

    def as_dict(self) -> dict:
        return asdict(self)


def _missing(what: str, config: str, output: str) -> llamatool.ToolError:
    # llama-perplexity exits 0 after some errors (a text too short for one chunk); its error lines say why.
    reasons = llamatool.error_lines(output)
    return llamatool.ToolError(f"llama-perplexity printed no {what} for {config}"
                               + (": " + "; ".join(reasons) if reasons else ""))


def _search(pattern: str, output: str, what: str, config: str) -> re.Match:
    m = re.search(pattern, output)
    if not m:
        raise _missing(what, config, output)
    return m


def parse_base(output: str) -> tuple[float, float, int]:
    """(PPL, its error, chunks) from a --kl-divergence-base run."""
    ppl = _search(rf"Final estimate: PPL = {_NUM} \+/- {_NUM}", output, "perplexity", str(BASE))
    chunks = _search(r"over (\d+) chunks", output, "chunk count", str(BASE))
    return float(ppl[1]), float(ppl[2]), int(chunks[1])


# A --kl-divergence run's table row per chunk, with running values over the chunks so far:
# PPL, ln(PPL(Q)/PPL(base)), KLD, RMS of the change in the right token's probability, top-1 %.
_KLD_ROW = re.compile(rf"^\s*\d+\s+{_NUM}{_PM}{_NUM}\s+{_NUM}{_PM}{_NUM}\s+{_NUM}{_PM}{_NUM}\s+"
                      rf"{_NUM}{_PM}{_NUM}\s*%\s+{_NUM}{_PM}{_NUM}\s*%", re.MULTILINE)
# The summary after the table has more digits, but llama-perplexity prints it only for 2+ chunks.
_KLD_SUMMARY = {"ppl": r"Mean PPL\(Q\)\s*:", "ppl_ratio": r"Mean PPL\(Q\)/PPL\(base\)\s*:",
                "kld": r"Mean\s+KLD:", "top1": r"Same top p:"}


def parse_kld(output: str, config: str) -> dict[str, float]:
    """The statistics of a --kl-divergence run: the last chunk row, refined by the summary if any."""
    rows = _KLD_ROW.findall(output)
    if not rows:
        raise _missing("KL divergence results", config, output)
    ppl, ppl_err, ln_ratio, ln_ratio_err, kld, kld_err, _, _, top1, top1_err = map(float, rows[-1])
    ratio = math.exp(ln_ratio)
    out = {"ppl": ppl, "ppl_err": ppl_err, "ppl_ratio": ratio, "ppl_ratio_err": ratio * ln_ratio_err,
           "kld": kld, "kld_err": kld_err, "top1": top1, "top1_err": top1_err}
    for key, label in _KLD_SUMMARY.items():
        if m := re.search(rf"{label}\s*{_NUM}{_PM}{_NUM}", output):
            out[key], out[f"{key}_err"] = float(m[1]), float(m[2])
    return out


class _ChunkCounter:
    """Turns llama-perplexity's running output into a count of finished chunks.

    The base run prints `[1]37.2,[2]35.9,...`; a --kl-divergence run prints a table
    row per chunk starting with the chunk number."""

    _MARK = re.compile(r"\[(\d+)\]|^\s*(\d+)\s+[\d.]+\s+±", re.MULTILINE)

    def __init__(self, config: str, progress: Progress | None):
        self.config = config
        self.progress = progress
        self.done = 0

    def __call__(self, stdout: str) -> None:
        seen = max((int(a or b) for a, b in self._MARK.findall(stdout)), default=0)
        self._advance(seen)

    def finish(self, total: int) -> None:
        """Account for chunks a short text never had, so progress ends at its total."""
        self._advance(total)

    def _advance(self, done: int) -> None:
        if done > self.done and self.progress:
            self.progress(self.config, done - self.done)
        self.done = max(self.done, done)


def _size_score(config: CacheConfig, info: ggufinfo.ModelInfo, kv_ctx: int, **stats) -> Score:
    kv = config.kv_bytes(info, kv_ctx)
    return Score(config=str(config), preset=config.preset,
                 bits_per_value=16 * kv / BASE.kv_bytes(info, kv_ctx), kv_bytes=kv, **stats)


def checked(model_path: Path, configs: Sequence[CacheConfig], n_ctx: int = DEFAULT_CTX,
            allow_beyond_train: bool = False) -> list[CacheConfig]:
    """`configs` without repeats, each checked against the model; raises before anything runs."""
    if n_ctx < 16 or n_ctx % 2:
        raise TqError(f"context {n_ctx} does not split into two halves of 8+ tokens; "
                      f"llama-perplexity scores the second half of each chunk")
    info = ggufinfo.read(model_path)
    if info.n_ctx_train and n_ctx > info.n_ctx_train and not allow_beyond_train:
        # Past its training context a model's own quality collapses, which would drown the cache's share.
        raise TqError(f"context {n_ctx} is beyond {info.path.name}'s training context ({info.n_ctx_train} tokens); "
                      f"KL divergence there says little about the cache; pass --allow-beyond-train to run it anyway")
    unique = list(dict.fromkeys(configs))
    for config in unique:
        config.validate(info, flash_attn=True)
    lowlevel.check_loads(model_path)
    return unique


def evaluate(model_path: Path, configs: Sequence[CacheConfig], *, text: Path | None = None,
             chunks: int = DEFAULT_CHUNKS, n_ctx: int = DEFAULT_CTX, threads: int | None = None,
             allow_beyond_train: bool = False, progress: Progress | None = None) -> Evaluation:
    """Score `configs` against the f16/f16 cache on MODEL.

    `progress(config, n)` is called as n more chunks finish; a whole evaluation is
    `chunks * (1 + len(configs))` of them, the base run's first."""
    configs = checked(model_path, configs, n_ctx, allow_beyond_train)  # fails now, not after the base run
    info = ggufinfo.read(model_path)
    kv_ctx = info.n_ctx_train or FALLBACK_KV_CTX
    common = ["-m", str(model_path), "-c", str(n_ctx), "-fa", "on", *(["-t", str(threads)] if threads else [])]

    with tempfile.TemporaryDirectory(prefix="tq-eval-") as tmp:
        if text is None:
            text = Path(tmp) / "eval.txt"
            text.write_text(git_release_notes(max(chunks * n_ctx * _TEXT_BYTES_PER_TOKEN, 200_000)))
            source = f"git release notes ({RELNOTES_DIR})"
        else:
            source = str(text)
        base = evalbase.locate(model_path, hashlib.sha256(text.read_bytes()).hexdigest(), n_ctx, chunks)

        stats = base.stats()
        reused = stats is not None
        counter = _ChunkCounter(str(BASE), progress)
        if not reused:
            with base.writing() as written:
                out, err = llamatool.run("llama-perplexity", [
                    *common, *BASE.cli_args(info.n_layer), "-f", str(text), "--chunks", str(chunks),
                    "--kl-divergence-base", str(written)], counter)
                ppl, ppl_err, n_chunks = parse_base(out + err)
            base.keep_stats({"ppl": ppl, "ppl_err": ppl_err, "chunks": n_chunks})
            stats = base.stats()
        counter.finish(chunks)
        result = Evaluation(model=str(model_path), n_ctx=n_ctx, chunks=stats["chunks"], text=source, kv_ctx=kv_ctx,
                            base=_size_score(BASE, info, kv_ctx, ppl=stats["ppl"], ppl_err=stats["ppl_err"]),
                            base_logits=str(base.path), base_logits_bytes=base.size,
                            base_reused=reused)
        base_logits = base.path

        for config in configs:
            counter = _ChunkCounter(str(config), progress)
            out, err = llamatool.run("llama-perplexity", [
                *common, *config.cli_args(info.n_layer),
                "--kl-divergence-base", str(base_logits), "--kl-divergence"], counter)
            counter.finish(chunks)
            result.scores.append(_size_score(config, info, kv_ctx, **parse_kld(out + err, str(config))))
    return result


def plot(evaluation: Evaluation, path: Path) -> None:
    """KLD against bits per value as a PNG (tq_gguf.analysis.evalplot)."""
    from . import evalplot  # deferred: matplotlib takes seconds to import; only --plot needs it

    evalplot.draw(evaluation.scores, path, f"{Path(evaluation.model).name}: {evaluation.chunks} chunks of "
                  f"{evaluation.n_ctx} tokens, f16/f16 PPL {evaluation.base.ppl:.3f}")
