"""llama_cpp (llama-cpp-python), imported only after the installed native build is checked.

`tq-gguf build` installs the patched llama_cpp: before it has run the module does not exist,
and after the sources change it would load a stale library. Every use in tq_gguf goes
through `load()`, so either case is one NativeLibraryError that says what to run, never an
ImportError or kernels that no longer match the sources.
"""

from __future__ import annotations

from types import ModuleType

from . import ggml


def load() -> ModuleType:
    """The llama_cpp module, once ggml.lib() has accepted the installed build."""
    ggml.lib()
    import llama_cpp  # deferred: exists only once `tq-gguf build` installed it, and must not load a stale build

    return llama_cpp
