"""A saved state's fingerprint (tq_gguf.gguf.stateorigin) and a session file's sidecar
(tq_gguf.gguf.statesidecar), without a native build: the canonical serialisation of the cache
formats depends on their values only, and changes with any one of them; a fingerprint reads
back as written; a sidecar describes its own session file or nothing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tq_gguf.gguf import stateorigin, statesidecar
from tq_gguf.gguf.statefile import StateError
from tq_gguf.gguf.stateorigin import FORMAT_VERSION, Fingerprint, StateOriginMismatch
from tq_gguf.kv import cachetypes
from tq_gguf.reference import codebooks, rotation

# ggml ids as a build might number them (the real ones come from the installed library)
IDS = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "iq4_nl": 20, "bf16": 30,
       "turbo2": 41, "turbo3": 42, "turbo4": 43}


def digest(ids=IDS) -> str:
    return hashlib.sha256(stateorigin.canonical_formats(ids)).hexdigest()


def test_the_serialisation_depends_on_the_values_only():
    """Not on dict order, nor on the process (string hashing is randomised per process)."""
    assert digest(dict(reversed(IDS.items()))) == digest()
    code = ("import hashlib, json, sys; from tq_gguf.gguf import stateorigin; "
            "print(hashlib.sha256(stateorigin.canonical_formats(json.loads(sys.argv[1]))).hexdigest())")
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code, json.dumps(IDS)], capture_output=True, text=True, check=True,
                             env={**os.environ, "PYTHONHASHSEED": seed})
        assert out.stdout.strip() == digest()


def test_the_codebook_types_hash_as_before_the_trellis_types():
    """Adding the trellis-coded types must not change `formats`: every state saved before them
    would otherwise be refused as another build's. The value is canonical_formats(IDS) of the
    commit before them; the trellis types have a hash of their own."""
    assert digest() == "a9904c2b4eb1c2c5719c27404af2fbf341d77285323dd6b98507532267cee1a6"
    ids = {**IDS, "tcq2": 46, "tcq3": 47}
    assert digest(ids) == digest()
    trellis = hashlib.sha256(stateorigin.canonical_trellis_formats(ids)).hexdigest()
    assert trellis != hashlib.sha256(stateorigin.canonical_trellis_formats({**ids, "tcq3": 48})).hexdigest()


def test_one_ulp_in_a_trellis_level_changes_the_trellis_hash(monkeypatch):
    from tq_gguf.reference import trellistables
    before = stateorigin.canonical_trellis_formats(IDS)
    nudged = trellistables.LEVELS["tcq3"].copy()
    nudged[3] = np.nextafter(nudged[3], np.float32(1))
    monkeypatch.setitem(trellistables.LEVELS, "tcq3", nudged)
    assert stateorigin.canonical_trellis_formats(IDS) != before


def test_a_state_with_other_trellis_tables_is_refused_and_one_without_the_field_is_not():
    here = Fingerprint(FORMAT_VERSION, "ab" * 32, "cd" * 32, "model.gguf", "12" * 32)
    with pytest.raises(StateOriginMismatch, match="trellis-coded"):
        stateorigin.check_format(Fingerprint(FORMAT_VERSION, here.formats, here.model_sha256, here.model_name, "34" * 32), here)
    older = {k: v for k, v in here.as_dict().items() if k != "trellis"}
    stateorigin.check_format(Fingerprint.from_dict(older), here)
    assert Fingerprint.from_dict(here.as_dict()) == here
    with pytest.raises(ValueError, match="trellis"):
        Fingerprint.from_dict({**here.as_dict(), "trellis": 5})


def test_the_serialisation_holds_exact_float32_centroids():
    doc = json.loads(stateorigin.canonical_formats(IDS))
    for bits, levels in codebooks.CENTROIDS.items():
        read_back = np.array([float.fromhex(v) for v in doc["centroids"][str(bits)]], dtype=np.float32)
        assert np.array_equal(read_back, levels)


def test_one_ulp_in_one_centroid_changes_the_hash(monkeypatch):
    before = digest()
    nudged = codebooks.CENTROIDS[3].copy()
    nudged[5] = np.nextafter(nudged[5], np.float32(1))
    monkeypatch.setitem(codebooks.CENTROIDS, 3, nudged)
    assert digest() != before


def test_a_type_id_block_size_or_rotation_sign_changes_the_hash(monkeypatch):
    before = digest()
    assert digest({**IDS, "turbo3": 44}) != before
    assert digest({k: v for k, v in IDS.items() if k != "turbo2"}) != before  # a build without turbo2
    t = cachetypes.CACHE_TYPES["turbo4"]
    halved = cachetypes.CacheType(t.name, 32, t.type_size // 2, t.index_bits)
    monkeypatch.setitem(cachetypes.CACHE_TYPES, "turbo4", halved)
    assert digest() != before
    monkeypatch.undo()
    signs = rotation.rotation_signs(rotation.GROUP)
    flipped = signs.copy()
    flipped[63] = -flipped[63]
    monkeypatch.setattr(rotation, "rotation_signs", lambda n=rotation.GROUP, seed=rotation.SIGN_SEED: flipped)
    assert digest() != before


FP = Fingerprint(FORMAT_VERSION, "ab" * 32, "cd" * 32, "model.gguf")


def test_a_fingerprint_reads_back_as_written():
    assert Fingerprint.from_dict(json.loads(json.dumps(FP.as_dict()))) == FP
    with pytest.raises(ValueError, match="model_sha256"):
        Fingerprint.from_dict({**FP.as_dict(), "model_sha256": 7})
    newer = f"format {FORMAT_VERSION + 1}; this tq-gguf reads format {FORMAT_VERSION}"
    with pytest.raises(StateOriginMismatch, match=newer):
        Fingerprint.from_dict({**FP.as_dict(), "version": FORMAT_VERSION + 1})


def test_mismatches_are_named():
    other_model = Fingerprint(FORMAT_VERSION, FP.formats, "ef" * 32, "other.gguf")
    with pytest.raises(StateOriginMismatch) as exc:
        stateorigin.check_model(FP, other_model)
    assert str(exc.value) == (f"this state was saved from model.gguf (sha256 {'cd' * 6}); "
                              f"this session runs other.gguf (sha256 {'ef' * 6})")
    stateorigin.check_format(FP, other_model)  # the same formats
    with pytest.raises(StateOriginMismatch, match=f"type table and codebooks hash {'ab' * 6}; this build's is 0123"):
        stateorigin.check_format(FP, Fingerprint(FORMAT_VERSION, "0123" * 16, FP.model_sha256, FP.model_name))


@pytest.fixture
def session_file(tmp_path):
    path = tmp_path / "session.bin"
    path.write_bytes(b"ggsn" + os.urandom(1000))
    statesidecar.write(path, path, FP)
    return path


def test_a_sidecar_describes_its_session_file(session_file):
    assert statesidecar.read(session_file) == FP
    assert statesidecar.path_for(session_file).name == "session.bin.tq.json"
    assert statesidecar.read(session_file.with_name("plain.bin")) is None  # none beside it


def test_a_sidecar_of_another_file_is_ignored(session_file):
    """The session file was overwritten (llama.cpp's tools, a crash between the two renames): the
    sidecar describes another file, and this one is plain."""
    data = bytearray(session_file.read_bytes())
    data[500] ^= 1
    session_file.write_bytes(bytes(data))
    assert statesidecar.read(session_file) is None


@pytest.mark.parametrize("damage,why", [(lambda d: "{", "Expecting"),
                                        (lambda d: json.dumps({"fingerprint": d["fingerprint"]}), "no session_file"),
                                        (lambda d: json.dumps({**d, "fingerprint": {"version": FORMAT_VERSION}}),
                                         "missing or malformed formats, model_sha256, model_name")])
def test_a_damaged_sidecar_is_refused_in_one_line(session_file, damage, why):
    sidecar = statesidecar.path_for(session_file)
    sidecar.write_text(damage(json.loads(sidecar.read_text())))
    with pytest.raises(StateError) as exc:
        statesidecar.read(session_file)
    message = str(exc.value)
    assert "\n" not in message and str(sidecar) in message and why in message, message
    assert "remove it to load" in message
