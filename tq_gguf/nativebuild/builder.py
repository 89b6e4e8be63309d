"""`tq-gguf build`: download, verify, extract, patch, compile, install, cache.

One CMake build produces both the llama-cpp-python wheel (our patched
`llama_cpp`) and llama.cpp's tools: those we drive (llama-perplexity, llama-bench,
test-backend-ops, llama-completion) and those users run through `tq-gguf exec`,
`serve --engine llama-server` and `rpc-server` (llama-cli, llama-server,
ggml-rpc-server). Finished builds are kept under
`<cache>/builds/<key>/`, where the key hashes everything that goes into them,
so a second build with nothing changed only checks that the right wheel is
installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import backendstatus, buildkey, nativesrc, patches, sdist, upstream
from ..kv import cachetypes
from .. import paths
from ..errors import BuildError
from .treesync import sync_tree

# CMake targets, each an executable of the same name in the build's bin/.
TOOLS = ("llama-perplexity", "llama-bench", "test-backend-ops", "llama-completion",
         "llama-cli", "llama-server", "ggml-rpc-server")
# The tools a user runs through `tq-gguf exec`, by the names llama.cpp's documentation uses, and
# the executable of each (upstream's target for the RPC server is ggml-rpc-server).
USER_TOOLS = {
    "llama-cli": "llama-cli",
    "llama-server": "llama-server",
    "llama-bench": "llama-bench",
    "llama-perplexity": "llama-perplexity",
    "rpc-server": "ggml-rpc-server",
}
LIBRARY_TARGETS = ("llama", "ggml", "mtmd")

# Where our native/ sources land inside the vendored tree; the patches compile them from there.
NATIVE_DEST = Path(upstream.VENDOR_DIR) / "ggml" / "src" / "tq"
BUILD_INFO_FILE = Path("llama_cpp") / "tq_build.json"

COMMON_DEFINES: dict[str, str] = {
    "CMAKE_BUILD_TYPE": "Release",
    "LLAMA_BUILD_TOOLS": "ON",
    "LLAMA_BUILD_TESTS": "ON",
    "LLAMA_BUILD_EXAMPLES": "OFF",
    # llama-server and llama-cli (one CMake switch); the server's web UI would be downloaded
    # or built with npm at build time, so it stays out and the server answers its API alone.
    "LLAMA_BUILD_SERVER": "ON",
    "LLAMA_USE_PREBUILT_UI": "OFF",
    "LLAMA_BUILD_UI": "OFF",
    # plain HTTP: the build must not depend on whether OpenSSL's headers happen to be installed
    "LLAMA_OPENSSL": "OFF",
    "LLAMA_BUILD_APP": "OFF",
    "LLAMA_TOOLS_INSTALL": "OFF",
    "LLAMA_TESTS_INSTALL": "OFF",
    "LLAMA_CURL": "OFF",
    # llama.cpp's tools/ adds mtmd; patch 0002 installs that one (see the patch)
    "LLAVA_BUILD": "OFF",
    "GGML_NATIVE": "ON",
    # ggml's RPC backend: the ggml-rpc-server tool, and `--rpc` / Llama(rpc=...) on the client
    "GGML_RPC": "ON",
    # Tools and libraries share build/bin; $ORIGIN lets a finished build move into the cache.
    "CMAKE_BUILD_RPATH_USE_ORIGIN": "ON",
}

# Vector FlashAttention kernels are compiled per K-V pair; besides upstream's default
# pairs, every turbo pair that keeps K at least as precise as V (docs/FORMAT.md 11.3), and
# each trellis-coded value type (V only) under f16, q8_0 and turbo K of at least its bits.
# Other pairs still run, by converting K and V to f16 first.
CUDA_FA_PAIRS = (
    "q4_0-q4_0", "q8_0-q8_0", "f16-f16", "bf16-bf16",
    *(f"{t}-{t}" for t in cachetypes.TURBO_TYPES),
    *(f"q8_0-{t}" for t in cachetypes.TURBO_TYPES),
    *(f"{k}-{v}" for k in cachetypes.TURBO_TYPES for v in cachetypes.TURBO_TYPES
      if cachetypes.get(k).index_bits > cachetypes.get(v).index_bits),
    *(f"{k}-{v}" for v in cachetypes.TCQ_TYPES for k in ("f16", "q8_0")),
    *(f"{k}-{v}" for v in cachetypes.TCQ_TYPES for k in cachetypes.TURBO_TYPES
      if cachetypes.get(k).index_bits >= cachetypes.TRELLIS_TYPES[v].index_bits),
)

BACKEND_DEFINES: dict[str, dict[str, str]] = {
    "cpu": {},
    "vulkan": {"GGML_VULKAN": "ON"},
    "cuda": {"GGML_CUDA": "ON", "GGML_CUDA_FA_QUANTS": ",".join(CUDA_FA_PAIRS)},
    "metal": {"GGML_METAL": "ON", "GGML_METAL_EMBED_LIBRARY": "ON"},
}
BACKENDS = tuple(BACKEND_DEFINES)


@dataclass
class BuildResult:
    key: str
    backend: str
    out_dir: Path
    wheel: Path
    bin_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    reused: bool = False


def defines_for(backend: str) -> dict[str, str]:
    if backend not in BACKEND_DEFINES:
        raise BuildError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return {**COMMON_DEFINES, **BACKEND_DEFINES[backend]}


def current_key(backend: str = "cpu") -> str:
    return buildkey.build_key(backend, defines_for(backend), paths.PATCHES_DIR, paths.NATIVE_DIR)


# What each backend's build needs beyond CMake and a C/C++ compiler, as (what, how it is
# found, Debian package). `.ci/apt-packages` installs the same packages; docs/BACKENDS.md
# lists them.
CMAKE_PREFIXES = ("/usr", "/usr/local")
BACKEND_NEEDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "cpu": (),
    "vulkan": (
        ("the shader compiler glslc", "tool:glslc", "glslc"),
        ("the Vulkan headers and loader", "file:include/vulkan/vulkan.h", "libvulkan-dev"),
        ("the SPIR-V headers (CMake package SPIRV-Headers)",
         "file:share/cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake", "spirv-headers"),
    ),
    "cuda": (("the CUDA compiler nvcc", "tool:nvcc", "the CUDA toolkit"),),
    "metal": (),
}


def _present(probe: str) -> bool:
    kind, what = probe.split(":", 1)
    if kind == "tool":
        return shutil.which(what) is not None
    prefixes = [*os.environ.get("CMAKE_PREFIX_PATH", "").split(os.pathsep), *CMAKE_PREFIXES]
    return any(p and (Path(p) / what).exists() for p in prefixes)


def check_toolchain(backend: str) -> None:
    """Fail early, naming the package, when something a backend's build needs is missing."""
    if backend == "metal" and platform.system() != "Darwin":
        raise BuildError("the Metal backend can only be compiled on macOS; use --backend cpu, vulkan or cuda here")
    for tool in ("cmake", "git"):
        if shutil.which(tool) is None:
            raise BuildError(f"the {backend} build needs `{tool}`, which is not on PATH (apt-get install {tool})")
    missing = [(what, pkg) for what, probe, pkg in BACKEND_NEEDS[backend] if not _present(probe)]
    if missing:
        names = "; ".join(what for what, _ in missing)
        debs = [pkg for _, pkg in missing if " " not in pkg]
        hint = f"apt-get install {' '.join(debs)}" if debs else " and ".join(pkg for _, pkg in missing)
        raise BuildError(f"the {backend} build needs {names}, not found ({hint}; see docs/BACKENDS.md)")


def build_info_path() -> Path | None:
    """`llama_cpp/tq_build.json` of the installed llama_cpp, without importing it."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / BUILD_INFO_FILE.name
    return path if path.exists() else None


def installed_build() -> dict | None:
    path = build_info_path()
    return json.loads(path.read_text()) if path else None


class Progress:
    """Prints step banners, and for the compile a running [n/N] counter from ninja."""

    _NINJA = re.compile(r"^\s*\[(\d+)/(\d+)\]\s+(.*)$")

    def __init__(self, echo: Callable[[str], None]):
        self.echo = echo
        self.tty = sys.stderr.isatty()
        self.last_pct = -1

    def step(self, n: int, total: int, text: str) -> None:
        self.echo(f"[{n}/{total}] {text}")

    def compile_line(self, line: str) -> None:
        m = self._NINJA.match(line)
        if not m:
            return
        done, total = int(m.group(1)), int(m.group(2))
        pct = 100 * done // max(total, 1)
        if self.tty:
            sys.stderr.write(f"\r      compiling {done}/{total} ({pct}%) {m.group(3)[:60]:<60}")
            sys.stderr.flush()
            if done == total:
                sys.stderr.write("\n")
        elif pct // 10 != self.last_pct // 10 or done == total:
            self.echo(f"      compiling {done}/{total} ({pct}%)")
        self.last_pct = pct


def _run_streaming(cmd: list[str], env: dict[str, str], log: Path, progress: Progress, what: str) -> None:
    with open(log, "w") as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            logf.write(line)
            progress.compile_line(line)
        rc = proc.wait()
    if rc != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise BuildError(f"{what} failed (exit {rc}); full log: {log}\n{tail}")


def stage_source(backend: str, key: str) -> Path:
    """Pristine sdist + native/ + build id + patches, synced into the kept work tree."""
    pristine = sdist.pristine_tree()
    work = paths.work_dir(backend)
    staging = work / "staging"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(pristine, staging, symlinks=True)
    nativesrc.install_sources(paths.NATIVE_DIR, staging / NATIVE_DEST, key)
    applied = patches.apply_series(staging, paths.PATCHES_DIR)
    (staging / BUILD_INFO_FILE).write_text(json.dumps({
        "key": key,
        "backend": backend,
        "llama_cpp_python": upstream.SDIST_VERSION,
        "llama_cpp_commit": upstream.LLAMA_CPP_COMMIT,
        "ggml_version": upstream.GGML_VERSION,
        "patches": applied,
    }, indent=2) + "\n")
    src = work / "src"
    sync_tree(staging, src)
    shutil.rmtree(staging)
    return src


def compile_wheel(src: Path, build_dir: Path, out_dir: Path, defines: dict[str, str], jobs: int,
                  progress: Progress) -> Path:
    wheel_dir = out_dir / "wheel"
    if wheel_dir.exists():
        shutil.rmtree(wheel_dir)
    wheel_dir.mkdir(parents=True)
    settings = [f"--config-settings=build-dir={build_dir}",
                f"--config-settings=build.targets={';'.join(LIBRARY_TARGETS + TOOLS)}",
                "--config-settings=cmake.verbose=false"]
    settings += [f"--config-settings=cmake.define.{k}={v}" for k, v in sorted(defines.items())]
    env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL=str(jobs))
    env.pop("CMAKE_ARGS", None)  # the key must describe the build completely
    cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(wheel_dir), *settings, str(src)]
    _run_streaming(cmd, env, out_dir / "build.log", progress, "compiling llama-cpp-python")
    wheels = list(wheel_dir.glob("llama_cpp_python-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one wheel in {wheel_dir}, found {[w.name for w in wheels]}")
    return wheels[0]


def collect_binaries(build_dir: Path, bin_dir: Path) -> None:
    """Copy the tools and the shared libraries they load into the build's own bin/."""
    produced = build_dir / "bin"
    if bin_dir.exists():
        shutil.rmtree(bin_dir)
    bin_dir.mkdir(parents=True)
    missing = [t for t in TOOLS if not (produced / t).exists()]
    if missing:
        raise BuildError(f"the build did not produce {', '.join(missing)} in {produced}")
    for item in produced.iterdir():
        if item.name in TOOLS or ".so" in item.name or item.suffix in (".dylib", ".dll"):
            shutil.copy2(item, bin_dir / item.name, follow_symlinks=True)


def install_wheel(wheel: Path) -> None:
    base = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # Replace whatever llama_cpp is installed, then fill in its (pure-Python) dependencies.
    for extra in (["--force-reinstall", "--no-deps"], []):
        if subprocess.run([*base, *extra, str(wheel)]).returncode != 0:
            raise BuildError(f"pip could not install {wheel}")


def build(backend: str = "cpu", jobs: int | None = None, force: bool = False,
          echo: Callable[[str], None] = print) -> BuildResult:
    defines = defines_for(backend)
    note = backendstatus.caveat(backend)
    if note:  # before anything can fail: a user should hear it even when the toolchain is missing
        echo(note)
    check_toolchain(backend)
    jobs = jobs or os.cpu_count() or 1
    key = buildkey.build_key(backend, defines, paths.PATCHES_DIR, paths.NATIVE_DIR)
    out_dir = paths.builds_dir() / key
    manifest = out_dir / "manifest.json"
    progress = Progress(echo)
    timings: dict[str, float] = {}

    if manifest.exists() and not force:
        info = json.loads(manifest.read_text())
        result = BuildResult(key, backend, out_dir, out_dir / info["wheel"], out_dir / "bin", reused=True)
        if (installed_build() or {}).get("key") != key:
            echo(f"build {key} is cached; installing its wheel")
            install_wheel(result.wheel)
        else:
            echo(f"build {key} is up to date and installed")
        return result

    steps = 5
    t0 = time.monotonic()
    progress.step(1, steps, f"fetching and verifying {upstream.SDIST_FILENAME}")
    sdist.pristine_tree()
    timings["fetch"] = time.monotonic() - t0

    t = time.monotonic()
    progress.step(2, steps, f"patching ({len(patches.series(paths.PATCHES_DIR))} patches) and staging sources")
    src = stage_source(backend, key)
    timings["patch"] = time.monotonic() - t

    t = time.monotonic()
    ccache = "with ccache" if shutil.which("ccache") else "without ccache (apt-get install ccache for fast rebuilds)"
    progress.step(3, steps, f"compiling the {backend} library and tools, {jobs} jobs, {ccache}")
    out_dir.mkdir(parents=True, exist_ok=True)
    build_dir = paths.work_dir(backend) / "build"
    wheel = compile_wheel(src, build_dir, out_dir, defines, jobs, progress)
    collect_binaries(build_dir, out_dir / "bin")
    timings["compile"] = time.monotonic() - t

    t = time.monotonic()
    progress.step(4, steps, f"installing {wheel.name}")
    install_wheel(wheel)
    timings["install"] = time.monotonic() - t

    progress.step(5, steps, f"recording build {key}")
    manifest.write_text(json.dumps({"key": key, "backend": backend, "wheel": wheel.relative_to(out_dir).as_posix(),
                                    "tools": list(TOOLS), "defines": defines, "timings": timings}, indent=2) + "\n")
    echo(f"built {key} in {time.monotonic() - t0:.0f} s")
    return BuildResult(key, backend, out_dir, wheel, out_dir / "bin", timings)


def installed_bin_dir() -> Path:
    """The bin/ folder of the build that is installed now: its tools and the libraries they load."""
    info = installed_build()
    if info is None:
        raise BuildError("no patched llama_cpp is installed; run `tq-gguf build`")
    return paths.builds_dir() / info["key"] / "bin"


def tool_path(name: str) -> Path:
    """Path of a built llama.cpp tool, for the build that is installed now."""
    path = installed_bin_dir() / name
    if not path.exists():
        raise BuildError(f"{name} is missing from build {path.parent.parent.name}; run `tq-gguf build --force`")
    return path


def user_tool_path(name: str) -> Path:
    """Path of a tool `tq-gguf exec` runs, by its user-facing name (USER_TOOLS), from the installed
    build, which must be the one the sources describe now: a tool from an older build would run
    other kernels than the library's checks vouch for."""
    if name not in USER_TOOLS:
        raise BuildError(f"unknown tool {name!r}; choose one of {', '.join(USER_TOOLS)}")
    info = installed_build()
    if info is not None and info["key"] != current_key(info["backend"]):
        raise BuildError(f"the installed build {info['key']} is stale: the sources now hash to "
                         f"{current_key(info['backend'])}; run `tq-gguf build`")
    return tool_path(USER_TOOLS[name])
