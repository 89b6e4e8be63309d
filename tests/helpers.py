"""Helpers shared by the test modules (import them: `from helpers import run_cli`)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
import traceback
import urllib.request
from pathlib import Path

import numpy as np
from click.testing import CliRunner, Result

from tq_gguf import paths
from tq_gguf import reference as ref
from tq_gguf.cli import main


def run_cli(*args, input: str | None = None) -> Result:
    """`tq-gguf ARGS` in this process. An exception that escapes the CLI (which a user would see
    as a traceback) fails the calling test, with the traceback in the message."""
    result = CliRunner().invoke(main, [str(a) for a in args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("the CLI raised instead of reporting an error:\n"
                             + "".join(traceback.format_exception(*result.exc_info)))
    return result


# -- server processes ----------------------------------------------------------------------

class ServerProcess:
    """A server run as a child process for a test: `tq-gguf serve`, `tq-gguf rpc-server`, a stock
    llama.cpp binary. The constructor returns once the server is ready and raises AssertionError
    (with everything it printed) if it exits first or is not ready within `timeout` seconds.

        port = free_port()
        with ServerProcess([TQ_GGUF, "serve", model, "--port", str(port)], port, ready_http="/v1/models") as s:
            s.client().completions.create(...)
        assert "..." in s.output

    Ready means, by the argument given:
      ready_line  a line of its output contains this text (`tq-gguf serve` prints "ready at");
      ready_http  a GET of this path on 127.0.0.1:port answers;
      neither     the port accepts a TCP connection (rpc-server).

    Its stdout and stderr are read into `lines` as they come, so a chatty server never blocks on a
    full pipe. stop() sends SIGTERM, and SIGKILL after `stop_timeout` seconds; a `with` block and
    a module fixture's teardown call it. Subclass it to give a test module's server its command
    and request helpers.
    """

    def __init__(self, argv: list, port: int, *, ready_line: str | None = None, ready_http: str | None = None,
                 timeout: float = 300, stop_timeout: float = 30):
        self.argv = [str(a) for a in argv]
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.endpoint = f"127.0.0.1:{port}"  # the form --rpc takes
        self.stop_timeout = stop_timeout
        self.lines: list[str] = []
        self.banner: list[str] = []  # the lines up to the ready line (ready_line only)
        self._changed = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self._wait_ready(ready_line, ready_http, timeout)
        except BaseException:
            self.stop()
            raise

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def _answers(self, ready_http: str | None) -> bool:
        try:
            if ready_http is not None:
                with urllib.request.urlopen(self.url + ready_http, timeout=5):
                    return True
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True  # listening; that connection was one client, closed at once
        except OSError:
            return False

    def _wait_ready(self, ready_line: str | None, ready_http: str | None, timeout: float) -> None:
        name = " ".join(self.argv[:2])
        deadline = time.monotonic() + timeout
        while True:
            if ready_line is not None:
                with self._changed:
                    at = next((i for i, line in enumerate(self.lines) if ready_line in line), None)
                    if at is not None:
                        self.banner = self.lines[:at + 1]
                        return
                    if not self._eof:
                        self._changed.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            elif self._answers(ready_http):
                return
            if self.proc.poll() is not None or (ready_line is not None and self._eof):
                try:
                    self.proc.wait(5)  # its output has ended: it is exiting
                except subprocess.TimeoutExpired:
                    pass
                self._reader.join(5)
                raise AssertionError(f"{name} exited with {self.proc.poll()} before it was ready:\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} was not ready within {timeout:g} s:\n{self.output}")
            if ready_line is None:
                time.sleep(0.2)

    @property
    def output(self) -> str:
        """Everything the server has printed so far, stdout and stderr interleaved."""
        with self._changed:
            return "\n".join(self.lines)

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def get(self, path: str) -> dict:
        """GET a JSON document from the server."""
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.load(response)

    def client(self):
        """The real OpenAI client, pointed at the server."""
        from openai import OpenAI  # the test extra; only the HTTP servers' tests need it

        return OpenAI(base_url=self.url + "/v1", api_key="unused", timeout=120, max_retries=0)

    def wait(self, timeout: float) -> str:
        """Wait for the server to exit by itself (subprocess.TimeoutExpired if it does not); its output."""
        self.proc.wait(timeout)
        self._reader.join(self.stop_timeout)
        return self.output

    def stop(self) -> str:
        """SIGTERM, then SIGKILL if it has not exited within stop_timeout; its whole output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # a child that outlived its parent may hold the pipe open: do not wait for it forever
        self._reader.join(self.stop_timeout)
        return self.output

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# -- GGUF files --------------------------------------------------------------------------

def synthetic_gguf(path, arch: str = "llama", n_layer: int = 4, heads: int = 4, heads_kv=2, head: int = 64,
                   extra: dict | None = None, n_values: int = 4096):
    """A small GGUF with the keys llama.cpp reads for the KV cache (and one tensor)."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(n_layer)
    w.add_embedding_length(heads * head)
    w.add_head_count(heads)
    if isinstance(heads_kv, list):
        w.add_key_value(f"{arch}.attention.head_count_kv", heads_kv, gguf.GGUFValueType.ARRAY,
                        sub_type=gguf.GGUFValueType.UINT32)
    else:
        w.add_head_count_kv(heads_kv)
    w.add_context_length(2048)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for key, (value, vtype) in (extra or {}).items():
        w.add_key_value(key, value, vtype, sub_type=gguf.GGUFValueType.BOOL if isinstance(value, list) else None)
    w.add_tensor("token_embd.weight", np.ones((n_values // 128, 128), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def u32(value):
    import gguf

    return value, gguf.GGUFValueType.UINT32


# -- row sets the kernels are checked on ---------------------------------------------------

def edge_blocks() -> np.ndarray:
    """One 64-value block per row, each a case docs/FORMAT.md defines."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal(64).astype(np.float32)
    rows = []

    def put(**at):
        b = base.copy()
        for i, v in at.items():
            b[int(i[1:])] = v
        rows.append(b)

    rows.append(np.zeros(64, np.float32))                       # all-zero block
    rows.append(np.full(64, -0.0, np.float32))                  # negative zeros
    spike = np.zeros(64, np.float32); spike[17] = 3.0; rows.append(spike)
    spike = np.zeros(64, np.float32); spike[0] = -1e-3; rows.append(spike)
    rows.append(np.full(64, 1.0, np.float32))                   # every u equal
    put(i3=np.nan)
    put(i63=np.inf)
    put(i0=-np.inf)
    rows.append(base * np.float32(1e30))                        # beyond the clamp: scale saturates
    rows.append(base * np.float32(2.0**61))
    rows.append(base * np.float32(9000.0))                      # norm near the fp16 limit
    rows.append(base * np.float32(65504.0 / 8))
    rows.append(base * np.float32(1e-6))                        # scale in fp16 subnormals
    rows.append(base * np.float32(1e-9))                        # scale rounds to zero
    rows.append(base * np.float32(1e-40))                       # float32 subnormal inputs, flushed
    put(i9=np.float32(2.0**-63), i10=np.float32(2.0**-64), i11=np.float32(-(2.0**-63)))
    mids = ref.MIDPOINTS[4]
    tie = np.zeros(64, np.float32); tie[: len(mids)] = mids; tie[40] = 1.0; rows.append(tie)  # near midpoints
    rows.extend(search_tie_blocks())
    return np.stack(rows).astype(np.float32)


def search_tie_blocks() -> np.ndarray:
    """Three blocks per type in which four |u[i]| equal thresholds of the scale-search candidate
    that wins (FORMAT.md step 6: a tie goes to the index nearer zero). Random blocks, then
    those four values nudged until x[i] * inv hits the threshold exactly for the block's
    own inv; a block is kept if that fixed point holds and the winner did not change."""
    from tq_gguf.reference import quants
    from tq_gguf.reference.codebooks import SEARCH_MIDPOINTS

    f32 = np.float32

    def inv_of(x):
        return f32(1) / np.sqrt(quants.sum_squares(x))

    def winner(x, bits):
        idx, _ = quants.encode(x[None], bits)
        u = x * inv_of(x)
        return next(t for t, m in enumerate(SEARCH_MIDPOINTS[bits])
                    if np.array_equal(quants.select_indices(u, bits, m), idx[0]))

    rng = np.random.default_rng(23)
    rows = []
    for bits in (2, 3, 4):
        found = 0
        while found < 3:
            x = rng.standard_normal(64).astype(f32)
            t = winner(x, bits)
            mids = SEARCH_MIDPOINTS[bits][t]
            at = list(zip(rng.choice(64, size=4, replace=False), rng.integers(0, len(mids), size=4)))
            for _ in range(8):
                inv = inv_of(x)
                for i, j in at:
                    v = mids[j] / inv
                    for _ in range(16):
                        if f32(v * inv) == mids[j]:
                            break
                        v = np.nextafter(v, f32(np.inf) if f32(v * inv) < mids[j] else f32(-np.inf))
                    x[i] = np.copysign(v, x[i])
            inv = inv_of(x)
            if all(f32(abs(x[i]) * inv) == mids[j] for i, j in at) and winner(x, bits) == t:
                rows.append(x)
                found += 1
    return np.stack(rows)


def random_rows(n: int = 200, width: int = 256) -> np.ndarray:
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((n, width)).astype(np.float32)
    x[::7] *= rng.lognormal(0, 3, size=(len(x[::7]), 1)).astype(np.float32)  # spread of norms
    x[::11, 5] *= 50  # outlier channels, as in real keys
    return ref.rotate(x)


def real_rows() -> list[np.ndarray]:
    data = np.load(paths.KV_ROWS)
    return [ref.rotate(data[k]) for k in sorted(data.files)]


def inputs() -> list[tuple[str, np.ndarray]]:
    cases = [("random", random_rows()), ("edge", edge_blocks())]
    cases += [(f"real{i}", rows) for i, rows in enumerate(real_rows())]
    return cases


def children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie has exited too, only its parent's wait is missing."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
