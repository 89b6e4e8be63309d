"""Key smoothing, the reference (docs/FORMAT.md, "Key smoothing").

A smoothed K cache stores `k - mu` in its own storage domain (after the cache's
rotation, if any). mu is the float32 mean of a window of the first ubatch written
into the empty cache: its first WINDOW_ROWS rows (a whole default ubatch), less the
RoPE pairs that turn by more than MAX_TURN over the context (zeroed in the keys' own
domain, before the rotation). The constants are the C header's
(native/include/ggml-tq-smooth.h), read from there so that the two cannot drift apart.

    window(n_rows)                       the rows mu is taken from
    mean(keys)                           the window's mean, (n_rows, width) -> (width,)
    first_pair(n_rot, base, scale, n)    the first RoPE pair mu keeps over n positions
    drop_pairs(mu, n_rot, pair0, neox)   mu without the faster pairs, per head
    smooth(keys, mu)                     the rows the cache stores
"""

from __future__ import annotations

import re

import numpy as np

from .. import paths

HEADER = paths.NATIVE_DIR / "include" / "ggml-tq-smooth.h"


def _define(name: str) -> str:
    m = re.search(rf"^#define {name} ([\w.]+)", HEADER.read_text(), re.MULTILINE)
    if m is None:
        raise RuntimeError(f"{HEADER} defines no {name}")
    return m[1]


WINDOW_ROWS = int(_define("GGML_TQ_SMOOTH_ROWS"))
STATE_MAGIC = int(_define("GGML_TQ_SMOOTH_STATE_MAGIC").rstrip("uUlL"), 0)  # a C literal: 0x554d5154u
MAX_TURN = float(_define("GGML_TQ_SMOOTH_MAX_TURN"))  # radians: pi/3


def window(n_rows: int) -> slice:
    return slice(0, min(n_rows, WINDOW_ROWS))


def mean(keys: np.ndarray) -> np.ndarray:
    """mu of the first ubatch's key rows (n_rows, width), float32 (summed in float64: the graph's
    float32 mean differs from it by rounding only)."""
    rows = np.asarray(keys, dtype=np.float64)[window(len(keys))]
    return rows.mean(axis=0).astype(np.float32)


def first_pair(n_rot: int, freq_base: float, freq_scale: float, n_pos: int) -> int:
    """The first RoPE pair mu keeps: pair i turns freq_scale * freq_base^(-2i/n_rot) radians a
    position, and the pairs before this one turn by more than MAX_TURN over n_pos positions."""
    i = np.arange(n_rot // 2, dtype=np.float64)
    turn = float(freq_scale) * np.power(float(freq_base), -2.0 * i / n_rot) * n_pos
    kept = np.flatnonzero(turn <= MAX_TURN)
    return int(kept[0]) if kept.size else n_rot // 2


def dropped_dims(n_rot: int, pair0: int, neox: bool) -> np.ndarray:
    """The dims of a head that pairs [0, pair0) take: NEOX RoPE pairs dims (i, i + n_rot/2),
    the original layout (2i, 2i + 1)."""
    if neox:
        return np.concatenate([np.arange(pair0), n_rot // 2 + np.arange(pair0)])
    return np.arange(2 * pair0)


def drop_pairs(mu: np.ndarray, head: int, n_rot: int, pair0: int, neox: bool) -> np.ndarray:
    """mu (one row of n_head_kv heads of `head` dims, in the keys' own domain) with the pairs
    [0, pair0) of every head set to zero."""
    out = np.array(mu, dtype=np.float32).reshape(-1, head)
    out[:, dropped_dims(n_rot, pair0, neox)] = 0.0
    return out.reshape(np.shape(mu))


def smooth(keys: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """The rows a smoothed cache is fed: k - mu in float32, rounded once, as the graph's subtraction."""
    return (np.asarray(keys, dtype=np.float32) - np.asarray(mu, dtype=np.float32)).astype(np.float32)
