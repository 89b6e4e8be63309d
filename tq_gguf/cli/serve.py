"""`tq-gguf serve`: an OpenAI-compatible HTTP server with a compressed KV cache.
Loaded by tq_gguf.cli when used."""

from __future__ import annotations

import click

from .options import cache_options


@click.command()
@click.argument("model", required=False)
@cache_options
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="port to listen on")
@click.option("--ctx", "n_ctx", default=4096, show_default=True, type=click.IntRange(min=64), help="context size")
@click.option("--threads", "-t", type=click.IntRange(min=1), help="CPU threads [default: llama.cpp's]")
@click.option("--alias", help="model name the API reports and accepts [default: MODEL as given]")
@click.option("--chat-format", help="llama-cpp-python chat format [default: the model's chat template]")
@click.option("--api-key", envvar="TQ_GGUF_API_KEY", help="require this bearer token (or set TQ_GGUF_API_KEY)")
@click.option("--verbose", is_flag=True, help="show llama.cpp's log")
def serve(model: str | None, cache: str | None, cache_k: str | None, cache_v: str | None, host: str, port: int,
          n_ctx: int, threads: int | None, alias: str | None, chat_format: str | None, api_key: str | None,
          verbose: bool) -> None:
    """Serve MODEL (a GGUF path or a model name; default: the default model) over an OpenAI-compatible API.

    llama-cpp-python's server (/v1/completions, /v1/chat/completions, streaming
    with server-sent events, /v1/embeddings, /v1/models, docs at /docs) with the
    KV cache chosen by name; GET /tq/cache reports the cache in use. Runs until
    interrupted.

    \b
    tq-gguf serve smollm2-135m --cache-k q8_0 --cache-v turbo3 --port 8000
    curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
         -d '{"prompt": "The three primary colors are", "max_tokens": 32}'
    """
    from ..runtime import serve as server  # deferred: heavy (numpy, gguf, llama_cpp); --help needs none

    server.serve(model, cache=cache, cache_k=cache_k, cache_v=cache_v, host=host, port=port, n_ctx=n_ctx,
                 threads=threads, alias=alias, chat_format=chat_format, api_key=api_key, verbose=verbose,
                 echo=lambda line: click.echo(line, err=True))
