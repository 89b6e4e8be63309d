"""Errors that reach the user as one clear line, never as a traceback."""

from __future__ import annotations


class TqError(Exception):
    """Base class: the CLI prints `error: <message>` and exits with status 1."""


class BuildError(TqError):
    """A step of `tq-gguf build` failed."""


class PatchError(BuildError):
    """The patch series does not fit the source tree."""


class NativeLibraryError(TqError):
    """The patched native library is missing, stale or unloadable."""


class ModelError(TqError):
    """A model is missing, unknown, corrupt or truncated, or llama.cpp refuses to load it."""


class LlamaCppError(TqError):
    """llama.cpp refused a context or an operation on one (its reason, when it logs one, is in the message)."""


class CacheTypeError(TqError, ValueError):
    """An unknown KV-cache type, or one that cannot hold the model's heads."""
