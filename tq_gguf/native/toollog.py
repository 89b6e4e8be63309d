"""What a llama.cpp tool's log says went wrong.

The tools print pages of log (model loading, system info) that say nothing about why one
failed; its reasons are the error lines, which llama.cpp's log prefixes with a timestamp and
` E `, or, for bad arguments, plain `error: ...` lines printed before any log line, or, when
ggml gave up (GGML_ABORT), the one line naming the source file and line before the abort.
"""

from __future__ import annotations

import re

_ERROR_LINE = re.compile(r"^(?:[\d.]+ )?E (.*)$", re.MULTILINE)
_ARG_ERROR = re.compile(r"^(error\b.*)$", re.MULTILINE)
_ABORT = re.compile(r"^\S+\.(?:c|cpp|cu|m):\d+: (.*)$", re.MULTILINE)


def error_lines(log: str) -> list[str]:
    """llama.cpp's error messages in a tool's log."""
    found = _ERROR_LINE.findall(log) or _ARG_ERROR.findall(log)
    return [line.strip() for line in found + _ABORT.findall(log) if line.strip()]


def reasons(log: str, tail: int = 3) -> str:
    """The error lines, or the last `tail` lines when there are none, joined for one message."""
    found = error_lines(log) or log.strip().splitlines()[-tail:]
    return "; ".join(line.strip() for line in found)
