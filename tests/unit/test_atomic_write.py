"""Files tq-gguf keeps are written whole or not at all (tq_gguf.atomicfile): a full disk while a
needle cell, an eval base or its stats is written leaves one clear error, no partial file and
the earlier file intact. (The session-state writer: tests/model/test_state_disk_full.py.)"""

from __future__ import annotations

import errno
import json

import pytest

from tq_gguf import atomicfile
from tq_gguf.analysis import evalbase, resultcache
from tq_gguf.errors import TqError


class _FillsUp:
    """A file whose writes store half of what they are given, then fail as a full disk does."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.fixture
def full_disk(monkeypatch):
    """atomicfile's writes fail with ENOSPC after half their bytes."""
    monkeypatch.setattr(atomicfile, "open", lambda *a, **k: _FillsUp(open(*a, **k)), raising=False)


def leftovers(directory, keep):
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


def assert_one_line_naming(error, path):
    message = str(error.value)
    assert isinstance(error.value, TqError)  # the CLI prints it as `error: <message>`, no traceback
    assert "\n" not in message and str(path) in message and "no space left" in message, message


def test_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "cell.json"
    atomicfile.write_text(path, "first")
    atomicfile.write_text(path, "second, longer")
    assert path.read_text() == "second, longer"
    assert leftovers(tmp_path, {"cell.json"}) == []


def test_a_full_disk_keeps_the_earlier_file(tmp_path, full_disk):
    path = tmp_path / "cell.json"
    path.write_text("earlier")
    with pytest.raises(atomicfile.DiskFullError) as error:
        atomicfile.write_text(path, "new " * 1000)
    assert_one_line_naming(error, path)
    assert "earlier file is unchanged" in str(error.value)
    assert path.read_text() == "earlier"
    assert leftovers(tmp_path, {"cell.json"}) == []


def test_a_full_disk_leaves_no_file_where_there_was_none(tmp_path, full_disk):
    path = tmp_path / "cell.json"
    with pytest.raises(atomicfile.DiskFullError) as error:
        atomicfile.write_text(path, "new " * 1000)
    assert "nothing was written" in str(error.value)
    assert leftovers(tmp_path, set()) == []


def test_other_errors_pass_through_and_clean_up(tmp_path):
    path = tmp_path / "cell.json"
    path.write_text("earlier")
    with pytest.raises(KeyError):
        with atomicfile.replacing(path) as tmp:
            tmp.write_text("partial")
            raise KeyError("the writer failed")
    assert path.read_text() == "earlier" and leftovers(tmp_path, {"cell.json"}) == []


def test_needle_cell_on_a_full_disk(tmp_path, full_disk):
    """resultcache.write_json is what `tq-gguf needle` stores each cell with."""
    path = tmp_path / "needle" / "q8_0_turbo3" / "L1024-d0.5-t0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"found": True}))
    with pytest.raises(atomicfile.DiskFullError) as error:
        resultcache.write_json(path, {"found": False, "answer": "x" * 500})
    assert_one_line_naming(error, path)
    assert resultcache.read_json(path) == {"found": True}
    assert leftovers(path.parent, {path.name}) == []


def test_eval_base_on_a_full_disk(tmp_path):
    """llama-perplexity writes the base to the path `writing` gives; the disk filling up then
    (the tool fails, or its file is renamed onto a full disk) keeps the earlier base whole."""
    base = evalbase.BaseLogits(path=tmp_path / "f16.kld", stats_path=tmp_path / "f16.json")
    base.path.write_bytes(b"earlier base")
    base.keep_stats({"ppl": 10.0, "ppl_err": 0.1, "chunks": 2})
    with pytest.raises(atomicfile.DiskFullError) as error:
        with base.writing() as written:
            assert written.parent == base.path.parent and written != base.path
            written.write_bytes(b"half of a new ba")
            raise OSError(errno.ENOSPC, "No space left on device", str(written))
    assert_one_line_naming(error, base.path)
    assert base.path.read_bytes() == b"earlier base" and base.stats()["chunks"] == 2
    assert leftovers(tmp_path, {"f16.kld", "f16.json"}) == []
    with base.writing() as written:
        written.write_bytes(b"new base")
    assert base.path.read_bytes() == b"new base" and leftovers(tmp_path, {"f16.kld", "f16.json"}) == []
