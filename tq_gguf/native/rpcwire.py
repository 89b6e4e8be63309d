"""Asking an rpc-server, over ggml's RPC protocol, whether it can hold our cache types.

ggml's RPC handshake (HELLO) exchanges only a protocol version, which our build and a stock
llama.cpp of the same commit share; the protocol has no list of types and the client's
`supports_op` answers true for everything without asking. A stock server that receives a
turbo tensor logs "invalid tensor type" and drops the connection, and llama.cpp's client then
aborts the whole process with "Remote RPC server crashed or returned malformed response" —
the type is never named. A server from another llama.cpp version may even know a different
type under the same number and compute garbage.

So before a client hands a server to llama.cpp, it asks one existing question per cache type:
GET_ALLOC_SIZE for a 256-value row of that type. A server with our types answers the row's
size in bytes; a stock server closes the connection, and one with another type at that
number answers another size. Either is refused here, naming the type. The same connection
first confirms the server is reachable and speaks the protocol version of our build, which
llama.cpp's client would otherwise also answer with an abort.

The message layouts mirror ggml-rpc.cpp at the pinned commit (all structures packed).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from ..errors import TqError

PROTO_MAJOR, PROTO_MINOR = 7, 0  # RPC_PROTO_MAJOR_VERSION / _MINOR_VERSION in ggml-rpc.h
CMD_GET_ALLOC_SIZE, CMD_HELLO, CMD_DEVICE_COUNT = 13, 14, 15  # enum rpc_cmd
CONN_CAPS_SIZE = 24  # RPC_CONN_CAPS_SIZE: zeros ask for plain TCP
MAX_DIMS, MAX_SRC, MAX_OP_PARAMS, MAX_NAME = 4, 10, 64, 64
# struct rpc_tensor: id, type, buffer, ne[4], nb[4], op, op_params, flags, src[10], view_src,
# view_offs, data, name, use_count
RPC_TENSOR = struct.Struct(f"<QIQ{MAX_DIMS}I{MAX_DIMS}II{MAX_OP_PARAMS // 4}ii{MAX_SRC}QQQQ{MAX_NAME}si")
PROBE_VALUES = 256  # values in the probed row: whole blocks of every cache type
DEFAULT_TIMEOUT = 10.0  # seconds; the server serves one client at a time and may be busy


class RpcError(TqError):
    """An RPC server is unreachable, speaks another protocol, or lacks a cache type."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Endpoint":
        """'host:port' (IPv6 in brackets: '[::1]:50052')."""
        host, sep, port = text.strip().rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RpcError(f"cannot read RPC server {text!r}: write host:port, e.g. 127.0.0.1:50052")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_endpoints(texts) -> list[Endpoint]:
    """Endpoints from a list of 'host:port' strings, each of which may hold a comma-separated list."""
    found = [Endpoint.parse(part) for text in texts for part in text.split(",") if part.strip()]
    if not found:
        raise RpcError("no RPC server given: write host:port[,host:port...]")
    if len(set(found)) != len(found):
        raise RpcError(f"an RPC server is listed twice in {', '.join(map(str, found))}")
    return found


def _tensor(type_id: int, n_values: int, type_size: int, block_size: int) -> bytes:
    """A one-row tensor of `type_id`, in no buffer: enough for the server to size it."""
    row_bytes = n_values // block_size * type_size
    return RPC_TENSOR.pack(1, type_id, 0, n_values, 1, 1, 1, type_size, row_bytes, row_bytes, row_bytes,
                           0, *([0] * (MAX_OP_PARAMS // 4)), 0, *([0] * MAX_SRC), 0, 0, 0, b"tq-probe", 0)


class _Connection:
    def __init__(self, endpoint: Endpoint, timeout: float):
        self.endpoint = endpoint
        try:
            self.sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
        except socket.timeout:
            raise RpcError(f"cannot reach rpc-server at {endpoint}: no answer in {timeout:g} s") from None
        except OSError as exc:
            raise RpcError(f"cannot reach rpc-server at {endpoint}: {exc.strerror or exc}") from None

    def ask(self, cmd: int, payload: bytes, answer_size: int, what: str) -> bytes | None:
        """Send one command; its answer, or None when the server closed the connection instead."""
        try:
            self.sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
            head = self._read(8)
            if head is None:
                return None
            (size,) = struct.unpack("<Q", head)
            if size != answer_size:
                raise RpcError(f"rpc-server at {self.endpoint} answered {what} with {size} bytes, "
                               f"not {answer_size}: is it an rpc-server of another llama.cpp version?")
            return self._read(size)
        except socket.timeout:
            raise RpcError(f"rpc-server at {self.endpoint} did not answer {what} in {self.sock.gettimeout():g} s; "
                           f"it serves one client at a time: is another one connected?") from None
        except OSError as exc:
            if isinstance(exc, ConnectionResetError):
                return None
            raise RpcError(f"lost rpc-server at {self.endpoint} during {what}: {exc.strerror or exc}") from None

    def _read(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class ProbedType:
    """A cache type to check on the server: its ggml id and layout in our build."""

    name: str
    type_id: int
    type_size: int  # bytes per block
    block_size: int  # values per block


def check_server(endpoint: Endpoint, types: list[ProbedType], timeout: float = DEFAULT_TIMEOUT) -> int:
    """Raise RpcError unless the server at `endpoint` is reachable, speaks our protocol version and
    holds every type in `types` with our layout; returns its device count."""
    conn = _Connection(endpoint, timeout)
    try:
        hello = conn.ask(CMD_HELLO, bytes(CONN_CAPS_SIZE), 4 + CONN_CAPS_SIZE, "the handshake")
        if hello is None:
            raise RpcError(f"rpc-server at {endpoint} closed the connection during the handshake: "
                           f"is it an rpc-server of another llama.cpp version?")
        major, minor, patch = hello[0], hello[1], hello[2]
        if major != PROTO_MAJOR or minor > PROTO_MINOR:
            raise RpcError(f"rpc-server at {endpoint} speaks RPC protocol {major}.{minor}.{patch}; this build "
                           f"speaks {PROTO_MAJOR}.{PROTO_MINOR}: run the same llama.cpp on both ends")
        count = conn.ask(CMD_DEVICE_COUNT, b"", 4, "the device count")
        if count is None:
            raise RpcError(f"rpc-server at {endpoint} closed the connection when asked for its devices")
        (n_devices,) = struct.unpack("<I", count)
        empty = bytes(RPC_TENSOR.size)
        for t in types:
            request = struct.pack("<I", 0) + _tensor(t.type_id, PROBE_VALUES, t.type_size, t.block_size) + \
                empty * MAX_SRC
            answer = conn.ask(CMD_GET_ALLOC_SIZE, request, 8, f"the size of a {t.name} row")
            expected = PROBE_VALUES // t.block_size * t.type_size
            if answer is None:
                raise RpcError(f"rpc-server at {endpoint} does not know cache type {t.name} (ggml type "
                               f"{t.type_id}): a stock rpc-server? Start `tq-gguf rpc-server` there")
            (size,) = struct.unpack("<Q", answer)
            if size != expected:
                raise RpcError(f"rpc-server at {endpoint} has another type under {t.name}'s number {t.type_id} "
                               f"({size} bytes for {PROBE_VALUES} values, not {expected}): start "
                               f"`tq-gguf rpc-server` of this build there")
        return n_devices
    finally:
        conn.close()
