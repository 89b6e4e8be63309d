"""Running the built llama.cpp tools (llama-perplexity, llama-bench) as subprocesses.

The tools print results on stdout and their log on stderr. stdout is read as it
arrives so a caller can follow progress; a failure becomes one ToolError that
carries llama.cpp's own error lines rather than pages of log.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Callable, Sequence

from ..nativebuild.builder import tool_path
from ..errors import TqError
from ..native.toollog import error_lines


class ToolError(TqError):
    """A llama.cpp tool exited with an error."""


def run(name: str, args: Sequence[str], on_stdout: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Run tool `name` with `args`; returns (stdout, stderr).

    `on_stdout(text_so_far)` is called whenever more stdout arrives: the tools print
    per-chunk results without newlines, so callers look at all of it, not at lines."""
    cmd = [str(tool_path(name)), *args]
    # stderr goes to a file: a pipe that nobody reads would stall the tool once it fills.
    with tempfile.TemporaryFile(mode="w+b") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        chunks: list[bytes] = []
        try:
            while data := os.read(proc.stdout.fileno(), 65536):
                chunks.append(data)
                if on_stdout:
                    on_stdout(b"".join(chunks).decode(errors="replace"))
        finally:
            proc.stdout.close()
            returncode = proc.wait()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    stdout = b"".join(chunks).decode(errors="replace")
    if returncode != 0:
        reasons = error_lines(stderr) or stderr.strip().splitlines()[-3:]
        if not reasons:  # the tools' log thread can lose its last lines when they exit early
            raise ToolError(f"{name} failed (exit status {returncode}) and its log gave no reason")
        raise ToolError(f"{name} failed (exit status {returncode}): " + "; ".join(reasons))
    return stdout, stderr
