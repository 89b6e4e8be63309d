#!/usr/bin/env python3
"""Dump real K and V rows from the PyPI models into tests/data/kv_rows.npz.

The exactness tests quantize these rows with the native kernels and with the
NumPy reference: real activations have outlier channels and norms that random
data does not. The rows are the attention inputs `Kcur-L` / `Vcur-L` (after
RoPE, before the cache's rotation), captured with a graph eval callback while
the model reads a few tokens of git's release notes.

    python tools/dump_kv.py            # all three models (fetches them)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tq_gguf import ggml, ggufinfo, models  # noqa: E402
from tq_gguf.evaltext import git_release_notes  # noqa: E402
from tq_gguf.lowlevel import Context  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "kv_rows.npz"

# tensor accessors the eval callback needs (tensors are opaque here)
ggml.ffi.cdef("""
const char * ggml_get_name(const void * tensor);
void *       ggml_get_data(const void * tensor);
int64_t      ggml_nelements(const void * tensor);
size_t       ggml_nbytes(const void * tensor);
""")


def capture(model_name: str, n_tokens: int, layers: tuple[int, ...]) -> dict[str, np.ndarray]:
    import llama_cpp

    path = models.fetch(model_name)
    info = ggufinfo.read(path)
    base = ggml.ffi.dlopen(str(ggml.library_dir() / ggml._LIB_NAME))
    wanted = {f"{kind}cur-{il}": kind for kind in "KV" for il in layers}
    rows: dict[str, list[np.ndarray]] = {}

    @llama_cpp.ggml_backend_sched_eval_callback
    def on_eval(tensor, ask, user_data):
        t = ggml.ffi.cast("void *", tensor)
        kind = wanted.get(ggml.ffi.string(base.ggml_get_name(t)).decode())
        if kind is None:
            return False
        if ask:
            return True
        n = base.ggml_nelements(t)
        if base.ggml_nbytes(t) == 4 * n:  # f32
            data = np.frombuffer(ggml.ffi.buffer(ggml.ffi.cast("float *", base.ggml_get_data(t)), 4 * n), dtype=np.float32)
            head = info.head_dim_k if kind == "K" else info.head_dim_v
            rows.setdefault(kind, []).append(data.reshape(-1, head).copy())
        return True

    with Context(path, n_ctx=256, cb_eval=on_eval) as ctx:
        ctx.decode(ctx.tokenize(git_release_notes(1000))[:n_tokens])
    return {f"{model_name}/{kind}": np.concatenate(v) for kind, v in rows.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(models.MODELS))
    ap.add_argument("--tokens", type=int, default=8)
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
