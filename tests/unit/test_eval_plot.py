"""How `eval --plot` groups configs and draws the frontier (tq_gguf.analysis.evalplot)."""

from __future__ import annotations

from tq_gguf.analysis.evalplot import FAMILIES, family, frontier

STOCK, TURBO, TRELLIS = (name for name, _, _ in FAMILIES)


def test_families():
    assert family("q8_0/q4_0") == family("q4_0/q4_0") == family("f16/q8_0") == STOCK
    assert family("q8_0/turbo3") == family("turbo4/turbo4:sk") == family("turbo4/q8_0") == TURBO
    assert family("q8_0/tcq3") == family("turbo4/tcq2:sk") == family("q8_0/tcq3:b2") == TRELLIS
    assert family("balanced") in (TURBO, TRELLIS)  # presets are read as their spec


def test_frontier_keeps_what_nothing_beats():
    points = [(8.5, 0.004), (5.875, 0.026), (5.875, 0.021), (6.5, 0.030), (4.5, 0.05), (3.75, 0.047), (5.375, 0.08)]
    assert frontier(points) == [(3.75, 0.047), (5.875, 0.021), (8.5, 0.004)]
    assert frontier([]) == []
    # a tie in bits keeps the lower KLD only; a tie in KLD keeps the fewer bits only
    assert frontier([(4.0, 0.1), (4.0, 0.2), (5.0, 0.1)]) == [(4.0, 0.1)]
