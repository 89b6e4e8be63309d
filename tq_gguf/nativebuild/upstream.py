"""The one place where the upstream llama.cpp source is pinned.

llama.cpp reaches us vendored inside the llama-cpp-python sdist on PyPI; the
sdist's sha256 is what makes a build reproducible, so it is checked before
anything is extracted.
"""

from __future__ import annotations

from typing import Final

SDIST_NAME: Final = "llama-cpp-python"
SDIST_VERSION: Final = "0.3.36"
SDIST_FILENAME: Final = "llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256: Final = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST_TOPDIR: Final = "llama_cpp_python-0.3.36"

# What the sdist vendors, for `tq-gguf info` and the base-tree check.
VENDOR_DIR: Final = "vendor/llama.cpp"
LLAMA_CPP_COMMIT: Final = "0c1e57098"
GGML_VERSION: Final = "0.25.3"
