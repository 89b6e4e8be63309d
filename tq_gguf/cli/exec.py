"""`tq-gguf exec TOOL ARGS...`: run one of llama.cpp's own tools from our build, as llama.cpp
users run them (`-ctk q8_0 -ctv turbo3`, `--cache-type-v-layers ...`)."""

from __future__ import annotations

import os

import click

from ..nativebuild.builder import USER_TOOLS, user_tool_path


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False,
                                 "help_option_names": ["--help"]})
@click.argument("tool", metavar="TOOL")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def exec_(tool: str, args: tuple[str, ...]) -> None:
    """Run TOOL from the installed build with ARGS, exactly as llama.cpp's own tool.

    \b
    TOOL is one of: {tools}.
    Everything after TOOL goes to it unchanged, and its exit status is tq-gguf's.

    \b
    tq-gguf exec llama-cli -m model.gguf -ctk q8_0 -ctv turbo3 -fa on -p "Hello" -n 32 -st
    tq-gguf exec llama-server -m model.gguf -ctk q8_0 -ctv turbo3 -np 4 --metrics
    tq-gguf exec rpc-server --host 0.0.0.0 --port 50052
    """
    path = user_tool_path(tool)
    # The tool replaces this process: signals, the terminal and the exit status are its own.
    os.execv(path, [tool, *args])


exec_.help = exec_.help.replace("{tools}", ", ".join(USER_TOOLS))
