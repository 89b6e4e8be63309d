"""Per-layer cache types in llama.cpp (patch 0004), through llama-cpp-python."""

from __future__ import annotations

import numpy as np
import pytest

from tq_gguf.gguf import ggufinfo
from tq_gguf.kv import cachetypes
from tq_gguf.kv.cacheconfig import CacheConfig
from tq_gguf.native import typeids

PROMPT = "Release notes list what changed: new options, fixed bugs, and the commands that"


def _logits(model_path, **kwargs) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=256, n_threads=2, flash_attn=True, logits_all=True,
                          verbose=False, **kwargs)
    try:
        llm.eval(llm.tokenize(PROMPT.encode()))
        return np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    finally:
        llm.close()


def _ids(names):
    return [typeids.ggml_id(cachetypes.get(n)) for n in names]


def test_per_layer_types_reach_the_cache(default_model_path):
    info = ggufinfo.read(default_model_path)
    n = info.n_layer
    q8, t2 = typeids.ggml_id(cachetypes.get("q8_0")), typeids.ggml_id(cachetypes.get("turbo2"))
    uniform_t2 = _logits(default_model_path, type_k=q8, type_v=t2)
    uniform_q8 = _logits(default_model_path, type_k=q8, type_v=q8)
    # every layer overridden with the cache-wide type: the same computation, bit for bit
    same = _logits(default_model_path, type_k=q8, type_v=q8, type_k_layer=_ids(["q8_0"] * n),
                   type_v_layer=_ids(["turbo2"] * n))
    assert np.array_equal(same, uniform_t2)
    # boundary layers at q8_0: differs from both uniform caches, and is what CacheConfig asks for
    config = CacheConfig.parse("q8_0/turbo2:b2")
    mixed = _logits(default_model_path, **config.llama_kwargs(n))
    assert not np.array_equal(mixed, uniform_t2) and not np.array_equal(mixed, uniform_q8)
    _, v_types = config.layer_types(n)
    by_hand = _logits(default_model_path, type_k=q8, type_v=t2, type_v_layer=_ids([t.name for t in v_types]))
    assert np.array_equal(mixed, by_hand)


def test_per_layer_list_of_the_wrong_length_is_refused(default_model_path):
    n = ggufinfo.read(default_model_path).n_layer
    with pytest.raises(ValueError):
        _logits(default_model_path, type_v_layer=_ids(["q8_0"] * (n - 1)))
    with pytest.raises(ValueError, match="same length"):
        _logits(default_model_path, type_k_layer=_ids(["q8_0"] * n), type_v_layer=_ids(["q8_0"] * (n + 1)))


def test_session_takes_types_by_name_only(default_model_path):
    from tq_gguf import Llama

    with pytest.raises(TypeError, match="cache types by name"):
        Llama(default_model_path, type_k=8)
