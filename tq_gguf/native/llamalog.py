"""llama.cpp's log: silenced, or watched for the error lines that say why it refused something.

llama.cpp reports why it will not load a model (an unknown architecture, a missing
tensor) or create a context only in its log; the C API returns just NULL, and
llama-cpp-python hides the log while loading. capture() puts a callback in front of
whichever one is set for the length of a call, keeps the error lines, passes every
line on unchanged (so `verbose=True` prints as before) and restores the old callback.

llama_cpp comes from llamacpp.load(), so a missing or stale build is explained first.
"""

from __future__ import annotations

import ctypes
import re
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from . import llamacpp

GGML_LOG_LEVEL_ERROR = 4  # ggml.h's enum ggml_log_level

# "llama_model_load: error loading model: ..." starts with the C function's name
_FUNCTION_PREFIX = re.compile(r"^\w+: ")

_silent = None  # the no-op callback, kept alive while llama.cpp holds it


def silence() -> None:
    """Print none of llama.cpp's log from now on in this process."""
    global _silent
    llama_cpp = llamacpp.load()
    if _silent is None:
        _silent = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_silent, ctypes.c_void_p(0))


@contextmanager
def capture(quiet: bool = False) -> Iterator[Callable[[], str]]:
    """Yields a function that gives the reason llama.cpp logged inside the block: its first
    error line (the cause; later ones report the failure upward) without the C function's
    name, or "" if it logged none. `quiet`: pass no line on, for the block only."""
    llama_cpp = llamacpp.load()
    previous = llama_cpp.llama_log_callback()
    user_data = ctypes.c_void_p()
    llama_cpp.llama_log_get(ctypes.byref(previous), ctypes.byref(user_data))
    errors: list[str] = []

    def on_log(level: int, text: bytes, data) -> None:
        if level == GGML_LOG_LEVEL_ERROR:
            errors.append(text.decode("utf-8", "replace").strip())
        if quiet:
            return
        if previous:
            previous(level, text, data)
        else:  # no callback set: llama.cpp's own default is to print to stderr
            sys.stderr.write(text.decode("utf-8", "replace"))

    callback = llama_cpp.llama_log_callback(on_log)
    llama_cpp.llama_log_set(callback, user_data)
    try:
        yield lambda: next((_FUNCTION_PREFIX.sub("", line) for line in errors if line), "")
    finally:
        llama_cpp.llama_log_set(previous, user_data)
