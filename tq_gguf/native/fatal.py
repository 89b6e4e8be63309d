"""A command line's last word when ggml gives up: one `error:` line and exit status 1.

ggml aborts the process when it cannot go on (GGML_ABORT): an rpc-server that vanished
mid-generation, a failed allocation inside a graph. By default that is a message with a file
and line, a backtrace and SIGABRT (a core dump where enabled). A command line process has no
caller to recover, so it reports the reason in the error contract's form and exits; a library
user keeps ggml's default.
"""

from __future__ import annotations

import os
import re
import sys

from . import ggml

_LOCATION = re.compile(r"^\S+:\d+: ")  # ggml prefixes its message with "file.cpp:123: "
_handler = None  # kept alive while ggml holds it


def exit_on_abort(hint: str = "") -> None:
    """From now on, a ggml abort in this process prints `error: llama.cpp stopped: <reason>` (plus
    `hint`) and exits with status 1, from whichever thread it happens on."""
    global _handler

    @ggml.ffi.callback("void(const char *)")
    def on_abort(message):
        reason = _LOCATION.sub("", ggml.ffi.string(message).decode(errors="replace").strip())
        sys.stdout.flush()
        sys.stderr.write(f"\nerror: llama.cpp stopped: {reason}{hint}\n")
        sys.stderr.flush()
        os._exit(1)  # ggml would abort() right after: nothing may run on in this state

    _handler = on_abort
    ggml.lib().ggml_set_abort_callback(on_abort)
