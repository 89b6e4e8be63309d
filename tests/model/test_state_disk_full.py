"""A session state file is written whole or not at all (tq_gguf.atomicfile): the disk filling up
mid-write is one clear error, leaves no partial file, and the earlier state still loads, with
the fingerprint beside it (tq_gguf.gguf.statesidecar) still describing it."""

from __future__ import annotations

import errno

import pytest

from tq_gguf import atomicfile
from tq_gguf.gguf import statesidecar
from tq_gguf.runtime import state

PROMPT = "The capital of France is Paris. The capital of Spain is"
SAVED = ["session.bin", "session.bin.tq.json"]


@pytest.fixture(scope="module")
def llm(default_model_path):
    from tq_gguf import Llama

    session = Llama(default_model_path, cache="q8_0/turbo3", n_ctx=256, n_threads=1, n_threads_batch=1)
    yield session
    session.close()


def test_a_full_disk_keeps_the_earlier_state(llm, tmp_path, monkeypatch):
    tokens = llm.tokenize(PROMPT.encode())
    llm.reset()
    llm.eval(tokens[:6])
    path = tmp_path / "session.bin"
    size = llm.save_state_file(path)
    earlier = path.read_bytes()
    earlier_sidecar = statesidecar.path_for(path).read_text()
    assert size == len(earlier) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == SAVED

    llm.eval(tokens[6:])  # more to save: the new file would differ
    real_write = state._write_session_file

    def disk_fills_up(session, target):
        real_write(session, target)  # llama.cpp writes the file, then the disk is found full
        with open(target, "r+b") as f:
            f.truncate(len(earlier) // 2)
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(state, "_write_session_file", disk_fills_up)
    with pytest.raises(atomicfile.DiskFullError) as error:
        llm.save_state_file(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "earlier file is unchanged" in message, message
    assert path.read_bytes() == earlier and statesidecar.path_for(path).read_text() == earlier_sidecar
    assert sorted(p.name for p in tmp_path.iterdir()) == SAVED  # no partial file beside them

    monkeypatch.undo()
    assert statesidecar.read(path) is not None  # the sidecar still describes the earlier file
    assert llm.load_state_file(path) == list(tokens[:6])  # the earlier state is whole and loads


def test_a_disk_filling_up_at_the_sidecar_keeps_both_earlier_files(llm, tmp_path, monkeypatch):
    """The sidecar is written before the new session file is renamed into place: no room for it
    leaves the earlier session file and its sidecar, which still describes it."""
    tokens = llm.tokenize(PROMPT.encode())
    llm.reset()
    llm.eval(tokens[:6])
    path = tmp_path / "session.bin"
    llm.save_state_file(path)
    earlier, earlier_sidecar = path.read_bytes(), statesidecar.path_for(path).read_text()
    llm.eval(tokens[6:])

    def disk_fills_up(target, text):
        with atomicfile.replacing(target) as tmp:
            tmp.write_text(text[:10])
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    monkeypatch.setattr(statesidecar.atomicfile, "write_text", disk_fills_up)
    with pytest.raises(atomicfile.DiskFullError, match="earlier file is unchanged"):
        llm.save_state_file(path)
    monkeypatch.undo()
    assert path.read_bytes() == earlier and statesidecar.path_for(path).read_text() == earlier_sidecar
    assert sorted(p.name for p in tmp_path.iterdir()) == SAVED
    assert statesidecar.read(path) is not None
    assert llm.load_state_file(path) == list(tokens[:6])


def test_llama_cpp_failing_on_a_full_disk_is_told_apart(llm, tmp_path, monkeypatch):
    """llama_state_save_file reports failure as false only; with no room beside the file that
    becomes the disk-full error, not a bare 'could not write'."""
    from tq_gguf.native import llamacpp

    llama_cpp = llamacpp.load()
    monkeypatch.setattr(llama_cpp, "llama_state_save_file", lambda *args: False)
    monkeypatch.setattr(state.shutil, "disk_usage", lambda p: type("Usage", (), {"free": 0})())
    with pytest.raises(atomicfile.DiskFullError):
        llm.save_state_file(tmp_path / "session.bin")
    assert list(tmp_path.iterdir()) == []
