"""A device CI requires (Vulkan: .ci/run builds it and has lavapipe) fails the run under CI=true
when it is missing, in one line naming why, instead of turning every check into a skip; off CI,
and for devices CI does not have (CUDA), a missing device still skips."""

from __future__ import annotations

import pytest

from gpu_device import Device

REASON = "no Vulkan0 device here (ggml lists: CPU)"


def device(monkeypatch, required: bool, reason: str | None = REASON) -> Device:
    dev = Device("Vulkan0", "Vulkan", "build hint", ci_required=required)
    monkeypatch.setattr(Device, "skip_reason", lambda self: reason)
    return dev


def outcome(dev: Device):
    """What require() raised: pytest's fail or skip exception, or None (caught here so that a
    skip cannot pass for this test's own skip)."""
    try:
        dev.require()
    except (pytest.fail.Exception, pytest.skip.Exception) as e:
        return e
    return None


def test_a_required_device_missing_in_ci_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("CI", "true")
    failed = outcome(device(monkeypatch, required=True))
    assert isinstance(failed, pytest.fail.Exception), failed
    assert str(failed) == f"CI needs the Vulkan0 device and it is missing: {REASON}"
    assert failed.pytrace is False  # the line alone, no traceback


@pytest.mark.parametrize("ci, required", [(None, True), ("false", True), ("true", False)])
def test_otherwise_a_missing_device_skips(monkeypatch, ci, required):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    skipped = outcome(device(monkeypatch, required=required))
    assert isinstance(skipped, pytest.skip.Exception) and str(skipped) == REASON, skipped


def test_a_present_device_runs(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert outcome(device(monkeypatch, required=True, reason=None)) is None
