"""`tq-gguf serve --engine llama-server`: llama.cpp's own server (parallel slots, continuous
batching, /metrics) from our build, with the cache config checked as `run` checks it.

Each slot gets a KV stream of its own (`--no-kv-unified`) of `--ctx` cells, so what a slot can
hold, and what the server allocates, is exactly what tq_gguf.kv.plan computes for llama.cpp's
tools (sliding-window layers sized to their window, not swa_full). The server runs as a child
(childproc) that stops with this process.

With a draft model, llama-server decodes speculatively: the draft proposes up to `--draft-max`
tokens, the target checks them in one batch and keeps the longest prefix it would have produced
itself. The draft has a context of its own, with the same slots and cells and a cache config of
its own (one K and one V type for all its layers: llama.cpp has no per-layer flags for it).
"""

from __future__ import annotations

import json
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import CacheTypeError, ModelError, TqError
from ..gguf import ggufheader, ggufinfo, models, vocab
from ..kv.cacheconfig import CacheConfig
from ..kv.plan import ContextParams, format_size, kv_size, padded_ctx
from ..native import rpcdevices, toollog
from ..native.rpcwire import parse_endpoints
from ..nativebuild.builder import tool_path
from . import childproc
from .generate import describe
from .ports import check_port
from .session import resolve_config

READY_TIMEOUT = 600.0  # seconds for the server to load the model and answer /health
ALL_LAYERS = "999"  # -ngl: every layer on the RPC devices
VERBOSE_LOG = ["-lv", "4"]  # with --verbose: llama.cpp's info lines too (model, KV cache allocation)
DRAFT_MODEL_TYPE = "draft-simple"  # llama.cpp's --spec-type for a separate draft model; -md alone does not enable it


class ServerError(TqError):
    """llama-server could not start, or stopped by itself."""


@dataclass(frozen=True)
class SlotPlan:
    """What the server allocates: `slots` streams of `ctx_per_slot` cells each."""

    slots: int
    ctx_per_slot: int
    kv_total: int
    kv_total_f16: int

    @property
    def kv_per_slot(self) -> int:
        return self.kv_total // self.slots


def slot_plan(info: ggufinfo.ModelInfo, config: CacheConfig, flash_attn: bool, slots: int, n_ctx: int) -> SlotPlan:
    """KV bytes of `slots` slots of `n_ctx` tokens each, as llama-server allocates them."""
    params = ContextParams(n_seq=slots, unified=False, swa_full=False, flash_attn=flash_attn, smooth_k=config.smooth_k)
    size = kv_size(info, padded_ctx(n_ctx) * slots, *config.layer_types(info.n_layer), params)
    f16 = CacheConfig.of("f16", "f16")
    size_f16 = kv_size(info, padded_ctx(n_ctx) * slots, *f16.layer_types(info.n_layer), params)
    return SlotPlan(slots, size.n_ctx_seq, size.total, size_f16.total)


@dataclass(frozen=True)
class Draft:
    """A speculative draft model and its cache config."""

    path: Path
    info: ggufinfo.ModelInfo
    config: CacheConfig
    n_max: int | None  # tokens drafted per step; None: llama.cpp's default

    def cli_args(self) -> list[str]:
        args = ["-md", str(self.path), "--spec-type", DRAFT_MODEL_TYPE,
                "-ctkd", self.config.k.name, "-ctvd", self.config.v.name]
        return args + (["--spec-draft-n-max", str(self.n_max)] if self.n_max is not None else [])


def draft_config(target: CacheConfig, spec: str | None) -> CacheConfig:
    """The draft's cache config: `spec`, or the target's K and V types on every layer."""
    if spec is None:
        return CacheConfig(target.k, target.v)
    config = CacheConfig.parse(spec)
    if config.boundary:
        raise CacheTypeError(f"a draft cache takes one K and one V type for all of its layers (llama.cpp has no "
                             f"per-layer flags for the draft): write {config.k.name}/{config.v.name}, not {config}")
    return config


def resolve_draft(model: str, spec: str | None, target_path: Path, target: CacheConfig, n_max: int | None) -> Draft:
    path = models.resolve(model)
    info = ggufinfo.read(path)
    reason = vocab.mismatch(ggufheader.read_header(target_path), ggufheader.read_header(path))
    if reason:
        raise ModelError(f"{path.name} cannot draft for {target_path.name}, whose vocabulary differs: {reason} "
                         f"(llama-server would serve without speculation)")
    config = draft_config(target, spec)
    config.validate(info, flash_attn=True)
    return Draft(path, info, config, n_max)


def command(path: Path, info: ggufinfo.ModelInfo, config: CacheConfig, flash_attn: bool, plan: SlotPlan, *,
            host: str, port: int, threads: int | None, alias: str, rpc: list[str],
            draft: Draft | None = None, context_shift: bool = False) -> list[str]:
    """llama-server's arguments for this model, cache config and slot plan."""
    cmd = [str(tool_path("llama-server")), "-m", str(path), "--alias", alias, "--host", host, "--port", str(port),
           "-np", str(plan.slots), "-c", str(plan.ctx_per_slot * plan.slots), "--no-kv-unified",
           "-fa", "on" if flash_attn else "off", *config.cli_args(info.n_layer), "--metrics"]
    if threads:
        cmd += ["-t", str(threads), "-tb", str(threads)]
    if rpc:
        cmd += ["--rpc", ",".join(rpc), "-ngl", ALL_LAYERS]
    if draft:
        cmd += draft.cli_args()
    if context_shift:  # a slot that fills its context drops its oldest half and goes on (K rows re-roped)
        cmd.append("--context-shift")
    return cmd


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return json.load(response).get("status") == "ok"
    except (OSError, ValueError):  # refused, still loading (503), or not yet JSON
        return False


def _wait_ready(child: childproc.Child, url: str, log, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not _health(url):
        if child.poll() is not None:
            raise ServerError(f"llama-server stopped while loading {what} (exit status {child.poll()}): "
                              f"{_log_reasons(log)}")
        if time.monotonic() > deadline:
            raise ServerError(f"llama-server did not become ready within {READY_TIMEOUT:.0f} s")
        time.sleep(0.2)


def _log_reasons(log) -> str:
    if log is None:
        return "see its log above"
    log.seek(0)
    return toollog.reasons(log.read().decode(errors="replace")) or "it printed nothing"


def serve(model: str | None, *, cache: str | None, cache_k: str | None, cache_v: str | None, host: str, port: int,
          n_ctx: int, parallel: int, threads: int | None, alias: str | None, api_key: str | None,
          rpc: tuple[str, ...], verbose: bool, echo: Callable[[str], None], draft_model: str | None = None,
          draft_cache: str | None = None, draft_max: int | None = None, smooth_k: bool = False,
          context_shift: bool = False) -> None:
    """Serve MODEL with llama-server until SIGINT or SIGTERM; stops the server before returning."""
    path = models.resolve(model)
    info = ggufinfo.read(path)
    config, flash_attn = resolve_config(info, cache, cache_k, cache_v, smooth_k=smooth_k)
    draft = resolve_draft(draft_model, draft_cache, path, config, draft_max) if draft_model else None
    # -fa is one switch for target and draft: a quantized draft cache turns it on for both
    flash_attn = flash_attn or bool(draft and draft.config.needs_flash_attn())
    servers = parse_endpoints(rpc) if rpc else []
    if servers:
        rpcdevices.check_servers(servers, config.types())
    endpoints = [str(server) for server in servers]
    if port == 0:  # llama-server would pick a port and not say which; nobody could reach it
        raise ServerError("llama-server needs a fixed --port (0 asks for any free one)")
    check_port(host, port)
    plan = slot_plan(info, config, flash_attn, parallel, n_ctx)
    cmd = command(path, info, config, flash_attn, plan, host=host, port=port, threads=threads,
                  alias=alias or model or path.stem, rpc=endpoints, draft=draft,
                  context_shift=context_shift) + (VERBOSE_LOG if verbose else [])
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    echo(f"serving {path.name} with llama-server and {describe(config)}"
         + (f", layers on {', '.join(endpoints)}" if endpoints else ""))
    echo(f"  {plan.slots} slot{'s' if plan.slots > 1 else ''} of {plan.ctx_per_slot} tokens; KV cache "
         f"{format_size(plan.kv_per_slot)} per slot, {format_size(plan.kv_total)} in total "
         f"(f16 would take {format_size(plan.kv_total_f16)})")
    if draft:
        draft_plan = slot_plan(draft.info, draft.config, flash_attn, parallel, n_ctx)
        echo(f"  speculative: draft {draft.path.name} with {describe(draft.config)}; its KV cache "
             f"{format_size(draft_plan.kv_per_slot)} per slot, {format_size(draft_plan.kv_total)} in total")
    log = None if verbose else tempfile.TemporaryFile()
    with childproc.stop_signals():
        child = None
        try:
            # The API key goes through the environment (a command line is visible to every local
            # user); without a debugger's backtrace, ggml's abort message is the log's last line.
            child = childproc.Child(cmd, log, env={"GGML_NO_BACKTRACE": "1",
                                                   **({"LLAMA_API_KEY": api_key} if api_key else {})})
            _wait_ready(child, url, log, str(path))
            echo(f"  ready at {url}/v1 (metrics at {url}/metrics); Ctrl-C stops it")
            status = child.wait()
            raise ServerError(f"llama-server stopped by itself (exit status {status}): {_log_reasons(log)}")
        except childproc.Stopped as stop:
            echo(f"stopping llama-server ({stop})")
        finally:
            if child is not None:
                child.stop()
            if log is not None:
                log.close()
