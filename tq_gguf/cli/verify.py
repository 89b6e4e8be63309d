"""`tq-gguf verify`: the turbo and tcq kernels of every compiled backend against the NumPy reference
(tq_gguf.analysis.verify). Loaded by tq_gguf.cli when used."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..kv.cachetypes import TQ_TYPES


@click.command()
@click.option("--type", "types", multiple=True, type=click.Choice(TQ_TYPES),
              help="check only these types (repeatable) [default: every turbo and tcq type]")
@click.option("--rows", "rows_path", type=click.Path(dir_okay=False, path_type=Path),
              help="an .npz of real K/V rows (rows x width, width a multiple of 64) "
                   "[default: tests/data/kv_rows.npz when present]")
@click.option("--random-only", is_flag=True, help="random rows and edge cases only, no real K/V rows")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
def verify(types: tuple[str, ...], rows_path: Path | None, random_only: bool, as_json: bool) -> None:
    """Check every compiled backend's turbo and tcq kernels against the NumPy reference.

    A table of backend (and kernel variant: generic C, AVX2, AVX-512, the default
    dispatch; ggml-base's reference C) x type x check. quantize and dequantize must
    match the reference bit for bit; dot and attention must stay within the
    tolerance derived from docs/FORMAT.md's dot-product bound. Inputs: random rows,
    the format's edge cases and real K/V rows. Exits 1 if any check fails.
    """
    from ..analysis import verify as harness  # deferred: heavy (numpy, gguf, llama_cpp); --help needs none

    if rows_path is not None and random_only:
        raise click.UsageError("--rows and --random-only exclude each other")
    if rows_path is not None and not rows_path.exists():
        raise harness.VerifyError(f"K/V rows file {rows_path} does not exist")
    report = harness.run(tuple(types) or harness.QTYPES, None if random_only else rows_path or harness.KV_ROWS)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.table_lines():
            click.echo(line)
    if not report.ok:
        raise harness.VerifyError(f"{len(report.failures)} of {len(report.results)} checks failed")
