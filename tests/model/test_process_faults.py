"""Processes that die or stall: a `tq-gguf serve --engine llama-server` SIGKILLed (no chance to
stop its child) leaves no llama-server running, and an rpc-server that accepts a connection and
never answers is one clear error within the stated timeout, not a hang."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import ServerProcess, alive, children_of
from tq_gguf.native import rpcwire
from tq_gguf.runtime.ports import free_port

TQ_GGUF = str(Path(sys.executable).parent / "tq-gguf")


def test_a_killed_serve_leaves_no_llama_server(default_model_path):
    port = free_port()
    server = ServerProcess([TQ_GGUF, "serve", default_model_path, "--engine", "llama-server", "--port", port,
                            "--ctx", 256, "-t", 1], port, ready_line="ready at")
    children = children_of(server.proc.pid)
    try:
        assert len(children) == 1 and alive(children[0]), children
        child = children[0]
        assert "llama-server" in Path(f"/proc/{child}/cmdline").read_text()
        server.proc.send_signal(signal.SIGKILL)  # no handler runs: only the kernel can stop the child
        server.proc.wait(10)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child), "llama-server outlived its SIGKILLed parent"
    finally:
        server.stop()
        for pid in children:  # should the test fail: no orphan left behind (it is init's child now)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


class StalledServer:
    """A TCP server that accepts connections and never sends a byte."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.endpoint = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)  # kept open, never answered

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_stalled_rpc_server_is_one_error_within_the_timeout(default_model_path):
    stalled = StalledServer()
    try:
        start = time.monotonic()
        # a process of its own, so that a hang fails the test (TimeoutExpired) instead of hanging it
        r = subprocess.run([TQ_GGUF, "run", str(default_model_path), "--rpc", stalled.endpoint, "-p", "Hi",
                            "-n", "1", "-t", "1"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           timeout=rpcwire.DEFAULT_TIMEOUT + 30)
        took = time.monotonic() - start
    finally:
        stalled.close()
    assert stalled.accepted, "the client never connected"
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and stalled.endpoint in lines[0], r.stderr
    assert "did not answer" in lines[0] and f"{rpcwire.DEFAULT_TIMEOUT:g} s" in lines[0], lines[0]
    assert rpcwire.DEFAULT_TIMEOUT <= took < rpcwire.DEFAULT_TIMEOUT + 20, took
