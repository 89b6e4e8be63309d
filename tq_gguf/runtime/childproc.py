"""A long-running llama.cpp tool (llama-server, rpc-server) as a child that never outlives us.

The child runs in a process group of its own, so a terminal's Ctrl-C reaches only this process,
which then stops the whole group in order: SIGTERM, a grace period for the tool to finish its
requests and free its memory, then SIGKILL. On Linux the child also gets SIGTERM from the kernel
should this process die without that chance (SIGKILL), so no tool is left serving on its own.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from typing import IO, Iterator, Sequence

GRACE_SECONDS = 10.0  # how long a tool may take to stop after SIGTERM before it is killed
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux; a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    """A started tool; `stop()` ends it and everything it started."""

    def __init__(self, cmd: Sequence[str], log: IO | None, env: dict[str, str] | None = None):
        """Start `cmd` with its output to `log` (None: ours) and `env` added to our environment."""
        self.cmd = list(cmd)
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     env={**os.environ, **(env or {})}, start_new_session=True,
                                     preexec_fn=_die_with_parent)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def stop(self, grace: float = GRACE_SECONDS) -> int:
        """SIGTERM to the group, wait up to `grace` seconds, then SIGKILL; returns the exit status."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                return self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self._signal_group(signal.SIGKILL)  # also whatever the tool started, if it has exited itself
        return self.proc.wait()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


class Stopped(Exception):
    """SIGINT or SIGTERM arrived while a child was running."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into Stopped in the main thread while the block runs, so the
    caller's cleanup (stopping its child) runs for either."""
    def handler(signum, frame):
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
