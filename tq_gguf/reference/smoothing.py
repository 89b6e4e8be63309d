"""Key smoothing, the reference (docs/FORMAT.md, "Key smoothing").

A smoothed K cache stores `k - mu` in its own storage domain (after the cache's
rotation, if any). mu is the float32 mean of a window of the first ubatch written
into the empty cache: its first WINDOW_ROWS rows (a whole default ubatch). The
window's size is the C header's (native/include/ggml-tq-smooth.h), read from
there so that the two cannot drift apart.

    window(n_rows)    the rows mu is taken from
    mean(keys)        mu of a first ubatch's rows, (n_rows, width) -> (width,)
    smooth(keys, mu)  the rows the cache stores
"""

from __future__ import annotations

import re

import numpy as np

from .. import paths

HEADER = paths.NATIVE_DIR / "include" / "ggml-tq-smooth.h"


def _define(name: str) -> int:
    m = re.search(rf"^#define {name} (\w+)", HEADER.read_text(), re.MULTILINE)
    if m is None:
        raise RuntimeError(f"{HEADER} defines no {name}")
    return int(m[1].rstrip("uUlL"), 0)  # a C literal: 64, 0x554d5154u


WINDOW_ROWS = _define("GGML_TQ_SMOOTH_ROWS")
STATE_MAGIC = _define("GGML_TQ_SMOOTH_STATE_MAGIC")


def window(n_rows: int) -> slice:
    return slice(0, min(n_rows, WINDOW_ROWS))


def mean(keys: np.ndarray) -> np.ndarray:
    """mu of the first ubatch's key rows (n_rows, width), float32 (summed in float64: the graph's
    float32 mean differs from it by rounding only)."""
    rows = np.asarray(keys, dtype=np.float64)[window(len(keys))]
    return rows.mean(axis=0).astype(np.float32)


def smooth(keys: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """The rows a smoothed cache is fed: k - mu in float32, rounded once, as the graph's subtraction."""
    return (np.asarray(keys, dtype=np.float32) - np.asarray(mu, dtype=np.float32)).astype(np.float32)
