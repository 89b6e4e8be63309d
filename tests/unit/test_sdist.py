import hashlib
import io
import tarfile

import pytest

from tq_gguf.nativebuild import sdist, upstream
from tq_gguf.errors import BuildError


def test_verify_refuses_a_hash_mismatch(tmp_path):
    f = tmp_path / upstream.SDIST_FILENAME
    f.write_bytes(b"not the sdist")
    with pytest.raises(BuildError) as exc:
        sdist.verify(f)
    msg = str(exc.value)
    assert "sha256 mismatch" in msg
    assert upstream.SDIST_SHA256 in msg
    assert hashlib.sha256(b"not the sdist").hexdigest() in msg


def test_verify_accepts_the_expected_hash(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"abc")
    sdist.verify(f, hashlib.sha256(b"abc").hexdigest())


def _tar_with(tmp_path, files: dict[str, bytes]):
    path = tmp_path / "t.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_drops_git_metadata_and_gitlink(tmp_path, monkeypatch):
    top = upstream.SDIST_TOPDIR
    tar = _tar_with(tmp_path, {
        f"{top}/setup.txt": b"x",
        f"{top}/.git/HEAD": b"ref",
        f"{top}/vendor/llama.cpp/.git": b"gitdir: ../../.git/modules/vendor/llama.cpp",
        f"{top}/vendor/llama.cpp/ggml/ggml.c": b"int x;",
    })
    monkeypatch.setattr(sdist, "verify", lambda path, expected=None: None)
    root = sdist.extract(tar, tmp_path / "out")
    assert (root / "setup.txt").read_bytes() == b"x"
    assert (root / "vendor/llama.cpp/ggml/ggml.c").exists()
    assert not (root / ".git").exists()
    assert not (root / "vendor/llama.cpp/.git").exists()


def test_pinned_sdist_in_cache_is_verified():
    """The cached pristine tree comes from the pinned, verified sdist (downloads it if needed)."""
    tree = sdist.pristine_tree()
    assert (tree / upstream.VENDOR_DIR / "ggml/include/ggml.h").exists()
    assert not (tree / upstream.VENDOR_DIR / ".git").exists()
    sdist.verify(sdist.download())
