"""The inputs tq_gguf.analysis.verify checks the kernels on (its docstring's "Inputs"): random rows,
the format's edge cases and the real K/V rows, rotated as llama.cpp rotates cache rows."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import paths
from ..errors import TqError
from ..reference import rotate

KV_ROWS = paths.KV_ROWS
N_QUERIES = 4
MAX_KEYS = 128


class VerifyError(TqError):
    """A kernel disagrees with the reference, or the inputs cannot be read."""


def random_rows(n: int = 96, width: int = 256, seed: int = 1234) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, width)).astype(np.float32)
    x[::7] *= rng.lognormal(0, 3, size=(len(x[::7]), 1)).astype(np.float32)  # a spread of norms
    x[::11, 5] *= 50  # an outlier channel, as real keys have
    return x


def edge_rows() -> np.ndarray:
    """One 64-value block per row, each a case docs/FORMAT.md defines."""
    rng = np.random.default_rng(7)
    base = rng.standard_normal(64).astype(np.float32)

    def with_(index: int, value: float) -> np.ndarray:
        b = base.copy()
        b[index] = value
        return b

    spike = np.zeros(64, np.float32)
    spike[17] = 3.0
    rows = [
        np.zeros(64, np.float32), np.full(64, -0.0, np.float32), spike, np.full(64, 1.0, np.float32),
        with_(3, np.nan), with_(63, np.inf), with_(0, -np.inf),
        base * np.float32(1e30), base * np.float32(2.0**61),  # beyond the input clamp
        base * np.float32(9000.0), base * np.float32(65504.0 / 8),  # scale near the fp16 limit
        base * np.float32(1e-6), base * np.float32(1e-9), base * np.float32(1e-40),  # subnormal scales and inputs
        with_(9, np.float32(2.0**-63)),  # at the flush threshold
    ]
    return np.stack(rows).astype(np.float32)


def load_rows(path: Path) -> dict[str, np.ndarray]:
    """name -> float32 rows from an .npz whose arrays are (rows, width), width a multiple of 64."""
    try:
        with np.load(path) as data:
            arrays = {name: np.asarray(data[name], dtype=np.float32) for name in sorted(data.files)}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:  # a missing, foreign or damaged file
        raise VerifyError(f"cannot read K/V rows from {path}: {exc}") from None
    except AttributeError:  # np.load read a plain .npy array, not an archive of named arrays
        raise VerifyError(f"cannot read K/V rows from {path}: not an .npz archive of named arrays") from None
    for name, rows in arrays.items():
        if rows.ndim != 2 or rows.shape[1] % 64 or not rows.size:
            raise VerifyError(f"{path}: {name} has shape {rows.shape}; expected (rows, width) with width a multiple of 64")
    return arrays


@dataclass(frozen=True)
class Inputs:
    rows: list[tuple[str, np.ndarray]]  # rotated rows for quantize/dequantize/dot
    attention: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]  # (name, q, k, v), rotated
    described: list[str]
    notes: list[str]


def make_inputs(rows_path: Path | None = KV_ROWS, seed: int = 5) -> Inputs:
    rng = np.random.default_rng(seed)
    rows = [("random", rotate(random_rows())), ("edge", rotate(edge_rows()))]
    described = [f"random {rows[0][1].shape[0]}x{rows[0][1].shape[1]}",
                 f"edge cases {rows[1][1].shape[0]}x{rows[1][1].shape[1]} (docs/FORMAT.md)"]
    notes = []
    k_rand = rotate(random_rows(MAX_KEYS, 128, seed=11))
    v_rand = rotate(random_rows(MAX_KEYS, 128, seed=12))
    attention = [("random", rotate(rng.standard_normal((N_QUERIES, 128)).astype(np.float32)), k_rand, v_rand)]
    real = {}
    if rows_path is not None and Path(rows_path).exists():
        real = load_rows(Path(rows_path))
        rows += [(name, rotate(x)) for name, x in real.items()]
        described.append(", ".join(f"{name} {x.shape[0]}x{x.shape[1]}" for name, x in real.items())
                         + f" ({rows_path})")
    elif rows_path is not None:
        notes.append(f"no real K/V rows ({rows_path} is not here): random rows and edge cases only")
    for name in sorted({n.rsplit("/", 1)[0] for n in real if n.endswith("/K")}):
        k, v = real.get(f"{name}/K"), real.get(f"{name}/V")
        if v is None or k.shape[1] != v.shape[1]:
            continue
        n = min(len(k), len(v), MAX_KEYS)
        q = rng.standard_normal((N_QUERIES, k.shape[1])).astype(np.float32) * np.float32(np.abs(k).mean())
        attention.append((name, rotate(q), rotate(k[:n]), rotate(v[:n])))
    described.append("attention: " + ", ".join(f"{name} {k.shape[0]} keys x {q.shape[0]} queries, head {k.shape[1]}"
                                               for name, q, k, v in attention))
    return Inputs(rows, attention, described, notes)
