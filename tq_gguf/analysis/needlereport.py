"""A needle sweep as a table (found/trials per length and depth) and as a heatmap PNG."""

from __future__ import annotations

import math
from pathlib import Path

from ..kv.cacheconfig import CacheConfig
from .needlerun import Sweep


def config_label(spec: str) -> str:
    """'q8_0/turbo3 (balanced)' for a preset, the spec alone otherwise."""
    preset = CacheConfig.parse(spec).preset
    return f"{spec} ({preset})" if preset else spec


def headline(sweep: Sweep) -> str:
    trials = f"{sweep.trials} trial{'s' * (sweep.trials != 1)}"
    return (f"{sweep.model_name} ({Path(sweep.model).name}): {sweep.kind} needle in {sweep.text}; "
            f"{trials} per cell, greedy; found/trials by length (rows) and depth (columns)")


def table_lines(sweep: Sweep) -> list[str]:
    rows = [("config", "length", *(f"d={d:g}" for d in sweep.depths), "all")]
    for config in sweep.configs:
        for i, length in enumerate(sweep.lengths):
            cells = [sweep.share(config, length, d) for d in sweep.depths]
            found, total = sum(f for f, _ in cells), sum(t for _, t in cells)
            rows.append((config_label(config) if i == 0 else "", str(length),
                         *(f"{f}/{t}" for f, t in cells), f"{found}/{total}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [headline(sweep), ""]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     .rstrip())
    lines += ["", "retrieved overall:"]
    for config in sweep.configs:
        rows_c = [r for r in sweep.results if r["config"] == config]
        found = sum(r["found"] for r in rows_c)
        lines.append(f"  {config_label(config):<28} {found}/{len(rows_c)} ({100 * found / len(rows_c):.0f}%)")
    return lines


def plot(sweep: Sweep, path: Path) -> None:
    """One panel per config: length (rows) by depth (columns), colour = share of trials retrieved."""
    from . import figure  # deferred: matplotlib takes seconds to import; only --plot needs it

    n = len(sweep.configs)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = figure.new(figsize=(0.55 * len(sweep.depths) * cols + 1.5, 0.5 * len(sweep.lengths) * rows + 1.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for ax, config in zip(axes.flat, sweep.configs):
        shares = [[sweep.share(config, length, d) for d in sweep.depths] for length in sweep.lengths]
        grid = [[f / t if t else float("nan") for f, t in row] for row in shares]
        image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", origin="lower")
        for y, row in enumerate(shares):
            for x, (f, t) in enumerate(row):
                ax.text(x, y, f"{f}/{t}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(sweep.depths)), [f"{d:g}" for d in sweep.depths], fontsize=7)
        ax.set_yticks(range(len(sweep.lengths)), [str(n) for n in sweep.lengths], fontsize=7)
        ax.set_xlabel("needle depth", fontsize=8)
        ax.set_ylabel("context tokens", fontsize=8)
        ax.set_title(config_label(config), fontsize=9)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{sweep.model_name}: {sweep.kind} needle retrieved "
                 f"({sweep.trials} trial{'s' * (sweep.trials != 1)} per cell)", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="share retrieved")
    fig.savefig(path, dpi=90)
