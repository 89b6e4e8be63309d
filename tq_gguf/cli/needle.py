"""`tq-gguf needle`: needle-in-a-haystack retrieval by context length and depth for cache configs.
Loaded by tq_gguf.cli when used."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..analysis import needle
from ..gguf import models
from ..kv.cacheconfig import CacheConfig

DEFAULT_CONFIGS = "f16/f16,lossless,quality,balanced,compact,q8_0/q4_0,q4_0/q4_0"
DEFAULT_DEPTHS = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1"
DEFAULT_TRIALS = 3
# Lengths by doubling from the first, up to the last or the model's training context.
DEFAULT_LENGTHS = (2048, 16384)
# --quick: what answers in a few minutes on 2 CPU cores for a small model.
QUICK = {"configs": "f16/f16,balanced", "lengths": "1024,2048", "depths": "0,0.5,1", "trials": 1}


def _numbers(value: str, what: str, kind: type) -> list:
    try:
        numbers = [kind(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise needle.NeedleError(f"--{what} {value!r} is not a comma-separated list of numbers") from None
    if not numbers:
        raise needle.NeedleError(f"--{what} is empty")
    return numbers


def default_lengths(n_ctx_train: int) -> list[int]:
    first, last = DEFAULT_LENGTHS
    top = min(last, n_ctx_train) if n_ctx_train else last
    lengths, n = [], first
    while n <= top:
        lengths.append(n)
        n *= 2
    return lengths or [top]


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _progress(p) -> None:
    """One line per finished cell (`p`: a tq_gguf.analysis.needlerun.Progress)."""
    r = p.row
    verdict = "found" if r["found"] else f"missed (answered {r['answer']!r})"
    how = "cached" if p.reused else f"{r['seconds']:.1f} s, {r['evaluated_tokens']} tokens evaluated"
    eta = "" if p.eta is None else f"; ETA {_duration(p.eta)}"
    click.echo(f"[{p.done}/{p.total}] {r['config']} length {r['length']} depth {r['depth']:g} trial {r['trial']}: "
               f"{verdict} ({how}; {_duration(p.elapsed)} running{eta})", err=True)


@click.command("needle")
@click.argument("model", required=False)
@click.option("--configs", metavar="SPECS", help=f"cache configs, comma-separated: presets, K/V or K/V:bN "
                                                 f"[default: {DEFAULT_CONFIGS}]")
@click.option("--lengths", metavar="N,N,...", help=f"context lengths in tokens (prompt and answer) "
                                                   f"[default: {DEFAULT_LENGTHS[0]} doubling up to "
                                                   f"{DEFAULT_LENGTHS[1]} or the model's training context]")
@click.option("--depths", metavar="D,D,...", help=f"needle depths, 0 (first) to 1 (just before the question) "
                                                  f"[default: {DEFAULT_DEPTHS}]")
@click.option("--trials", type=click.IntRange(min=1), help=f"needles per length and depth [default: {DEFAULT_TRIALS}]")
@click.option("--kind", type=click.Choice(needle.KINDS), default="passphrase", show_default=True,
              help="what the needle hides: a passphrase (amber-falcon-42) or a six-digit number")
@click.option("--text", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="haystack text file [default: git's release notes, which the models have not memorised]")
@click.option("--quick", is_flag=True,
              help=f"a few minutes on 2 cores: configs {QUICK['configs']}, lengths {QUICK['lengths']}, depths "
                   f"{QUICK['depths']}, 1 trial (options given explicitly still win)")
@click.option("--allow-beyond-train", is_flag=True, help="run lengths beyond the model's training context")
@click.option("--threads", "-t", type=click.IntRange(min=1), help="CPU threads [default: llama.cpp's]")
@click.option("--plot", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="also write a heatmap PNG: one panel per config, length by depth")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (a `results` row per trial)")
def needle_(model: str | None, configs: str | None, lengths: str | None, depths: str | None, trials: int | None,
            kind: str, text: Path | None, quick: bool, allow_beyond_train: bool, threads: int | None,
            plot: Path | None, as_json: bool) -> None:
    """Needle-in-a-haystack retrieval for cache configs, by context length and needle depth.

    Each cell hides a random secret in a sentence at the given depth of a long
    text (git's release notes by default), asks for it at the end, generates
    greedily through a tq_gguf.Llama session with that cache config (flash
    attention on for all, f16 included) and scores the answer by exact match
    (case and surrounding punctuation aside). Every config answers the same
    prompts. Finished cells are cached under the tq-gguf cache dir, so an
    interrupted sweep resumes; progress and an ETA go to stderr.

    \b
    tq-gguf needle smollm2-135m --quick
    tq-gguf needle smollm2-135m --configs f16/f16,balanced --lengths 2048,4096 --depths 0,0.5,1 --plot needle.png
    """
    from ..analysis import needlereport, needlerun  # deferred: heavy (numpy, gguf, llama_cpp); --help needs none
    from ..gguf import ggufinfo  # deferred: heavy (numpy, gguf, llama_cpp); --help needs none

    path = models.resolve(model)
    info = ggufinfo.read(path)
    if quick:
        configs = configs or QUICK["configs"]
        lengths = lengths or QUICK["lengths"]
        depths = depths or QUICK["depths"]
        trials = trials or QUICK["trials"]
    config_list = [CacheConfig.parse(s) for s in (configs or DEFAULT_CONFIGS).split(",") if s.strip()]
    length_list = _numbers(lengths, "lengths", int) if lengths else default_lengths(info.n_ctx_train)
    depth_list = _numbers(depths or DEFAULT_DEPTHS, "depths", float)
    result = needlerun.sweep(path, config_list, length_list, depth_list, trials=trials or DEFAULT_TRIALS,
                             kind=kind, text=text, threads=threads, allow_beyond_train=allow_beyond_train,
                             progress=_progress)
    if plot:
        needlereport.plot(result, plot)
    if as_json:
        click.echo(json.dumps(result.as_dict() | ({"plot": str(plot)} if plot else {}), indent=2))
        return
    for line in needlereport.table_lines(result):
        click.echo(line)
    click.echo(f"\n{result.computed} cells run in {_duration(result.seconds)}, {result.reused} read from "
               f"{result.cache_dir}")
    if plot:
        click.echo(f"plot: {plot}")
