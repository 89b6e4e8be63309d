"""The figure `eval --plot` writes: mean KL divergence against bits per value, configs grouped by
what stores them (stock llama.cpp types, turbo types, a trellis-coded V), with the frontier (the
lowest KLD reached at each size) of the stock types and of all."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..kv.cacheconfig import CacheConfig

# (name, marker, colour) of each family, in legend order
FAMILIES = (("stock llama.cpp", "s", "tab:gray"), ("turbo", "o", "tab:blue"), ("trellis-coded V", "D", "tab:red"))


def family(config: str) -> str:
    """The FAMILIES name of a config spec or preset: a tcq V, else any turbo type, else stock types."""
    c = CacheConfig.parse(config)
    if c.v.trellis:
        return FAMILIES[2][0]
    return FAMILIES[1][0] if c.k.rotated or c.v.rotated else FAMILIES[0][0]


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (bits, kld) points no other point beats on both: no more bits and lower KLD."""
    out: list[tuple[float, float]] = []
    for bits, kld in sorted(points, key=lambda p: (p[0], p[1])):
        if not out or kld < out[-1][1]:
            out.append((bits, kld))
    return out


def draw(scores, path: Path, title: str) -> None:
    """scores: evaluate.Score objects (config, preset, bits_per_value, kld, kld_err)."""
    from . import figure  # deferred: matplotlib

    # A config identical to f16 has KLD 0, which a log axis cannot show; the title names the base.
    points = [s for s in scores if s.kld is not None and s.kld > 0]
    fig = figure.new(figsize=(7.5, 4.8))
    ax = fig.add_subplot()
    for name, marker, color in FAMILIES:
        ours = [s for s in points if family(s.config) == name]
        if ours:
            ax.errorbar([s.bits_per_value for s in ours], [s.kld for s in ours], yerr=[s.kld_err for s in ours],
                        fmt=marker, color=color, capsize=3, label=name)
    stock = [s for s in points if family(s.config) == FAMILIES[0][0]]
    for label, members, style in (("frontier, stock", stock, ":"), ("frontier, all", points, "--")):
        edge = frontier([(s.bits_per_value, s.kld) for s in members])
        if len(edge) > 1:
            ax.step([b for b, _ in edge], [k for _, k in edge], where="post", linestyle=style, color="black",
                    alpha=0.6, linewidth=1, label=label)
    for s in points:
        ax.annotate(s.config + (f" ({s.preset})" if s.preset else ""), (s.bits_per_value, s.kld),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    if points:
        ax.set_yscale("log")
        ax.legend(fontsize=8, loc="upper right")
    ax.margins(x=0.2, y=0.15)  # room for the labels right of the points
    ax.set_xlabel("bits per K/V value")
    ax.set_ylabel("mean KL divergence vs f16 cache (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120)
