"""The needle-in-a-haystack task: haystack, needle, prompt and scorer (no model runs here).

A prompt of `length` tokens is an instruction to remember a secret, a long
text (the haystack) with one sentence holding a random secret (the needle) put
in at a sentence boundary at a given depth (0: before the first haystack token,
1: after the last), then a question whose answer is the secret. `tq_gguf.analysis.needlerun` runs prompts through a session;
this module only builds them and scores answers, so both can be tested without
a model.

Prompts are built from tokens, not text: every sentence is tokenized once, so a
needle lands exactly between two sentences and the haystack before it is the
same token sequence for every depth, trial and config. That shared prefix is
what lets a session reuse its KV cache across depths.
"""

from __future__ import annotations

import random
import re
import string
from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import TqError

# Bump when anything below changes what a prompt holds or how an answer is scored: cached
# results of an older task are then not reused (tq_gguf.analysis.needlerun keys its cache with it).
TASK_VERSION = 1

# Tokens kept free after the prompt for the answer, so prompt + answer fit in `length`.
ANSWER_TOKENS = 16
# Tokens kept for the needle sentence whatever the secret is, so the haystack for a length
# does not depend on the trial (and stays a shared prefix across trials).
NEEDLE_RESERVE = 32

KINDS = ("passphrase", "number")

# Two common words and a two-digit number: short in every tokenizer, not guessable from the
# text, and with near misses (another number, another word) that exact match must reject.
_ADJECTIVES = ("amber", "brisk", "cobalt", "dusty", "silent", "golden", "hollow", "ivory", "jolly", "lunar",
               "mellow", "nimble", "olive", "purple", "quiet", "rusty", "scarlet", "tidy", "velvet", "windy")
_NOUNS = ("falcon", "harbor", "lantern", "meadow", "orchard", "pebble", "quarry", "river", "saddle", "tulip",
          "walnut", "beacon", "canyon", "dolphin", "ember", "forest", "glacier", "island", "jungle", "kettle")

_NEEDLE = {"passphrase": "The secret passphrase is {}.", "number": "The secret number is {}."}
# Said before the haystack, as RULER's retrieval tasks do: without it SmolLM2 with an f16 cache
# misses needles in the first quarter of 1-2K prompts, which would hide what the cache does.
_INSTRUCTION = {
    "passphrase": "A secret passphrase is hidden in the following text. Memorize it: you will be asked for it "
                  "after the text.\n\n",
    "number": "A secret number is hidden in the following text. Memorize it: you will be asked for it "
              "after the text.\n\n",
}
_QUESTION = {
    "passphrase": "\n\nQuestion: What is the secret passphrase in the text above?\nAnswer: The secret passphrase is",
    "number": "\n\nQuestion: What is the secret number in the text above?\nAnswer: The secret number is",
}

# A sentence ends at . ! or ? (optionally followed by a closing quote or bracket) before
# whitespace, or at a blank line (release notes have headings and lists without full stops).
_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]?(?=\s)|(?<=\n)(?=\n)")
# An answer ends at a newline or at . ! ? not followed by a digit: models often run the
# secret straight into the next haystack sentence ("ivory-river-37.Git v2.39"), while a
# full stop inside a number is part of it.
_ANSWER_END = re.compile(r"[.!?](?!\d)|\n")
# What surrounds an answer without being part of it: whitespace, ASCII punctuation, curly quotes.
_SURROUNDING = string.whitespace + string.punctuation + "\u2018\u2019\u201c\u201d\u00ab\u00bb"


class NeedleError(TqError):
    """A needle sweep that cannot run as asked (length, text, settings)."""


def make_secret(kind: str, seed: str) -> str:
    """The random secret for one (length, depth, trial): the same for every config, so configs are
    compared on identical prompts, and reproducible from `seed` alone."""
    rng = random.Random(f"tq-gguf needle {TASK_VERSION} {seed}")
    if kind == "passphrase":
        return f"{rng.choice(_ADJECTIVES)}-{rng.choice(_NOUNS)}-{rng.randrange(10, 100)}"
    if kind == "number":
        return str(rng.randrange(100_000, 1_000_000))
    raise NeedleError(f"unknown needle kind {kind!r}; choose one of {', '.join(KINDS)}")


def needle_sentence(kind: str, secret: str) -> str:
    # The leading space joins it to the sentence before, as the haystack's own sentences are.
    return " " + _NEEDLE[kind].format(secret)


def instruction(kind: str) -> str:
    return _INSTRUCTION[kind]


def question(kind: str) -> str:
    return _QUESTION[kind]


def split_sentences(text: str) -> list[str]:
    """`text` cut at sentence boundaries; each piece keeps the whitespace that precedes it,
    so the pieces concatenate back to `text`."""
    cuts = [m.end() for m in _BOUNDARY.finditer(text)]  # after a closing quote, if any
    pieces, start = [], 0
    for cut in cuts:
        if cut > start:
            pieces.append(text[start:cut])
            start = cut
    pieces.append(text[start:])
    # Whitespace alone (the first newline of a blank line after a full stop) is no sentence:
    # it goes with the sentence after it, so no needle lands inside a blank line.
    merged: list[str] = []
    carry = ""
    for piece in pieces:
        if piece.strip():
            merged.append(carry + piece)
            carry = ""
        else:
            carry += piece
    if carry:
        if merged:
            merged[-1] += carry
        else:
            merged.append(carry)
    return merged


def answer_of(generated: str) -> str:
    """The answer in a generation: its first sentence or line, as the question asks for one phrase."""
    m = _ANSWER_END.search(generated)
    return (generated[:m.start()] if m else generated).strip()


def scored(row: dict) -> dict:
    """A result row with `answer` and `found` from this scorer: a cached row keeps what the model
    generated, so a fixed scorer re-reads it instead of running the cell again."""
    answer = answer_of(row["generated"])
    return {**row, "answer": answer, "found": is_found(answer, row["needle"])}


def normalize(answer: str) -> str:
    return answer.strip(_SURROUNDING).lower()


def is_found(answer: str, secret: str) -> bool:
    """Exact match, ignoring case and surrounding punctuation; anything else (a near miss, the
    secret inside a longer answer) is not found."""
    return normalize(answer) == normalize(secret)


Tokenize = Callable[[str], list[int]]


@dataclass(frozen=True)
class Prompt:
    tokens: list[int]
    needle_at: int      # index in `tokens` of the needle sentence's first token
    haystack_at: int    # index of the first haystack token (after BOS and anything before)
    haystack_tokens: int
    depth_asked: float

    @property
    def depth(self) -> float:
        """Where the needle actually is: the share of haystack tokens before it."""
        return (self.needle_at - self.haystack_at) / self.haystack_tokens if self.haystack_tokens else 0.0


class Haystack:
    """A text cut into sentences and tokenized sentence by sentence, as far as prompts need it.

    `tokenize(text)` returns tokens without BOS; `prefix` (e.g. [BOS]) starts every prompt, then
    the instruction, the haystack with the needle, and the question."""

    def __init__(self, text: str, tokenize: Tokenize, prefix: Sequence[int] = (), source: str = "text"):
        self.sentences = split_sentences(text)
        self.tokenize = tokenize
        self.prefix = list(prefix)
        self.source = source
        self._tokens: list[list[int]] = []
        self._ends: list[int] = []  # token count of the first i+1 sentences

    def _extend_to(self, n_tokens: int) -> None:
        while (not self._ends or self._ends[-1] < n_tokens) and len(self._tokens) < len(self.sentences):
            toks = self.tokenize(self.sentences[len(self._tokens)])
            self._tokens.append(toks)
            self._ends.append((self._ends[-1] if self._ends else 0) + len(toks))

    def budget(self, length: int, kind: str) -> int:
        """Haystack tokens a prompt of `length` has room for."""
        fixed = (len(self.head(kind)) + NEEDLE_RESERVE + len(self.tokenize(question(kind)))
                 + ANSWER_TOKENS)
        return length - fixed

    def head(self, kind: str) -> list[int]:
        """What comes before the haystack."""
        return [*self.prefix, *self.tokenize(instruction(kind))]

    def sentences_for(self, length: int, kind: str) -> int:
        """How many whole sentences fill the haystack of a prompt of `length` tokens."""
        budget = self.budget(length, kind)
        if budget <= 0:
            raise NeedleError(f"length {length} leaves no room for a haystack (the needle, question and answer "
                              f"take {length - budget} tokens)")
        self._extend_to(budget + 1)
        if self._ends[-1] < budget:
            raise NeedleError(f"{self.source} is too short for length {length}: it has {self._ends[-1]} tokens, "
                              f"the haystack needs {budget}; give a longer --text or a shorter length")
        return bisect_right(self._ends, budget)  # sentences whose end fits within the budget

    def boundary(self, n_sentences: int, depth: float) -> int:
        """The sentence boundary (a count of whole sentences before it) nearest to `depth` of the
        first `n_sentences` sentences' tokens."""
        if not 0.0 <= depth <= 1.0:
            raise NeedleError(f"depth {depth} is outside 0..1")
        total = self._ends[n_sentences - 1]
        target = depth * total
        ends = [0, *self._ends[:n_sentences]]
        return min(range(len(ends)), key=lambda i: (abs(ends[i] - target), i))

    def prompt(self, length: int, depth: float, kind: str, secret: str) -> Prompt:
        n = self.sentences_for(length, kind)
        cut = self.boundary(n, depth)
        needle = self.tokenize(needle_sentence(kind, secret))
        if len(needle) > NEEDLE_RESERVE:
            raise NeedleError(f"needle sentence takes {len(needle)} tokens, more than the {NEEDLE_RESERVE} reserved")
        before = [t for toks in self._tokens[:cut] for t in toks]
        after = [t for toks in self._tokens[cut:n] for t in toks]
        head = self.head(kind)
        tokens = [*head, *before, *needle, *after, *self.tokenize(question(kind))]
        return Prompt(tokens=tokens, needle_at=len(head) + len(before), haystack_at=len(head),
                      haystack_tokens=len(before) + len(after), depth_asked=depth)
