#!/usr/bin/env python3
"""Dump real K and V rows from the PyPI models into tests/data/kv_rows.npz.

The exactness tests quantize these rows with the native kernels and with the
NumPy reference: real activations have outlier channels and norms that random
data does not. The rows are exactly what an f16 cache stores (post-RoPE K, V),
read at each layer's SET_ROWS into the cache (tq_gguf.analysis.cachewrites) while the model
reads a few tokens of git's release notes; the turbo caches store their rotation.

    python tools/dump_kv.py            # all three models (fetches them)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tq_gguf import paths  # noqa: E402
from tq_gguf.analysis import cachewrites  # noqa: E402
from tq_gguf.analysis.evaltext import git_release_notes  # noqa: E402
from tq_gguf.gguf import ggufinfo, models  # noqa: E402

OUT = paths.KV_ROWS
# The study models (tests/native/test_native_turbo.py holds the fixture to them); the
# speculative draft model has the same layout as Qwen2.5-1.5B's and adds nothing.
STUDY_MODELS = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-1.5b")


def capture(model_name: str, n_tokens: int, layers: tuple[int, ...]) -> dict[str, np.ndarray]:
    path = models.fetch(model_name)
    info = ggufinfo.read(path)
    writes = cachewrites.capture(path, "f16/f16", git_release_notes(1000), n_tokens)
    out = {}
    for side, head in (("k", info.head_dim_k), ("v", info.head_dim_v)):
        rows = [writes[(side, il)].arrays()[0].reshape(-1, head) for il in layers]
        out[f"{model_name}/{side.upper()}"] = np.concatenate(rows)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(STUDY_MODELS))
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    arrays: dict[str, np.ndarray] = {}
    for name in args.models:
        got = capture(name, args.tokens, layers=(0, 1, 10))
        for key, value in got.items():
            print(f"{key}: {value.shape}, max |x| {np.abs(value).max():.1f}", file=sys.stderr)
        arrays.update(got)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **{k: v.astype(np.float32) for k, v in arrays.items()})
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
