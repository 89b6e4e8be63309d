"""Reading rpc-server endpoints, and the layout of ggml's RPC messages that the client check sends."""

from __future__ import annotations

import pytest

from tq_gguf.native.rpcwire import RPC_TENSOR, Endpoint, RpcError, parse_endpoints


def test_endpoints_are_read_as_llama_cpp_writes_them():
    assert parse_endpoints(["10.0.0.2:50052,10.0.0.3:50053", "[::1]:7"]) == [
        Endpoint("10.0.0.2", 50052), Endpoint("10.0.0.3", 50053), Endpoint("::1", 7)]
    assert str(Endpoint("::1", 7)) == "[::1]:7" and str(Endpoint("host", 1)) == "host:1"


@pytest.mark.parametrize("text", ["host", "host:", ":50052", "host:0", "host:65536", "host:port"])
def test_bad_endpoints_are_refused_by_name(text):
    with pytest.raises(RpcError, match=f"cannot read RPC server {text!r}: write host:port"):
        parse_endpoints([text])


def test_a_server_listed_twice_is_refused():
    with pytest.raises(RpcError, match="listed twice"):
        parse_endpoints(["a:1", "a:1"])


def test_rpc_tensor_layout_is_ggml_rpcs():
    # ggml-rpc.cpp's packed struct rpc_tensor: 8 + 4 + 8 + 4*4 + 4*4 + 4 + 64 + 4 + 10*8 + 8 + 8 + 8 + 64 + 4
    assert RPC_TENSOR.size == 296
