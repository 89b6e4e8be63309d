"""Cached needle cells and eval bases are keyed by the sha256 of the whole model file: an edited
model, even one byte past its first MiB (where a partial hash would not look), is another model
and never reuses the original's results."""

from __future__ import annotations

import hashlib
import os
import shutil

import pytest

from tq_gguf.analysis import resultcache
from tq_gguf.gguf import filehash

SIZE = 3 << 20


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TQ_GGUF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(os.urandom(SIZE))
    return path


def edit_one_byte(path, at=2 << 20):
    with open(path, "r+b") as f:
        f.seek(at)
        old = f.read(1)
        f.seek(at)
        f.write(bytes([old[0] ^ 1]))


def cell_dir(model):
    """Where `tq-gguf needle` keeps this model's cells for one task (needlerun.cache_dir)."""
    return resultcache.directory("needle", model, resultcache.key("task", 1, "build", "b"))


def cell(root):
    return root / "q8_0_turbo3" / "L1024-d0.5-t0.json"


def test_an_edited_copy_does_not_hit_the_old_cell(cache, model, tmp_path):
    root = cell_dir(model)
    resultcache.write_json(cell(root), {"found": True})
    edited = tmp_path / "edited" / model.name  # same name and size, one byte past the first MiB changed
    edited.parent.mkdir()
    shutil.copy(model, edited)
    assert cell_dir(edited) == root  # a true copy shares cells
    edit_one_byte(edited)
    edited_root = cell_dir(edited)
    assert edited_root != root
    assert resultcache.read_json(cell(edited_root)) is None
    assert resultcache.read_json(cell(root)) == {"found": True}


def test_an_edit_in_place_is_seen_despite_the_old_mtime(cache, model):
    """The remembered digest is keyed by the file's stat, including ctime, which a write changes
    and no one can set back."""
    before = filehash.sha256(model)
    st = model.stat()
    edit_one_byte(model)
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same size and mtime as before
    after = filehash.sha256(model)
    assert after != before
    assert after == hashlib.sha256(model.read_bytes()).hexdigest()


def test_the_digest_is_remembered(cache, model, monkeypatch):
    digest = filehash.sha256(model)
    real_open = type(model).open

    def no_model_reads(self, *args, **kwargs):
        assert self != model, "the model was read again"
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "open", no_model_reads)
    assert filehash.sha256(model) == digest
