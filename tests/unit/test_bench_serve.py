"""tools/bench/bench_serve.py's load mode without a server: the request mix (a fixed seed gives the
same requests, lengths within range, a quarter of each endpoint x streaming), the prompts cut from
a token list, what counts as an error (down to a client against a local HTTP stub), and the server's
CPU time, counted over its child processes (benchserver.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "bench"))  # a tool, not the package
from bench_serve import (Reply, Request, classify, cut_prompts, make_mix, read_body, read_stream,  # noqa: E402
                         request_body, send)


def test_mix_is_reproducible_and_in_range():
    mix = make_mix(200, 0, (8, 1500), (8, 256))
    assert mix == make_mix(200, 0, (8, 1500), (8, 256))
    assert mix != make_mix(200, 1, (8, 1500), (8, 256))
    assert [r.index for r in mix] == list(range(200))
    assert all(8 <= r.prompt_tokens <= 1500 and 8 <= r.max_tokens <= 256 and 0 <= r.offset < 1 for r in mix)
    kinds = {(c, s): sum(r.chat == c and r.stream == s for r in mix) for c in (False, True) for s in (False, True)}
    assert set(kinds.values()) == {50}
    # log-uniform: about as many prompts below the geometric middle (sqrt(8 * 1500) = 110) as above it
    assert 70 <= sum(r.prompt_tokens < 110 for r in mix) <= 130
    assert min(r.prompt_tokens for r in mix) < 12 and max(r.prompt_tokens for r in mix) > 1200


def test_mix_of_one_length():
    assert {r.prompt_tokens for r in make_mix(9, 3, (64, 64), (5, 5))} == {64}


def test_prompts_are_runs_of_the_text():
    tokens = list(range(1000))
    mix = make_mix(40, 0, (8, 1000), (8, 8))
    prompts = cut_prompts(mix, tokens, lambda t: ",".join(map(str, t)))
    for r, p in zip(mix, prompts):
        ids = [int(x) for x in p.split(",")]
        assert len(ids) == r.prompt_tokens and ids == list(range(ids[0], ids[0] + len(ids)))
    assert len(set(prompts)) == len(prompts)


def test_request_bodies():
    chat = request_body(Request(0, True, True, 8, 16, 0.5), "hi")
    assert chat["messages"] == [{"role": "user", "content": "hi"}] and "prompt" not in chat
    assert chat["stream_options"] == {"include_usage": True}
    plain = request_body(Request(1, False, False, 8, 16, 0.5), "hi")
    assert plain["prompt"] == "hi" and "stream_options" not in plain
    assert plain["ignore_eos"] is True and plain["max_tokens"] == 16 and plain["temperature"] == 0


def sse(*events) -> list[bytes]:
    return [(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n") for e in events]


def completion_stream(pieces: list[str], n: int, finish="length", done=True) -> list[bytes]:
    events = [{"choices": [{"text": p, "index": 0, "finish_reason": None}]} for p in pieces]
    events.append({"choices": [{"text": "", "index": 0, "finish_reason": finish}],
                   "usage": {"completion_tokens": n, "prompt_tokens": 9}, "timings": {"predicted_n": n}})
    return sse(*events, *([b"[DONE]"] if done else []))


def chat_stream(pieces: list[str], n: int) -> list[bytes]:
    events = [{"choices": [{"delta": {"role": "assistant", "content": None}, "index": 0, "finish_reason": None}]}]
    events += [{"choices": [{"delta": {"content": p}, "index": 0, "finish_reason": None}]} for p in pieces]
    events.append({"choices": [{"delta": {}, "index": 0, "finish_reason": "length"}]})
    events.append({"choices": [], "usage": {"completion_tokens": n, "prompt_tokens": 30},
                   "timings": {"predicted_n": n}})
    return sse(*events, b"[DONE]")


def streamed(lines, chat=False) -> Reply:
    return read_stream(lines, chat, Reply(status=200), lambda: 0.25)


COMPLETION = Request(0, False, True, 8, 3, 0.0)
CHAT = Request(1, True, True, 8, 3, 0.0)


def test_good_streams_are_no_error():
    reply = streamed(completion_stream(["a", "b", "c"], 3))
    assert classify(COMPLETION, reply) is None and reply.text == "abc" and reply.first_token_s == 0.25
    reply = streamed(chat_stream(["a", "", "c"], 3), chat=True)
    assert classify(CHAT, reply) is None and reply.text == "ac" and reply.prompt_tokens == 30


@pytest.mark.parametrize("lines, kind", [
    (completion_stream(["a", "b"], 2), "tokens"),                      # fewer tokens than asked
    (completion_stream(["a", "b", "c"], 3, finish="stop"), "tokens"),  # stopped with end of text ignored
    (completion_stream(["a", "b", "c"], 3, done=False), "truncated"),  # no [DONE]
    (completion_stream(["a", "b", "c"], 3)[:2], "truncated"),          # cut before the final event
    (completion_stream(["", "", ""], 3), "empty"),
    (completion_stream(["a"], 3)[:1] + [b"data: {\"choices\": [\n"], "malformed"),
    (completion_stream(["a"], 3)[:1] + [b"event: x\n"], "malformed"),
    (completion_stream(["a", "b", "c"], 3) + sse({"choices": []}), "malformed"),  # data after [DONE]
    (completion_stream(["a"], 3)[:1] + sse({"error": {"code": 500, "message": "boom"}}), "server error"),
])
def test_bad_streams_are_errors(lines, kind):
    error = classify(COMPLETION, streamed(lines))
    assert error is not None and error.split(":")[0] == kind, error


def test_usage_and_timings_must_agree():
    lines = completion_stream(["a", "b", "c"], 3)
    lines[-2] = lines[-2].replace(b'"predicted_n": 3', b'"predicted_n": 4')
    assert classify(COMPLETION, streamed(lines)).startswith("tokens: timings count 4")


def test_whole_answers():
    whole = Request(2, True, False, 8, 5, 0.0)
    body = {"choices": [{"message": {"role": "assistant", "content": "hello"}, "finish_reason": "length"}],
            "usage": {"completion_tokens": 5, "prompt_tokens": 30}}
    assert classify(whole, read_body(json.dumps(body).encode(), True, Reply(status=200))) is None
    body["usage"]["completion_tokens"] = 4
    assert classify(whole, read_body(json.dumps(body).encode(), True, Reply(status=200))).startswith("tokens")
    assert classify(whole, read_body(b"<html>", True, Reply(status=200))).startswith("malformed")
    assert classify(whole, Reply(status=503, detail="loading")) == "HTTP 503: loading"
    assert classify(whole, Reply(transport="timeout: nothing for 1 s")).startswith("timeout")


class Stub(BaseHTTPRequestHandler):
    """/v1/completions: a good whole answer; /v1/chat/completions: silence (the client times out)."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/v1/chat/completions":
            self.server.release.wait(5)
            return
        n = body["max_tokens"]
        answer = {"choices": [{"text": "x" * n, "finish_reason": "length"}], "usage": {"completion_tokens": n}}
        if body["prompt"] == "fail":
            self.send_error(500, "boom")
            return
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def stub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.release.set()
    server.shutdown()
    server.server_close()


def test_client_against_a_stub(stub):
    whole = Request(0, False, False, 8, 4, 0.0)
    assert classify(whole, send(stub, whole, "hi", timeout=5)) is None
    assert classify(whole, send(stub, whole, "fail", timeout=5)).startswith("HTTP 500")
    silent = Request(1, True, False, 8, 4, 0.0)
    assert classify(silent, send(stub, silent, "hi", timeout=0.3)).startswith("timeout")


def test_client_against_a_closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    request = Request(0, False, False, 8, 4, 0.0)
    assert classify(request, send(f"http://127.0.0.1:{port}", request, "hi", timeout=5)).startswith("connection")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_server_cpu_time_counts_the_children():
    from benchserver import Server

    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.3: pass\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        mine = Server("", os.getpid())
        while Server("", child.pid).cpu_s() < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mine.cpu_s() >= Server("", child.pid).cpu_s() >= 0.25
    finally:
        child.kill()
        child.wait()
