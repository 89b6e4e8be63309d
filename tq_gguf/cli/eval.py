"""`tq-gguf eval` and `bench`: the quality and speed of cache configs on a model, measured with
llama.cpp's own tools. Loaded by tq_gguf.cli when used."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..errors import CacheTypeError, TqError
from ..gguf import models
from ..kv.cacheconfig import PRESETS, CacheConfig
from ..kv.plan import format_size


class ConfigList(click.ParamType):
    """Comma-separated cache configs: K/V, K/V:bN or preset names."""

    name = "SPECS"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        specs = [s for s in (part.strip() for part in value.split(",")) if s]
        if not specs:
            self.fail("no cache configs given", param, ctx)
        try:
            return [CacheConfig.parse(s) for s in specs]
        except CacheTypeError as exc:
            self.fail(str(exc), param, ctx)


class IntList(click.ParamType):
    """Comma-separated non-negative integers."""

    name = "N,N,..."

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            numbers = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if not numbers or min(numbers) < 0:
            self.fail(f"{value!r}: give one or more integers >= 0", param, ctx)
        return numbers


def _preset_names() -> str:
    return ",".join(PRESETS)


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2))


def _pm(value: float | None, err: float | None, digits: int) -> str:
    # `or 0.0` turns the -0.0 llama-perplexity prints for identical logits into 0.0
    return "–" if value is None else f"{value or 0.0:.{digits}f} ± {err:.{digits}f}"


def eval_lines(evaluation) -> list[str]:
    ev = evaluation
    head = (f"{Path(ev.model).name}: {ev.chunks} chunk{'s' * (ev.chunks != 1)} of {ev.n_ctx} tokens of {ev.text}; "
            f"scored against the f16/f16 cache's logits")
    rows = [("config", "preset", "bits/val", f"KV @ {ev.kv_ctx}", "PPL", "PPL/f16", "mean KLD", "top-1 %")]
    for s in (ev.base, *ev.scores):
        base = s is ev.base
        rows.append((
            s.config, "(base)" if base else s.preset or "", f"{s.bits_per_value:.2f}", format_size(s.kv_bytes),
            _pm(s.ppl, s.ppl_err, 3), "1" if base else _pm(s.ppl_ratio, s.ppl_ratio_err, 4),
            "0 (reference)" if base else _pm(s.kld, s.kld_err, 5), "–" if base else _pm(s.top1, s.top1_err, 2),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {2, 3}
    lines = [head, ""]
    for r in rows:
        cells = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        lines.append("  ".join(cells).rstrip())
    if ev.base_logits:
        lines += ["", f"f16 base logits: {format_size(ev.base_logits_bytes)} at {ev.base_logits} "
                      f"({'reused' if ev.base_reused else 'computed now'}; kept for runs with this model, text, "
                      f"--ctx and --chunks)"]
    return lines


@click.command("eval")
@click.argument("model", required=False)
@click.option("--configs", type=ConfigList(), default=_preset_names, show_default="every preset",
              help="cache configs to score, comma-separated: K/V (q8_0/turbo3), K/V:bN (first and last N "
                   "layers at q8_0) or preset names")
@click.option("--text", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="text file to evaluate on [default: git's release notes, which the models have not memorised]")
@click.option("--chunks", type=click.IntRange(min=1), default=8, show_default=True,
              help="chunks of --ctx tokens to score (fewer if the text is shorter)")
@click.option("--ctx", "n_ctx", type=click.IntRange(min=16), default=512, show_default=True,
              help="tokens per chunk; the second half of each is scored")
@click.option("--allow-beyond-train", is_flag=True, help="run a --ctx beyond the model's training context")
@click.option("--threads", "-t", type=click.IntRange(min=1), help="CPU threads [default: llama.cpp's]")
@click.option("--plot", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="also write a PNG of mean KLD against bits per value")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
def eval_(model: str | None, configs, text: Path | None, chunks: int, n_ctx: int, allow_beyond_train: bool,
          threads: int | None, plot: Path | None, as_json: bool) -> None:
    """Perplexity and KL divergence of cache configs against an f16 cache.

    llama-perplexity runs MODEL (a GGUF path or a model name; default: the default
    model) once with an f16/f16 KV cache, keeping its logits, then once per config
    on the same tokens. For each config: mean KL divergence from f16's next-token
    distribution, top-1 agreement (how often both pick the same most likely
    token), perplexity and its ratio to f16's, bits per stored value and the KV
    cache size at the model's training context. Flash attention is on.

    \b
    tq-gguf eval smollm2-135m --configs q8_0/q8_0,q8_0/turbo3,max --chunks 4 --plot kld.png
    """
    from ..analysis import evaluate  # deferred: heavy (numpy, gguf, llama_cpp); --help needs none

    path = models.resolve(model)
    configs = evaluate.checked(path, configs, n_ctx, allow_beyond_train)
    total = chunks * (1 + len(configs))
    with click.progressbar(length=total, label="f16/f16 (base)", file=sys.stderr,
                           show_pos=True) as bar:
        def progress(config: str, n: int) -> None:
            bar.label = config if config != str(evaluate.BASE) else "f16/f16 (base)"
            bar.update(n)

        result = evaluate.evaluate(path, configs, text=text, chunks=chunks, n_ctx=n_ctx, threads=threads,
                                   allow_beyond_train=allow_beyond_train, progress=progress)
    if plot:
        evaluate.plot(result, plot)
    if as_json:
        _echo_json(result.as_dict() | ({"plot": str(plot)} if plot else {}))
        return
    for line in eval_lines(result):
        click.echo(line)
    if plot:
        click.echo(f"\nplot: {plot}")


def bench_lines(result) -> list[str]:
    threads = (f"{result.threads} thread{'s' * (result.threads != 1)}" if result.threads
               else "llama-bench's default threads")
    rounds = (f", {result.rounds} rounds in turns (medians)" if result.rounds > 1 else "")
    lines = [f"{Path(result.model).name}: llama-bench, flash attention on, {threads}, {result.reps} repetition"
             f"{'s' * (result.reps != 1)}{rounds}; tokens/s (ratios to {' and '.join(result.baselines)} in this run)",
             ""]
    cols = result.columns
    rows = [("config", *(result.column_name(c) for c in cols))]
    for r in result.results:
        cells = []
        for c in cols:
            ratios = " ".join(f"{result.ratio(r.config, c, b):.2f}x" for b in result.baselines)
            cells.append(f"{r.speeds[c].tokens_per_s:.1f} ({ratios})")
        rows.append((r.config, *cells))
    lines += _table(rows)
    decode = [c for c in cols if c[0] == "tg"]
    if decode and result.copy_bytes_per_s:
        lines += ["", f"decode against memory bandwidth: a plain copy moved {result.copy_bytes_per_s / 1e9:.1f} GB/s "
                      f"in this run; per token, MB read (weights {result.weight_bytes / 1e6:.0f} MB + KV) and the "
                      f"share of the copy speed reached", ""]
        rows = [("config", *(result.column_name(c) for c in decode))]
        for r in result.results:
            rows.append((r.config, *(f"{result.read_per_token(r.config, c[1]) / 1e6:.0f} MB "
                                     f"{100 * result.bandwidth_share(r.config, c):.0f}%" for c in decode)))
        lines += _table(rows)
    return lines


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as aligned text: the first column left, the rest right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
            for row in rows]


BENCH_CONFIGS = "q8_0/q8_0,q8_0/turbo4,q8_0/turbo3,q8_0/turbo2"
# options of the speed benchmark alone, and of --memory alone: each mode refuses the other's
SPEED_ONLY = {"depths": "--depths", "n_prompt": "-p", "n_gen": "-n", "reps": "-r", "rounds": "--rounds"}
MEMORY_ONLY = {"lengths_text": "--lengths", "fill": "--fill", "allow_beyond_train": "--allow-beyond-train"}


@click.command()
@click.argument("model", required=False)
@click.option("--configs", "configs_text", metavar="SPECS",
              help=f"cache configs to time, comma-separated (K/V or presets without per-layer types); f16/f16 and "
                   f"q8_0/q8_0 always run first as the baselines [default: {BENCH_CONFIGS}; with --memory: "
                   f"f16/f16, q8_0/q4_0 and every preset, any config spec allowed, f16/f16 always first]")
@click.option("--depths", type=IntList(), default="0,4096,8192", show_default=True,
              help="context depths (tokens already in the cache) to time at")
@click.option("-p", "--n-prompt", type=click.IntRange(min=0), default=512, show_default=True,
              help="prompt tokens per prefill test (0: no prefill tests)")
@click.option("-n", "--n-gen", type=click.IntRange(min=0), default=64, show_default=True,
              help="tokens per decode test (0: no decode tests)")
@click.option("-r", "--reps", type=click.IntRange(min=1), default=2, show_default=True,
              help="repetitions per test")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True,
              help="run every config this many times, in turns, and report medians: on a shared machine a "
                   "slow spell then falls on all configs alike")
@click.option("--threads", "-t", type=click.IntRange(min=1),
              help="CPU threads [default: llama-bench's; with --memory: one per core]")
@click.option("--memory", is_flag=True,
              help="measure process memory instead of speed: each config at each --lengths in a fresh process; "
                   "llama.cpp's KV, compute and weight buffers to the byte, plan's KV figure, RSS after load and "
                   "peak RSS (docs/SPEED.md, \"Memory\")")
@click.option("--lengths", "lengths_text", metavar="N,N,...",
              help="with --memory: context lengths, 1024 or more [default: 4096,16384,32768]")
@click.option("--fill", metavar="state|prefill",
              help="with --memory: how the context is filled before its last 512-token ubatch: state (restore a "
                   "synthetic state, seconds) or prefill (evaluate the text, minutes at 32K) [default: state]")
@click.option("--allow-beyond-train", is_flag=True, help="with --memory: measure lengths beyond the model's training "
                                                         "context")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
def bench(model: str | None, configs_text: str | None, depths: list[int], n_prompt: int, n_gen: int, reps: int,
          rounds: int, threads: int | None, memory: bool, lengths_text: str | None, fill: str | None,
          allow_beyond_train: bool, as_json: bool) -> None:
    """Decode and prefill speed of cache configs, as ratios to f16 in the same run;
    with --memory, the memory a process uses with each.

    llama-bench times MODEL (a GGUF path or a model name; default: the default
    model) with f16/f16 and q8_0/q8_0 first, then each config: decode (tg, one token at a time)
    and prefill (pp, a prompt batch) at each depth. llama-bench has no per-layer
    cache types, so per-layer configs such as q8_0/turbo2:b2 are refused.

    With --memory, each config at each length runs in a fresh process that fills a
    context of that many tokens (flash attention on, 512-token ubatches), evaluates its
    last ubatch at full depth and decodes one token; the table gives llama.cpp's buffers,
    plan's KV figure, RSS after load and the peak RSS, against f16/f16 at the same length.

    \b
    tq-gguf bench smollm2-135m --configs q8_0/turbo3 --depths 0,4096 -r 3
    tq-gguf bench smollm2-135m --configs q8_0/turbo3 --depths 0 -p 0 --rounds 5
    tq-gguf bench smollm2-135m --memory --lengths 4096,8192 -t 2
    """
    ctx = click.get_current_context()
    given = {name for name in (*SPEED_ONLY, *MEMORY_ONLY)
             if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
    if memory:
        if given & set(SPEED_ONLY):
            raise TqError(f"{_options(SPEED_ONLY, given)} set the speed benchmark; bench --memory takes --lengths, "
                          f"--fill and --allow-beyond-train")
        _bench_memory(model, configs_text, lengths_text, fill, allow_beyond_train, threads, as_json)
        return
    if given & set(MEMORY_ONLY):
        raise TqError(f"{_options(MEMORY_ONLY, given)} set the memory benchmark; add --memory")
    params = {p.name: p for p in ctx.command.params}
    configs = ConfigList().convert(BENCH_CONFIGS if configs_text is None else configs_text,
                                 params["configs_text"], ctx)

    from ..analysis import bench as run_bench  # deferred: heavy (numpy, gguf, llama_cpp); --help needs none

    if n_prompt == 0 and n_gen == 0:
        raise click.UsageError("nothing to measure: -p and -n are both 0")
    path = models.resolve(model)

    def progress(result, speeds, done: int, total: int) -> None:
        # a long run (an hour at depth on a larger model) shows each config's figures as they come
        cells = ", ".join(f"{result.column_name(c)} {speeds.speeds[c].tokens_per_s:.1f}" for c in result.columns)
        click.echo(f"llama-bench {done}/{total} {speeds.config}: {cells} tok/s", err=True)

    result = run_bench.bench(path, configs, depths=depths, n_prompt=n_prompt, n_gen=n_gen, reps=reps,
                             rounds=rounds, threads=threads, progress=progress)
    if as_json:
        _echo_json(result.as_dict())
        return
    for line in bench_lines(result):
        click.echo(line)


def _options(options: dict[str, str], given: set[str]) -> str:
    return " and ".join(flag for name, flag in options.items() if name in given)


def _specs(text: str, what: str) -> list[str]:
    parts = [part.strip() for part in text.split(",")]
    if not all(parts):
        raise TqError(f"cannot read {what} {text!r}: give a comma-separated list without empty items")
    return parts


def _bench_memory(model: str | None, configs_text: str | None, lengths_text: str | None, fill: str | None,
                  allow_beyond_train: bool, threads: int | None, as_json: bool) -> None:
    """bench --memory: every refusal is one `error:` line (a TqError), before any process starts."""
    from ..analysis import memorybench  # deferred: heavy (numpy, gguf, llama_cpp); --help needs none

    configs = ([CacheConfig.parse(spec) for spec in _specs(configs_text, "--configs")] if configs_text is not None
               else memorybench.default_configs())
    lengths = list(memorybench.DEFAULT_LENGTHS)
    if lengths_text is not None:
        try:
            lengths = [int(part) for part in _specs(lengths_text, "--lengths")]
        except ValueError:
            raise TqError(f"cannot read --lengths {lengths_text!r}: give comma-separated whole numbers of "
                          f"tokens, e.g. 4096,16384") from None
    path = models.resolve(model)

    def progress(cell, done: int, total: int) -> None:
        click.echo(f"memory {done}/{total} {cell.config} @ {cell.length}: KV {format_size(cell.kv_bytes)}, "
                   f"peak RSS {format_size(cell.peak_rss_bytes)}, {cell.seconds:.0f} s", err=True)

    result = memorybench.bench_memory(path, configs, lengths, fill=fill or memorybench.DEFAULT_FILL,
                                      threads=threads or os.cpu_count() or 1,
                                      allow_beyond_train=allow_beyond_train, progress=progress)
    if as_json:
        _echo_json(result.as_dict())
        return
    for line in memory_lines(result):
        click.echo(line)


def _signed_size(n: int) -> str:
    return ("+" if n > 0 else "−" if n < 0 else "±") + format_size(abs(n))


def memory_lines(result) -> list[str]:
    fill = {"state": "the first cells restored from a synthetic state, peak reset after it",
            "prefill": "every token prefilled"}[result.fill]
    lines = [f"{Path(result.model).name}: memory per config and length, each in a fresh process; flash attention "
             f"on, 512-token ubatches, {result.threads} thread{'s' * (result.threads != 1)}; {fill}; then the last "
             f"ubatch at full depth and one decoded token", ""]
    rows = [("config", "length", "KV", "vs f16", "plan KV", "compute", "weights", "RSS loaded", "peak RSS",
             "peak − f16", "peak/f16", "other", "s")]
    for c in result.cells:
        base = result.base(c.length)
        rows.append((c.config + (f" ({c.preset})" if c.preset else ""), str(c.length), format_size(c.kv_bytes),
                     f"{c.kv_bytes / base.kv_bytes:.2f}x",
                     "same" if c.plan_kv_bytes == c.kv_bytes else format_size(c.plan_kv_bytes),
                     format_size(c.compute_bytes), format_size(c.weights_bytes), format_size(c.rss_loaded_bytes),
                     format_size(c.peak_rss_bytes),
                     "–" if c is base else _signed_size(c.peak_rss_bytes - base.peak_rss_bytes),
                     f"{c.peak_rss_bytes / base.peak_rss_bytes:.2f}x", format_size(c.beyond_bytes), f"{c.seconds:.0f}"))
    lines += _table(rows)
    lines += ["", "KV, compute and weights: llama.cpp's buffers to the byte (plan KV: `tq-gguf plan`'s figure, "
                  "'same' when equal; compute is reserved for the worst ubatch and only partly touched); peak RSS: "
                  "VmHWM; other: peak RSS less weights and KV (compute pages touched, the CPU backend's work "
                  "buffer, logits, Python, libraries); s: the cell's seconds, start to exit"]
    return lines
