"""Time FLASH_ATTN_EXT alone on the CPU, for cache types side by side.

    python tools/bench/bench_fattn.py --heads 9/3 --d 64 --queries 512 --cells 4608
    python tools/bench/bench_fattn.py --heads 12/2 --d 128 --queries 1 --cells 8192
    python tools/bench/bench_fattn.py --heads 9/3 --d 64 --queries 1 --cells 8192 --layers 30

One op per layer (the shapes of a model's layer: query heads / KV heads, head size,
queries, cells), with a causal mask whose last query sees every cell, as a prompt at
depth (cells - queries) or a decoded token sees them. K and V are laid out as llama.cpp's
cache holds them: a cell's rows of every KV head together, so one head's rows lie a cell
apart. With --layers N every layer has a cache of its own and one graph computes the N
ops in turn, as a model's decode step does: the rows then come cold from memory, where one
op run again and again finds them in the cache. The configs run in turns, round after
round, so that a slow spell of this shared machine falls on all of them alike; each
prints its median and best time per layer with the ratio of medians to f16/f16 and
q8_0/q8_0 measured in the same run. The model's own matrix products are not in it:
`tq-gguf bench` times whole tokens.
"""

from __future__ import annotations

import contextlib
import time

import click
import numpy as np

from tq_gguf.native import backendops, ggml
from tq_gguf.native.backendops import GGML_PREC_F32, _Graph

BASELINES = ("f16/f16", "q8_0/q8_0")


def cache_bytes(x: np.ndarray, type_name: str) -> np.ndarray:
    if type_name == "f16":
        return x.astype(np.float16)
    return ggml.quantize(x.reshape(-1, x.shape[-1]), backendops.type_id(type_name))


def prepared_op(stack: contextlib.ExitStack, config: str, n_head: int, n_head_kv: int, d: int,
                n_q: int, n_kv: int, threads: int, layers: int = 1):
    """A callable that computes `layers` FLASH_ATTN_EXT ops, each over a cache of its own of `config`'s types."""
    k_type, v_type = config.split("/")
    rng = np.random.default_rng(0)
    q = rng.standard_normal((n_head, n_q, d)).astype(np.float32)
    pos = np.arange(n_kv - n_q, n_kv)[:, None]
    mask = np.where(np.arange(n_kv)[None, :] <= pos, 0.0, -np.inf).astype(np.float16)

    g = stack.enter_context(_Graph("CPU", n_tensors=2 + 5 * layers, n_threads=threads))
    tq = g.tensor("f32", d, n_q, n_head)
    tm = g.tensor("f16", n_kv, n_q)
    caches, outs = [], []
    for _ in range(layers):
        # a cell's rows of every KV head together, as the cache stores them; the op reads the permuted view
        tk = g.tensor(k_type, d, n_head_kv, n_kv)
        tv = g.tensor(v_type, d, n_head_kv, n_kv)
        out = g.base.ggml_flash_attn_ext(g.ctx, tq, g.base.ggml_permute(g.ctx, tk, 0, 2, 1, 3),
                                         g.base.ggml_permute(g.ctx, tv, 0, 2, 1, 3), tm, float(1 / np.sqrt(d)), 0.0, 0.0)
        g.base.ggml_flash_attn_ext_set_prec(out, GGML_PREC_F32)
        caches.append((tk, tv))
        outs.append(out)
    g.alloc()
    g.set(tq, q)
    g.set(tm, mask)
    for tk, tv in caches:
        k = rng.standard_normal((n_kv, n_head_kv, d)).astype(np.float32)
        v = rng.standard_normal((n_kv, n_head_kv, d)).astype(np.float32)
        g.set(tk, cache_bytes(k, k_type))
        g.set(tv, cache_bytes(v, v_type))
    graph = g.base.ggml_new_graph(g.ctx)
    for out in outs:
        g.base.ggml_build_forward_expand(graph, out)
    return lambda: g.base.ggml_backend_graph_compute(g.backend, graph)


@click.command()
@click.option("--configs", default="q8_0/turbo4,q8_0/turbo3,turbo4/turbo3,turbo4/turbo4", show_default=True,
              help="K/V pairs to time beside f16/f16 and q8_0/q8_0")
@click.option("--heads", default="9/3", show_default=True, help="query heads / KV heads")
@click.option("--d", "head_size", default=64, show_default=True, help="head size")
@click.option("--queries", default=512, show_default=True, help="query rows (1: decode)")
@click.option("--cells", default=4608, show_default=True, help="KV cells")
@click.option("--layers", default=1, show_default=True, help="ops per graph, each over a cache of its own")
@click.option("--rounds", default=9, show_default=True, help="turns per config")
@click.option("-t", "--threads", default=2, show_default=True)
def main(configs, heads, head_size, queries, cells, layers, rounds, threads):
    n_head, n_head_kv = map(int, heads.split("/"))
    names = list(dict.fromkeys([*BASELINES, *configs.split(",")]))
    times: dict[str, list[float]] = {c: [] for c in names}
    with contextlib.ExitStack() as stack:
        ops = {c: prepared_op(stack, c, n_head, n_head_kv, head_size, queries, cells, threads, layers) for c in names}
        for _ in range(rounds):
            for c in names:
                t0 = time.perf_counter()
                ops[c]()
                times[c].append((time.perf_counter() - t0) / layers)
    median = {c: float(np.median(t)) for c, t in times.items()}
    click.echo(f"FLASH_ATTN_EXT, heads {heads}, d {head_size}, {queries} queries over {cells} cells, "
               f"{layers} layer(s), {threads} threads, {rounds} rounds; times per layer")
    for c in names:
        ratios = " ".join(f"{median[b] / median[c]:.2f}x {b}" for b in BASELINES)
        click.echo(f"{c:16s} median {median[c] * 1e3:8.2f} ms  best {min(times[c]) * 1e3:8.2f} ms  ({ratios})")


if __name__ == "__main__":
    main()
