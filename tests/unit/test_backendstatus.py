"""Backends whose kernels have never run say so: in `build --help`, in `info` and when a build starts."""

from __future__ import annotations

import json

import pytest
from helpers import run_cli

from tq_gguf.nativebuild import backendstatus
from tq_gguf.nativebuild import builder
from tq_gguf.errors import BuildError

UNTESTED = [name for name, s in backendstatus.STATUS.items() if not s.has_run]


def test_every_build_backend_has_a_status():
    assert list(backendstatus.STATUS) == list(builder.BACKENDS)
    assert UNTESTED == ["cuda", "metal"]


def test_build_help_gives_each_backends_status():
    text = run_cli("build", "--help").output
    for name in UNTESTED:
        line = next(line for line in text.splitlines() if line.split()[:1] == [name])
        assert backendstatus.STATUS[name].status in line and backendstatus.BACKENDS_DOC in line


def test_info_gives_each_backends_status():
    text = run_cli("info").output
    for line in backendstatus.lines():
        assert line in text
    data = json.loads(run_cli("info", "--json").output)["backend_status"]
    assert data["details"] == backendstatus.BACKENDS_DOC
    assert [n for n, s in data["backends"].items() if not s["has_run"]] == UNTESTED


@pytest.mark.parametrize("backend", UNTESTED)
def test_a_build_of_an_untested_backend_warns_first(monkeypatch, backend):
    def stop(backend):
        raise BuildError("stopped before compiling")

    monkeypatch.setattr(builder, "check_toolchain", stop)
    r = run_cli("build", "--backend", backend)
    assert r.exit_code == 1
    assert r.output.splitlines() == [backendstatus.caveat(backend), "error: stopped before compiling"]
    assert backendstatus.BACKENDS_DOC in backendstatus.caveat(backend)


def test_a_cpu_build_does_not_warn():
    assert backendstatus.caveat("cpu") is None and backendstatus.caveat("vulkan") is None
