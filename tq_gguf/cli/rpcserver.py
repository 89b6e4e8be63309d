"""`tq-gguf rpc-server`: ggml's RPC server from our build, holding model layers and turbo caches
for clients on other hosts (`tq-gguf run/serve --rpc`, `Llama(..., rpc=[...])`)."""

from __future__ import annotations

import os

import click

from ..nativebuild.builder import USER_TOOLS, user_tool_path
from ..runtime.ports import check_port


@click.command()
@click.option("--host", "-H", default="127.0.0.1", show_default=True,
              help="address to listen on; the protocol has no authentication, so only on a trusted network")
@click.option("--port", "-p", default=50052, show_default=True, type=click.IntRange(1, 65535),
              help="port to listen on")
@click.option("--threads", "-t", type=click.IntRange(min=1), help="CPU threads [default: half the cores]")
def rpc_server(host: str, port: int, threads: int | None) -> None:
    """Serve this machine's CPU to llama.cpp clients over ggml's RPC protocol, with the turbo types.

    It serves one client at a time, until Ctrl-C. Clients of this build check
    that it holds the turbo types before they send it layers, so a stock
    rpc-server is refused, naming the type it lacks.

    \b
    tq-gguf rpc-server --host 0.0.0.0 --port 50052      # on each host
    tq-gguf run model.gguf --rpc 10.0.0.2:50052,10.0.0.3:50052 -p "..."
    """
    path = user_tool_path("rpc-server")
    check_port(host, port)
    args = ["-H", host, "-p", str(port)] + (["-t", str(threads)] if threads else [])
    # The server replaces this process: Ctrl-C and SIGTERM reach it directly and leave nothing behind.
    os.execv(path, [USER_TOOLS["rpc-server"], *args])
