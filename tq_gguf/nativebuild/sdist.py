"""Download, verify and extract the pinned llama-cpp-python sdist."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .. import paths
from . import upstream
from ..errors import BuildError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected: str = upstream.SDIST_SHA256) -> None:
    """Refuse a file whose sha256 is not the pinned one."""
    actual = sha256_file(path)
    if actual != expected:
        raise BuildError(
            f"sha256 mismatch for {path.name}: expected {expected}, got {actual}. "
            f"The download is corrupt or not the pinned {upstream.SDIST_NAME}=={upstream.SDIST_VERSION}; "
            f"delete {path} and run `tq-gguf build` again."
        )


def download(dest_dir: Path | None = None) -> Path:
    """Fetch the sdist with pip (which knows the index and proxies) unless a verified copy exists."""
    dest_dir = dest_dir or paths.sdist_dir()
    target = dest_dir / upstream.SDIST_FILENAME
    if target.exists():
        verify(target)
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir) as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            "--progress-bar", "on", "-d", tmp, f"{upstream.SDIST_NAME}=={upstream.SDIST_VERSION}",
        ]
        if subprocess.run(cmd).returncode != 0:
            raise BuildError(f"could not download {upstream.SDIST_NAME}=={upstream.SDIST_VERSION} from PyPI")
        got = Path(tmp) / upstream.SDIST_FILENAME
        if not got.exists():
            raise BuildError(f"pip did not produce {upstream.SDIST_FILENAME}")
        verify(got)
        got.replace(target)
    return target


def _is_git_metadata(member: tarfile.TarInfo) -> bool:
    # The sdist carries a partial .git directory and a `vendor/llama.cpp/.git`
    # gitlink pointing into it. Neither is a usable repository, and llama.cpp's
    # CMake would run git against them, so they are not extracted at all.
    return ".git" in Path(member.name).parts


def extract(sdist: Path, dest: Path) -> Path:
    """Extract into `dest` (replaced if present); returns the package root inside it."""
    verify(sdist)
    if dest.exists():
        shutil.rmtree(dest)
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with tarfile.open(sdist, "r:gz") as tar:
        members = [m for m in tar.getmembers() if not _is_git_metadata(m)]
        tar.extractall(tmp, members=members, filter="data")
    tmp.replace(dest)
    return dest / upstream.SDIST_TOPDIR


def pristine_tree() -> Path:
    """The verified, extracted, unpatched package root, extracted once per sdist hash."""
    root = paths.pristine_dir() / upstream.SDIST_SHA256[:16]
    pkg = root / upstream.SDIST_TOPDIR
    if not (root / ".complete").exists():
        pkg = extract(download(), root)
        (root / ".complete").write_text(upstream.SDIST_SHA256 + "\n")
    return pkg
