"""A matplotlib figure drawn off screen (Agg), for the PNGs `eval --plot` and `needle --plot` write.

Only the plots need matplotlib, and it takes seconds to import, so evaluate and needlereport
import this module inside their plot functions.
"""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new(figsize: tuple[float, float]) -> Figure:
    """An empty figure that lays itself out and can be saved as a PNG (fig.savefig)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig
