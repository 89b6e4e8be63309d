"""Whether a draft model can speculate for a target: llama.cpp's rule, checked before a server starts.

llama-server drafts only with a model whose vocabulary matches the target's
(common/speculative.cpp, common_speculative_are_compatible): the same tokenizer, the same
BOS and EOS, sizes within SIZE_SLACK tokens, and the same text for every token from
FIRST_CHECKED_TOKEN on. Given any other draft it logs a warning and serves without
speculation, which looks like success; `mismatch` names the first difference instead.
"""

from __future__ import annotations

from . import ggufheader

SIZE_SLACK = 128  # SPEC_VOCAB_MAX_SIZE_DIFFERENCE
FIRST_CHECKED_TOKEN = 5  # SPEC_VOCAB_CHECK_START_TOKEN_ID
TOKENIZER_KEY = "tokenizer.ggml.model"
TOKENS_KEY = "tokenizer.ggml.tokens"
# (whether the tokenizer adds the token, the token): the token must match only where it is added
ADDED_TOKENS = (("tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id"),
                ("tokenizer.ggml.add_eos_token", "tokenizer.ggml.eos_token_id"))


def mismatch(target: ggufheader.Header, draft: ggufheader.Header) -> str | None:
    """Why `draft` cannot draft for `target`, or None when llama.cpp will speculate with it."""
    keys = [TOKENIZER_KEY]
    for add_key, token_key in ADDED_TOKENS:
        keys += [add_key, token_key] if target.get(add_key) else [add_key]
    for key in keys:
        if target.get(key) != draft.get(key):
            return f"its {key} is {draft.get(key)!r}, the target's {target.get(key)!r}"
    tokens_t = ggufheader.read_string_array(target, TOKENS_KEY)
    tokens_d = ggufheader.read_string_array(draft, TOKENS_KEY)
    if abs(len(tokens_t) - len(tokens_d)) > SIZE_SLACK:
        return f"it has {len(tokens_d)} tokens, the target {len(tokens_t)}"
    for i in range(FIRST_CHECKED_TOKEN, min(len(tokens_t), len(tokens_d))):
        if tokens_t[i] != tokens_d[i]:
            return f"its token {i} is {tokens_d[i]!r}, the target's {tokens_t[i]!r}"
    return None
