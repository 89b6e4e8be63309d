"""tq-gguf: TurboQuant KV-cache types (turbo2/turbo3/turbo4) for llama.cpp.

The heavy parts (the patched llama.cpp build, NumPy references, the session
wrapper) live in submodules that are imported lazily, so `tq-gguf build` works
before anything native exists.
"""

import importlib

__version__ = "0.1.0"

__all__ = ["Llama", "CacheConfig", "PRESETS", "advise"]

# Public name -> submodule that defines it; importing the session loads llama.cpp,
# so `import tq_gguf` stays cheap until a name is used.
_LAZY = {"Llama": "runtime.session", "CacheConfig": "kv.cacheconfig", "PRESETS": "kv.cacheconfig",
         "advise": "analysis.advisor"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'tq_gguf' has no attribute {name!r}")
