#!/usr/bin/env python3
"""Backs docs/FORMAT.md 11.7 "How far a fixed μ holds": `python tools/studies/smoothing_reach.py gemma3-270m --base 1e6 --base-swa 1e4`.

Key smoothing's μ is the mean of the first 512 post-RoPE key rows. RoPE turns each pair of
a key's dimensions by an angle proportional to its position, so the constant part of the
keys that μ removes turns too: by position p, pair i has turned by θ_i·p from where μ saw it.
Where that angle is large, μ no longer matches the keys and subtracting it adds error.

The model reads `--tokens` tokens of git's release notes with an f16 cache; every layer's K
rows are captured as written (tq_gguf.analysis.cachewrites). Per layer the turbo4 error of
the keys (rotation, quantize, dequantize with the NumPy reference), relative to the keys'
energy, for cells 512..1535 ("near") and the last 1024 cells ("far"), with: no μ, the μ of
cells 0..511, and that μ kept only in the RoPE pairs that turn by less than π/3 between
cell 0 and the last cell of the range (θ_i = base^(-2i/d), pairs (i, i + d/2) for NEOX
RoPE, (2i, 2i + 1) for NORM).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tq_gguf import reference  # noqa: E402
from tq_gguf.analysis import cachewrites  # noqa: E402
from tq_gguf.analysis.evaltext import git_release_notes  # noqa: E402
from tq_gguf.gguf import ggufinfo, models  # noqa: E402

WINDOW = 512  # GGML_TQ_SMOOTH_ROWS
MAX_TURN = np.pi / 3  # a pair that turned by more than this is better left unsmoothed (|2 sin(a/2)| > 1)


def turbo4_error(rows: np.ndarray, energy: float) -> float:
    y = reference.rotate(rows.reshape(-1, rows.shape[-1]).astype(np.float32))
    back = reference.dequantize(reference.quantize(y, "turbo4"), "turbo4").reshape(y.shape)
    return float(((back - y) ** 2).sum() / energy)


def kept_pairs(head: int, base: float, span: int, neox: bool) -> np.ndarray:
    """Dimensions of the RoPE pairs that turn by less than MAX_TURN over `span` positions."""
    theta = base ** (-2.0 * np.arange(head // 2) / head)
    keep = theta * span < MAX_TURN
    return np.tile(keep, 2) if neox else np.repeat(keep, 2)


@click.command()
@click.argument("model")
@click.option("--tokens", default=16384, show_default=True)
@click.option("--base", "base_global", type=float, required=True, help="RoPE frequency base of the full-attention layers")
@click.option("--base-swa", type=float, help="RoPE frequency base of the sliding-window layers [default: --base]")
@click.option("--neox/--norm", default=True, help="RoPE pair layout [default: NEOX]")
def main(model: str, tokens: int, base_global: float, base_swa: float | None, neox: bool) -> None:
    path = models.fetch(model)
    info = ggufinfo.read(path)
    writes = cachewrites.capture(path, "f16/f16", git_release_notes(tokens * 8), tokens)
    head = info.head_dim_k
    print(f"{info.name}: {tokens} tokens; turbo4 error / key energy: no mu, mu of cells 0..{WINDOW - 1}, "
          f"that mu in the pairs turning < pi/3 only")
    print(f"{'layer':>5} {'kind':>4}  {'near: none':>10} {'mu':>7} {'kept':>7}   {'far: none':>9} {'mu':>7} {'kept':>7}")
    for il in sorted(il for side, il in writes if side == "k"):
        keys = writes[("k", il)].arrays()[0].astype(np.float32).reshape(tokens, -1, head)
        swa = il in info.swa_layers
        mu = keys[:WINDOW].mean(axis=0)
        cells = []
        for lo, hi in ((WINDOW, WINDOW + 1024), (tokens - 1024, tokens)):
            rows = keys[lo:hi]
            energy = float((rows ** 2).sum())
            keep = kept_pairs(head, base_swa if swa and base_swa else base_global, hi, neox)
            cells += [turbo4_error(rows, energy), turbo4_error(rows - mu, energy), turbo4_error(rows - mu * keep, energy)]
        print(f"{il:>5} {'swa' if swa else 'full':>4}  {cells[0]:>10.4f} {cells[1]:>7.4f} {cells[2]:>7.4f}   "
              f"{cells[3]:>9.4f} {cells[4]:>7.4f} {cells[5]:>7.4f}")


if __name__ == "__main__":
    main()
