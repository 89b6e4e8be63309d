"""`tq-gguf serve`: check the model and cache config, then start the OpenAI-compatible server
(tq_gguf.runtime.server) with it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..gguf import ggufinfo, models
from ..kv.cacheconfig import CacheConfig
from ..kv.plan import format_size, padded_ctx
from .generate import describe
from .ports import check_port
from .session import resolve_config


def serve(model: str | None, *, cache: str | None, cache_k: str | None, cache_v: str | None, host: str, port: int,
          n_ctx: int, threads: int | None, alias: str | None, chat_format: str | None, api_key: str | None,
          rpc: tuple[str, ...], verbose: bool, echo: Callable[[str], None], smooth_k: bool = False) -> None:
    """Serve MODEL (a name, a path, or None for the default model) until interrupted."""
    path = models.resolve(model)
    n_ctx = padded_ctx(n_ctx)  # as the session will; the size printed below is for it
    info = ggufinfo.read(path)
    # What the session will resolve (the same function): a bad choice fails before the server
    # stack is imported and the model loaded. The session gets the resolved spec, smoothing included.
    config, _ = resolve_config(info, cache, cache_k, cache_v, smooth_k=smooth_k)

    from . import server  # deferred: fastapi, uvicorn and llama_cpp.server take seconds to import; checks come first

    check_port(host, port)
    settings = server.TqModelSettings(
        model=str(path), model_alias=alias or model or Path(path).stem, kv_cache=str(config), n_ctx=n_ctx, chat_format=chat_format, verbose=verbose, rpc=list(rpc) or None,
        **({"n_threads": threads, "n_threads_batch": threads} if threads else {}),
    )
    app = server.create_app(settings, server.ServerSettings(host=host, port=port, api_key=api_key))
    echo(f"serving {settings.model_alias} ({path.name}) with {describe(config)}: KV cache "
         f"{format_size(config.kv_bytes(info, n_ctx))} for {n_ctx} tokens (f16 would take "
         f"{format_size(CacheConfig.of('f16', 'f16').kv_bytes(info, n_ctx))}) at http://{host}:{port}/v1")
    server.run(app, host=host, port=port, verbose=verbose)
