"""Model layers on rpc-servers: the checked endpoints become ggml devices for one model.

ggml's RPC backend connects to each server when asked for its devices
(`ggml_backend_rpc_add_server`, reached through the RPC registry's proc address, as llama.cpp's
`--rpc` does). llama.cpp's tools then register them for the whole process; here they are only
handed to the one model that asked (llama_model_params.devices), so other sessions in the
process keep running where they did. A server that is unreachable, of another protocol version
or without our cache types would make ggml abort the process; rpcwire.check_server refuses it
first with one clear error.
"""

from __future__ import annotations

from ..kv.cachetypes import CacheType
from . import ggml, typeids
from .rpcwire import Endpoint, ProbedType, RpcError, check_server


def probed_types(types) -> list[ProbedType]:
    """What to ask a server about: the cache types in use (so a refusal names the one asked for),
    then every other turbo and tcq type of the build, which ggml's client requires of every server it adds
    (patch 0008), in the layout of our build (ggml id, block bytes, block values)."""
    in_use = sorted(types, key=lambda t: t.name)
    others = sorted((ct for ct in typeids.available() if ct.rotated and ct not in in_use), key=lambda t: t.name)
    out = []
    for ct in in_use + others:
        type_id = typeids.ggml_id(ct)
        block_size, type_size = ggml.type_traits(type_id)
        out.append(ProbedType(ct.name, type_id, type_size, block_size))
    return out


def check_servers(endpoints: list[Endpoint], types: set[CacheType]) -> None:
    """Every server reachable, of our protocol version and holding every type in `types` and every
    turbo type."""
    probes = probed_types(types)
    for endpoint in endpoints:
        if check_server(endpoint, probes) == 0:
            raise RpcError(f"rpc-server at {endpoint} offers no device")


def devices(endpoints: list[Endpoint], types: set[CacheType]) -> list[int]:
    """Addresses of the ggml devices (ggml_backend_dev_t) of the servers, checked first."""
    check_servers(endpoints, types)
    L, ffi = ggml.lib(), ggml.ffi
    reg = L.ggml_backend_reg_by_name(b"RPC")
    add = L.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_rpc_add_server") if reg != ffi.NULL else ffi.NULL
    if add == ffi.NULL:
        raise RpcError("this build has no RPC backend; run `tq-gguf build`")
    add_server = ffi.cast("ggml_backend_reg_t (*)(const char *)", add)
    found = []
    for endpoint in endpoints:
        server_reg = add_server(str(endpoint).encode())
        if server_reg == ffi.NULL:
            raise RpcError(f"rpc-server at {endpoint} offers no device")
        found += [int(ffi.cast("uintptr_t", L.ggml_backend_reg_dev_get(server_reg, i)))
                  for i in range(L.ggml_backend_reg_dev_count(server_reg))]
    return found
