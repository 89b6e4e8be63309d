"""The server the serving benchmarks (bench_serve.py, bench_spec.py) measure: `tq-gguf serve --engine
llama-server` on a free port, started and stopped around a block, and one JSON POST to it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tq_gguf.runtime.ports import free_port  # noqa: E402

TQ_GGUF = str(Path(sys.executable).parent / "tq-gguf")


@contextmanager
def served(model: str, config: str, *, ctx: int, slots: int = 1, threads: int | None = None,
           extra: tuple[str, ...] = ()) -> Iterator[str]:
    """The base URL of `tq-gguf serve MODEL --engine llama-server --cache CONFIG` with `slots` slots
    of `ctx` tokens, serving until the block ends (then SIGTERM, which stops llama-server too)."""
    cmd = [TQ_GGUF, "serve", model, "--engine", "llama-server", "--cache", config, "--ctx", str(ctx),
           "--parallel", str(slots), "--port", str(free_port()), *(["-t", str(threads)] if threads else []), *extra]
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = []
        for line in server.stdout:
            banner.append(line)
            if "ready at" in line:
                break
        else:
            raise SystemExit(f"server for {config} ({slots} slot(s)) did not start (exit {server.wait()}):\n"
                             f"{''.join(banner)}")
        yield line.split("ready at ")[1].split()[0].removesuffix("/v1")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def post_json(url: str, body: dict, timeout: float = 900) -> dict:
    """POST `body` as JSON, return the JSON answer."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)
