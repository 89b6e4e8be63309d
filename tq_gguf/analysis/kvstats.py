"""Per-layer statistics of captured K/V rows and what each cache type would do to them.

Every cache type is applied the way llama.cpp applies it (src/llama-kv-cache.cpp,
llama-graph.cpp build_attn): before the cache write, Q, K and V are rotated in
slices, and the cache quantizes the rotated rows.

- turbo K/V: the signed rotation R = H·diag(s) on every 64-wide slice
  (docs/FORMAT.md, "Rotation");
- other quantized K (q8_0, q4_0): llama.cpp's plain Hadamard matrix on slices
  of the largest power of two dividing the head size, when it is a multiple of 64;
- other quantized V: the plain 64-wide Hadamard matrix, same condition.

The rotations are orthogonal and Q gets the same one as K, so an error made in
the rotated domain is rotated back and measured against the original rows. (In
a config that mixes turbo and q8_0 keys, llama.cpp gives every layer the signed
rotation; q8_0's error hardly depends on which rotation it sees.)

Beyond the relative MSE of the rows, the errors are pushed through attention on
the captured queries (causal, the model's own scale), because that is where they
matter: a K error shifts the logits, which softmax turns into a different
attention pattern; a V error is averaged by the attention weights. Both end up
as an error in the attention output, which gives K and V errors one unit
(`out_err`: ‖Δo‖² / ‖o‖² summed over heads and positions).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import CacheTypeError
from ..kv import cachetypes
from ..kv.cacheconfig import SMOOTH_FLAG
from ..kv.cachetypes import CacheType
from ..native import ggml, typeids
from ..reference import smoothing
from ..reference.rotation import GROUP, hadamard, rotation_matrix
from .kvprobe import LayerQKV, Probe

# The candidate types the advisor weighs (f16 is the reference; q4_0 is measured
# beside turbo4 because docs/QUALITY.md compares them at equal roles; the trellis-coded
# types are values only, so they are measured as V alone).
CANDIDATES = ("q8_0", "q4_0", "turbo4", "turbo3", "turbo2", "tcq3", "tcq2")

# A channel is an outlier when its RMS over the tokens is this many times the
# median channel's. SmolLM2, whose keys take turbo4 with a small loss (docs/QUALITY.md),
# tops out at 13x; the layers of Qwen2.5 and Gemma 3 whose turbo4 keys break
# attention reach 35-256x.
OUTLIER_FACTOR = 20.0


@lru_cache(maxsize=None)
def _rotation(kind: str, n: int) -> np.ndarray:
    return rotation_matrix(n) if kind == "signed" else hadamard(n)


def stored_rotation(ct: CacheType, role: str, head_dim: int) -> np.ndarray | None:
    """The matrix llama.cpp rotates `role` ("K" or "V") slices with before storing type `ct` (None: unrotated)."""
    if ct.rotated:
        return _rotation("signed", GROUP)
    if not ct.quantized or head_dim % 64:
        return None
    if role == "V":
        return _rotation("plain", 64)
    n = 64
    while head_dim % (2 * n) == 0:
        n *= 2
    return _rotation("plain", n)


def roundtrip(rows: np.ndarray, ct: CacheType, role: str) -> np.ndarray:
    """What the cache gives back for `rows` (..., head_dim), in the original (unrotated) domain."""
    head_dim = rows.shape[-1]
    ct.check_head_dim(head_dim, f"{role} cache")
    flat = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1, head_dim)
    rot = stored_rotation(ct, role, head_dim)
    if rot is not None:
        n = rot.shape[0]
        flat = (flat.reshape(-1, head_dim // n, n).astype(np.float64) @ rot.T).reshape(-1, head_dim).astype(np.float32)
    tid = typeids.ggml_id(ct)
    back = ggml.dequantize(ggml.quantize(flat, tid), tid, flat.size).reshape(flat.shape)
    if rot is not None:
        n = rot.shape[0]
        back = (back.reshape(-1, head_dim // n, n).astype(np.float64) @ rot).reshape(-1, head_dim)
    return back.reshape(rows.shape).astype(np.float64)


@dataclass(frozen=True)
class RowStats:
    """Shape of one layer's K or V rows (one row = one head at one token)."""

    norm_spread: float         # 99th percentile / median of the row norms
    channel_ratio: float       # largest channel RMS / median channel RMS (channel = head x dimension)
    outlier_channels: int      # channels above OUTLIER_FACTOR x the median channel RMS
    kurtosis: float            # E[x^4] / E[x^2]^2 over all values (3 for a Gaussian)
    rel_mse: dict[str, float]  # ||x - Q(x)||^2 / ||x||^2 per cache type


@dataclass(frozen=True)
class KeyAttention:
    """What one K type's error does to attention."""

    logit_err: float   # RMS logit error / RMS spread of each query's logits
    attn_kl: float     # mean KL(p || p') of the attention rows, nats
    out_err: float     # ||o' - o||^2 / ||o||^2 of the attention output


@dataclass(frozen=True)
class LayerStats:
    layer: int
    k: RowStats
    v: RowStats
    k_attn: dict[str, KeyAttention]
    v_out_err: dict[str, float]  # ||P·(V' - V)||^2 / ||P·V||^2 per V type

    def out_err(self, k_type: str, v_type: str, smooth_k: bool = False) -> float:
        """Attention-output error of a K/V pair. The K error moves the weights and the V error the
        rows they average; the two are independent, so to first order their effects add."""
        return self.k_attn[smoothed_key(k_type) if smooth_k else k_type].out_err + self.v_out_err[v_type]


def row_stats(x: np.ndarray, rel_mse: dict[str, float]) -> RowStats:
    """x: (T, heads, dim)."""
    x = x.astype(np.float64)
    norms = np.linalg.norm(x, axis=-1).ravel()
    med_norm = float(np.median(norms))
    channel_rms = np.sqrt((x * x).mean(axis=0)).ravel()
    med_channel = float(np.median(channel_rms))
    m2 = float((x * x).mean())
    return RowStats(
        norm_spread=float(np.percentile(norms, 99) / med_norm) if med_norm > 0 else float("inf"),
        channel_ratio=float(channel_rms.max() / med_channel) if med_channel > 0 else float("inf"),
        outlier_channels=int((channel_rms > OUTLIER_FACTOR * med_channel).sum()),
        kurtosis=float((x**4).mean() / m2**2) if m2 > 0 else float("nan"),
        rel_mse=rel_mse,
    )


def _logsumexp(s: np.ndarray) -> np.ndarray:
    m = s.max(axis=-1, keepdims=True)  # the diagonal is never masked, so m is finite
    return m + np.log(np.exp(s - m).sum(axis=-1, keepdims=True))


def attention_mask(t: int, window: int = 0, chunked: bool = False) -> np.ndarray:
    """(T, T) keys each query position sees: causal, and within llama.cpp's sliding window
    (llama_hparams::is_masked_swa: standard `q - k < window`, or chunked: the query's chunk)."""
    q, k = np.arange(t)[:, None], np.arange(t)[None, :]
    mask = k <= q
    if window > 0:
        mask &= (k >= (q // window) * window) if chunked else (q - k < window)
    return mask


class _Attention:
    """Exact attention of one layer on the captured rows, reused for every candidate type.

    The query heads that share a KV head (GQA) are stacked into one matrix per KV
    head: rows are (query head in the group, position)."""

    def __init__(self, layer: LayerQKV, scale: float, window: int = 0, chunked: bool = False):
        t, n_head, d = layer.q.shape
        n_kv = layer.k.shape[1]
        if n_head % n_kv:
            raise CacheTypeError(f"{n_head} query heads do not divide into {n_kv} KV heads")
        group = n_head // n_kv
        self.q = (layer.q.astype(np.float64).reshape(t, n_kv, group, d).transpose(1, 2, 0, 3)
                  .reshape(n_kv, group * t, d) * scale)
        self.v = np.ascontiguousarray(layer.v.astype(np.float64).transpose(1, 0, 2))  # (n_kv, T, dv)
        k_t = np.ascontiguousarray(layer.k.astype(np.float64).transpose(1, 2, 0))        # (n_kv, d, T)
        self.mask = np.tile(attention_mask(t, window, chunked), (group, 1))[None]      # (1, group*T, T)
        self.s = np.where(self.mask, self.q @ k_t, -np.inf)
        self.lse = _logsumexp(self.s)
        self.p = np.exp(self.s - self.lse)
        self.o = self.p @ self.v
        self.o_energy = float((self.o**2).sum())
        n_keys = self.mask.sum(axis=-1, keepdims=True)
        s0 = np.where(self.mask, self.s, 0.0)
        spread2 = (s0 * s0).sum(axis=-1, keepdims=True) / n_keys - (s0.sum(axis=-1, keepdims=True) / n_keys) ** 2
        # a query at position 0 has a single key and no spread
        self.spread_rms = float(np.sqrt(spread2[:, n_keys[0, :, 0] > 1].mean()))
        self.n_pairs = int(self.mask.sum()) * n_kv

    def key_error(self, k_err: np.ndarray) -> KeyAttention:
        ds = np.where(self.mask, self.q @ np.ascontiguousarray(k_err.transpose(1, 2, 0)), 0.0)
        s2 = self.s + ds
        lse2 = _logsumexp(s2)
        # KL(p || p') = sum p (log p - log p') = lse' - lse - sum p·ds
        kl = lse2[..., 0] - self.lse[..., 0] - (self.p * ds).sum(axis=-1)
        d_o = np.exp(s2 - lse2) @ self.v - self.o
        logit_rms = float(np.sqrt((ds * ds).sum() / self.n_pairs))
        return KeyAttention(
            logit_err=logit_rms / self.spread_rms if self.spread_rms > 0 else float("inf"),
            attn_kl=float(np.maximum(kl, 0.0).mean()),
            out_err=float((d_o**2).sum() / self.o_energy),
        )

    def value_error(self, v_err: np.ndarray) -> float:
        return float(((self.p @ np.ascontiguousarray(v_err.transpose(1, 0, 2))) ** 2).sum() / self.o_energy)


def smoothed_key(k_type: str) -> str:
    """The k_attn entry of `k_type` with key smoothing."""
    return k_type + SMOOTH_FLAG


def layer_stats(il: int, layer: LayerQKV, scale: float, types: tuple[str, ...] = CANDIDATES, window: int = 0,
                chunked: bool = False) -> LayerStats:
    """`window`: the sliding window of this layer in tokens (0: full attention). Every quantized K type
    is also measured with key smoothing: the cache stores k - mu, mu taken from the first rows as
    llama.cpp takes it (tq_gguf.reference.smoothing), and the error is that of the stored rows."""
    att = _Attention(layer, scale, window, chunked)
    k64, v64 = layer.k.astype(np.float64), layer.v.astype(np.float64)
    t = layer.k.shape[0]
    mu = smoothing.mean(layer.k.reshape(t, -1)).reshape(layer.k.shape[1:])
    k_smooth = smoothing.smooth(layer.k, mu)
    k_mse, v_mse, k_attn, v_out = {}, {}, {}, {}
    for name in types:
        ct = cachetypes.get(name)
        v_err = roundtrip(layer.v, ct, "V") - v64
        v_mse[name] = float((v_err**2).sum() / (v64**2).sum())
        v_out[name] = att.value_error(v_err)
        if ct.value_only:
            continue
        k_err = roundtrip(layer.k, ct, "K") - k64
        k_mse[name] = float((k_err**2).sum() / (k64**2).sum())
        k_attn[name] = att.key_error(k_err)
        if ct.quantized:
            k_attn[smoothed_key(name)] = att.key_error(roundtrip(k_smooth, ct, "K") - k_smooth.astype(np.float64))
    return LayerStats(layer=il, k=row_stats(layer.k, k_mse), v=row_stats(layer.v, v_mse), k_attn=k_attn,
                      v_out_err=v_out)


def check_head_sizes(head_dim_k: int, head_dim_v: int) -> None:
    """The advisor compares turbo types, which store 64-value blocks of rotated slices."""
    for role, d in (("K", head_dim_k), ("V", head_dim_v)):
        if d <= 0 or d % GROUP:
            raise CacheTypeError(
                f"the model's {role} head size is {d}, not a multiple of {GROUP}: the turbo cache types cannot "
                f"hold it, so there is nothing to advise beyond q8_0/q8_0 (or f16)"
            )


@lru_cache(maxsize=1)
def _numpy_openblas():
    """(set, get) of the thread count of the OpenBLAS that NumPy's wheels bundle, or None."""
    libs = [d for name in ("numpy.libs", ".dylibs") for d in (Path(np.__file__).parent.parent / name,
                                                               Path(np.__file__).parent / name) if d.is_dir()]
    for path in (p for d in libs for p in sorted(d.iterdir()) if "openblas" in p.name):
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"), ("openblas", "")):
            set_fn = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            get_fn = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            if set_fn is not None and get_fn is not None:
                return set_fn, get_fn
    return None


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run NumPy's matrix products on one thread (best effort; a no-op if the BLAS is not found).

    The products here are small (a few hundred rows), so worker threads gain little;
    on a loaded machine their busy-waiting between calls takes the core the
    element-wise work needs: on two shared cores, measuring Qwen2.5-1.5B took 14.6 s
    with OpenBLAS's two threads and 6.0 s with one."""
    fns = _numpy_openblas()
    if fns is None:
        yield
        return
    set_fn, get_fn = fns
    before = int(get_fn())
    set_fn(ctypes.c_int(1))
    try:
        yield
    finally:
        set_fn(ctypes.c_int(before))


def measure(probe: Probe, types: tuple[str, ...] = CANDIDATES) -> list[LayerStats]:
    check_head_sizes(probe.info.head_dim_k, probe.info.head_dim_v)
    info = probe.info
    with single_threaded_blas():
        return [layer_stats(il, layer, probe.attention_scale, types,
                            window=info.swa_window if info.is_swa(il) else 0, chunked=info.swa_chunked)
                for il, layer in enumerate(probe.layers)]
