"""`tq-gguf info`: versions, the installed build, its backends and cache types."""

from __future__ import annotations

import json

import click

from ..native.report import info_data, info_lines


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
def info(as_json: bool) -> None:
    """Versions, the patch series, compiled backends and supported cache types."""
    data = info_data()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for line in info_lines(data):
        click.echo(line)
