"""`tq-gguf run`: generate text, or chat, with the KV cache chosen by name."""

from __future__ import annotations

import json
import sys

import click

from .options import cache_options, rpc_option


def _stdin_messages():
    """Lines of stdin, with a prompt when a person is typing them."""
    stdin = sys.stdin
    interactive = stdin.isatty()
    while True:
        if interactive:
            click.echo("> ", nl=False, err=True)
        line = stdin.readline()
        if not line:
            return
        yield line


@click.command()
@click.argument("model", required=False)
@cache_options
@click.option("-p", "--prompt", help="text to continue; with --chat, the first message (optional)")
@click.option("--chat", is_flag=True,
              help="chat in the model's chat template: each line of stdin is a message, answered as it "
                   "streams; /exit, /quit or end of input stops")
@click.option("--system", help="system message for --chat")
@click.option("-n", "--n-predict", "n_predict", type=click.IntRange(min=1),
              help="tokens to generate [default: 128; with --chat, up to 512 per answer]")
@click.option("--ctx", "n_ctx", default=4096, show_default=True, type=click.IntRange(min=64), help="context size")
@click.option("--seed", default=0, show_default=True, type=int, help="sampling seed")
@click.option("--temp", default=0.0, show_default=True, type=click.FloatRange(min=0.0), help="0 = greedy")
@click.option("--threads", "-t", type=click.IntRange(min=1), help="CPU threads [default: llama.cpp's]")
@click.option("--json", "as_json", is_flag=True,
              help="print one JSON object (the text, speeds and cache sizes) instead of streaming")
@rpc_option
def run(model: str | None, cache: str | None, cache_k: str | None, cache_v: str | None, smooth_k: bool,
        prompt: str | None,
        chat: bool, system: str | None, n_predict: int | None, n_ctx: int, seed: int, temp: float,
        threads: int | None, as_json: bool, rpc: tuple[str, ...]) -> None:
    """Generate text from MODEL (a GGUF path or a model name; default: the default model), or chat with it.

    Prints the decode speed and the KV cache's size next to f16's on stderr.

    \b
    tq-gguf run -p "The three primary colors are" --cache max
    echo "What is a KV cache?" | tq-gguf run --chat --cache-v turbo2
    """
    from ..native import fatal  # deferred: cffi and the native build; --help needs neither
    from ..runtime import generate  # deferred: heavy (numpy, gguf, llama_cpp); --help needs none

    if not chat and prompt is None:
        raise click.UsageError("give a prompt with -p, or use --chat")
    if system is not None and not chat:
        raise click.UsageError("--system is for --chat")
    if as_json and chat:
        raise click.UsageError("--json is for one completion, not --chat")
    fatal.exit_on_abort(" (with --rpc: is every rpc-server still running?)" if rpc else "")
    llm = generate.open_session(model, cache=cache, cache_k=cache_k, cache_v=cache_v, n_ctx=n_ctx, seed=seed,
                                n_threads=threads, rpc=list(rpc), smooth_k=smooth_k)
    if chat:
        messages = _stdin_messages()
        stats = generate.chat(llm, [prompt, *messages] if prompt else messages, system=system,
                              n_predict=n_predict or 512, seed=seed, temp=temp, echo=click.echo)
    else:
        stats = generate.complete(llm, prompt, n_predict=n_predict or 128, seed=seed, temp=temp,
                                  echo=(lambda *args, **kwargs: None) if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(stats.as_dict(), indent=2))
        return
    click.echo(stats.summary(), err=True)
