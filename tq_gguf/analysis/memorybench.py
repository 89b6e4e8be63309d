"""`tq-gguf bench --memory`: the memory a process really uses with each cache config and context.

Every (config, length) cell runs in a fresh child process (`python -m tq_gguf.analysis.memorybench
MODEL CONFIG LENGTH`, which prints one JSON line), so its peak is its own. The child loads the model
through tq_gguf.runtime.lowlevel (llama.cpp's defaults: mmap on; flash attention on, n_ctx = length,
n_batch = n_ubatch = 512) and fills the context so that it ends holding `length` tokens: the first
`length - 513` cells, then the last 512-token ubatch evaluated for real at full depth, then one
decoded token (the greedy next token) in the last cell. The first cells come from one of two fills:

  prefill  the text's first `length - 513` tokens evaluated for real, 512 at a time;
  state    a whole-context state of `length - 513` cells (positions 0.., rows of the cache's own
           types repeated from a real 512-token state, key smoothing's mu included) written by
           tq_gguf.gguf.statewrite and restored with llama_state_set_data: minutes less at 32K.

Memory does not depend on the values in the cache, and a prefill's scratch peaks in its last,
deepest ubatch, which both fills evaluate alike (tests/model/test_memorybench.py holds the two
fills' peaks together on SmolLM2). The state fill first holds the synthetic state beside the cache,
so the child frees it (and hands freed heap back with malloc_trim) and resets its peak before the
last ubatch: writing "5" to /proc/self/clear_refs sets VmHWM to the current RSS (Linux).

Per cell: llama.cpp's buffers by kind, to the byte (ggml_backend_buffer_get_size of every buffer
the last ubatch's graph touches, seen from an eval callback: the KV cache is the buffer holding the
`cache_*` tensors, the weights and compute buffers are told by their ggml usage flag), plan's KV
figure for the same config and length (tq_gguf.kv.plan), RSS after the model and context are
created, peak RSS (VmHWM; file-backed pages of the mmapped weights count as they are touched), and
seconds. What llama.cpp holds outside ggml buffers (the CPU backend's work buffer, the logits),
Python and the libraries are the rest of the peak.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import LlamaCppError, TqError
from ..gguf import ggufinfo, statewrite
from ..kv import plan
from ..kv.cacheconfig import PRESETS, CacheConfig
from ..native import fatal, ggml, llamacpp, llamalog
from ..runtime import lowlevel
from .evaltext import git_release_notes

UBATCH = 512  # n_batch and n_ubatch: the last ubatch is this many tokens
MIN_LENGTH = 1024
DEFAULT_LENGTHS = (4096, 16384, 32768)
FILLS = ("state", "prefill")
DEFAULT_FILL = "state"
BASELINE = CacheConfig.of("f16", "f16")
# evaluated for real in the state fill, their rows then repeated: a prefill's first ubatch, which
# key smoothing learns mu from (a 256-token seed left max's peak 1.2 MiB under its prefill's, 512 0.55 MiB)
SEED_TOKENS = UBATCH
TEXT_BYTES_PER_TOKEN = 8  # release notes run about 4 bytes a token: twice that is always enough
_USAGE = {1: "weights", 2: "compute"}  # enum ggml_backend_buffer_usage (0: any)
KINDS = ("kv", "compute", "weights", "other")


def default_configs() -> list[CacheConfig]:
    """f16/f16, q8_0/q4_0 and every preset, each once."""
    configs = [BASELINE, CacheConfig.of("q8_0", "q4_0"), *(p.config for p in PRESETS.values())]
    return list(dict.fromkeys(configs))


def head_cells(length: int) -> int:
    """Cells filled before the last ubatch: it and the decoded token fill the rest."""
    return length - UBATCH - 1


def check(info: ggufinfo.ModelInfo, configs: Sequence[CacheConfig], lengths: Sequence[int], fill: str,
          allow_beyond_train: bool) -> None:
    """Everything that can be refused before a child process starts."""
    if not sys.platform.startswith("linux"):
        raise TqError("bench --memory reads the peak RSS from /proc/self/status and resets it through "
                      "/proc/self/clear_refs, which only Linux has")
    if fill not in FILLS:
        raise TqError(f"unknown fill {fill!r}; choose one of {', '.join(FILLS)}")
    if not configs or not lengths:
        raise TqError("give at least one config and one length")
    for length in lengths:
        if length < MIN_LENGTH:
            raise TqError(f"length {length} is too short to measure: use {MIN_LENGTH} tokens or more "
                          f"(the context ends in a {UBATCH}-token ubatch at full depth)")
        if length > plan.N_CTX_MAX:
            raise TqError(f"length {length} is beyond what llama.cpp can allocate ({plan.N_CTX_MAX})")
    too_long = [n for n in lengths if info.n_ctx_train and n > info.n_ctx_train]
    if too_long and not allow_beyond_train:
        raise TqError(f"length {max(too_long)} is beyond {info.path.name}'s training context ({info.n_ctx_train} "
                      f"tokens); pass --allow-beyond-train to measure it anyway")
    for config in configs:
        config.validate(info, flash_attn=True)
        plan.kv_size(info, max(lengths), *config.layer_types(info.n_layer))  # a layout plan cannot size


# -- the child: one cell ----------------------------------------------------------------------------------

def _status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _reset_peak() -> None:
    """VmHWM back to the current RSS (Linux: "5" to clear_refs), after handing freed heap back."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc keeps freed heap pages mapped otherwise
    except (OSError, AttributeError):
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class _Buffers:
    """The ggml buffers the graph's tensors live in, by kind and address, seen while `watching`."""

    def __init__(self):
        self.watching = False
        self.kinds: dict[int, str] = {}
        self.sizes: dict[int, int] = {}
        self._lib = ggml.lib()
        self.callback = llamacpp.load().ggml_backend_sched_eval_callback(self._see)

    def _see(self, tensor, ask, user_data) -> bool:
        if not self.watching:
            return False
        ffi = ggml.ffi
        node = ffi.cast("struct ggml_tensor *", tensor)
        for t in [node, *node.src]:
            while t != ffi.NULL:  # views lead to the tensor that owns the memory
                if t.view_src == ffi.NULL and t.buffer != ffi.NULL:
                    address = int(ffi.cast("uintptr_t", t.buffer))
                    if self.kinds.get(address) != "kv":
                        if ffi.string(t.name).startswith(b"cache_"):
                            self.kinds[address] = "kv"
                        elif address not in self.kinds:
                            self.kinds[address] = _USAGE.get(self._lib.ggml_backend_buffer_get_usage(t.buffer),
                                                             "other")
                        self.sizes[address] = int(self._lib.ggml_backend_buffer_get_size(t.buffer))
                t = t.view_src
        return False

    def by_kind(self) -> dict[str, list[int]]:
        return {kind: sorted(size for a, size in self.sizes.items() if self.kinds[a] == kind) for kind in KINDS}


def _cells(ctx) -> tuple[int, int]:
    ll = llamacpp.load()
    memory = ll.llama_get_memory(ctx.ctx)
    return ll.llama_memory_seq_pos_min(memory, 0), ll.llama_memory_seq_pos_max(memory, 0)


def synthetic_state(ctx, seed: list[int], n_cells: int) -> np.ndarray:
    """A whole-context state of `n_cells` cells (statewrite) whose rows repeat those of `seed`,
    evaluated now into the context (which it leaves holding them)."""
    ll = llamacpp.load()
    ctx.decode(seed)
    size = ll.llama_state_get_size(ctx.ctx)
    real = np.empty(size, dtype=np.uint8)
    n = ll.llama_state_get_data(ctx.ctx, real.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), size)
    return statewrite.synthesize(statewrite.parse(real[:n]), n_cells)


def restore_state(ctx, blob: np.ndarray) -> None:
    """llama_state_set_data: the context then holds exactly the state's cells."""
    ll = llamacpp.load()
    with llamalog.capture() as reason:
        read = ll.llama_state_set_data(ctx.ctx, blob.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), blob.size)
    if read != blob.size:
        raise LlamaCppError(f"llama.cpp refused a synthetic state of {blob.size} bytes: "
                            f"{reason() or 'no reason given'}")


def measure(model_path: Path, config: CacheConfig, length: int, fill: str, threads: int) -> dict:
    """One cell, in this process (which should be fresh): see the module's docstring."""
    started = time.perf_counter()
    info = ggufinfo.read(model_path)
    text = git_release_notes(max(length * TEXT_BYTES_PER_TOKEN, 200_000))
    buffers = _Buffers()
    head = head_cells(length)
    with lowlevel.Context(model_path, cache=config, n_ctx=length, n_threads=threads, cb_eval=buffers.callback,
                          info=info, n_batch=UBATCH, n_ubatch=UBATCH) as ctx:
        loaded = _status()
        t_loaded = time.perf_counter()
        tokens = ctx.tokenize(text)[:length]
        del text
        if len(tokens) < length:
            raise TqError(f"the release notes give only {len(tokens)} tokens of {info.path.name}; {length} are needed")
        if fill == "prefill":
            for start in range(0, head, UBATCH):
                ctx.decode(tokens[start:min(start + UBATCH, head)])
        else:
            blob = synthetic_state(ctx, tokens[:SEED_TOKENS], head)
            restore_state(ctx, blob)
            del blob  # out of the peak: freed, then the peak reset to the RSS without it
            _reset_peak()
        pos_min, pos_max = _cells(ctx)
        if (pos_min, pos_max) != (0, head - 1):
            raise LlamaCppError(f"the {fill} fill left positions {pos_min}..{pos_max}, not 0..{head - 1}")
        t_filled = time.perf_counter()
        buffers.watching = True
        logits = ctx.decode(tokens[head:head + UBATCH])
        buffers.watching = False
        t_ubatch = time.perf_counter()
        ctx.decode([int(np.argmax(logits))])
        t_decoded = time.perf_counter()
        n_past = _cells(ctx)[1] + 1
        n_ctx = llamacpp.load().llama_n_ctx(ctx.ctx)
        end = _status()
    sizes = buffers.by_kind()
    return {
        "config": str(config), "length": length, "n_ctx": n_ctx, "fill": fill, "threads": threads,
        "cells_filled": head, "n_past": n_past,
        **{f"{kind}_bytes": sum(sizes[kind]) for kind in KINDS}, "buffers": sizes,
        "rss_loaded_bytes": loaded["VmRSS"], "peak_rss_bytes": end["VmHWM"], "rss_end_bytes": end["VmRSS"],
        "peak_reset": fill == "state",
        "seconds": {"load": t_loaded - started, "fill": t_filled - t_loaded, "last_ubatch": t_ubatch - t_filled,
                    "decode": t_decoded - t_ubatch},
    }


def main(argv: list[str] | None = None) -> None:
    """The child's entry: one cell, printed as one JSON line ({"error": ...} and status 1 on refusal)."""
    ap = argparse.ArgumentParser(prog="python -m tq_gguf.analysis.memorybench",
                                 description="one cell of `tq-gguf bench --memory`, in this fresh process")
    ap.add_argument("model", type=Path)
    ap.add_argument("config")
    ap.add_argument("length", type=int)
    ap.add_argument("--fill", choices=FILLS, default=DEFAULT_FILL)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        fatal.exit_on_abort()
        lowlevel.quiet_logs()
        result = measure(args.model, CacheConfig.parse(args.config), args.length, args.fill, args.threads)
    except TqError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(1)
    print(json.dumps(result), flush=True)


# -- the parent: every cell ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    config: str
    preset: str | None
    length: int
    n_ctx: int
    kv_bytes: int
    plan_kv_bytes: int
    compute_bytes: int
    weights_bytes: int
    other_bytes: int
    rss_loaded_bytes: int
    peak_rss_bytes: int
    cells_filled: int
    n_past: int
    seconds: float  # the child's wall time, start to exit
    phases: dict[str, float] = field(default_factory=dict)  # load, fill, last_ubatch, decode
    buffers: dict[str, list[int]] = field(default_factory=dict)

    @property
    def beyond_bytes(self) -> int:
        """Peak RSS beyond the weights and the KV cache: the pages of the compute buffer a graph touched
        (llama.cpp reserves it for the worst ubatch, e.g. 512 tokens' logits, and uses less), the CPU
        backend's work buffer, the logits, Python and the libraries."""
        return self.peak_rss_bytes - self.kv_bytes - self.weights_bytes


@dataclass(frozen=True)
class MemoryBench:
    model: str
    fill: str
    threads: int
    lengths: list[int]
    configs: list[str]
    cells: list[Cell]
    baseline: str = str(BASELINE)

    def cell(self, config: str, length: int) -> Cell:
        return next(c for c in self.cells if c.config == config and c.length == length)

    def base(self, length: int) -> Cell:
        return self.cell(self.baseline, length)

    def as_dict(self) -> dict:
        return {"model": self.model, "fill": self.fill, "threads": self.threads, "lengths": self.lengths,
                "configs": self.configs, "baseline": self.baseline,
                "cells": [asdict(c) | {"beyond_weights_and_kv_bytes": c.beyond_bytes,
                                       "kv_vs_baseline": c.kv_bytes / self.base(c.length).kv_bytes,
                                       "peak_vs_baseline": c.peak_rss_bytes / self.base(c.length).peak_rss_bytes,
                                       "peak_minus_baseline_bytes":
                                           c.peak_rss_bytes - self.base(c.length).peak_rss_bytes}
                          for c in self.cells]}


def run_cell(model_path: Path, config: CacheConfig, length: int, fill: str, threads: int) -> dict:
    """One cell in a fresh child process; its JSON, or TqError with the child's reason."""
    command = [sys.executable, "-m", __name__, str(model_path), str(config), str(length), "--fill", fill,
               "--threads", str(threads)]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    data = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0 or "error" in data or not data:
        told = [line[len("error: "):] for line in proc.stderr.splitlines() if line.startswith("error: ")]
        why = data.get("error") or (told[-1] if told else
                                    (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1])
        raise TqError(f"measuring {config} at {length} tokens failed: {why}")
    data["seconds"]["wall"] = seconds
    return data


def bench_memory(model_path: Path, configs: Sequence[CacheConfig], lengths: Sequence[int] = DEFAULT_LENGTHS, *,
                 fill: str = DEFAULT_FILL, threads: int = 2, allow_beyond_train: bool = False,
                 progress: Callable[[Cell, int, int], None] | None = None) -> MemoryBench:
    """Every config at every length, f16/f16 first at each (the baseline), each cell in its own process."""
    info = ggufinfo.read(model_path)
    configs = list(dict.fromkeys([BASELINE, *configs]))
    lengths = list(dict.fromkeys(lengths))
    check(info, configs, lengths, fill, allow_beyond_train)
    lowlevel.check_loads(model_path)
    cells = []
    total = len(configs) * len(lengths)
    for length in lengths:
        for config in configs:
            data = run_cell(model_path, config, length, fill, threads)
            k_types, v_types = config.layer_types(info.n_layer)
            predicted = plan.kv_size(info, length, k_types, v_types,
                                     plan.ContextParams(n_ubatch=UBATCH, smooth_k=config.smooth_k)).total
            cell = Cell(str(config), config.preset, length, data["n_ctx"], data["kv_bytes"], predicted,
                        data["compute_bytes"], data["weights_bytes"], data["other_bytes"], data["rss_loaded_bytes"],
                        data["peak_rss_bytes"], data["cells_filled"], data["n_past"], data["seconds"]["wall"],
                        {k: v for k, v in data["seconds"].items() if k != "wall"}, data["buffers"])
            cells.append(cell)
            if progress:
                progress(cell, len(cells), total)
    return MemoryBench(str(model_path), fill, threads, lengths, [str(c) for c in configs], cells)


if __name__ == "__main__":
    main()
