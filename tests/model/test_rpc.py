"""A model split over two rpc-servers on this machine (`tq-gguf rpc-server`), with turbo K and V.

The split run's logits stay within a measured tolerance of a local run's; a state saved in the
split run loads into a local session and continues as the split one does; servers that are
unreachable, that lack the cache types, or that die mid-generation give one clear error and
no hang.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import ServerProcess

from tq_gguf.errors import TqError
from tq_gguf.runtime.ports import free_port

TQ_GGUF = str(Path(sys.executable).parent / "tq-gguf")
TOOLS = Path(__file__).resolve().parents[2] / "tools"
CACHE = "turbo4/turbo3"  # turbo keys and values: both live on the servers
N_CTX = 256
PROMPT = "The three primary colors are red, yellow and blue. Mixing two of them gives"
# Largest |logit difference| allowed between the split and the local run. The servers run the
# same CPU kernels on the same layers; what differs is where the graph is cut and how many
# threads share a matrix product. Measured on SmolLM2: 0 (bit-identical); the bound leaves room
# for a machine whose servers pick other SIMD variants than the client.
LOGIT_TOLERANCE = 1e-3


class RpcServer(ServerProcess):
    """`tq-gguf rpc-server` on a free port, ready once it listens; `endpoint` is what --rpc takes."""

    def __init__(self):
        port = free_port()
        super().__init__([TQ_GGUF, "rpc-server", "--port", port, "-t", 1], port, timeout=60, stop_timeout=10)


@pytest.fixture(scope="module")
def servers():
    pair = [RpcServer(), RpcServer()]
    yield pair
    for s in pair:
        s.stop()


def logits(llm, tokens) -> np.ndarray:
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32)


@pytest.fixture(scope="module")
def local(default_model_path):
    from tq_gguf import Llama

    llm = Llama(default_model_path, cache=CACHE, n_ctx=N_CTX, logits_all=True, n_threads=2)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def split(default_model_path, servers):
    from tq_gguf import Llama

    llm = Llama(default_model_path, cache=CACHE, n_ctx=N_CTX, logits_all=True, n_threads=2,
                rpc=[s.endpoint for s in servers])
    yield llm
    llm.close()


def test_split_run_has_turbo_caches_on_both_servers(default_model_path, servers):
    """llama.cpp's log of a split session: every layer, and its K and V cache, on a server."""
    code = (f"from tq_gguf import Llama; Llama({str(default_model_path)!r}, cache={CACHE!r}, n_ctx={N_CTX}, "
            f"rpc={[s.endpoint for s in servers]!r}, verbose=True)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    log = r.stderr
    assert "load_tensors: offloaded 31/31 layers to GPU" in log  # ggml calls every non-CPU device a GPU
    cache_devices = re.findall(r"llama_kv_cache: layer +(\d+): dev = (\w+)", log)
    assert [int(layer) for layer, _ in cache_devices] == list(range(30))
    assert {dev for _, dev in cache_devices} == {"RPC0", "RPC1"}
    assert re.search(r"llama_kv_cache: size = .*K \(turbo4\).*V \(turbo3\)", log)


def test_split_logits_match_local(split, local):
    tokens = local.tokenize(PROMPT.encode())
    got, expected = logits(split, tokens), logits(local, tokens)
    worst = float(np.max(np.abs(got - expected)))
    print(f"max |logit difference| split vs local over {len(tokens)} positions: {worst:.3g}")
    assert worst <= LOGIT_TOLERANCE
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_state_saved_split_loads_locally(split, local):
    tokens = split.tokenize(PROMPT.encode())
    logits(split, tokens)
    saved = split.save_state()
    split.eval([int(np.argmax(split.scores[len(tokens) - 1]))])
    next_split = np.array(split.scores[len(tokens)], dtype=np.float32)

    local.reset()
    local.load_state(saved)
    local.eval([int(np.argmax(local.scores[len(tokens) - 1]))])
    next_local = np.array(local.scores[len(tokens)], dtype=np.float32)
    assert float(np.max(np.abs(next_split - next_local))) <= LOGIT_TOLERANCE


def test_unreachable_server_is_one_error_line(default_model_path):
    port = free_port()  # nothing listens there
    r = subprocess.run([TQ_GGUF, "run", str(default_model_path), "-p", "hi", "-n", "1", "--rpc",
                        f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [f"error: cannot reach rpc-server at 127.0.0.1:{port}: Connection refused"]


def test_bad_endpoint_is_refused(default_model_path):
    from tq_gguf import Llama

    with pytest.raises(TqError, match="cannot read RPC server 'nohost': write host:port"):
        Llama(default_model_path, cache=CACHE, rpc=["nohost"])


def test_server_killed_mid_generation_ends_the_client(default_model_path):
    pair = [RpcServer(), RpcServer()]
    try:
        client = subprocess.Popen([TQ_GGUF, "run", str(default_model_path), "--cache", CACHE, "--ctx", "2048",
                                   "-n", "1500", "-p", PROMPT, "--rpc", ",".join(s.endpoint for s in pair)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert client.stdout.read(20)  # generation is under way
        os.kill(pair[1].proc.pid, signal.SIGKILL)
        try:
            _, err = client.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            client.kill()
            raise AssertionError("the client hung after its rpc-server died")
    finally:
        for s in pair:
            s.stop()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert client.returncode == 1, err
    assert errors == ["error: llama.cpp stopped: Remote RPC server crashed or returned malformed response "
                      "(with --rpc: is every rpc-server still running?)"], err


def stock_server_binary() -> Path:
    """llama.cpp's stock rpc-server, built by tools/stock_rpc_server.py; the test skips without it."""
    spec = importlib.util.spec_from_file_location("stock_rpc_server", TOOLS / "stock_rpc_server.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    path = tool.binary_path()
    if not path.exists():
        pytest.skip("no stock rpc-server here; `python tools/stock_rpc_server.py` builds one")
    return path


@pytest.fixture
def stock_server():
    binary = stock_server_binary()
    port = free_port()
    with ServerProcess([binary, "-p", port, "-t", 1], port, timeout=30, stop_timeout=10) as server:
        yield server.proc, server.endpoint


@pytest.mark.parametrize("cache", ["q8_0/tcq3", "turbo4/tcq2:sk"])
def test_tcq_values_split_across_servers_match_local(default_model_path, cache):
    """The trellis-coded V rows are encoded and decoded on the servers, by the same CPU kernels.
    Servers of their own: an rpc-server serves one client at a time, and the module's split
    session holds the shared pair."""
    from tq_gguf import Llama

    own = [RpcServer(), RpcServer()]
    kw = dict(cache=cache, n_ctx=N_CTX, logits_all=True, n_threads=2)
    here = Llama(default_model_path, **kw)
    there = None
    try:
        there = Llama(default_model_path, rpc=[s.endpoint for s in own], **kw)
        tokens = here.tokenize(PROMPT.encode())
        got, expected = logits(there, tokens), logits(here, tokens)
    finally:
        here.close()
        if there is not None:
            there.close()
        for s in own:
            s.stop()
    assert float(np.max(np.abs(got - expected))) <= LOGIT_TOLERANCE
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_stock_server_is_refused_naming_a_tcq_type(default_model_path, stock_server):
    proc, endpoint = stock_server
    r = subprocess.run([TQ_GGUF, "run", str(default_model_path), "--cache", "q8_0/tcq2", "-p", "hi", "-n", "1",
                        "--rpc", endpoint], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: rpc-server at {endpoint} does not know cache type tcq2 (ggml type 46): a stock rpc-server? "
        f"Start `tq-gguf rpc-server` there"]
    assert proc.poll() is None


def test_stock_server_is_refused_naming_the_type(default_model_path, stock_server):
    proc, endpoint = stock_server
    r = subprocess.run([TQ_GGUF, "run", str(default_model_path), "--cache", CACHE, "-p", "hi", "-n", "1", "--rpc",
                        endpoint], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: rpc-server at {endpoint} does not know cache type turbo3 (ggml type 44): a stock rpc-server? "
        f"Start `tq-gguf rpc-server` there"]
    assert proc.poll() is None  # the server refused one request and lives on


def test_stock_server_is_refused_even_for_stock_types(default_model_path, stock_server):
    """ggml's client in our build requires every rpc-server to hold the turbo and tcq types (patch
    0008), so a q8_0 cache on a stock server is refused too, naming the first type it lacks (by name)."""
    proc, endpoint = stock_server
    r = subprocess.run([TQ_GGUF, "run", str(default_model_path), "--cache", "q8_0/q8_0", "-p", "hi", "-n", "1",
                        "--rpc", endpoint], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: rpc-server at {endpoint} does not know cache type tcq2 (ggml type 46): a stock rpc-server? "
        f"Start `tq-gguf rpc-server` there"]


def test_llama_cpp_tools_name_the_type_a_stock_server_lacks(default_model_path, stock_server):
    """llama.cpp's own client (here llama-cli through `tq-gguf exec`) stops with ggml's abort, but
    naming the missing type instead of "Remote RPC server crashed or returned malformed response"."""
    proc, endpoint = stock_server
    r = subprocess.run([TQ_GGUF, "exec", "llama-cli", "-m", str(default_model_path), "--rpc", endpoint, "-ctk",
                        "q8_0", "-ctv", "turbo3", "-fa", "on", "-p", "hi", "-n", "1", "-st"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                       env={**os.environ, "GGML_NO_BACKTRACE": "1"})
    assert r.returncode == -signal.SIGABRT
    assert f"rpc-server at {endpoint} does not have the turbo2 type (a stock rpc-server?); run tq-gguf's " \
           f"rpc-server there" in r.stderr, r.stderr[-2000:]
    assert proc.poll() is None


def test_llama_server_on_rpc_stops_with_the_reason_when_a_server_dies(default_model_path):
    """`serve --engine llama-server --rpc`: answers with the layers on the servers; when one of
    them is killed mid-stream, the client's stream ends and serve exits with one error line."""
    import http.client
    import json
    import urllib.request

    pair = [RpcServer(), RpcServer()]
    port = free_port()
    try:
        with ServerProcess([TQ_GGUF, "serve", default_model_path, "--engine", "llama-server", "--cache", CACHE,
                            "--ctx", 2048, "--port", port, "-t", 1, "--rpc", ",".join(s.endpoint for s in pair)],
                           port, ready_line="ready at") as serve:
            body = {"prompt": PROMPT, "max_tokens": 1500, "temperature": 0, "stream": True, "ignore_eos": True}
            request = urllib.request.Request(serve.url + "/v1/completions", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.readline().startswith(b"data: ")
                os.kill(pair[0].proc.pid, signal.SIGKILL)
                try:
                    response.read()  # ends when llama-server goes: no hang
                except (http.client.IncompleteRead, OSError):
                    pass  # the stream was cut short, as it must be
            out = serve.wait(60)  # serve exits by itself
    finally:
        for s in pair:
            s.stop()
    assert serve.returncode == 1, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Remote RPC server crashed or returned malformed response" in errors[0], out


def test_python_engine_serves_from_rpc_servers(default_model_path):
    """`serve --rpc` with the default engine: the completion is the split session's (greedy, with
    the server's repeat penalty)."""
    import json
    import urllib.request

    from llama_cpp.server.types import CreateCompletionRequest

    # servers of its own: a server serves one client at a time, and the module's split session
    # holds the others
    pair = [RpcServer(), RpcServer()]
    port = free_port()
    try:
        with ServerProcess([TQ_GGUF, "serve", default_model_path, "--cache", CACHE, "--ctx", N_CTX, "--port", port,
                            "-t", 2, "--rpc", ",".join(s.endpoint for s in pair)],
                           port, ready_http="/v1/models", timeout=120) as serve:
            request = urllib.request.Request(serve.url + "/v1/completions", headers={
                "Content-Type": "application/json"}, data=json.dumps(
                {"prompt": PROMPT, "max_tokens": 8, "temperature": 0}).encode())
            with urllib.request.urlopen(request, timeout=60) as response:
                got = json.load(response)["choices"][0]["text"]
    finally:
        for s in pair:
            s.stop()
    penalty = CreateCompletionRequest.model_fields["repeat_penalty"].default
    from tq_gguf import Llama

    local = Llama(default_model_path, cache=CACHE, n_ctx=N_CTX, n_threads=2)
    assert got == local(PROMPT, max_tokens=8, temperature=0, repeat_penalty=penalty)["choices"][0]["text"]
