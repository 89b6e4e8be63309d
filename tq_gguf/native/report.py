"""`tq-gguf info`: what is installed and what it can do."""

from __future__ import annotations

import os
from importlib import metadata

from .. import __version__
from ..nativebuild import backendstatus, builder, upstream
from ..errors import TqError
from ..kv import cachetypes
from ..kv.cacheconfig import SMOOTH_FLAG


def info_data() -> dict:
    """Versions, the installed build, its backends and which cache types it has."""
    data: dict = {
        "tq_gguf": __version__,
        "llama_cpp_python_pin": {"version": upstream.SDIST_VERSION, "sha256": upstream.SDIST_SHA256},
        "llama_cpp": {"commit": upstream.LLAMA_CPP_COMMIT, "ggml": upstream.GGML_VERSION},
    }
    try:
        data["llama_cpp_installed"] = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        data["llama_cpp_installed"] = None
    build = builder.installed_build()
    data["build"] = None if build is None else {
        "key": build["key"], "backend": build["backend"], "patches": build["patches"], **_binaries(),
    }
    available: set[str] = set()
    if build is not None:
        try:
            from . import ggml, llamacpp, typeids  # deferred: cffi, numpy; `info` also runs before the full install

            ggml.lib()
            data["backends"] = ggml.backends()
            available = {ct.name for ct in typeids.available()}
            fields = {name for name, _ in llamacpp.load().llama_context_params._fields_}
            data["key_smoothing"] = {"in_build": "smooth_k" in fields, "spec_flag": SMOOTH_FLAG}
            data["cpu_attention"] = _cpu_attention()
        except (TqError, ImportError) as exc:  # ImportError: cffi comes with the full install, after the build
            data["native_library_error"] = str(exc)
    data["backend_status"] = {
        "backends": {name: {"status": s.status, "has_run": s.has_run} for name, s in backendstatus.STATUS.items()},
        "details": backendstatus.BACKENDS_DOC,
    }
    data["cache_types"] = [
        {"name": ct.name, "bits_per_value": ct.bits_per_value, "in_build": ct.name in available}
        for ct in cachetypes.CACHE_TYPES.values()
    ]
    return data


def _cpu_attention() -> dict:
    """Whether the CPU's turbo flash-attention kernel is on, and when it leaves an op to ggml's
    slower per-row path (each reason is logged once per process when it happens)."""
    from . import backendops  # deferred: numpy; `info` also runs before the full install

    setting = os.environ.get("GGML_TQ_FA")
    on = setting is None or (setting.strip().lstrip("-").isdigit() and int(setting) != 0)  # atoi's reading
    return {"kernel_on": on, "declines_when": [text for text, _ in backendops.flash_attn_declines()]}


def _binaries() -> dict:
    """Where the installed build's tools are, and which of those `tq-gguf exec` runs it has
    (an older build may lack some)."""
    bin_dir = builder.installed_bin_dir()
    return {"bin_dir": str(bin_dir),
            "tools": {name: str(bin_dir / exe) for name, exe in builder.USER_TOOLS.items() if (bin_dir / exe).exists()}}


def info_lines(data: dict | None = None) -> list[str]:
    data = data or info_data()
    pin, cpp = data["llama_cpp_python_pin"], data["llama_cpp"]
    lines = [
        f"tq-gguf           {data['tq_gguf']}",
        f"llama-cpp-python  {pin['version']} (pinned sdist sha256 {pin['sha256'][:16]}...)",
        f"llama.cpp         {cpp['commit']}, ggml {cpp['ggml']}",
        f"llama_cpp         {data['llama_cpp_installed']} installed" if data["llama_cpp_installed"]
        else "llama_cpp         not installed (run `tq-gguf build`)",
    ]
    status = backendstatus.lines()
    lines += [f"{'backend status' if i == 0 else '':<18}{line}" for i, line in enumerate(status)]
    build = data["build"]
    if build is None:
        lines.append("native build      none installed (run `tq-gguf build`)")
        return lines
    lines.append(f"native build      {build['key']} ({build['backend']})")
    lines.append(f"patch series      {', '.join(build['patches']) or '(empty)'}")
    lines.append(f"binaries          {build['bin_dir']}")
    lines.append(f"tools             {', '.join(build['tools']) or 'none (run `tq-gguf build --force`)'}"
                 "  (run one: tq-gguf exec TOOL ARGS...)")
    if "native_library_error" in data:
        lines.append(f"native library    {data['native_library_error']}")
    else:
        lines.append(f"backends          {', '.join(data['backends'])}")
    if "key_smoothing" in data:
        ks = data["key_smoothing"]
        lines.append(f"key smoothing     {'yes' if ks['in_build'] else 'no'}: add {ks['spec_flag']} to a config "
                     f"(turbo4/turbo4{ks['spec_flag']}) or pass --smooth-k; the K cache stores k - mu")
    if "cpu_attention" in data:
        att = data["cpu_attention"]
        lines.append(f"cpu attention     turbo kernel {'on' if att['kernel_on'] else 'off (GGML_TQ_FA=0)'}; an op goes to "
                     "ggml's slower per-row path, logged once per reason, when")
        lines += [f"                  - {reason}" for reason in att["declines_when"]]
    lines.append("cache types       name     bits/value  in this build")
    for ct in data["cache_types"]:
        lines.append(f"                  {ct['name']:<8} {ct['bits_per_value']:>10.2f}  {'yes' if ct['in_build'] else 'no'}")
    return lines
