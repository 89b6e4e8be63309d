"""The needle task without a model: the scorer, the answer's extraction, sentence splitting and
where the needle lands (tq_gguf.analysis.needle)."""

from __future__ import annotations

import random

import pytest

from tq_gguf.analysis import needle
from tq_gguf.analysis.needle import (Haystack, NeedleError, answer_of, is_found, make_secret, scored,
                                     split_sentences)


def words(text: str) -> list[int]:
    """A stand-in tokenizer: one token per whitespace-separated word (token ids are word lengths)."""
    return [len(w) for w in text.split()]


@pytest.mark.parametrize("answer", ["amber-falcon-42", "AMBER-Falcon-42", " amber-falcon-42.", '"amber-falcon-42"',
                                    "\u201camber-falcon-42\u201d", "(amber-falcon-42)!", "'amber-falcon-42',"])
def test_exact_match_ignores_case_and_surrounding_punctuation(answer):
    assert is_found(answer, "amber-falcon-42")


@pytest.mark.parametrize("answer", ["amber-falcon-43", "amber-falcon", "amber falcon 42", "amber-falcon-421",
                                    "amber-falcon-42 and more", "the amber-falcon-42", "", "42"])
def test_near_misses_do_not_count(answer):
    assert not is_found(answer, "amber-falcon-42")


def test_numbers_match_exactly():
    assert is_found(" 481705.", "481705")
    assert not is_found("481706", "481705") and not is_found("4817050", "481705")


@pytest.mark.parametrize("generated, answer", [
    (" amber-falcon-42.", "amber-falcon-42"),
    (" amber-falcon-42. The text also says", "amber-falcon-42"),
    (" amber-falcon-42\nQuestion: more", "amber-falcon-42"),
    (" 3.14 is not it", "3.14 is not it"),  # a full stop inside a number does not end the answer
    # the secret run into the haystack's next sentence, as SmolLM2 answered at 4096 tokens
    (" ivory-river-37.Git v2.39.1 Release", "ivory-river-37"),
    (' "mellow-falcon-41".Git v2.39', '"mellow-falcon-41"'),
    ("", ""),
])
def test_answer_is_the_first_sentence_or_line(generated, answer):
    assert answer_of(generated) == answer


def test_a_cached_row_is_scored_again_from_its_generation():
    """A row written by an older scorer (here: one that kept the whole run-on line) takes this
    scorer's verdict, and keeps everything else."""
    old = {"needle": "ivory-river-37", "generated": " ivory-river-37.Git v2.39.1 Release",
           "answer": "ivory-river-37.Git v2.39.1 Release", "found": False, "seconds": 56.7}
    assert scored(old) == {**old, "answer": "ivory-river-37", "found": True}
    assert scored({**old, "generated": " ivory-river-38.Git"})["found"] is False


def test_secrets_are_reproducible_per_cell_and_differ_between_cells():
    assert make_secret("passphrase", "4096 0.5 0") == make_secret("passphrase", "4096 0.5 0")
    secrets = {make_secret("passphrase", f"4096 {d} {t}") for d in (0, 0.25, 0.5, 0.75, 1) for t in range(4)}
    assert len(secrets) >= 18
    number = make_secret("number", "2048 0 0")
    assert number.isdigit() and len(number) == 6
    with pytest.raises(NeedleError, match="unknown needle kind"):
        make_secret("riddle", "1")


def test_sentences_concatenate_back_to_the_text():
    text = 'One sentence. Another one! "Quoted." A list:\n\n * item one.\n * item two\n\nHeading\n=====\nEnd?'
    pieces = split_sentences(text)
    assert "".join(pieces) == text
    assert pieces[0] == "One sentence." and pieces[1] == " Another one!" and pieces[2] == ' "Quoted."'
    assert len(pieces) >= 6 and all(p.strip() for p in pieces)  # no whitespace-only "sentences"


def _text(n_sentences: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(" " + " ".join("w" * rng.randint(1, 9) for _ in range(rng.randint(3, 40))) + "."
                   for _ in range(n_sentences))


@pytest.mark.parametrize("depth", [0, 0.1, 0.25, 0.33, 0.5, 0.75, 0.9, 1])
@pytest.mark.parametrize("length", [300, 1000, 3000])
def test_needle_lands_within_one_sentence_of_the_asked_depth(depth, length):
    hay = Haystack(_text(400, seed=length), words, prefix=[1])
    prompt = hay.prompt(length, depth, "passphrase", "amber-falcon-42")
    n = hay.sentences_for(length, "passphrase")
    ends = [0, *hay._ends[:n]]
    offset = prompt.needle_at - prompt.haystack_at
    # the needle sits between two whole sentences ...
    assert offset in ends
    # ... the nearest such boundary to the asked token position, so within one sentence of it
    target = depth * prompt.haystack_tokens
    i = ends.index(offset)
    assert abs(offset - target) <= min(abs(e - target) for e in ends)
    sentence = max(ends[i] - ends[i - 1] if i else 0, ends[i + 1] - ends[i] if i + 1 < len(ends) else 0)
    assert abs(offset - target) <= sentence
    assert abs(prompt.depth - depth) * prompt.haystack_tokens <= sentence
    # and the needle's tokens are there, the question last, the whole within the length
    needle_tokens = words(needle.needle_sentence("passphrase", "amber-falcon-42"))
    assert prompt.tokens[prompt.needle_at:prompt.needle_at + len(needle_tokens)] == needle_tokens
    assert prompt.tokens[-len(words(needle.question("passphrase"))):] == words(needle.question("passphrase"))
    assert prompt.tokens[0] == 1
    assert len(prompt.tokens) + needle.ANSWER_TOKENS <= length


def test_depth_ends_put_the_needle_first_and_last():
    hay = Haystack(_text(200), words)
    first = hay.prompt(1000, 0, "number", "123456")
    last = hay.prompt(1000, 1, "number", "123456")
    assert first.needle_at == first.haystack_at == len(words(needle.instruction("number"))) and first.depth == 0
    assert last.depth == 1 and last.needle_at == last.haystack_at + last.haystack_tokens


def test_haystack_before_the_needle_is_shared_across_depths_and_secrets():
    hay = Haystack(_text(300), words, prefix=[1])
    deep = hay.prompt(2000, 0.8, "passphrase", "amber-falcon-42")
    shallow = hay.prompt(2000, 0.3, "passphrase", "velvet-tulip-17")
    assert deep.tokens[:shallow.needle_at] == shallow.tokens[:shallow.needle_at]
    assert deep.haystack_tokens == shallow.haystack_tokens  # the same sentences, whatever the needle


def test_a_text_too_short_for_the_length_is_refused():
    hay = Haystack(_text(10), words, source="short.txt")
    with pytest.raises(NeedleError, match=r"short.txt is too short for length 4096: it has \d+ tokens"):
        hay.prompt(4096, 0.5, "passphrase", "amber-falcon-42")


def test_a_depth_outside_0_1_is_refused():
    hay = Haystack(_text(100), words)
    with pytest.raises(NeedleError, match="outside 0..1"):
        hay.prompt(500, 1.5, "passphrase", "amber-falcon-42")
