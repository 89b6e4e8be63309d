"""`tq-gguf advise`: the advisor on the command line (tq_gguf.analysis.advisor does the work)."""

from __future__ import annotations

import json

import click

from ..kv.plan import format_size


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return [fmt(header), *(fmt(r) for r in rows)]


def text_report(advice, show_layers: bool = False) -> list[str]:
    """The advice as text; `advice` is a tq_gguf.analysis.advisor.Advice."""
    rec = advice.recommended
    cfg = advice.config
    lines = [
        f"{advice.model}",
        f"  {advice.arch}, {advice.n_layer} layers, {advice.n_head_kv} KV heads, head size {advice.head_dim_k}"
        f"{'' if advice.head_dim_v == advice.head_dim_k else f'/{advice.head_dim_v}'}; "
        f"{advice.n_tokens} tokens read and measured in {advice.seconds:.1f} s",
        "",
        f"recommended: {rec.preset + ' (' + rec.config + ')' if rec.preset else rec.config}",
        f"  Python:    Llama(model, cache=\"{rec.config}\")",
        f"  llama.cpp: {' '.join(cfg.cli_args(advice.n_layer))}",
        "",
        "why:",
        *(f"  - {r}" for r in advice.reasons),
        "",
        "candidates (mean and worst per-layer attention-output error; * = a layer over the limit):",
    ]
    rows = [[c.config + (f" [{c.preset}]" if c.preset else ""), f"{c.bits_per_value:.2f}", f"{c.mean_err:.4f}",
             f"{c.worst_err:.4f} @ {c.worst_layer}" + ("" if c.eligible else " *")]
            + ([format_size(c.kv_bytes)] if advice.ctx else [])
            for c in sorted(advice.candidates, key=lambda c: -c.bits_per_value)]
    header = ["config", "bits", "mean err", "worst"] + ([f"cache @ {advice.ctx}"] if advice.ctx else [])
    lines += ["  " + line for line in _table(rows, header)]
    if show_layers:
        lines += ["", f"per layer (err = attention-output error; limit {advice.thresholds['layer_limit']}):"]
        rows = [[str(s.layer), f"{s.k.channel_ratio:.1f}", str(s.k.outlier_channels), f"{s.k.kurtosis:.1f}",
                 f"{s.k.norm_spread:.2f}", f"{s.v.channel_ratio:.1f}", f"{s.v.kurtosis:.1f}",
                 f"{s.k_attn['q8_0'].out_err:.4f}", f"{s.k_attn['turbo4'].out_err:.4f}",
                 f"{s.k_attn['turbo4'].attn_kl:.4f}", f"{s.v_out_err['turbo4']:.4f}", f"{s.v_out_err['turbo3']:.4f}",
                 f"{s.v_out_err['turbo2']:.4f}"] for s in advice.layers]
        header = ["layer", "K chan x", "K outl", "K kurt", "K spread", "V chan x", "V kurt", "K q8_0 err",
                  "K turbo4 err", "K turbo4 attn KL", "V turbo4 err", "V turbo3 err", "V turbo2 err"]
        lines += ["  " + line for line in _table(rows, header)]
    return lines


@click.command("advise")
@click.argument("model", required=False)
@click.option("--budget-bits", type=click.FloatRange(min=0, min_open=True), metavar="BITS",
              help="pick the best config storing at most BITS bits per K/V value (f16: 16, q8_0: 8.5) "
                   "[default: the most compact config that meets the quality bar]")
@click.option("--ctx", type=click.IntRange(min=1), metavar="TOKENS",
              help="the context length the cache is for: the advice sizes the cache there and, for a long "
                   "context, keeps keys at q8_0 (docs/LONG_CONTEXT.md)")
@click.option("--json", "as_json", is_flag=True, help="print the advice and every measurement as JSON")
@click.option("--layers", "show_layers", is_flag=True, help="also print the per-layer statistics")
@click.option("--threads", "-t", type=click.IntRange(min=1), help="CPU threads for reading the text [default: all cores]")
def advise(model: str | None, budget_bits: float | None, ctx: int | None, as_json: bool, show_layers: bool,
           threads: int | None) -> None:
    """Measure MODEL's keys and values and recommend a KV-cache config (MODEL: a GGUF path or a
    model name; default: the default model)."""
    from ..analysis import advisor  # deferred: heavy (numpy, gguf, llama_cpp); --help needs none

    advice = advisor.advise(model, budget_bits=budget_bits, n_threads=threads, ctx=ctx)
    if as_json:
        click.echo(json.dumps(advice.as_dict(), indent=1))
    else:
        for line in text_report(advice, show_layers):
            click.echo(line)
