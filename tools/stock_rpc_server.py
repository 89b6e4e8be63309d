#!/usr/bin/env python3
"""Build llama.cpp's stock rpc-server (the pinned commit, no tq-gguf patches) for the tests.

tests/model/test_rpc.py checks that a client refuses a server without the turbo types by name
rather than crashing; it needs a real stock server to talk to. This compiles only ggml and the
server from the pristine sdist (about 2 minutes on 2 cores), into
<cache>/stock-rpc-server/<llama.cpp commit>/, and prints the binary's path.

    python tools/stock_rpc_server.py            # build if missing, print the path
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tq_gguf import paths  # noqa: E402
from tq_gguf.nativebuild import sdist, upstream  # noqa: E402

TARGET = "ggml-rpc-server"


def binary_path() -> Path:
    return paths.cache_root() / "stock-rpc-server" / upstream.LLAMA_CPP_COMMIT / TARGET


def build() -> Path:
    out = binary_path()
    if out.exists():
        return out
    source = sdist.pristine_tree() / upstream.VENDOR_DIR
    build_dir = out.parent / "build"
    defines = {"CMAKE_BUILD_TYPE": "Release", "GGML_RPC": "ON", "GGML_NATIVE": "ON", "BUILD_SHARED_LIBS": "OFF",
               "LLAMA_BUILD_TOOLS": "ON", "LLAMA_BUILD_TESTS": "OFF", "LLAMA_BUILD_EXAMPLES": "OFF",
               "LLAMA_BUILD_SERVER": "OFF", "LLAMA_CURL": "OFF", "LLAMA_OPENSSL": "OFF"}
    subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), "-G", "Ninja" if shutil.which("ninja") else
                    "Unix Makefiles", *(f"-D{k}={v}" for k, v in defines.items())], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build_dir), "--target", TARGET, "-j", str(os.cpu_count() or 1)],
                   check=True)
    shutil.copy2(build_dir / "bin" / TARGET, out)
    shutil.rmtree(build_dir)
    return out


if __name__ == "__main__":
    print(build())
