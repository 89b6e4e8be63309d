"""`tq-gguf info`: what is installed and what it can do."""

from __future__ import annotations

from importlib import metadata

from . import __version__, cachetypes, upstream
from .errors import TqError


def info_lines() -> list[str]:
    from .build import installed_build

    lines = [
        f"tq-gguf           {__version__}",
        f"llama-cpp-python  {upstream.SDIST_VERSION} (pinned sdist sha256 {upstream.SDIST_SHA256[:16]}...)",
        f"llama.cpp         {upstream.LLAMA_CPP_COMMIT}, ggml {upstream.GGML_VERSION}",
    ]
    try:
        lines.append(f"llama_cpp         {metadata.version('llama-cpp-python')} installed")
    except metadata.PackageNotFoundError:
        lines.append("llama_cpp         not installed (run `tq-gguf build`)")
    build = installed_build()
    if build is None:
        lines.append("native build      none installed (run `tq-gguf build`)")
        return lines
    lines.append(f"native build      {build['key']} ({build['backend']})")
    lines.append(f"patch series      {', '.join(build['patches']) or '(empty)'}")
    try:
        from . import ggml

        ggml.lib()
        lines.append(f"backends          {', '.join(ggml.backends())}")
        available = {ct.name for ct in cachetypes.available()}
    except TqError as exc:
        lines.append(f"native library    {exc}")
        available = set()
    lines.append("cache types       name     bits/value  in this build")
    for ct in cachetypes.CACHE_TYPES.values():
        lines.append(f"                  {ct.name:<8} {ct.bits_per_value:>10.2f}  {'yes' if ct.name in available else 'no'}")
    return lines
