"""The `tq-gguf` command line: one module per command group, loaded only when it is used.

`tq-gguf build` runs before numpy, gguf and cffi are installed (see the Makefile), and
`--help` should answer at once, so the command modules import only click and the light
parts of the package at the top; each command imports its implementation when it runs,
on a line marked `# deferred:` (tests/unit/test_import_graph.py holds every module to that).
"""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import TqError

# command name -> (module in this package, attribute): the module is imported only when the
# command runs or its help is shown (`tq-gguf --help` loads them all for their one-line help).
COMMANDS = {
    "advise": ("advise", "advise"),
    "bench": ("eval", "bench"),
    "build": ("build", "build"),
    "eval": ("eval", "eval_"),
    "exec": ("exec", "exec_"),
    "info": ("info", "info"),
    "inspect": ("model", "inspect"),
    "models": ("models", "models"),
    "needle": ("needle", "needle_"),
    "plan": ("model", "plan"),
    "rpc-server": ("rpcserver", "rpc_server"),
    "run": ("run", "run"),
    "serve": ("serve", "serve"),
    "tag": ("model", "tag"),
    "verify": ("verify", "verify"),
}


class TqGroup(click.Group):
    """Loads a command's module on first use, and turns TqError into one `error: ...` line and
    exit status 1."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)

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
