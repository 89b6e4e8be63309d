"""Saving and restoring a session whose KV cache is compressed.

`capture`/`restore` work on llama-cpp-python's LlamaState (what its prompt caches
store), `save_file`/`load_file` on llama.cpp's session files (`llama_state_save_file`).
Before anything changes, the saved state's cache types are read (tq_gguf.gguf.statefile)
and a state that does not fit the session is refused by name. A state saved here also carries
its fingerprint (tq_gguf.gguf.stateorigin: state format, cache formats, model), in memory as
TqLlamaState.fingerprint and for a session file in its sidecar (tq_gguf.gguf.statesidecar), and
is refused when any of them differs; one without (saved earlier, or by llama.cpp itself) is
checked by its layout only. `llm` is a tq_gguf.Llama throughout; its methods (save_state,
load_state, ...) are the public way in.
"""

from __future__ import annotations

import ctypes
import errno
import shutil
from pathlib import Path

import numpy as np

from .. import atomicfile
from ..gguf import stateorigin, statesidecar
from ..gguf.statefile import StateError, StateLayout, check_fits, read_file_layout, read_layout
from ..gguf.stateorigin import Fingerprint
from ..native import llamacpp


class TqLlamaState(llamacpp.load().LlamaState):  # type: ignore[misc]
    """llama-cpp-python's LlamaState plus the cache config and architecture it was saved with,
    and its fingerprint, so loading it elsewhere can be refused by name (the fields survive
    pickling, e.g. in LlamaDiskCache; one pickled before fingerprints has none)."""

    def __init__(self, *args, cache_config: str, arch: str, fingerprint: Fingerprint | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.cache_config = cache_config
        self.arch = arch
        self.fingerprint = fingerprint


def raw_bytes(llm) -> bytes:
    """llama.cpp's serialised state of the session (what `capture` and session files hold)."""
    llama_cpp = llamacpp.load()
    ctx = llm._ctx.ctx
    size = llama_cpp.llama_state_get_size(ctx)
    buf = (ctypes.c_uint8 * size)()
    n = llama_cpp.llama_state_get_data(ctx, buf, size)
    if n == 0 or n > size:
        raise StateError("llama.cpp could not write this session's state")
    return bytes(memoryview(buf)[:n])


def capture(llm) -> TqLlamaState:
    """The session's state as a LlamaState. Scores are kept only with logits_all: otherwise
    llama-cpp-python never writes them and its own save_state copies uninitialised memory,
    196 KB per token for SmolLM2's 49K vocabulary, 23x the KV rows of its q8_0/turbo3 cache."""
    blob = raw_bytes(llm)
    n = llm.n_tokens
    scores = llm.scores[:n].copy() if llm._logits_all else np.zeros((0, llm._n_vocab), dtype=np.single)
    return TqLlamaState(
        input_ids=llm.input_ids[:n].copy(), scores=scores, n_tokens=n, llama_state=blob,
        llama_state_size=len(blob), seed=llm._seed, cache_config=str(llm.cache_config), arch=llm.model_info.arch,
        fingerprint=stateorigin.of_model(llm.model_path),
    )


def _capacity(llm) -> int:
    # llama.cpp may round the context up; the token buffers keep the size the session asked for
    return min(llm.n_ctx(), len(llm.input_ids))


def _check_capacity(llm, n_tokens: int) -> None:
    if n_tokens > _capacity(llm):
        raise StateError(f"the state holds {n_tokens} tokens but this session's context has only {_capacity(llm)}")


def _refused(llm, what: str, layout: StateLayout | None) -> StateError:
    # llama.cpp empties the context before it finds a mismatch; the Python side must agree
    llm.n_tokens = 0
    llm._requires_eval = True
    if layout is None:
        why = "its state is damaged, truncated or of a memory kind this reader does not know"
    else:
        why = (f"its cache types match ({layout.describe()}), so it was probably saved from another "
               f"{layout.arch} model")
    return StateError(f"llama.cpp refused {what}: {why}; this session uses {llm.cache_config}")


def _check(llm, fingerprint: Fingerprint | None, layout: StateLayout | None, declared: str | None = None) -> None:
    """Refuse a state that does not fit: its formats first (other type ids misread the layout),
    then its layout, then its model (another architecture or config is the more telling message)."""
    here = stateorigin.of_model(llm.model_path) if fingerprint is not None else None
    if here is not None:
        stateorigin.check_format(fingerprint, here)
    if layout is not None:
        check_fits(layout, llm.cache_config, llm.model_info, declared)
    if here is not None:
        stateorigin.check_model(fingerprint, here)


def restore(llm, state) -> None:
    """Load a LlamaState (ours or plain llama-cpp-python's) into the session, after checking
    that it was saved with the same cache types (and formats and model, when it says which);
    on refusal the session is unchanged."""
    llama_cpp = llamacpp.load()
    blob = bytes(state.llama_state)[: state.llama_state_size]
    layout = read_layout(blob)
    declared = getattr(state, "cache_config", None)
    if layout is None and declared is not None:
        layout = StateLayout(getattr(state, "arch", llm.model_info.arch), (), len(blob))
    _check(llm, getattr(state, "fingerprint", None), layout, declared)
    n = int(state.n_tokens)
    _check_capacity(llm, n)
    buf = (ctypes.c_uint8 * len(blob)).from_buffer_copy(blob)
    if llama_cpp.llama_state_set_data(llm._ctx.ctx, buf, len(blob)) != len(blob):
        raise _refused(llm, "this state", layout)
    llm.input_ids[:n] = np.asarray(state.input_ids[:n])
    scores = np.asarray(state.scores)
    if llm._logits_all and scores.shape[0] >= n and n:
        llm.scores[:n] = scores[:n]
    llm.n_tokens = n
    llm._requires_eval = True  # llama.cpp's state holds no logits: the next call decodes first
    llm._seed = state.seed


def _write_session_file(llm, path: Path) -> None:
    """llama_state_save_file to `path`. It reports failure only as false, so a full disk is told
    apart by the room left beside `path` (and raised as ENOSPC, which atomicfile names)."""
    llama_cpp = llamacpp.load()
    n = llm.n_tokens
    tokens = (llama_cpp.llama_token * max(n, 1))(*llm.input_ids[:n].tolist())
    if not llama_cpp.llama_state_save_file(llm._ctx.ctx, str(path).encode(), tokens, n):
        needed = llama_cpp.llama_state_get_size(llm._ctx.ctx) + 4 * n
        if shutil.disk_usage(path.parent).free < needed:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        raise StateError(f"llama.cpp could not write the session file {path}")


def save_file(llm, path: str | Path) -> int:
    """Write the session (tokens and KV cache) as a llama.cpp session file; returns its size.
    Its fingerprint goes beside it (statesidecar, which says in what order and why). The file is
    written whole or not at all: a failure leaves an earlier file at `path` as it was."""
    path = Path(path)
    if not path.parent.is_dir():
        raise StateError(f"cannot write the session file {path}: {path.parent} is not a directory")
    with atomicfile.replacing(path) as tmp:
        _write_session_file(llm, tmp)
        statesidecar.write(tmp, path, stateorigin.of_model(llm.model_path))
    return path.stat().st_size


def load_file(llm, path: str | Path) -> list[int]:
    """Load a llama.cpp session file into the session after checking it fits (see `restore`), and,
    when its sidecar describes it, its fingerprint;
    returns the tokens it holds."""
    llama_cpp = llamacpp.load()
    saved = read_file_layout(path)
    _check(llm, statesidecar.read(saved.path), saved.layout)
    _check_capacity(llm, len(saved.tokens))
    cap = max(_capacity(llm), 1)
    tokens = (llama_cpp.llama_token * cap)()
    count = ctypes.c_size_t(0)
    if not llama_cpp.llama_state_load_file(llm._ctx.ctx, str(saved.path).encode(), tokens, cap, ctypes.byref(count)):
        raise _refused(llm, f"the session file {path}", saved.layout)
    n = count.value
    llm.input_ids[:n] = tokens[:n]
    llm.n_tokens = n
    llm._requires_eval = True
    return list(tokens[:n])
