"""`tq-gguf build` names a missing Debian package before CMake runs, and .ci/run installs it."""

from pathlib import Path

import pytest

from tq_gguf import paths
from tq_gguf.nativebuild import builder
from tq_gguf.errors import BuildError

CI_PACKAGES = paths.REPO_ROOT / ".ci" / "apt-packages"


def fake_prefix(root: Path, probes) -> Path:
    for _, probe, _ in probes:
        kind, what = probe.split(":", 1)
        if kind == "file":
            (root / what).parent.mkdir(parents=True, exist_ok=True)
            (root / what).write_text("")
    return root


def test_missing_spirv_headers_are_named_with_their_package(tmp_path, monkeypatch):
    needs = builder.BACKEND_NEEDS["vulkan"]
    root = fake_prefix(tmp_path, needs)
    (root / "share/cmake/SPIRV-Headers/SPIRV-HeadersConfig.cmake").unlink()
    monkeypatch.setattr(builder, "CMAKE_PREFIXES", (str(root),))
    monkeypatch.setenv("CMAKE_PREFIX_PATH", "")
    monkeypatch.setattr(builder.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    with pytest.raises(BuildError) as err:
        builder.check_toolchain("vulkan")
    msg = str(err.value)
    assert "SPIR-V headers" in msg and "apt-get install spirv-headers" in msg
    assert "\n" not in msg and "libvulkan-dev" not in msg


def test_complete_prefix_passes_and_cmake_prefix_path_is_searched(tmp_path, monkeypatch):
    root = fake_prefix(tmp_path / "opt", builder.BACKEND_NEEDS["vulkan"])
    monkeypatch.setattr(builder, "CMAKE_PREFIXES", (str(tmp_path / "empty"),))
    monkeypatch.setattr(builder.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setenv("CMAKE_PREFIX_PATH", str(root))
    builder.check_toolchain("vulkan")
    monkeypatch.setenv("CMAKE_PREFIX_PATH", "")
    with pytest.raises(BuildError, match="apt-get install glslc|libvulkan-dev"):
        monkeypatch.setattr(builder.shutil, "which", lambda tool: None if tool == "glslc" else f"/usr/bin/{tool}")
        builder.check_toolchain("vulkan")


def test_ci_installs_every_package_the_build_checks_for():
    listed = {line.split("#")[0].strip() for line in CI_PACKAGES.read_text().splitlines()} - {""}
    debs = {pkg for needs in builder.BACKEND_NEEDS.values() for _, _, pkg in needs if " " not in pkg}
    assert debs <= listed, debs - listed
    backends_doc = (paths.REPO_ROOT / "docs" / "BACKENDS.md").read_text()
    for pkg in sorted(debs | {"spirv-tools", "mesa-vulkan-drivers"}):
        assert f"`{pkg}`" in backends_doc, pkg
