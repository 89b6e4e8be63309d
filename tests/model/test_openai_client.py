"""The official `openai` package (the test extra) against both engines of `tq-gguf serve`:
chat and completions, streamed and not, give the same greedy text; a bad request raises the
client's BadRequestError and a wrong key its AuthenticationError, each with the server's line."""

from __future__ import annotations

import sys
from pathlib import Path

import openai
import pytest

from helpers import ServerProcess
from tq_gguf.runtime.ports import free_port

TQ_GGUF = str(Path(sys.executable).parent / "tq-gguf")
KEY = "tq-test-key-41d2"
N_TOKENS = 12
PROMPT = "The three primary colors are"
MESSAGES = [{"role": "user", "content": "Name a large city in France."}]


@pytest.fixture(scope="module", params=["python", "llama-server"])
def server(request, default_model_path):
    port = free_port()
    argv = [TQ_GGUF, "serve", default_model_path, "--engine", request.param, "--port", port, "--ctx", 512,
            "-t", 1, "--alias", "smollm2", "--cache", "balanced", "--api-key", KEY]
    s = (ServerProcess(argv, port, ready_line="ready at") if request.param == "llama-server"
         else ServerProcess(argv, port, ready_http="/docs"))
    yield s
    s.stop()


def client(server, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, timeout=120, max_retries=0)


def test_completion_streamed_and_not(server):
    got = client(server).completions.create(model="smollm2", prompt=PROMPT, max_tokens=N_TOKENS, temperature=0)
    assert got.usage.completion_tokens == N_TOKENS and got.choices[0].finish_reason == "length"
    chunks = list(client(server).completions.create(model="smollm2", prompt=PROMPT, max_tokens=N_TOKENS,
                                                    temperature=0, stream=True))
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 1  # really a stream of events
    assert "".join(pieces) == got.choices[0].text and len(got.choices[0].text) > 10


def test_chat_streamed_and_not(server):
    got = client(server).chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=N_TOKENS,
                                                 temperature=0)
    text = got.choices[0].message.content
    assert got.choices[0].message.role == "assistant" and len(text) > 5
    chunks = list(client(server).chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=N_TOKENS,
                                                         temperature=0, stream=True))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == text


def test_a_bad_request_raises_bad_request_error(server):
    with pytest.raises(openai.BadRequestError) as error:
        client(server).chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=-5)
    assert error.value.status_code == 400
    message = error.value.body["message"] if isinstance(error.value.body, dict) else str(error.value)
    assert "max_tokens" in message and "\n" not in message


def test_a_wrong_key_raises_authentication_error(server):
    with pytest.raises(openai.AuthenticationError) as error:
        client(server, "wrong-key").completions.create(model="smollm2", prompt=PROMPT, max_tokens=2)
    assert error.value.status_code == 401
