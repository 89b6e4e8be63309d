"""Sessions with different cache configs in one process do not disturb each other.

Each session owns its model, context, KV cache and (for turbo caches) rotation
matrices; nothing in our types is global. So a session's greedy tokens and
logits must be bit-identical whether it runs alone, step-interleaved with the
others, or in a Python thread while the others run in theirs (llama.cpp's
decode releases the GIL, so the threads really overlap).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_session_state import continue_greedy, last_logits

CONFIGS = ["q8_0/turbo3", "turbo4/turbo2:b2", "f16/f16"]
N_PROMPT = 60
N_STEPS = 12
PROMPTS = {  # a different prompt per session, so a mix-up between them would show
    "q8_0/turbo3": "The capital of France is",
    "turbo4/turbo2:b2": "Git is a distributed version control system that",
    "f16/f16": "Once upon a time, in a land far away,",
}

Run = tuple[list[int], list[np.ndarray]]


def new_session(path, cache: str):
    from tq_gguf import Llama

    return Llama(path, cache=cache, n_ctx=256, seed=0)


def prompt_tokens(llm, cache: str) -> list[int]:
    from tq_gguf.analysis.evaltext import git_release_notes

    return llm.tokenize((git_release_notes(600) + "\n\n" + PROMPTS[cache]).encode())[-N_PROMPT:]


def greedy_run(llm, cache: str) -> Run:
    tokens = prompt_tokens(llm, cache)
    llm.reset()
    llm.eval(tokens[:-1])
    return continue_greedy(llm, tokens[-1], N_STEPS)


def same(a: Run, b: Run) -> bool:
    return a[0] == b[0] and all(np.array_equal(x, y) for x, y in zip(a[1], b[1]))


@pytest.fixture(scope="module")
def alone(default_model_path) -> dict[str, Run]:
    """Each config in a process holding no other session."""
    out = {}
    for cache in CONFIGS:
        llm = new_session(default_model_path, cache)
        out[cache] = greedy_run(llm, cache)
        llm.close()
    return out


@pytest.fixture(scope="module")
def sessions(default_model_path):
    made = {cache: new_session(default_model_path, cache) for cache in CONFIGS}
    yield made
    for llm in made.values():
        llm.close()


def test_configs_really_differ(alone):
    """Otherwise the comparisons below would prove nothing about isolation."""
    rows = [alone[c][1][0] for c in CONFIGS]
    assert not np.array_equal(rows[0], rows[1]) and not np.array_equal(rows[1], rows[2])


def test_interleaved_step_by_step(sessions, alone):
    states = {}
    for cache, llm in sessions.items():
        tokens = prompt_tokens(llm, cache)
        llm.reset()
        llm.eval(tokens[:-1])
        states[cache] = (tokens[-1], [], [])
    for _ in range(N_STEPS):
        for cache, llm in sessions.items():  # one decode each, round robin
            token, chosen, rows = states[cache]
            llm.eval([token])
            rows.append(last_logits(llm))
            chosen.append(int(rows[-1].argmax()))
            states[cache] = (chosen[-1], chosen, rows)
    for cache in CONFIGS:
        _, chosen, rows = states[cache]
        assert same((chosen, rows), alone[cache]), cache


def test_threads_at_the_same_time(sessions, alone):
    results: dict[str, list[Run]] = {cache: [] for cache in CONFIGS}
    errors: list[BaseException] = []
    start = threading.Barrier(len(sessions))

    def work(cache: str, llm) -> None:
        try:
            start.wait()
            for _ in range(2):  # twice, so the runs overlap whatever order the threads start in
                results[cache].append(greedy_run(llm, cache))
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=item) for item in sessions.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    for cache in CONFIGS:
        assert len(results[cache]) == 2 and all(same(r, alone[cache]) for r in results[cache]), cache


def test_completions_from_threads(sessions):
    """llama-cpp-python's own completion path, run alone and then from threads at once."""
    def complete(cache: str, llm) -> str:
        llm.reset()  # the same full evaluation each time, no prefix reuse from earlier tests
        return llm(PROMPTS[cache], max_tokens=12, temperature=0)["choices"][0]["text"]

    want = {cache: complete(cache, llm) for cache, llm in sessions.items()}
    got: dict[str, str] = {}
    start = threading.Barrier(len(sessions))

    def work(cache: str, llm) -> None:
        start.wait()
        got[cache] = complete(cache, llm)

    threads = [threading.Thread(target=work, args=item) for item in sessions.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert got == want
