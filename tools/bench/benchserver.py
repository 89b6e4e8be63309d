"""The server the serving benchmarks (bench_serve.py, bench_spec.py) measure: `tq-gguf serve --engine
llama-server` on a free port, started and stopped around a block, the CPU time it has used, and one
JSON POST to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tq_gguf.runtime.ports import free_port  # noqa: E402

TQ_GGUF = str(Path(sys.executable).parent / "tq-gguf")


@dataclass(frozen=True)
class Server:
    url: str  # http://127.0.0.1:PORT, without /v1
    pid: int  # of `tq-gguf serve`, llama-server's parent

    def cpu_s(self) -> float:
        """CPU seconds (user and system) used so far by `tq-gguf serve` and llama-server (Linux /proc)."""
        return sum(_cpu_ticks(pid) for pid in _tree(self.pid)) / os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid] + [p for child in children for p in _tree(int(child))]


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # gone meanwhile
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)


def _stop(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


@contextmanager
def served(model: str, config: str, *, ctx: int, slots: int = 1, threads: int | None = None,
           extra: tuple[str, ...] = ()) -> Iterator[Server]:
    """`tq-gguf serve MODEL --engine llama-server --cache CONFIG` with `slots` slots of `ctx` tokens,
    serving until the block ends (then SIGTERM, which stops llama-server too; so does a SIGTERM to us)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
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
        yield Server(line.split("ready at ")[1].split()[0].removesuffix("/v1"), server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


def post_json(url: str, body: dict, timeout: float = 900) -> dict:
    """POST `body` as JSON, return the JSON answer."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)
