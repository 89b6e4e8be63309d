"""Helpers shared by the test modules (import them: `from helpers import run_cli`)."""

from __future__ import annotations

import traceback

from click.testing import CliRunner, Result

from tq_gguf.cli import main


def run_cli(*args, input: str | None = None) -> Result:
    """`tq-gguf ARGS` in this process. An exception that escapes the CLI (which a user would see
    as a traceback) fails the calling test, with the traceback in the message."""
    result = CliRunner().invoke(main, [str(a) for a in args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("the CLI raised instead of reporting an error:\n"
                             + "".join(traceback.format_exception(*result.exc_info)))
    return result
