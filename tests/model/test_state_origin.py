"""Saved states know where they came from (tq_gguf.gguf.stateorigin): a state from another model,
another build's cache formats or another state format is refused in one line naming what
differs, before llama.cpp touches the session; a state without a fingerprint (saved earlier, or
by llama.cpp itself) still loads bit-exactly, checked by its layout only."""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import json
import shutil

import numpy as np
import pytest

from tq_gguf.gguf import statesidecar
from tq_gguf.gguf.stateorigin import FORMAT_VERSION, StateOriginMismatch

CACHE = "q8_0/turbo3"
N_PROMPT = 40
PROMPT = ("Release notes. The merge machinery learned to rename directories; the pack writer "
          "reuses deltas across packs; fetch negotiates fewer round trips; ") * 4


def session(path, cache: str = CACHE, **kwargs):
    from tq_gguf import Llama

    return Llama(path, cache=cache, n_ctx=128, seed=0, **kwargs)


def raw_state(llm) -> bytes:
    from tq_gguf.runtime import state

    return state.raw_bytes(llm)


def next_logits(llm, token: int) -> np.ndarray:
    import llama_cpp

    llm.eval([token])
    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(llm.n_vocab(),)).copy()


@pytest.fixture(scope="module")
def tokens(default_model_path) -> list[int]:
    llm = session(default_model_path)
    out = llm.tokenize(PROMPT.encode())[: N_PROMPT + 1]
    llm.close()
    return out


@pytest.fixture(scope="module")
def saved(default_model_path, tokens, tmp_path_factory):
    """The prompt's state in memory and as a session file, and the next token's logits after it."""
    llm = session(default_model_path)
    llm.eval(tokens[:N_PROMPT])
    state = llm.save_state()
    path = tmp_path_factory.mktemp("origin") / "session.bin"
    llm.save_state_file(path)
    logits = next_logits(llm, tokens[N_PROMPT])
    llm.close()
    return state, path, logits


def refused(model_path, tokens, load) -> str:
    """Load into a session on `model_path` that holds 10 tokens of its own: the error (one line),
    and the session unchanged."""
    llm = session(model_path)
    llm.eval(tokens[:10])
    before = raw_state(llm)
    with pytest.raises(StateOriginMismatch) as exc:
        load(llm)
    assert llm.n_tokens == 10 and raw_state(llm) == before
    llm.close()
    assert "\n" not in str(exc.value)
    return str(exc.value)


def loads_bit_exactly(model_path, load, saved_bytes: bytes, expected: np.ndarray, token: int) -> None:
    llm = session(model_path)
    load(llm)
    assert llm.n_tokens == N_PROMPT and raw_state(llm) == saved_bytes
    assert np.array_equal(next_logits(llm, token), expected)
    llm.close()


def with_sidecar(path, tmp_path, edit, name: str = "forged.bin"):
    """A copy of the session file whose sidecar is edited by `edit(dict)`."""
    copy_path = tmp_path / name
    shutil.copy(path, copy_path)
    doc = json.loads(statesidecar.path_for(path).read_text())
    edit(doc)
    statesidecar.path_for(copy_path).write_text(json.dumps(doc))
    return copy_path


def test_the_session_file_is_what_llama_cpp_writes(default_model_path, tokens, saved, tmp_path):
    """The fingerprint lives beside the file, so llama.cpp's tools still read the file itself."""
    from tq_gguf.runtime import state

    _, path, _ = saved
    llm = session(default_model_path)
    llm.eval(tokens[:N_PROMPT])
    state._write_session_file(llm, tmp_path / "plain.bin")
    llm.close()
    assert path.read_bytes() == (tmp_path / "plain.bin").read_bytes()
    doc = json.loads(statesidecar.path_for(path).read_text())
    assert doc["fingerprint"]["model_name"] == default_model_path.name
    assert doc["fingerprint"]["version"] == FORMAT_VERSION
    assert doc["session_file"]["size"] == path.stat().st_size


@pytest.fixture(scope="module")
def edited_model(default_model_path, tmp_path_factory):
    """The same model with one byte of its last tensor changed: same architecture, shapes and
    cache layout, so only the fingerprint tells the two apart."""
    path = tmp_path_factory.mktemp("model") / "edited-SmolLM2.gguf"
    shutil.copy(default_model_path, path)
    with open(path, "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    return path


@pytest.mark.parametrize("how", ["state", "file"])
def test_a_state_from_another_model_is_refused_by_name(default_model_path, edited_model, tokens, saved, how):
    from tq_gguf.gguf import filehash

    state, path, _ = saved
    load = (lambda llm: llm.load_state_file(path)) if how == "file" else (lambda llm: llm.load_state(state))
    message = refused(edited_model, tokens, load)
    ours, theirs = filehash.sha256(default_model_path)[:12], filehash.sha256(edited_model)[:12]
    assert message == (f"this state was saved from {default_model_path.name} (sha256 {ours}); "
                       f"this session runs {edited_model.name} (sha256 {theirs})")


def test_a_state_from_another_model_of_the_same_architecture_is_refused_by_name(tmp_path):
    """qwen2.5-coder 0.5b and 1.5b are both qwen2 (their layer counts differ, so check_fits leaves it
    to llama.cpp, which would empty the context before it failed)."""
    from tq_gguf.gguf import models

    small, large = models.fetch("qwen2.5-coder-0.5b"), models.fetch("qwen2.5-coder-1.5b")
    llm = session(small)
    toks = llm.tokenize(PROMPT.encode())[:20]
    llm.eval(toks)
    state = llm.save_state()
    llm.save_state_file(tmp_path / "qwen.bin")
    llm.close()
    for load in (lambda llm: llm.load_state(state), lambda llm: llm.load_state_file(tmp_path / "qwen.bin")):
        message = refused(large, toks, load)
        assert f"saved from {small.name}" in message and f"this session runs {large.name}" in message


@pytest.mark.parametrize("field,value,why", [
    ("formats", "0" * 64, "saved by a build with other cache formats (type table and codebooks hash 000000000000"),
    ("version", FORMAT_VERSION + 1, f"saved in tq-gguf state format {FORMAT_VERSION + 1}; this tq-gguf reads format"),
])
@pytest.mark.parametrize("how", ["state", "file"])
def test_a_forged_fingerprint_is_refused(default_model_path, tokens, saved, tmp_path, field, value, why, how):
    state, path, _ = saved
    if how == "file":
        forged = with_sidecar(path, tmp_path, lambda doc: doc["fingerprint"].update({field: value}))
        load = lambda llm: llm.load_state_file(forged)  # noqa: E731
    else:
        forged = copy.copy(state)
        forged.fingerprint = dataclasses.replace(state.fingerprint, **{field: value})
        load = lambda llm: llm.load_state(forged)  # noqa: E731
    assert why in refused(default_model_path, tokens, load)


def test_states_without_a_fingerprint_still_load_bit_exactly(default_model_path, tokens, saved, tmp_path):
    """Saved before fingerprints (a pickled TqLlamaState without the field, a session file without a
    sidecar), by llama-cpp-python itself, or a file overwritten since its sidecar was written."""
    import llama_cpp

    state, path, logits = saved
    pickled_before = copy.copy(state)
    del pickled_before.fingerprint
    plain = llama_cpp.llama.LlamaState(state.input_ids, state.scores, state.n_tokens, state.llama_state,
                                       state.llama_state_size, state.seed)
    bare = tmp_path / "bare.bin"
    shutil.copy(path, bare)
    # another model's sidecar, recording another file (the session file was overwritten since)
    stale = with_sidecar(path, tmp_path, lambda doc: doc.update(
        fingerprint={**doc["fingerprint"], "model_sha256": "0" * 64}, session_file={"size": 1, "sha256": "0" * 64}),
        name="stale.bin")
    for load in (lambda llm: llm.load_state(pickled_before), lambda llm: llm.load_state(plain),
                 lambda llm: llm.load_state_file(bare), lambda llm: llm.load_state_file(stale)):
        loads_bit_exactly(default_model_path, load, state.llama_state, logits, tokens[N_PROMPT])
