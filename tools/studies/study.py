"""Backs docs/FORMAT.md 11.1 "The stored scale" and 11.2 "No QJL residual stage": `python tools/studies/study.py`.

The measurements behind two choices recorded in docs/FORMAT.md.

1. Which scale a block stores: the plain norm ‖x‖, the norm-preserving
   ‖x‖ / ‖C[idx]‖, or the least-squares <x, c> / ‖c‖² (c = C[idx]).
2. Why the types leave out the 1-bit QJL residual stage of TurboQuant_prod.

It runs in about 20 s on one core. Test data
come from a seeded NumPy generator; the printed tables are the ones in the spec.
"""

from __future__ import annotations

import argparse

import numpy as np

from tq_gguf.reference.attention import softmax
from tq_gguf.reference.codebooks import CENTROIDS
from tq_gguf.reference.quants import dequantize, fp16_bits, quantize, select_indices
from tq_gguf.reference.rotation import rotate

from qjl import QJLProd  # tools/studies/qjl.py, beside this script

SCALE_RULES = ("norm", "preserve", "lsq")


def reconstruct(x: np.ndarray, bits: int, rule: str) -> np.ndarray:
    """Quantize rows of 64 with the format's indices and the given scale rule (fp16-rounded scale)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, 64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    idx = select_indices((x / np.where(norm == 0, 1, norm)).astype(np.float32), bits)
    c = CENTROIDS[bits].astype(np.float64)[idx]
    if rule == "norm":
        s = norm
    elif rule == "preserve":
        s = norm / np.linalg.norm(c, axis=-1, keepdims=True)
    elif rule == "lsq":
        s = (x * c).sum(-1, keepdims=True) / (c * c).sum(-1, keepdims=True)
    else:
        raise ValueError(rule)
    s = fp16_bits(s.astype(np.float32)).view(np.float16).astype(np.float64)
    return s * c


def make_data(kind: str, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """'gauss': i.i.d. N(0, 1). 'heavy': Student-t(3) with three outlier channels ×20, then rotated."""
    if kind == "gauss":
        return rng.standard_normal((n, d))
    t = rng.standard_t(3, (n, d))
    t[:, [3, 17, 40]] *= 20.0
    return rotate(t.astype(np.float32)).astype(np.float64)


def _attention_metrics(logits: np.ndarray, logits_hat: np.ndarray, v: np.ndarray, v_hat: np.ndarray, temp: float):
    s = temp / logits.std()
    p, ph = softmax(logits * s), softmax(logits_hat * s)
    o = p @ v
    rel = lambda a: float(np.mean(np.linalg.norm(a - o, axis=1) / np.linalg.norm(o, axis=1)))
    kl = float(np.mean(np.sum(p * np.log(p / ph), axis=1)))
    return kl, rel(ph @ v), rel(p @ v_hat), rel(ph @ v_hat)


def scale_study(n_keys: int = 4096, n_q: int = 128, d: int = 128, seed: int = 1) -> list[dict]:
    rows = []
    for kind in ("gauss", "heavy"):
        rng = np.random.default_rng(seed)
        k, v, q = (make_data(kind, n, d, rng) for n in (n_keys, n_keys, n_q))
        logits = q @ k.T
        for bits in (2, 3, 4):
            for rule in SCALE_RULES:
                kh = reconstruct(k, bits, rule).reshape(k.shape)
                vh = reconstruct(v, bits, rule).reshape(v.shape)
                lh = q @ kh.T
                err = lh - logits
                row = {
                    "data": kind,
                    "bits": bits,
                    "rule": rule,
                    "rel_mse": float(((k - kh) ** 2).sum() / (k**2).sum()),
                    "logit_slope": float(1 + (err * logits).sum() / (logits**2).sum()),
                    "logit_err_sd": float(err.std() / logits.std()),
                }
                for temp in (1.0, 3.0):
                    kl, ok, ov, okv = _attention_metrics(logits, lh, v, vh, temp)
                    row[f"kl_T{temp:g}"], row[f"outK_T{temp:g}"], row[f"outV_T{temp:g}"], row[f"outKV_T{temp:g}"] = kl, ok, ov, okv
                rows.append(row)
    return rows


def qjl_study(n_keys: int = 2048, n_q: int = 256, d: int = 64, seed: int = 2) -> list[dict]:
    """MSE-only turbo type vs TurboQuant_prod at the same bits per coordinate, unit vectors in R^64."""
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((n_keys, d))
    k /= np.linalg.norm(k, axis=1, keepdims=True)
    # queries aligned with some keys so that attention is peaked, as in real heads
    q = rng.standard_normal((n_q, d)) / np.sqrt(d) + k[rng.integers(0, n_keys, n_q)]
    true = q @ k.T
    rows = []
    for bits, qtype in ((2, "turbo2"), (3, "turbo3"), (4, "turbo4")):
        kh = dequantize(quantize(k.astype(np.float32), qtype), qtype).astype(np.float64)
        prod = QJLProd(bits, d, np.random.default_rng(seed + bits))
        for name, est in (("mse", q @ kh.T), ("prod", prod.inner(prod.encode(k), q))):
            err = est - true
            row = {
                "bits": bits,
                "method": name,
                "bias": float(err.mean()),
                "slope": float(1 + (err * true).sum() / (true**2).sum()),
                "err_var_x_d": float(err.var() * d),
            }
            for temp in (8.0, 16.0):
                p, ph = softmax(true * temp), softmax(est * temp)
                row[f"kl_T{temp:g}"] = float(np.mean(np.sum(p * np.log(p / ph), axis=1)))
            rows.append(row)
    return rows


def _table(rows: list[dict]) -> str:
    keys = list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    print("## scale rule\n")
    print(_table(scale_study()))
    print("\n## QJL residual vs MSE-only at equal bits\n")
    print(_table(qjl_study()))


if __name__ == "__main__":
    main()
