"""Saving and loading sessions with compressed KV caches (tq_gguf.runtime.state).

A saved state holds the K/V rows in the cache's own types, so a round trip must
be bit-exact: same raw state bytes, same next-token logits, same continuation.
A state saved under another cache config must be refused by name, with the
session left as it was (llama.cpp alone empties the context, then fails).
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

N_CTX = 256
N_PROMPT = 100
N_CONTINUE = 8
# one of each kind: q8_0 keys, turbo keys, a per-layer (mixed) config, the smallest turbo keys,
# and smoothed keys (their mu travels with the state: a session that learned another one from
# its own first tokens would continue differently)
CONFIGS = ["q8_0/turbo3", "turbo4/turbo3", "q8_0/turbo2:b2", "turbo2/turbo2", "turbo4/turbo4:sk", "q8_0/tcq3",
           "turbo4/tcq2:sk"]


def session(path, cache: str, **kwargs):
    from tq_gguf import Llama

    return Llama(path, cache=cache, n_ctx=N_CTX, seed=0, **kwargs)


def last_logits(llm) -> np.ndarray:
    import llama_cpp

    ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(llm.n_vocab(),)).copy()


def continue_greedy(llm, first: int, n: int = N_CONTINUE) -> tuple[list[int], list[np.ndarray]]:
    """Feed `first`, then n-1 greedy tokens one at a time; the tokens chosen and every step's logits."""
    tokens, rows, token = [], [], first
    for _ in range(n):
        llm.eval([token])
        rows.append(last_logits(llm))
        token = int(rows[-1].argmax())
        tokens.append(token)
    return tokens, rows


def raw_state(llm) -> bytes:
    from tq_gguf.runtime import state

    return state.raw_bytes(llm)


@pytest.fixture(scope="module")
def text_tokens(default_model_path) -> list[int]:
    from tq_gguf.analysis.evaltext import git_release_notes

    llm = session(default_model_path, "f16/f16")
    tokens = llm.tokenize(git_release_notes(3000).encode())[: N_PROMPT + 1]
    llm.close()
    return tokens


@pytest.fixture(scope="module")
def saved(default_model_path, text_tokens, tmp_path_factory):
    """Per config: the prompt's state, its session file, and how the original session continued."""
    out = {}
    for cache in CONFIGS:
        llm = session(default_model_path, cache)
        llm.eval(text_tokens[:N_PROMPT])
        state = llm.save_state()
        path = tmp_path_factory.mktemp("state") / "session.bin"
        llm.save_state_file(path)
        out[cache] = state, path, continue_greedy(llm, text_tokens[N_PROMPT])
        llm.close()
    return out


@pytest.mark.parametrize("cache", CONFIGS)
def test_round_trip_is_bit_exact(default_model_path, text_tokens, saved, cache):
    state, path, (tokens, rows) = saved[cache]
    llm = session(default_model_path, cache)
    for load in (lambda: llm.load_state(state), lambda: llm.load_state_file(path)):
        load()
        assert llm.n_tokens == N_PROMPT
        assert list(llm.input_ids[:N_PROMPT]) == text_tokens[:N_PROMPT]
        assert raw_state(llm) == state.llama_state
        got_tokens, got_rows = continue_greedy(llm, text_tokens[N_PROMPT])
        assert got_tokens == tokens
        assert all(np.array_equal(a, b) for a, b in zip(got_rows, rows))
    llm.close()


def test_state_is_stored_in_the_cache_types(default_model_path, text_tokens, saved, tmp_path):
    """Only the K/V rows depend on the cache types: a q8_0/turbo3 session file is an f16 one
    minus exactly the difference in row bytes, and the layout reader predicts the f16 size."""
    from tq_gguf.gguf import statefile as st

    llm = session(default_model_path, "f16/f16", flash_attn=True)
    llm.eval(text_tokens[:N_PROMPT])
    f16_size = llm.save_state_file(tmp_path / "f16.bin")
    llm.close()
    _, path, _ = saved["q8_0/turbo3"]
    turbo = st.read_file_layout(path)
    # SmolLM2: 30 layers of 3 KV heads x 64; per cell f16 K+V 2x192x2 bytes, q8_0 K 192/32x34, turbo3 V 192/64x26
    rows_f16 = N_PROMPT * 30 * (2 * 192 * 2)
    rows_turbo = N_PROMPT * 30 * (192 // 32 * 34 + 192 // 64 * 26)
    assert f16_size - turbo.n_bytes == rows_f16 - rows_turbo
    assert turbo.bytes_with("f16", "f16") == f16_size
    assert turbo.layout.describe() == "q8_0/turbo3"
    assert [b.n_cells for b in turbo.layout.blocks] == [N_PROMPT]
    # without flash attention llama.cpp stores an f16 V cache transposed, with other headers
    llm = session(default_model_path, "f16/f16", flash_attn=False)
    llm.eval(text_tokens[:N_PROMPT])
    llm.save_state_file(tmp_path / "f16t.bin")
    llm.close()
    assert st.read_file_layout(tmp_path / "f16t.bin").layout.describe() == "f16/f16"


def test_mixed_config_is_read_back_from_the_bytes(saved):
    """A state carries no config name in llama.cpp's bytes; the per-layer types say it."""
    from tq_gguf.gguf import statefile as st

    state, path, _ = saved["q8_0/turbo2:b2"]
    layout = st.read_layout(state.llama_state)
    k_types = [k for k, _ in layout.layer_types]
    assert k_types[:2] == k_types[-2:] == ["q8_0", "q8_0"]
    assert [v for _, v in layout.layer_types].count("turbo2") == len(k_types) - 4
    assert layout.describe() == "q8_0/turbo2:b2"
    assert st.read_file_layout(path).layout == layout


def test_config_is_inferred_from_layer_types_in_any_order():
    """Gemma-style states list full-attention layers first, so only the counts can be used."""
    from tq_gguf.gguf.statefile import CacheBlock, LayerRows, StateLayout, infer_config

    mixed = [("q8_0", "q8_0")] * 2 + [("q8_0", "turbo2")] * 26 + [("q8_0", "q8_0")] * 2
    assert str(infer_config(mixed)) == "q8_0/turbo2:b2"
    assert str(infer_config(sorted(mixed))) == "q8_0/turbo2:b2"
    assert str(infer_config([("q8_0", "q8_0")] * 30)) == "q8_0/q8_0"
    assert infer_config([("q8_0", "q8_0")] * 3 + [("turbo4", "turbo3")] * 27) is None  # odd boundary
    odd = [("q8_0", "turbo3")] * 10 + [("turbo4", "turbo3")] * 20
    assert infer_config(odd) is None
    layout = StateLayout("llama", (CacheBlock(5, tuple(LayerRows(k, 204, v, 78) for k, v in odd)),), 0)
    assert layout.describe() == "10 layers q8_0/turbo3, 20 layers turbo4/turbo3"


def _refusal(default_model_path, text_tokens, cache: str, load) -> str:
    """Load into a session that holds 10 tokens of its own; the error, and the session unchanged."""
    from tq_gguf.gguf.statefile import StateConfigMismatch

    llm = session(default_model_path, cache)
    llm.eval(text_tokens[:10])
    before = raw_state(llm)
    with pytest.raises(StateConfigMismatch) as exc:
        load(llm)
    assert llm.n_tokens == 10
    assert raw_state(llm) == before
    llm.close()
    return str(exc.value)


@pytest.mark.parametrize("how", ["state", "plain_state", "file"])
def test_state_from_another_config_is_refused_by_name(default_model_path, text_tokens, saved, how):
    import llama_cpp

    state, path, _ = saved["q8_0/turbo3"]
    if how == "plain_state":
        # llama-cpp-python's own LlamaState records no config: it is read from the bytes
        state = llama_cpp.llama.LlamaState(state.input_ids, state.scores, state.n_tokens, state.llama_state,
                                           state.llama_state_size, state.seed)
    load = (lambda llm: llm.load_state_file(path)) if how == "file" else (lambda llm: llm.load_state(state))
    message = _refusal(default_model_path, text_tokens, "turbo4/turbo3", load)
    assert "q8_0/turbo3" in message and "turbo4/turbo3" in message


def test_boundary_layers_must_match_too(default_model_path, text_tokens, saved):
    """q8_0/turbo2:b2 and q8_0/turbo2 differ only in 4 layers; that is still a mismatch."""
    _, path, _ = saved["q8_0/turbo2:b2"]
    message = _refusal(default_model_path, text_tokens, "q8_0/turbo2",
                       lambda llm: llm.load_state_file(path))
    assert "q8_0/turbo2:b2" in message and "uses q8_0/turbo2;" in message


@pytest.mark.parametrize("saved_cache,session_cache", [("turbo4/turbo4:sk", "turbo4/turbo4"),
                                                      ("turbo4/turbo3", "turbo4/turbo3:sk")])
@pytest.mark.parametrize("how", ["state", "plain_state", "file"])
def test_key_smoothing_must_match(default_model_path, text_tokens, saved, saved_cache, session_cache, how):
    """Smoothed keys are k - mu: loaded into a session that reads them as k (or the reverse) they
    would be wrong, with the same layer types. The bytes say which it is, so even a plain
    LlamaState, which records no config, is refused."""
    import llama_cpp

    state, path, _ = saved[saved_cache]
    if how == "plain_state":
        state = llama_cpp.llama.LlamaState(state.input_ids, state.scores, state.n_tokens, state.llama_state,
                                           state.llama_state_size, state.seed)
    load = (lambda llm: llm.load_state_file(path)) if how == "file" else (lambda llm: llm.load_state(state))
    message = _refusal(default_model_path, text_tokens, session_cache, load)
    assert ":sk" in message and f"uses {session_cache}" in message


def test_a_smoothed_state_written_into_a_smoothed_session_with_other_tokens_loads_its_own_mu(
        default_model_path, text_tokens, saved):
    """The session first learned its own mu from other tokens; a whole-context restore replaces it."""
    state, _, (tokens, rows) = saved["turbo4/turbo4:sk"]
    llm = session(default_model_path, "turbo4/turbo4:sk")
    llm.eval(text_tokens[50:90])
    llm.load_state(state)
    got_tokens, got_rows = continue_greedy(llm, text_tokens[N_PROMPT])
    assert got_tokens == tokens and all(np.array_equal(a, b) for a, b in zip(got_rows, rows))
    llm.close()


def test_a_preset_name_matches_its_spec(default_model_path, text_tokens, saved):
    state, _, (tokens, _) = saved["q8_0/tcq3"]
    llm = session(default_model_path, "balanced")
    llm.load_state(state)
    assert continue_greedy(llm, text_tokens[N_PROMPT])[0] == tokens
    llm.close()


def test_damaged_or_oversized_states_are_refused(default_model_path, text_tokens, saved, tmp_path):
    from tq_gguf import Llama
    from tq_gguf.gguf.statefile import StateError

    _, path, _ = saved["q8_0/turbo3"]
    cut = tmp_path / "cut.bin"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    llm = session(default_model_path, "q8_0/turbo3")
    with pytest.raises(StateError, match="damaged, truncated"):
        llm.load_state_file(cut)
    assert llm.n_tokens == 0

    # 300 tokens do not fit a 256-cell context (N_CTX); refused before llama.cpp reads anything
    big = Llama(default_model_path, cache="q8_0/turbo3", n_ctx=512)
    big.eval((text_tokens * 3)[:300])
    big_state = big.save_state()
    big.save_state_file(tmp_path / "big.bin")
    big.close()
    llm.eval(text_tokens[:10])
    for load in (lambda: llm.load_state(big_state), lambda: llm.load_state_file(tmp_path / "big.bin")):
        with pytest.raises(StateError, match="holds 300 tokens but this session's context has only 256"):
            load()
        assert llm.n_tokens == 10
    llm.close()


def test_gemma3_round_trip_and_refusals(saved, tmp_path):
    """Gemma 3 saves two caches (3 full-attention layers, then 15 window layers) with 256-wide
    heads. (Few sessions here: reading Gemma 3's metadata takes seconds.)"""
    from tq_gguf.analysis.evaltext import git_release_notes
    from tq_gguf.gguf import models
    from tq_gguf.gguf import statefile as st

    path = models.fetch("gemma3-270m")
    a = session(path, "turbo4/turbo3")
    tokens = a.tokenize(git_release_notes(1000).encode())[:41]
    a.eval(tokens[:40])
    a.save_state_file(tmp_path / "g.bin")
    expected = continue_greedy(a, tokens[40], 4)
    a.close()
    layout = st.read_file_layout(tmp_path / "g.bin").layout
    assert [(b.n_cells, len(b.layers)) for b in layout.blocks] == [(40, 3), (40, 15)]
    assert layout.describe() == "turbo4/turbo3"
    b = session(path, "turbo4/turbo3")
    assert b.load_state_file(tmp_path / "g.bin") == tokens[:40]
    got = continue_greedy(b, tokens[40], 4)
    assert got[0] == expected[0] and all(np.array_equal(x, y) for x, y in zip(got[1], expected[1]))
    with pytest.raises(st.StateError, match="saved from a llama model; this session runs a gemma3 model"):
        b.load_state_file(saved["q8_0/turbo3"][1])
    assert b.n_tokens == 44  # untouched: the 40 loaded and the 4 decoded since
    b.close()
    c = session(path, "q8_0/turbo3")
    with pytest.raises(st.StateConfigMismatch, match="saved with KV cache turbo4/turbo3, but this session uses q8_0/turbo3"):
        c.load_state_file(tmp_path / "g.bin")
    c.close()


def test_scores_survive_with_logits_all(default_model_path, text_tokens):
    a = session(default_model_path, "q8_0/turbo3", logits_all=True)
    a.eval(text_tokens[:20])
    state = a.save_state()
    b = session(default_model_path, "q8_0/turbo3", logits_all=True)
    b.load_state(state)
    assert np.array_equal(b.scores[:20], a.scores[:20])
    a.close()
    b.close()


def test_disk_prompt_cache(default_model_path, tmp_path):
    """llama-cpp-python's LlamaDiskCache: a new session that hits the cache answers as a fresh
    session does, and what it stores is the compressed state (not 200 KB of unused scores per token)."""
    from llama_cpp.llama_cache import LlamaDiskCache

    from tq_gguf.gguf.statefile import StateConfigMismatch

    prompt = "The three most important changes in this release of git are"
    fresh = session(default_model_path, "q8_0/turbo3")
    expected = fresh(prompt, max_tokens=12, temperature=0)["choices"][0]["text"]
    fresh.close()

    writer = session(default_model_path, "q8_0/turbo3")
    writer.set_cache(LlamaDiskCache(str(tmp_path / "cache")))
    assert writer(prompt, max_tokens=12, temperature=0)["choices"][0]["text"] == expected
    (stored,) = [writer.cache.cache[k] for k in writer.cache.cache.iterkeys()]
    assert stored.cache_config == "q8_0/turbo3" and stored.scores.size == 0
    assert writer.cache.cache_size < stored.llama_state_size + (1 << 20)
    writer.close()

    reader = session(default_model_path, "q8_0/turbo3")
    reader.set_cache(LlamaDiskCache(str(tmp_path / "cache")))
    loads = []
    load_state = reader.load_state
    reader.load_state = lambda s: (loads.append(s.n_tokens), load_state(s))
    assert reader(prompt, max_tokens=12, temperature=0)["choices"][0]["text"] == expected
    assert loads and loads[0] > 0  # the answer came through the cache
    reader.close()

    other = session(default_model_path, "turbo4/turbo3")
    other.set_cache(LlamaDiskCache(str(tmp_path / "cache")))
    with pytest.raises(StateConfigMismatch, match="saved with KV cache q8_0/turbo3"):
        other(prompt, max_tokens=4, temperature=0)
    other.close()
