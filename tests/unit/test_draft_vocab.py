"""tq_gguf.gguf.vocab: llama.cpp's rule for which draft models can speculate for a target
(common/speculative.cpp, common_speculative_are_compatible), on small GGUFs."""

from __future__ import annotations

import gguf
import pytest

from tq_gguf.errors import ModelError
from tq_gguf.gguf import ggufheader, vocab

N_TOKENS = 5000  # past ggufheader.MAX_DECODED_ITEMS, so the header reader skips the list as it does a real one


def tokens(n: int = N_TOKENS) -> list[str]:
    return [f"tok{i}" for i in range(n)]


def write(path, token_list: list[str], tokenizer: str = "gpt2", bos: int = 1, eos: int = 2,
          add_bos: bool | None = False, add_eos: bool | None = None):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model(tokenizer)
    w.add_token_list(token_list)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    if add_eos is not None:
        w.add_add_eos_token(add_eos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    return ggufheader.read_header(path)


@pytest.fixture
def target(tmp_path):
    return write(tmp_path / "target.gguf", tokens())


def test_read_string_array_gives_every_token_in_order(target):
    assert ggufheader.read_string_array(target, vocab.TOKENS_KEY) == [t.encode() for t in tokens()]
    assert ggufheader.read_string_array(target, "tokenizer.ggml.absent") == []


def test_read_string_array_refuses_a_key_of_another_type(target):
    with pytest.raises(ModelError, match="tokenizer.ggml.bos_token_id is not an array of strings"):
        ggufheader.read_string_array(target, "tokenizer.ggml.bos_token_id")


def test_the_same_vocabulary_can_draft(target, tmp_path):
    assert vocab.mismatch(target, write(tmp_path / "d.gguf", tokens())) is None


def test_a_different_token_is_named(target, tmp_path):
    changed = tokens()
    changed[4321] = "other"
    assert vocab.mismatch(target, write(tmp_path / "d.gguf", changed)) == \
        "its token 4321 is b'other', the target's b'tok4321'"


def test_tokens_below_the_first_checked_id_may_differ(target, tmp_path):
    """llama.cpp compares token texts from id 5 on (the special tokens below differ between
    otherwise equal vocabularies)."""
    changed = tokens()
    changed[vocab.FIRST_CHECKED_TOKEN - 1] = "other"
    assert vocab.mismatch(target, write(tmp_path / "d.gguf", changed)) is None
    changed[vocab.FIRST_CHECKED_TOKEN] = "other"
    assert vocab.mismatch(target, write(tmp_path / "d2.gguf", changed)) is not None


def test_sizes_may_differ_by_the_slack_and_no_more(target, tmp_path):
    assert vocab.mismatch(target, write(tmp_path / "d.gguf", tokens(N_TOKENS + vocab.SIZE_SLACK))) is None
    assert vocab.mismatch(target, write(tmp_path / "d2.gguf", tokens(N_TOKENS + vocab.SIZE_SLACK + 1))) == \
        f"it has {N_TOKENS + vocab.SIZE_SLACK + 1} tokens, the target {N_TOKENS}"


def test_tokenizer_and_added_tokens_must_agree(target, tmp_path):
    assert "tokenizer.ggml.model is 'llama'" in vocab.mismatch(target, write(tmp_path / "a.gguf", tokens(),
                                                                                tokenizer="llama"))
    assert "add_bos_token is True" in vocab.mismatch(target, write(tmp_path / "b.gguf", tokens(), add_bos=True))
    # a BOS or EOS the tokenizer never adds may differ; one it adds may not
    assert vocab.mismatch(target, write(tmp_path / "c.gguf", tokens(), eos=3)) is None
    assert vocab.mismatch(target, write(tmp_path / "d.gguf", tokens(), bos=7)) is None
    eos_added = write(tmp_path / "g.gguf", tokens(), add_eos=True)
    assert "eos_token_id is 3" in vocab.mismatch(eos_added, write(tmp_path / "h.gguf", tokens(), eos=3, add_eos=True))
    adds = write(tmp_path / "e.gguf", tokens(), add_bos=True)
    assert "bos_token_id is 7" in vocab.mismatch(adds, write(tmp_path / "f.gguf", tokens(), bos=7, add_bos=True))
