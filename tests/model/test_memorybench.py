"""`tq-gguf bench --memory` on SmolLM2: the buffers it reads are plan's to the byte, the state fill
leaves llama.cpp the cells it should, the peak covers the buffers, and the two fills agree.

Each cell runs in its own process, so the runs here are short: 1024 tokens (the least a cell
takes) except for the one comparison of the fills at 4096.
"""

from __future__ import annotations

import ctypes
import json

import numpy as np
import pytest
from helpers import run_cli

from tq_gguf.analysis import memorybench
from tq_gguf.analysis.evaltext import git_release_notes
from tq_gguf.gguf import ggufinfo, statefile
from tq_gguf.kv import plan
from tq_gguf.kv.cacheconfig import CacheConfig
from tq_gguf.native import llamacpp
from tq_gguf.runtime import lowlevel

SMALL = 1024
CONFIGS = "q8_0/turbo3,max,q8_0/turbo2:b2"  # max is turbo4/tcq3:sk: its KV buffer holds each layer's mu too
# Peak RSS of the two fills on SmolLM2, 2 threads, one fresh process per cell, state minus prefill
# (commit 40a99db's build, 512-token seed): at 4096 f16/f16 +4 KiB, q8_0/q4_0 -124 KiB, max -720 KiB
# (-584 KiB in an earlier run); at 8192 max -1.03 MiB (f16/f16 and q8_0/q4_0 +12 KiB with the earlier
# build and a 256-token seed). The margin is about 4 times the largest difference, and far below what
# the state fill adds when its synthetic state stays in the peak (+18.6 MiB for max at 4096).
FILL_MARGIN = 4 << 20


@pytest.fixture(scope="module")
def small_run(default_model_path):
    r = run_cli("bench", default_model_path, "--memory", "--lengths", SMALL, "--configs", CONFIGS, "-t", 2, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_f16_runs_first_as_the_baseline(small_run):
    assert small_run["configs"] == ["f16/f16", "q8_0/turbo3", "turbo4/tcq3:sk", "q8_0/turbo2:b2"]
    assert [c["config"] for c in small_run["cells"]] == small_run["configs"]
    assert small_run["cells"][0]["kv_vs_baseline"] == 1.0 and small_run["cells"][0]["peak_minus_baseline_bytes"] == 0


def test_kv_buffer_is_plans_figure_to_the_byte(small_run, default_model_path):
    info = ggufinfo.read(default_model_path)
    for cell in small_run["cells"]:
        config = CacheConfig.parse(cell["config"])
        k_types, v_types = config.layer_types(info.n_layer)
        want = plan.kv_size(info, SMALL, k_types, v_types, plan.ContextParams(smooth_k=config.smooth_k)).total
        assert cell["kv_bytes"] == cell["plan_kv_bytes"] == want, cell["config"]
        assert cell["buffers"]["kv"] == [want]  # one cache, one buffer
    # mu is in the smoothed config's buffer: 30 layers of 3 KV heads x 64 f32 values
    by = {c["config"]: c for c in small_run["cells"]}
    unsmoothed = CacheConfig.parse("turbo4/tcq3").kv_bytes(info, SMALL)
    assert by["turbo4/tcq3:sk"]["kv_bytes"] == unsmoothed + 30 * 3 * 64 * 4


def test_the_context_ends_full(small_run):
    for cell in small_run["cells"]:
        assert cell["n_ctx"] == SMALL
        assert cell["cells_filled"] == SMALL - 513  # then 512 tokens in the last ubatch, then one decoded
        assert cell["n_past"] == SMALL


def test_peak_covers_what_is_resident(small_run, default_model_path):
    for cell in small_run["cells"]:
        assert cell["peak_rss_bytes"] >= cell["rss_loaded_bytes"]
        # the KV buffer is zeroed at creation and the mmapped weights are read by every ubatch
        assert cell["peak_rss_bytes"] >= cell["weights_bytes"] + cell["kv_bytes"]
        assert cell["beyond_weights_and_kv_bytes"] == cell["peak_rss_bytes"] - cell["weights_bytes"] - cell["kv_bytes"]
        # the weights buffer maps the model's tensor data: less than the file, not by much
        assert 0.9 * default_model_path.stat().st_size < cell["weights_bytes"] <= default_model_path.stat().st_size
        assert cell["compute_bytes"] > 0


def test_state_fill_restores_the_cells_and_the_last_ubatch_runs_on(default_model_path):
    """In this process: the synthetic state reads back from llama.cpp as written, holds positions
    0..n-1 and, with key smoothing, its mu; the last ubatch and a decoded token then follow it."""
    ll = llamacpp.load()
    head = memorybench.head_cells(SMALL)
    with lowlevel.Context(default_model_path, cache="max", n_ctx=SMALL, n_threads=2, n_batch=512,
                          n_ubatch=512) as ctx:
        tokens = ctx.tokenize(git_release_notes(20_000))[:SMALL]
        blob = memorybench.synthetic_state(ctx, tokens[:memorybench.SEED_TOKENS], head)
        layout = statefile.read_layout(blob.tobytes())
        assert layout.config() == CacheConfig.parse("max") and [b.n_cells for b in layout.blocks] == [head]
        memorybench.restore_state(ctx, blob)
        memory = ll.llama_get_memory(ctx.ctx)
        assert (ll.llama_memory_seq_pos_min(memory, 0), ll.llama_memory_seq_pos_max(memory, 0)) == (0, head - 1)
        back = np.empty(ll.llama_state_get_size(ctx.ctx), dtype=np.uint8)
        n = ll.llama_state_get_data(ctx.ctx, back.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), back.size)
        assert np.array_equal(back[:n], blob)  # the inverse of the reader, as llama.cpp sees it
        logits = ctx.decode(tokens[head:head + 512])
        assert np.isfinite(logits).all()
        assert ll.llama_memory_seq_pos_max(memory, 0) == SMALL - 2
        ctx.decode([int(np.argmax(logits))])
        assert ll.llama_memory_seq_pos_max(memory, 0) == SMALL - 1


def test_state_and_prefill_fills_peak_alike(default_model_path):
    max_ = CacheConfig.parse("max")
    state = memorybench.run_cell(default_model_path, max_, 4096, "state", 2)
    prefill = memorybench.run_cell(default_model_path, max_, 4096, "prefill", 2)
    assert state["buffers"] == prefill["buffers"]
    assert abs(state["peak_rss_bytes"] - prefill["peak_rss_bytes"]) <= FILL_MARGIN, (state, prefill)
    assert (state["cells_filled"], state["n_past"]) == (prefill["cells_filled"], prefill["n_past"])


def test_table(default_model_path):
    r = run_cli("bench", default_model_path, "--memory", "--lengths", SMALL, "--configs", "compact", "-t", 2)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("SmolLM2-135M-Instruct.Q4_1.gguf: memory per config and length")
    header = lines[2].split()
    assert header[:5] == ["config", "length", "KV", "vs", "f16"]
    rows = [line.split() for line in lines[3:5]]
    assert rows[0][:2] == ["f16/f16", str(SMALL)] and rows[1][:3] == ["turbo4/turbo4:sk", "(compact)", str(SMALL)]
    assert all("same" in row for row in rows)  # plan's KV figure is llama.cpp's
    assert "–" in rows[0] and "–" not in rows[1]  # the baseline has no difference to itself
    assert rows[1][rows[1].index("same") + 9].startswith("−")  # compact's peak is below f16's
    progress = r.stderr.splitlines()
    assert [p.split(": KV")[0] for p in progress] == [f"memory 1/2 f16/f16 @ {SMALL}",
                                                  f"memory 2/2 turbo4/turbo4:sk @ {SMALL}"]


@pytest.mark.parametrize("args, message", [
    (["--configs", "q8_0/turbo5"], "error: unknown cache type 'turbo5'; choose one of "),
    (["--configs", "balanced,"], "error: cannot read --configs 'balanced,': give a comma-separated list"),
    (["--lengths", "512"], "error: length 512 is too short to measure: use 1024 tokens or more"),
    (["--lengths", "4k"], "error: cannot read --lengths '4k'"),
    (["--lengths", "16384"], "error: length 16384 is beyond SmolLM2-135M-Instruct.Q4_1.gguf's training context "
                             "(8192 tokens); pass --allow-beyond-train"),
    (["--fill", "full"], "error: unknown fill 'full'; choose one of state, prefill"),
    (["--depths", "0"], "error: --depths set the speed benchmark; bench --memory takes --lengths"),
])
def test_bad_input_is_one_error_line(default_model_path, args, message):
    r = run_cli("bench", default_model_path, "--memory", *args)
    assert r.exit_code == 1 and r.stdout == "", r.output
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith(message), r.stderr


def test_memory_options_without_memory_are_refused(default_model_path):
    r = run_cli("bench", default_model_path, "--lengths", "4096", "--fill", "state")
    assert r.exit_code == 1 and r.stderr == "error: --lengths and --fill set the memory benchmark; add --memory\n"
