"""tq-gguf: TurboQuant KV-cache types (turbo2/turbo3/turbo4) for llama.cpp.

The heavy parts (the patched llama.cpp build, NumPy references, the session
wrapper) live in submodules that are imported lazily, so `tq-gguf build` works
before anything native exists.
"""

__version__ = "0.1.0"

__all__ = ["Llama"]


def __getattr__(name: str):
    # Importing the session loads llama.cpp; keep `import tq_gguf` cheap until it is needed.
    if name == "Llama":
        from .session import Llama

        return Llama
    raise AttributeError(f"module 'tq_gguf' has no attribute {name!r}")
