"""Options shared by the commands that open a model session (`run`, `serve`)."""

from __future__ import annotations

from typing import Callable

import click

from ..kv.cacheconfig import DEFAULT_PRESET, PRESETS
from ..kv.cachetypes import CACHE_TYPES


def cache_options(command: Callable) -> Callable:
    """--cache, --cache-k, --cache-v and --smooth-k, passed as `cache`, `cache_k`, `cache_v` and `smooth_k`.

    All default to None so that the resolution in tq_gguf.Llama applies: explicit K/V types
    win over --cache; with neither, the model's tq.cache tag, else the default preset."""
    types = ", ".join(CACHE_TYPES)
    default = PRESETS[DEFAULT_PRESET].config
    # click lists options in the order they are declared, i.e. the reverse of decorator application.
    command = click.option(
        "--smooth-k", is_flag=True, default=False,
        help="key smoothing: the K cache stores k - mu, mu a fixed mean of the first keys; attention is "
             "unchanged and compressed keys lose less (the same as :sk after the config)")(command)
    command = click.option("--cache-v", metavar="TYPE", help=f"V cache type, overriding --cache's: {types}")(command)
    command = click.option("--cache-k", metavar="TYPE", help=f"K cache type, overriding --cache's: {types}")(command)
    command = click.option(
        "--cache", metavar="SPEC",
        help=f"cache config: a preset ({', '.join(PRESETS)}), K/V (q8_0/turbo3), K/V:bN (first and last N "
             f"layers at q8_0), either with :sk (key smoothing) [default: the model's tq.cache tag, else {DEFAULT_PRESET} ({default})]")(command)
    return command


def rpc_option(command: Callable) -> Callable:
    """--rpc HOST:PORT[,HOST:PORT...] (repeatable), passed as `rpc`: a tuple of strings."""
    return click.option(
        "--rpc", metavar="HOST:PORT[,...]", multiple=True,
        help="put the model's layers and their KV cache on these rpc-servers (`tq-gguf rpc-server` on each "
             "host), split by their free memory; repeat or separate with commas")(command)
