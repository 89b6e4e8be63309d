"""The header reader: keys and tensor descriptions without the vocabulary, in either byte order."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGUFReader
from helpers import run_cli, synthetic_gguf

from tq_gguf.errors import ModelError
from tq_gguf.gguf import ggufheader, ggufinfo, gguftag


def vocab_gguf(path, n_tokens: int, endianess=gguf.GGUFEndian.LITTLE):
    """A llama GGUF whose vocabulary (strings and scores) sits between the keys llama.cpp sizes the cache by."""
    w = gguf.GGUFWriter(str(path), "llama", endianess=endianess)
    w.add_block_count(2)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i}" for i in range(n_tokens)])
    w.add_token_scores([float(i) for i in range(n_tokens)])
    w.add_embedding_length(128)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_key_value("llama.attention.head_count_kv_layers", [1, 2], gguf.GGUFValueType.ARRAY,
                    sub_type=gguf.GGUFValueType.UINT32)
    w.add_context_length(4096)
    w.add_tensor("a.weight", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.add_tensor("b.weight", np.ones((3, 128), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("endianess", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_keys_and_tensors_agree_with_gguf_reader(tmp_path, endianess):
    path = vocab_gguf(tmp_path / "v.gguf", ggufheader.MAX_DECODED_ITEMS + 1, endianess)
    header = ggufheader.read_checked(path)
    reader = GGUFReader(path)
    assert list(header.fields) == [k for k in reader.fields if not k.startswith("GGUF.")]
    assert header.fields["tokenizer.ggml.tokens"].skipped and header.fields["tokenizer.ggml.scores"].skipped
    assert header.get("llama.context_length") == 4096 and header.get("llama.attention.head_count") == 2
    assert header.get("llama.attention.head_count_kv_layers") == [1, 2]
    assert header.get("tokenizer.ggml.model") == "llama"
    assert [(t.name, t.ggml_type, t.data_offset, t.n_bytes) for t in header.tensors] == \
        [(t.name, int(t.tensor_type), int(t.data_offset), int(t.n_bytes)) for t in reader.tensors]
    info = ggufinfo.read(path)
    assert (info.arch, info.n_layer, info.n_head_kv, info.n_ctx_train, info.n_tensors) == ("llama", 2, 1, 4096, 2)


def test_short_string_arrays_are_decoded(tmp_path):
    header = ggufheader.read_header(vocab_gguf(tmp_path / "v.gguf", 3))
    assert header.get("tokenizer.ggml.tokens") == ["tok0", "tok1", "tok2"]
    assert header.get("tokenizer.ggml.scores") == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("endianess", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_tag_copies_keys_and_tensors_byte_for_byte(tmp_path, endianess):
    src = vocab_gguf(tmp_path / "v.gguf", ggufheader.MAX_DECODED_ITEMS + 1, endianess)
    out = tmp_path / "t.gguf"
    gguftag.tag(src, out, "f16/q8_0")
    before, after = ggufheader.read_values(src), ggufheader.read_values(out)
    assert list(after) == [*before, ggufinfo.TQ_CACHE_KEY]
    assert {k: v for k, v in after.items() if k != ggufinfo.TQ_CACHE_KEY} == before
    reader = GGUFReader(out)  # gguf's own reader agrees on the copy's layout
    assert reader.endianess == endianess
    assert reader.get_field(ggufinfo.TQ_CACHE_KEY).contents() == "f16/q8_0"
    assert [t.data.tobytes() for t in reader.tensors] == [t.data.tobytes() for t in GGUFReader(src).tensors]


def test_a_cut_vocabulary_is_a_truncated_header(tmp_path):
    full = vocab_gguf(tmp_path / "v.gguf", ggufheader.MAX_DECODED_ITEMS + 1).read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(full[:len(full) // 4])  # inside the token strings
    with pytest.raises(ModelError, match=r"is a corrupt or truncated GGUF: its header needs \d+ bytes but the file has"):
        ggufheader.read_header(cut)


def test_impossible_counts_are_corrupt(tmp_path):
    data = bytearray(synthetic_gguf(tmp_path / "m.gguf").read_bytes())
    data[16:24] = (2**40).to_bytes(8, "little")  # the key count
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="claims 1099511627776 keys"):
        ggufheader.read_header(bad)


def test_inspect_plan_and_tag_read_the_header_only(tmp_path, monkeypatch):
    """The commands that describe a model go through ggufheader, never gguf's full reader, which
    decodes the whole vocabulary (seconds for a real model)."""
    path = vocab_gguf(tmp_path / "v.gguf", ggufheader.MAX_DECODED_ITEMS + 1)
    reads = []

    def refuse(*args, **kwargs):
        raise AssertionError("gguf.GGUFReader parses the whole vocabulary")

    def counted(p):
        reads.append(p)
        return read_checked(p)

    read_checked = ggufheader.read_checked
    monkeypatch.setattr(gguf, "GGUFReader", refuse)
    monkeypatch.setattr(gguf.gguf_reader, "GGUFReader", refuse)
    monkeypatch.setattr(ggufheader, "read_checked", counted)
    for args in (["inspect", path], ["plan", path, "--ctx", "4096"],
                 ["tag", path, "--cache", "f16/q8_0", "-o", tmp_path / "t.gguf"]):
        before = len(reads)
        ggufinfo._read_cached.cache_clear()  # each command reads the file afresh
        result = run_cli(*args)
        assert result.exit_code == 0, (args, result.output)
        assert len(reads) > before, args

