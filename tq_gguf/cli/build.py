"""`tq-gguf build`: the patched llama.cpp, compiled and installed. It runs before numpy, gguf
and cffi are installed, so this module and the build itself need nothing but click."""

from __future__ import annotations

import json

import click

from ..nativebuild import backendstatus, builder


def _backend_epilog() -> str:
    # \b keeps click from rewrapping the table into one paragraph
    return "\b\nBackends, and how far their turbo kernels are proven:\n" + \
        "\n".join(f"  {line}" for line in backendstatus.lines())


@click.command(epilog=_backend_epilog())
@click.option("--backend", type=click.Choice(list(backendstatus.STATUS)), default="cpu", show_default=True,
              help="the ggml backend to compile the turbo kernels for (status below)")
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="parallel compile jobs [default: all cores]")
@click.option("--force", is_flag=True, help="rebuild even if a cached build matches")
@click.option("--json", "as_json", is_flag=True, help="progress on stderr, then one JSON object describing the build")
def build(backend: str, jobs: int | None, force: bool, as_json: bool) -> None:
    """Download, verify, patch and compile llama.cpp; install the patched llama_cpp."""
    result = builder.build(backend=backend, jobs=jobs, force=force,
                           echo=(lambda line: click.echo(line, err=True)) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps({"key": result.key, "backend": result.backend, "out_dir": str(result.out_dir),
                               "bin_dir": str(result.bin_dir), "reused": result.reused,
                               "timings": result.timings}, indent=2))
        return
    click.echo(f"tools: {result.bin_dir}")
