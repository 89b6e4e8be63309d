"""llama.cpp's log, with its error lines kept so that a refusal can say why.

llama.cpp reports why it will not load a model (an unknown architecture, a missing
tensor) only in its log, which llama-cpp-python hides while loading; the C API
returns just NULL. Our callback records the error lines, then hands every line to
llama-cpp-python's own callback, so `verbose=True` prints as before, unless
silence() was called (lowlevel.Context keeps the log quiet).
"""

from __future__ import annotations

import ctypes
import re
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator

GGML_LOG_LEVEL_ERROR = 4  # ggml.h's enum ggml_log_level

_recent: deque[str] = deque(maxlen=32)
_state = {"installed": None, "quiet": False}  # the ctypes callback (kept alive) and the quiet flag


def _install() -> None:
    """Route llama.cpp's log through _on_log (once). Imports llama_cpp: call only after the
    build check (ggml.lib()), which explains a missing or stale build."""
    if _state["installed"] is not None:
        return
    import llama_cpp
    from llama_cpp import _logger

    def on_log(level: int, text: bytes, user_data) -> None:
        if level == GGML_LOG_LEVEL_ERROR:
            _recent.append(text.decode("utf-8", "replace").strip())
        if not _state["quiet"]:
            _logger.llama_log_callback(level, text, user_data)

    _state["installed"] = llama_cpp.llama_log_callback(on_log)
    llama_cpp.llama_log_set(_state["installed"], ctypes.c_void_p(0))


def silence() -> None:
    """Print nothing of llama.cpp's log from now on in this process (errors are still kept)."""
    _state["quiet"] = True
    _install()


@contextmanager
def capture() -> Iterator[Callable[[], str]]:
    """Yields a function that gives the reason llama.cpp logged inside the block: its first
    error line (the cause; later ones report the failure upward), without the C function's
    name ("" if it logged none)."""
    _install()
    _recent.clear()
    yield lambda: next((_ERROR_PREFIX.sub("", line) for line in _recent if line), "")


_ERROR_PREFIX = re.compile(r"^\w+: ")  # "llama_model_load: error loading model: ..." names the C function
