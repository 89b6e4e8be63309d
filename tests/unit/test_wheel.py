"""The wheel carries what an installed tq-gguf needs to build and verify outside a checkout.

.ci/run goes further: it installs this wheel into a scratch venv in a folder with no
checkout and runs `tq-gguf build`, `run` and `verify` there (tools/wheel_install_check.sh).
"""

import subprocess
import sys
import zipfile

import pytest

from tq_gguf import paths
from tq_gguf.nativebuild import buildkey


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(paths.REPO_ROOT)],
                   check=True, capture_output=True)
    (whl,) = out.glob("tq_gguf-*.whl")
    return zipfile.ZipFile(whl)


def shipped_files():
    for rel, is_dir in paths.SHIPPED:
        if is_dir:
            yield from (p.relative_to(paths.REPO_ROOT).as_posix() for p in (paths.REPO_ROOT / rel).rglob("*")
                        if p.is_file() and "__pycache__" not in p.parts)
        else:
            yield rel


def test_wheel_carries_patches_native_and_rows_byte_for_byte(wheel):
    names = set(wheel.namelist())
    files = list(shipped_files())
    assert len(files) > 20
    for rel in files:
        inside = f"tq_gguf/_data/{rel}"
        assert inside in names, rel
        assert wheel.read(inside) == (paths.REPO_ROOT / rel).read_bytes(), rel
    assert "tq_gguf/py.typed" in names


def test_installed_layout_gives_the_same_build_key(wheel, tmp_path):
    wheel.extractall(tmp_path)
    data = tmp_path / "tq_gguf" / "_data"
    for backend in ("cpu", *buildkey.BACKEND_ONLY_DIRS):
        assert buildkey.native_hash(data / "native", backend) == buildkey.native_hash(paths.REPO_ROOT / "native", backend)
    from tq_gguf.nativebuild import patches
    assert patches.series_hash(data / "patches") == patches.series_hash(paths.REPO_ROOT / "patches")
