"""Time FLASH_ATTN_EXT alone on the CPU, for cache types side by side.

    python tools/bench/bench_fattn.py --heads 9/3 --d 64 --queries 512 --cells 4608
    python tools/bench/bench_fattn.py --heads 12/2 --d 128 --queries 1 --cells 8192

One op (the shapes of a model's layer: query heads / KV heads, head size, queries, cells)
per config, with a causal mask whose last query sees every cell, as a prompt at depth
(cells - queries) or a decoded token sees them. The configs run in turns, round after
round, so that a slow spell of this shared machine falls on all of them alike; each
prints its median and best time with the ratio of medians to f16/f16 and q8_0/q8_0
measured in the same run. The model's own matrix products are not in it: `tq-gguf bench`
times whole tokens.
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
                n_q: int, n_kv: int, threads: int):
    """A callable that computes one FLASH_ATTN_EXT over a cache of `config`'s types."""
    k_type, v_type = config.split("/")
    rng = np.random.default_rng(0)
    q = rng.standard_normal((n_head, n_q, d)).astype(np.float32)
    k = rng.standard_normal((n_head_kv, n_kv, d)).astype(np.float32)
    v = rng.standard_normal((n_head_kv, n_kv, d)).astype(np.float32)
    pos = np.arange(n_kv - n_q, n_kv)[:, None]
    mask = np.where(np.arange(n_kv)[None, :] <= pos, 0.0, -np.inf).astype(np.float16)

    g = stack.enter_context(_Graph("CPU", n_threads=threads))
    tq = g.tensor("f32", d, n_q, n_head)
    tk = g.tensor(k_type, d, n_kv, n_head_kv)
    tv = g.tensor(v_type, d, n_kv, n_head_kv)
    tm = g.tensor("f16", n_kv, n_q)
    out = g.base.ggml_flash_attn_ext(g.ctx, tq, tk, tv, tm, float(1 / np.sqrt(d)), 0.0, 0.0)
    g.base.ggml_flash_attn_ext_set_prec(out, GGML_PREC_F32)
    g.alloc()
    for t, x in ((tq, q), (tk, cache_bytes(k, k_type)), (tv, cache_bytes(v, v_type)), (tm, mask)):
        g.set(t, x)
    graph = g.base.ggml_new_graph(g.ctx)
    g.base.ggml_build_forward_expand(graph, out)
    return lambda: g.base.ggml_backend_graph_compute(g.backend, graph)


@click.command()
@click.option("--configs", default="q8_0/turbo4,q8_0/turbo3,turbo4/turbo3,turbo4/turbo4", show_default=True,
              help="K/V pairs to time beside f16/f16 and q8_0/q8_0")
@click.option("--heads", default="9/3", show_default=True, help="query heads / KV heads")
@click.option("--d", "head_size", default=64, show_default=True, help="head size")
@click.option("--queries", default=512, show_default=True, help="query rows (1: decode)")
@click.option("--cells", default=4608, show_default=True, help="KV cells")
@click.option("--rounds", default=9, show_default=True, help="turns per config")
@click.option("-t", "--threads", default=2, show_default=True)
def main(configs, heads, head_size, queries, cells, rounds, threads):
    n_head, n_head_kv = map(int, heads.split("/"))
    names = list(dict.fromkeys([*BASELINES, *configs.split(",")]))
    times: dict[str, list[float]] = {c: [] for c in names}
    with contextlib.ExitStack() as stack:
        ops = {c: prepared_op(stack, c, n_head, n_head_kv, head_size, queries, cells, threads) for c in names}
        for _ in range(rounds):
            for c in names:
                t0 = time.perf_counter()
                ops[c]()
                times[c].append(time.perf_counter() - t0)
    median = {c: float(np.median(t)) for c, t in times.items()}
    click.echo(f"FLASH_ATTN_EXT, heads {heads}, d {head_size}, {queries} queries over {cells} cells, "
               f"{threads} threads, {rounds} rounds")
    for c in names:
        ratios = " ".join(f"{median[b] / median[c]:.2f}x {b}" for b in BASELINES)
        click.echo(f"{c:16s} median {median[c] * 1e3:8.2f} ms  best {min(times[c]) * 1e3:8.2f} ms  ({ratios})")


if __name__ == "__main__":
    main()
