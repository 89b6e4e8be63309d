"""`tq-gguf serve`: an OpenAI-compatible HTTP server with a compressed KV cache, on llama-cpp-python's
server (one sequence at a time) or llama.cpp's llama-server (parallel slots). Loaded by tq_gguf.cli
when used."""

from __future__ import annotations

import click

from .options import cache_options, rpc_option

ENGINES = ("python", "llama-server")


@click.command()
@click.argument("model", required=False)
@cache_options
@click.option("--engine", type=click.Choice(ENGINES), default="python", show_default=True,
              help="python: llama-cpp-python's server, one request at a time; llama-server: llama.cpp's "
                   "server, --parallel slots decoded together (continuous batching), /metrics")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="port to listen on")
@click.option("--ctx", "n_ctx", default=4096, show_default=True, type=click.IntRange(min=64),
              help="context size (with llama-server: of each slot)")
@click.option("--parallel", "-np", default=1, show_default=True, type=click.IntRange(1, 256),
              help="slots: requests decoded at once (llama-server); more requests wait for a free slot")
@click.option("--threads", "-t", type=click.IntRange(min=1), help="CPU threads [default: llama.cpp's]")
@click.option("--alias", help="model name the API reports and accepts [default: MODEL as given]")
@click.option("--chat-format", help="llama-cpp-python chat format (python engine) [default: the model's chat template]")
@click.option("--api-key", envvar="TQ_GGUF_API_KEY", help="require this bearer token (or set TQ_GGUF_API_KEY)")
@rpc_option
@click.option("--draft", "draft_model", metavar="MODEL",
              help="decode speculatively with this draft model (llama-server), e.g. qwen2.5-coder-0.5b for "
                   "qwen2.5-coder-1.5b; it must share the target's vocabulary")
@click.option("--draft-cache", metavar="K/V",
              help="the draft's cache config, one K and one V type for all its layers "
                   "[default: the target's K and V types]")
@click.option("--draft-max", type=click.IntRange(1, 64), metavar="N",
              help="tokens the draft proposes per step [default: llama.cpp's, 3]")
@click.option("--context-shift", is_flag=True,
              help="llama-server: a slot that fills its context drops its oldest tokens and goes on generating "
                   "(the kept keys are re-roped, compressed or not) instead of stopping")
@click.option("--verbose", is_flag=True, help="show llama.cpp's log")
def serve(model: str | None, cache: str | None, cache_k: str | None, cache_v: str | None, smooth_k: bool,
          engine: str, host: str,
          port: int, n_ctx: int, parallel: int, threads: int | None, alias: str | None, chat_format: str | None,
          api_key: str | None, rpc: tuple[str, ...], draft_model: str | None, draft_cache: str | None,
          draft_max: int | None, context_shift: bool, verbose: bool) -> None:
    """Serve MODEL (a GGUF path or a model name; default: the default model) over an OpenAI-compatible API.

    The python engine is llama-cpp-python's server (/v1/completions,
    /v1/chat/completions, streaming with server-sent events, /v1/embeddings,
    /v1/models, docs at /docs); GET /tq/cache reports the cache in use. The
    llama-server engine is llama.cpp's server from our build: --parallel slots
    with a KV stream of --ctx tokens each, continuous batching, /metrics, and
    speculative decoding with --draft. Both check the cache config as `run`
    does and run until Ctrl-C or SIGTERM.

    \b
    tq-gguf serve smollm2-135m --cache-k q8_0 --cache-v turbo3 --port 8000
    tq-gguf serve smollm2-135m --engine llama-server --parallel 4 --cache balanced
    tq-gguf serve qwen2.5-coder-1.5b --engine llama-server --draft qwen2.5-coder-0.5b
    curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
         -d '{"prompt": "The three primary colors are", "max_tokens": 32}'
    """
    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    if engine != "llama-server" and (draft_model or draft_cache or draft_max):
        raise click.UsageError("--draft, --draft-cache and --draft-max are for --engine llama-server")
    if engine != "llama-server" and context_shift:
        raise click.UsageError("--context-shift is for --engine llama-server")
    if (draft_cache or draft_max) and not draft_model:
        raise click.UsageError("--draft-cache and --draft-max need --draft MODEL")
    if engine == "llama-server":
        if chat_format:
            raise click.UsageError("--chat-format is for --engine python; llama-server reads the model's template")
        from ..runtime import llamaserver  # deferred: imports the native layer; --help needs none

        llamaserver.serve(model, cache=cache, cache_k=cache_k, cache_v=cache_v, host=host, port=port, n_ctx=n_ctx,
                          parallel=parallel, threads=threads, alias=alias, api_key=api_key, rpc=rpc,
                          verbose=verbose, echo=echo, draft_model=draft_model, draft_cache=draft_cache,
                          draft_max=draft_max, smooth_k=smooth_k, context_shift=context_shift)
        return
    if parallel > 1:
        raise click.UsageError("the python engine serves one request at a time; use --engine llama-server "
                               "for --parallel")
    from ..runtime import serve as server  # deferred: heavy (numpy, gguf, llama_cpp); --help needs none

    server.serve(model, cache=cache, cache_k=cache_k, cache_v=cache_v, host=host, port=port, n_ctx=n_ctx,
                 threads=threads, alias=alias, chat_format=chat_format, api_key=api_key, rpc=rpc,
                 verbose=verbose, echo=echo, smooth_k=smooth_k)
