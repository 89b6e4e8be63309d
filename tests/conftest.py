"""Shared fixtures. Tests that need the native build or a model say so with markers;
in CI both exist (the README's test command builds and fetches first)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def native_lib():
    from tq_gguf import ggml

    return ggml.lib()


@pytest.fixture(scope="session")
def default_model_path():
    from tq_gguf import models

    return models.fetch(models.DEFAULT_MODEL)
