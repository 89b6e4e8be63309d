#!/usr/bin/env python3
"""Compile the CUDA sources our patches touch, for chosen GPU architectures, without a GPU.

`tq-gguf build --backend cuda` configures all of ggml-cuda with CMake, which wants the
cuBLAS library and the CUDA driver library and then compiles ~150 objects. To check
that our kernels compile we need far less: nvcc -c on the .cu files the series adds to
or changes, with the include directories, defines and nvcc flags that ggml-cuda's CMake
would give them. The only thing not in a plain CUDA toolkit is `cublas_v2.h` (common.cuh
includes it); when the toolkit lacks it, the headers (not the 600 MB of libraries) are
taken from the `nvidia-cublas` wheel, fetched once with pip and cached.

    python tools/cuda_compile_check.py                     # stage the patched tree, compile sm_80 + sm_90
    python tools/cuda_compile_check.py --src TREE          # an already patched tree (e.g. the one you edit)
    python tools/cuda_compile_check.py --arch 90 --only fattn.cu
    python tools/cuda_compile_check.py --src TREE --extra broken.cu   # any file, with the tree's flags

Each object is compiled once for all requested architectures (one -gencode per arch,
as CMake does) and its success is recorded under <cache>/cuda-check/ by the sha256 of
everything that can change the result: nvcc's version, the flags, the file and every
header in the directories it can include from. A rerun with nothing changed compiles
nothing. Exit status 0 when everything compiled, 1 when something did not.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tq_gguf import paths  # noqa: E402
from tq_gguf.nativebuild import builder  # noqa: E402
from tq_gguf.nativebuild.nativesrc import BUILD_ID_HEADER  # noqa: E402
from tq_gguf.errors import TqError  # noqa: E402
from tq_gguf.kv import cachetypes  # noqa: E402
GGML = Path("vendor/llama.cpp/ggml")
CUDA_DIR = GGML / "src" / "ggml-cuda"
# Our FlashAttention instances, generated into native/cuda/template-instances
# (tools/gen_cuda_instances.py) and copied here with the rest of native/.
TQ_INSTANCES = GGML / "src" / "tq" / "cuda" / "template-instances"

# The .cu files the series changes (patches/*cuda*); with them, the vector FlashAttention
# instances of the turbo and tcq pairs the tq-gguf CUDA build compiles.
TOUCHED = ("set-rows.cu", "getrows.cu", "convert.cu", "cpy.cu", "fattn.cu", "ggml-cuda.cu")

# Pinned so the cached headers and the cache keys do not move under us.
CUBLAS_WHEEL = "nvidia-cublas==13.1.1.3"

DEFAULT_ARCHS = ("80", "90")


def fa_pairs() -> list[str]:
    """K-V pairs compiled by the CUDA build (tq_gguf.nativebuild.builder's GGML_CUDA_FA_QUANTS)."""
    return builder.defines_for("cuda")["GGML_CUDA_FA_QUANTS"].split(",")


def instance_files() -> list[Path]:
    """Our instances the build compiles, relative to the source tree."""
    return [TQ_INSTANCES / f"fattn-vec-instance-{p}.cu" for p in fa_pairs()
            if any(t in p.split("-") for t in cachetypes.TQ_TYPES)]


def fa_defines() -> list[str]:
    """The GGML_CUDA_FA_<K>_<V> switches ggml/cmake/common.cmake would define."""
    types = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "bf16", "f16", *cachetypes.TQ_TYPES]
    pairs = set(fa_pairs())
    out = [f'-DGGML_CUDA_FA_QUANTS="{",".join(fa_pairs())}"']
    for v in types:
        for k in types:
            out.append(f"-DGGML_CUDA_FA_{k.upper()}_{v.upper()}={int(f'{k}-{v}' in pairs)}")
    return out


def nvcc_path() -> str | None:
    return shutil.which("nvcc")


def nvcc_version(nvcc: str) -> str:
    return subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout.strip()


def cuda_include_dir(nvcc: str) -> Path:
    """The toolkit's include directory (nvcc may be a wrapper script on PATH)."""
    res = subprocess.run([nvcc, "--dryrun", "-E", "-x", "cu", "/dev/null"], capture_output=True, text=True)
    for line in res.stderr.splitlines():
        if "INCLUDES=" in line:
            for tok in line.split('"')[1].split():
                if tok.startswith("-I") and (Path(tok[2:]) / "cuda_runtime.h").exists():
                    return Path(tok[2:])
    real = Path(os.path.realpath(nvcc))
    for cand in (real.parent.parent / "include", Path("/usr/local/cuda/include")):
        if (cand / "cuda_runtime.h").exists():
            return cand
    raise TqError("cannot find the CUDA toolkit's include directory")


def cublas_include(nvcc: str, echo=print) -> Path:
    """A directory with cublas_v2.h: the toolkit's own, or headers unpacked from the wheel."""
    toolkit = cuda_include_dir(nvcc)
    if (toolkit / "cublas_v2.h").exists():
        return toolkit
    dest = paths.cache_root() / "cuda-deps" / CUBLAS_WHEEL.replace("==", "-")
    inc = dest / "include"
    if (inc / "cublas_v2.h").exists():
        return inc
    echo(f"cuda-check: the toolkit has no cublas_v2.h; fetching the headers of {CUBLAS_WHEEL}")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", tmp, CUBLAS_WHEEL], check=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise TqError(f"pip download {CUBLAS_WHEEL} gave {wheels}")
        staging = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "include").mkdir(parents=True)
        with zipfile.ZipFile(wheels[0]) as z:
            for info in z.infolist():
                parts = Path(info.filename).parts
                if "include" in parts and info.filename.endswith(".h"):
                    (staging / "include" / Path(info.filename).name).write_bytes(z.read(info))
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
    if not (inc / "cublas_v2.h").exists():
        raise TqError(f"{CUBLAS_WHEEL} did not contain cublas_v2.h")
    return inc


def stage_tree(echo=print) -> Path:
    """The patched tree the CUDA build would compile (pristine sdist + native/ + patches)."""
    key = builder.current_key("cuda")
    echo(f"cuda-check: staging the patched source tree for {key}")
    return builder.stage_source("cuda", key)


def install_native(src: Path) -> None:
    """Refresh ggml/src/tq from native/ so an edited tree compiles the current kernels."""
    from tq_gguf.nativebuild import nativesrc  # noqa: E402

    nativesrc.install_sources(paths.NATIVE_DIR, src / builder.NATIVE_DEST, builder.current_key("cuda"))


def flags(src: Path, cublas_inc: Path, archs: list[str]) -> list[str]:
    ggml = src / GGML
    out = [
        "-std=c++17", "-O3", "-DNDEBUG",
        # ggml-cuda/CMakeLists.txt: CUDA_FLAGS and the host flag it always adds
        "-use_fast_math", "-extended-lambda", "-compress-mode=size", "-Xcompiler", "-Wno-pedantic",
        # ggml/src/CMakeLists.txt and ggml_add_backend_library, on Linux, shared build
        "-DGGML_SCHED_MAX_COPIES=4", "-D_XOPEN_SOURCE=600", "-D_GNU_SOURCE",
        "-DGGML_BACKEND_BUILD", "-DGGML_BACKEND_SHARED", "-DGGML_SHARED", "-DGGML_BUILD",
        # llama.cpp's top-level CMakeLists.txt turns GGML_CUDA_GRAPHS on
        "-DGGML_CUDA_USE_GRAPHS",
        *fa_defines(),
        f"-I{ggml / 'include'}", f"-I{ggml / 'src'}", f"-I{ggml / 'src' / 'ggml-cuda'}",
        f"-I{ggml / 'src' / 'tq' / 'include'}", f"-I{cublas_inc}",
    ]
    for a in archs:
        out += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    return out


def inputs_hash(src: Path, cu: Path, nvcc_ver: str, fl: list[str]) -> str:
    """Everything the object depends on. Headers: all of those the include path can reach."""
    ggml = src / GGML
    digest = hashlib.sha256()
    digest.update(nvcc_ver.encode() + b"\0")
    # paths inside the tree do not matter, only contents; strip the tree prefix from the flags
    digest.update(json.dumps([f.replace(str(src), "<src>") for f in fl]).encode() + b"\0")
    digest.update(cu.read_bytes() + b"\0")
    headers = set()
    for d, pats in ((ggml / "include", ("*.h",)), (ggml / "src", ("*.h",)),
                    (ggml / "src" / "ggml-cuda", ("*.cuh", "*.h", "vendors/*.h")),
                    (ggml / "src" / "tq", ("*.h", "include/*.h", "cuda/*.cuh", "cuda/*.h"))):
        for pat in pats:
            headers.update(p for p in d.glob(pat) if p.is_file())
    # the build id changes with every edit of the series or of native/; no CUDA source includes it
    headers.discard(ggml / "src" / "tq" / BUILD_ID_HEADER)
    for h in sorted(headers):
        digest.update(h.relative_to(src).as_posix().encode() + b"\0" + h.read_bytes() + b"\0")
    return digest.hexdigest()


def compile_one(nvcc: str, cu: Path, fl: list[str], out_dir: Path) -> tuple[bool, float, str]:
    obj = out_dir / (cu.name + ".o")
    cmd = [nvcc, *fl, "-c", str(cu), "-o", str(obj)]
    t = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True)
    return res.returncode == 0, time.monotonic() - t, (res.stdout + res.stderr).strip()


def check(src: Path, files: list[Path], archs: list[str], jobs: int, echo=print) -> bool:
    nvcc = nvcc_path()
    if nvcc is None:
        raise TqError("nvcc is not on PATH")
    ver = nvcc_version(nvcc)
    cublas_inc = cublas_include(nvcc, echo)
    fl = flags(src, cublas_inc, archs)
    cache = paths.cache_root() / "cuda-check"
    cache.mkdir(parents=True, exist_ok=True)
    arch_txt = "+".join(f"sm_{a}" for a in archs)

    todo = []
    for cu in files:
        key = inputs_hash(src, cu, ver, fl)
        stamp = cache / f"{key}.json"
        name = next((cu.relative_to(d).as_posix() for d in (src / CUDA_DIR, src / TQ_INSTANCES.parent)
                     if d in cu.parents), cu.name)
        if stamp.exists():
            took = json.loads(stamp.read_text())["seconds"]
            echo(f"cuda-check: {name} [{arch_txt}] cached (compiled in {took:.0f} s)")
        else:
            todo.append((cu, name, stamp))

    ok = True
    with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = {}
        for i, (cu, name, stamp) in enumerate(todo):
            out_dir = Path(tmp) / str(i)  # objects are thrown away: only success is recorded
            out_dir.mkdir()
            futures[pool.submit(compile_one, nvcc, cu, fl, out_dir)] = (cu, name, stamp)
        for fut in concurrent.futures.as_completed(futures):
            cu, name, stamp = futures[fut]
            good, took, log = fut.result()
            if good:
                stamp.write_text(json.dumps({"file": name, "archs": archs, "seconds": round(took, 1)}) + "\n")
                echo(f"cuda-check: {name} [{arch_txt}] compiled in {took:.0f} s")
            else:
                ok = False
                echo(f"cuda-check: {name} [{arch_txt}] FAILED after {took:.0f} s\n{log[-6000:]}")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, help="patched source tree (default: stage one as the CUDA build would)")
    ap.add_argument("--arch", action="append", help="compute capability without the dot, repeatable (default 80 and 90)")
    ap.add_argument("--only", action="append", help="compile only these files (relative to ggml/src/ggml-cuda)")
    ap.add_argument("--extra", type=Path, action="append", default=[], help="also compile this .cu file with the tree's flags")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args(argv)

    try:
        if args.src:
            src = args.src.resolve()
            install_native(src)
        else:
            src = stage_tree()
        if args.only:
            files = [src / CUDA_DIR / n for n in args.only]
        else:
            files = [src / CUDA_DIR / n for n in TOUCHED] + [src / p for p in instance_files()]
        files += [p.resolve() for p in args.extra]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise TqError(f"missing: {', '.join(missing)}")
        t = time.monotonic()
        ok = check(src, files, args.arch or list(DEFAULT_ARCHS), args.jobs)
        print(f"cuda-check: {'ok' if ok else 'FAILED'}, {len(files)} objects in {time.monotonic() - t:.0f} s")
        return 0 if ok else 1
    except (TqError, subprocess.CalledProcessError) as e:
        print(f"cuda-check: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
