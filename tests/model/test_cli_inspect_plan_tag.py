"""`tq-gguf inspect`, `plan` and `tag`.

plan's sizes are held to what llama.cpp really allocates: a context is created
with the same parameters and a graph eval callback walks from the graph's nodes
to the K/V cache tensors (`cache_k_l*`, `cache_v_l*`) and the buffers that hold
them, whose sizes ggml reports to the byte. llama.cpp's own log lines about the
cache (cells, layers, buffer MiB) are captured too and must agree.
"""

from __future__ import annotations

import ctypes
import json
import re
import struct

import pytest
from helpers import run_cli, synthetic_gguf, u32

from tq_gguf.gguf import ggufheader, ggufinfo, models
from tq_gguf.kv import cachetypes, plan
from tq_gguf.kv.cacheconfig import PRESETS, CacheConfig

MODEL_NAMES = ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-1.5b")


@pytest.fixture(scope="module")
def smollm2():
    return models.fetch("smollm2-135m")


# -- inspect ------------------------------------------------------------------------------------

def test_inspect_reports_the_model(smollm2):
    spec = models.get("smollm2-135m")
    r = run_cli("inspect", "smollm2-135m")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert f"size            {plan.format_size(spec.size)} ({spec.size} bytes), GGUF v3, 33 metadata keys, " \
           f"272 tensors" in lines
    assert "architecture    llama" in lines
    assert "layers          30" in lines
    assert f"heads           9 query, {spec.n_head_kv} KV" in lines
    assert f"head size       K {spec.head_dim}, V {spec.head_dim}" in lines
    assert "file type       Q4_1" in lines
    assert "context length  8192 (training)" in lines
    assert "sliding window  none" in lines
    assert "tq.cache        none" in lines
    assert re.search(r"^  turbo3 +3\.25  yes$", r.output, re.M)


def test_inspect_json_names_the_sliding_window_layers():
    path = models.fetch("gemma3-270m")
    data = json.loads(run_cli("inspect", path, "--json").output)
    # llama.cpp's gemma3 rule: with sliding_window > 0, every 6th layer (il % 6 == 5) attends fully
    assert data["sliding_window"] == data["swa_window"] == 512
    assert data["swa_layers"] == [il for il in range(data["n_layer"]) if il % 6 < 5]
    assert data["full_attention_layers"] == [5, 11, 17]
    assert (data["head_dim_k"], data["head_dim_v"], data["n_head_kv"]) == (256, 256, 1)
    assert data["file_type_name"] == "Q4_K_M"
    text = run_cli("inspect", path).output
    assert "sliding window  512 tokens on 15 of 18 layers: 0-4, 6-10, 12-16 (full attention: 5, 11, 17)" in text


def test_inspect_says_which_cache_types_cannot_hold_the_heads(tmp_path):
    path = synthetic_gguf(tmp_path / "h80.gguf", head=80)
    data = json.loads(run_cli("inspect", path, "--json").output)["cache_types"]
    assert data["f16"] == {"fits": True, "reason": None, "bits_per_value": 16.0}
    assert data["q8_0"]["reason"] == "blocks of 32 values do not divide the K head size 80 and V head size 80"
    assert data["turbo3"]["reason"] == "blocks of 64 values do not divide the K head size 80 and V head size 80"
    assert not any(data[t]["fits"] for t in ("turbo2", "turbo3", "turbo4", "q4_0"))
    text = run_cli("inspect", path).output
    assert re.search(r"^  turbo2 +2\.25  no: blocks of 64 values do not divide", text, re.M)


class TestDamagedFiles:
    def test_truncated_tensor_data_exact_message(self, tmp_path):
        from gguf import GGUFReader

        ok = synthetic_gguf(tmp_path / "ok.gguf")
        full = ok.read_bytes()
        end = max(t.data_offset + t.n_bytes for t in GGUFReader(ok).tensors)
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(full[:-1000])
        for command in ("inspect", "plan", "tag"):
            args = [command, cut] + (["--cache", "f16/f16", "-o", tmp_path / "o.gguf"] if command == "tag" else [])
            r = run_cli(*args)
            assert r.exit_code == 1
            assert r.output == (f"error: {cut} is a truncated GGUF: its tensors need {end} bytes "
                                f"but the file has {len(full) - 1000}\n")
        assert not (tmp_path / "o.gguf").exists()

    def test_cut_header(self, tmp_path):
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(synthetic_gguf(tmp_path / "ok.gguf").read_bytes()[:40])
        r = run_cli("inspect", cut)
        assert r.exit_code == 1 and r.output.startswith(f"error: {cut} is a corrupt or truncated GGUF: ")
        assert r.output.count("\n") == 1

    def test_not_gguf(self, tmp_path):
        bad = tmp_path / "notes.gguf"
        bad.write_text("just some text\n")
        r = run_cli("plan", bad, "--ctx", "512")
        assert r.exit_code == 1
        assert r.output == f"error: {bad} is not a GGUF file (starts with b'just', expected b'GGUF')\n"

    def test_missing_and_directory(self, tmp_path):
        r = run_cli("inspect", tmp_path / "nope.gguf")
        assert r.exit_code == 1 and "does not exist" in r.output
        r = run_cli("inspect", tmp_path)
        assert r.exit_code == 1 and r.output == f"error: {tmp_path} is a directory, not a GGUF file\n"

    def test_wrongly_typed_key(self, tmp_path):
        import gguf

        path = synthetic_gguf(tmp_path / "m.gguf", extra={"llama.context_length": ("long", gguf.GGUFValueType.STRING)})
        r = run_cli("inspect", path)
        assert r.exit_code == 1
        assert r.output == f"error: {path}: llama.context_length is 'long', expected a non-negative integer\n"


# -- llama.cpp's per-architecture rules -------------------------------------------------------------

class TestLayerRules:
    def test_gemma2_default_window_and_pattern(self, tmp_path):
        info = ggufinfo.read(synthetic_gguf(tmp_path / "g2.gguf", arch="gemma2", n_layer=6))
        assert info.swa_layers == (0, 2, 4) and info.swa_window == 4096
        assert any("llama.cpp's gemma2 default" in n for n in info.notes)

    def test_gemma3_needs_a_window(self, tmp_path):
        info = ggufinfo.read(synthetic_gguf(tmp_path / "g3.gguf", arch="gemma3", n_layer=12,
                                            extra={"gemma3.attention.sliding_window": u32(0)}))
        assert info.swa_layers == ()

    def test_pattern_key_overrides_the_rule(self, tmp_path):
        import gguf

        flags = [True, False, False, True]
        info = ggufinfo.read(synthetic_gguf(tmp_path / "p.gguf", arch="gemma3", extra={
            "gemma3.attention.sliding_window": u32(256),
            "gemma3.attention.sliding_window_pattern": (flags, gguf.GGUFValueType.ARRAY)}))
        assert info.swa_layers == (0, 3)
        info = ggufinfo.read(synthetic_gguf(tmp_path / "q.gguf", arch="gemma3", n_layer=8, extra={
            "gemma3.attention.sliding_window": u32(256), "gemma3.attention.sliding_window_pattern": u32(4)}))
        assert info.swa_layers == (0, 1, 2, 4, 5, 6)

    def test_llama4_chunks_are_fixed(self, tmp_path):
        info = ggufinfo.read(synthetic_gguf(tmp_path / "l4.gguf", arch="llama4", n_layer=8,
                                            extra={"llama4.attention.sliding_window": u32(1000)}))
        assert info.swa_chunked and info.swa_window == 8192 and info.swa_layers == (0, 1, 2, 4, 5, 6)

    def test_window_llamacpp_ignores(self, tmp_path):
        info = ggufinfo.read(synthetic_gguf(tmp_path / "phi.gguf", arch="phi3",
                                            extra={"phi3.attention.sliding_window": u32(2047)}))
        assert info.swa_layers == () and "ignores phi3.attention.sliding_window = 2047" in info.notes[0]

    def test_per_layer_kv_heads(self, tmp_path):
        info = ggufinfo.read(synthetic_gguf(tmp_path / "kv.gguf", heads_kv=[1, 2, 2, 4]))
        f16 = cachetypes.get("f16")
        size = plan.kv_size(info, 256, [f16] * 4, [f16] * 4)
        assert size.total == 2 * 256 * 2 * 64 * (1 + 2 + 2 + 4)

    def test_caches_tq_gguf_cannot_size_are_refused(self, tmp_path):
        path = synthetic_gguf(tmp_path / "mamba.gguf", arch="mamba")
        assert "recurrent state" in ggufinfo.read(path).kv_layout
        r = run_cli("plan", path, "--ctx", "512")
        assert r.exit_code == 1
        assert r.output == (f"error: cannot size the KV cache of {path}: "
                            f"mamba models keep recurrent state beside (or instead of) a KV cache\n")


# -- plan: exact against llama.cpp ----------------------------------------------------------------------

class Allocation:
    """What llama.cpp allocates for the KV cache of one context, read from the cache tensors themselves."""

    def __init__(self, buffers: dict[int, int], tensors: dict[str, tuple[str, int]], log: str):
        self.buffers = buffers  # buffer address -> bytes
        self.tensors = tensors  # cache tensor name -> (type, bytes)
        self.log = log

    @property
    def total(self) -> int:
        return sum(self.buffers.values())


def allocate(path, n_ctx: int, spec: str, params: plan.ContextParams) -> Allocation:
    import llama_cpp

    from tq_gguf.native import ggml

    ffi, base = ggml.ffi, ggml.lib()  # the package's one FFI declares struct ggml_tensor and these calls
    buffers: dict[int, int] = {}
    tensors: dict[str, tuple[str, int]] = {}
    log: list[str] = []

    @llama_cpp.ggml_backend_sched_eval_callback
    def on_eval(tensor, ask, user_data):
        node = ffi.cast("struct ggml_tensor *", tensor)
        for t in [node, *node.src]:
            while t != ffi.NULL:  # views lead to the tensor that owns the memory
                if t.view_src == ffi.NULL and ffi.string(t.name).decode().startswith("cache_"):
                    tensors[ffi.string(t.name).decode()] = (ffi.string(base.ggml_type_name(t.type)).decode(),
                                                            int(base.ggml_nbytes(t)))
                    buffers[int(ffi.cast("uintptr_t", t.buffer))] = int(base.ggml_backend_buffer_get_size(t.buffer))
                t = t.view_src
        return False

    @llama_cpp.llama_log_callback
    def on_log(level, text, user_data):
        log.append(text.decode(errors="replace"))

    config = CacheConfig.parse(spec)
    llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
    try:
        llama_cpp.llama_backend_init()
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), llama_cpp.llama_model_default_params())
        n_layer = llama_cpp.llama_model_n_layer(model)
        p = llama_cpp.llama_context_default_params()
        p.n_ctx, p.n_seq_max, p.kv_unified, p.swa_full = n_ctx, params.n_seq, params.unified, params.swa_full
        p.n_batch, p.n_ubatch = 512, params.n_ubatch  # llama-cpp-python's batch sizes
        p.n_threads = p.n_threads_batch = 2
        p.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        p.smooth_k = config.smooth_k
        p.cb_eval = on_eval
        kwargs = config.llama_kwargs(n_layer)
        p.type_k, p.type_v = kwargs["type_k"], kwargs["type_v"]
        if config.mixed:
            k_layer = (ctypes.c_int * n_layer)(*kwargs["type_k_layer"])
            v_layer = (ctypes.c_int * n_layer)(*kwargs["type_v_layer"])
            p.type_k_layer, p.type_v_layer, p.n_type_layer = k_layer, v_layer, n_layer
        ctx = llama_cpp.llama_init_from_model(model, p)
        assert ctx, "llama.cpp refused the context"
        token = (llama_cpp.llama_token * 1)(1)
        assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(token, 1)) == 0
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)
    finally:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
    return Allocation(buffers, tensors, "".join(log))


ALLOCATIONS = [
    ("smollm2-135m", 1000, "f16/f16", {}),  # 1000 -> 1024 cells
    ("smollm2-135m", 4096, "q8_0/turbo3", {}),
    ("smollm2-135m", 2048, "q8_0/turbo2:b2", {}),  # per-layer types
    ("smollm2-135m", 1000, "turbo4/turbo3", {"n_seq": 3}),  # 3 streams of pad256(1024 / 3) = 512 cells
    ("smollm2-135m", 1500, "q8_0/q4_0", {"n_seq": 2, "unified": True}),
    ("gemma3-270m", 2048, "q8_0/turbo3", {}),  # swa_full: the window layers as large as the others
    ("gemma3-270m", 8192, "q8_0/turbo3", {"swa_full": False}),  # window layers: 512 + 512 cells
    ("gemma3-270m", 8192, "q8_0/turbo2:b2", {"n_seq": 2, "unified": True, "swa_full": False}),
    ("gemma3-270m", 3000, "turbo4/turbo3", {"n_seq": 3, "swa_full": False}),
    ("gemma3-270m", 4096, "f16/q8_0", {"swa_full": False, "n_ubatch": 256}),
    ("qwen2.5-coder-1.5b", 700, "q8_0/turbo2:b2", {}),
    ("qwen2.5-coder-1.5b", 1024, "turbo4/turbo4", {"n_seq": 2}),
    # key smoothing: each layer's buffer also holds its f32 mu, one for all streams
    ("smollm2-135m", 1000, "turbo4/turbo4:sk", {"n_seq": 3}),
    ("gemma3-270m", 8192, "turbo4/turbo3:sk", {"swa_full": False}),
]


@pytest.mark.native
@pytest.mark.model
@pytest.mark.parametrize("name, n_ctx, spec, params", ALLOCATIONS)
def test_plan_is_what_llamacpp_allocates(name, n_ctx, spec, params):
    path = models.fetch(name)
    info = ggufinfo.read(path)
    config = CacheConfig.parse(spec)
    params = plan.ContextParams(**params, smooth_k=config.smooth_k)
    k_types, v_types = config.layer_types(info.n_layer)
    predicted = plan.kv_size(info, n_ctx, k_types, v_types, params)
    got = allocate(path, n_ctx, spec, params)

    assert predicted.total == got.total  # to the byte
    assert sorted(b.bytes for b in predicted.buffers) == sorted(got.buffers.values())
    # every layer's K and V tensor: its type and bytes
    expected_tensors = {}
    for buf in predicted.buffers:
        for il in buf.layers:
            k_width, v_width = info.kv_widths(il)
            for which, ct, width in (("k", k_types[il], k_width), ("v", v_types[il], v_width)):
                expected_tensors[f"cache_{which}_l{il}"] = (ct.name, ct.bytes_for(width) * buf.cells * buf.streams)
            if config.smooth_k:
                expected_tensors[f"cache_k_mu_l{il}"] = ("f32", 4 * k_width)
    assert got.tensors == expected_tensors
    # and llama.cpp's log says the same, at its printed precision
    printed = re.findall(r"llama_kv_cache: size = +[\d.]+ MiB \( *(\d+) cells, +(\d+) layers, +\d+/(\d+) seqs\)", got.log)
    assert sorted((int(c), int(l), int(s)) for c, l, s in printed) == \
        sorted((b.cells, len(b.layers), b.streams) for b in predicted.buffers)
    mib = re.findall(r"KV buffer size = +([\d.]+) MiB", got.log)
    assert sorted(mib) == sorted(f"{b.bytes / 2**20:.2f}" for b in predicted.buffers)


@pytest.mark.native
@pytest.mark.model
def test_session_cache_info_is_what_llamacpp_logs(smollm2):
    """tq_gguf.Llama's cache_info() and kv_cache_bytes() use the same exact math."""
    import llama_cpp
    from llama_cpp import _logger

    from tq_gguf import Llama

    for path, spec in ((smollm2, "q8_0/turbo2:b2"), (models.fetch("gemma3-270m"), "balanced")):
        log: list[str] = []
        on_log = llama_cpp.llama_log_callback(lambda level, text, user_data: log.append(text.decode()))
        llama_cpp.llama_log_set(on_log, ctypes.c_void_p(0))
        try:
            llm = Llama(path, cache=spec, n_ctx=1000, n_threads=2)
        finally:
            llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        try:
            info = llm.cache_info()
            assert info.n_ctx == 1024 and llm.kv_cache_bytes() == info.bytes_allocated
            logged = re.findall(r"KV buffer size = +([\d.]+) MiB", "".join(log))
            assert f"{sum(map(float, logged)):.2f}" == f"{info.bytes_allocated / 2**20:.2f}"
            cells = re.findall(r"llama_kv_cache: size = .*?\( *(\d+) cells", "".join(log))
            assert set(cells) == {"1024"}  # the Python bindings keep swa_full: no smaller window cache
        finally:
            llm.close()


def test_cache_config_kv_bytes_is_exact(smollm2):
    info = ggufinfo.read(smollm2)
    config = CacheConfig.parse("q8_0/turbo3")
    # 30 layers, 3 KV heads x 64: q8_0 K rows 6 x 34 bytes, turbo3 V rows 3 x 26 bytes; 1000 -> 1024 cells
    assert config.kv_bytes(info, 1000) == 1024 * 30 * (6 * 34 + 3 * 26)
    assert config.kv_bytes(info, 1024) == config.kv_bytes(info, 1000) < config.kv_bytes(info, 1025)
    assert config.kv_bytes(info, 0) == 0
    k, v = config.layer_types(info.n_layer)
    assert info.kv_bytes_layers(1000, k, v, n_seq=3) == 3 * 512 * 30 * (6 * 34 + 3 * 26)
    assert info.kv_cell_bytes(k, v) == 30 * (6 * 34 + 3 * 26)


# -- plan: the command ------------------------------------------------------------------------------------

def test_plan_json_rows(smollm2):
    budget = 2**30
    r = run_cli("plan", "smollm2-135m", "--ctx", 8192, "--budget", "1GiB", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    info = ggufinfo.read(smollm2)
    rows = {row["config"]: row for row in data["rows"]}
    expected = ({f"{n}/{n}" for n, t in cachetypes.CACHE_TYPES.items() if not t.value_only} | set(plan.MIXED)
                | {str(p.config) for p in PRESETS.values()})
    assert {"q8_0/tcq3", "q8_0/tcq2"} <= expected
    assert set(rows) == expected and len(data["rows"]) == len(expected)
    assert {rows[str(p.config)]["preset"] for p in PRESETS.values()} == set(PRESETS)
    assert rows["f16/f16"]["bytes"] == 2 * 30 * 192 * 2 * 8192  # K and V, 30 layers, 3 x 64 values, 2 bytes
    for spec, row in rows.items():
        config = CacheConfig.parse(spec)
        k, v = config.layer_types(info.n_layer)
        assert row["bytes"] == config.kv_bytes(info, 8192)
        assert plan.kv_bytes(info, row["max_ctx"], k, v) <= budget < plan.kv_bytes(info, row["max_ctx"] + 1, k, v)
    assert data["n_ctx"] == 8192 and data["budget"] == budget


def test_plan_text(smollm2):
    r = run_cli("plan", "smollm2-135m", "--ctx", 8192, "--budget", "1GiB")
    assert r.exit_code == 0, r.output
    bytes_balanced = 8192 * 30 * (6 * 34 + 3 * 26)
    row = next(line for line in r.output.splitlines() if line.startswith("q8_0/tcq3 "))
    assert row.split()[:6] == ["q8_0/tcq3", "balanced", "8.50", "3.25", *plan.format_size(bytes_balanced).split()]
    assert "budget 1.0 GiB for the KV cache alone" in r.output
    assert "* each sequence would exceed the model's training context (8192)" in r.output


def test_plan_pads_like_llamacpp(smollm2):
    data = json.loads(run_cli("plan", smollm2, "--ctx", 1000, "--parallel", 3, "--json",
                              "--cache", "f16/f16").output)
    assert (data["n_ctx"], data["n_ctx_seq"], data["caches"][0]["streams"]) == (1536, 512, 3)
    data = json.loads(run_cli("plan", smollm2, "--ctx", 1000, "-np", 3, "--kv-unified", "--json",
                              "--cache", "f16/f16").output)
    assert (data["n_ctx"], data["n_ctx_seq"], data["caches"][0]["streams"]) == (1024, 1024, 1)


def test_plan_sliding_window_caches():
    path = models.fetch("gemma3-270m")
    full = json.loads(run_cli("plan", path, "--ctx", 8192, "--cache", "f16/f16", "--json").output)
    window = json.loads(run_cli("plan", path, "--ctx", 8192, "--cache", "f16/f16", "--no-swa-full", "--json").output)
    assert [c["cells"] for c in full["caches"]] == [8192, 8192]
    assert [c["cells"] for c in window["caches"]] == [8192, 1024]  # pad256(min(8192, 512 + 512))
    # 18 layers, 1 KV head x 256 values, f16: 3 full layers at 8192 cells, 15 window layers at 1024
    assert window["rows"][0]["bytes"] == 2 * 256 * 2 * (3 * 8192 + 15 * 1024)
    assert full["rows"][0]["bytes"] == 2 * 256 * 2 * 18 * 8192
    text = run_cli("plan", path, "--ctx", 8192, "--no-swa-full").output
    assert "sliding-window layers 0-4, 6-10, 12-16: 1024 cells per sequence, window 512 + ubatch 512" in text


def test_plan_defaults_to_the_training_context(smollm2):
    data = json.loads(run_cli("plan", smollm2, "--cache", "q8_0/q8_0", "--json").output)
    assert data["n_ctx_requested"] == data["n_ctx"] == 8192


def test_plan_marks_configs_the_model_cannot_hold(tmp_path):
    path = synthetic_gguf(tmp_path / "h80.gguf", head=80)
    data = json.loads(run_cli("plan", path, "--ctx", 512, "--json").output)
    rows = {row["config"]: row for row in data["rows"]}
    assert rows["f16/f16"]["bytes"] == 2 * 4 * 512 * 160 * 2
    assert rows["q8_0/turbo3"]["bytes"] is None
    assert "K cache type q8_0 stores blocks of 32 values, but the model's head size 80" in rows["q8_0/turbo3"]["problem"]
    text = run_cli("plan", path, "--ctx", 512).output
    assert "turbo3/turbo3: not usable with this model: " in text


@pytest.mark.parametrize("args, message", [
    (["--budget", "8 gigs"], "cannot read size '8 gigs'"),
    (["--budget", "0GiB"], "size '0GiB' is not positive"),
    (["--ctx", "-5"], "-5 is not in the range x>=0"),
    (["--parallel", "0"], "0 is not in the range 1<=x<=256"),
])
def test_plan_bad_options(smollm2, args, message):
    r = run_cli("plan", smollm2, *args)
    assert r.exit_code == 2 and message in r.output


def test_plan_bad_config(smollm2):
    r = run_cli("plan", smollm2, "--cache", "q8_0/turbo9")
    assert r.exit_code == 1 and r.output.startswith("error: unknown cache type 'turbo9'")


def test_budget_too_small_for_any_context(smollm2):
    r = run_cli("plan", smollm2, "--ctx", 512, "--cache", "f16/f16", "--budget", "1MiB", "--json")
    assert json.loads(r.output)["rows"][0]["max_ctx"] == 0
    text = run_cli("plan", smollm2, "--ctx", 512, "--cache", "f16/f16", "--budget", "1MiB").output
    assert "does not fit" in text


def test_sizes():
    assert plan.parse_size("8GiB") == 8 * 2**30
    assert plan.parse_size("512 MiB") == 512 * 2**20
    assert plan.parse_size("1.5GB") == 1_500_000_000
    assert plan.parse_size("4g") == 4 * 2**30
    assert plan.parse_size("1000") == 1000
    for text in ("", "GiB", "8 XB", "-1GiB"):
        with pytest.raises(ValueError, match="cannot read size"):
            plan.parse_size(text)
    assert [plan.format_size(n) for n in (0, 1023, 1024, 47.8 * 2**20, 2**30 - 1, 8 * 2**30)] == \
        ["0 B", "1023 B", "1.0 KiB", "47.8 MiB", "1.0 GiB", "8.0 GiB"]


# -- tag -------------------------------------------------------------------------------------------------------

def _tensors(path) -> dict[str, tuple]:
    from gguf import GGUFReader

    return {t.name: (int(t.tensor_type), tuple(int(n) for n in t.shape), t.data.tobytes())
            for t in GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def tagged(smollm2, tmp_path_factory):
    out = tmp_path_factory.mktemp("tag") / "tagged.gguf"
    r = run_cli("tag", "smollm2-135m", "--cache", "turbo4/turbo3:b2:sk", "-o", out)
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == f"wrote {out}: tq.cache = turbo4/turbo3:b2:sk"
    return out


def test_tag_copies_everything_else_unchanged(smollm2, tagged):
    before, after = ggufheader.read_values(smollm2), ggufheader.read_values(tagged)
    value = b"turbo4/turbo3:b2:sk"
    assert after.pop(ggufinfo.TQ_CACHE_KEY) == struct.pack("<IQ", 8, len(value)) + value  # a GGUF string
    assert after == before  # every other key: same type, same bytes
    assert _tensors(tagged) == _tensors(smollm2)
    assert ggufinfo.read(tagged).tq_cache == "turbo4/turbo3:b2:sk"
    assert "tq.cache        turbo4/turbo3:b2:sk" in run_cli("inspect", tagged).output


def test_tag_replaces_a_tag(tagged, tmp_path):
    out = tmp_path / "retagged.gguf"
    data = json.loads(run_cli("tag", tagged, "--cache", "quality", "-o", out, "--json").output)
    assert data["tq_cache"] == "q8_0/turbo4" and data["preset"] == "quality"
    before, after = ggufheader.read_values(tagged), ggufheader.read_values(out)
    assert list(before) == list(after)  # replaced in place, not added twice
    assert ggufinfo.read(out).tq_cache == "q8_0/turbo4"


def test_tag_refuses_to_overwrite_its_input(tagged):
    before = tagged.read_bytes()
    r = run_cli("tag", tagged, "--cache", "balanced", "-o", tagged, "--force")
    assert r.exit_code == 1
    assert r.output == f"error: refusing to overwrite the input {tagged}; write the tagged copy to another file\n"
    assert tagged.read_bytes() == before


def test_tag_needs_force_to_replace_an_output(tmp_path):
    path = synthetic_gguf(tmp_path / "m.gguf")
    out = tmp_path / "o.gguf"
    out.write_bytes(b"old")
    r = run_cli("tag", path, "--cache", "balanced", "-o", out)
    assert r.exit_code == 1 and r.output == f"error: {out} already exists; pass --force to replace it\n"
    assert out.read_bytes() == b"old"
    assert run_cli("tag", path, "--cache", "balanced", "-o", out, "--force").exit_code == 0
    assert out.stat().st_mode & 0o777 == path.stat().st_mode & 0o777
    assert ggufinfo.read(out).tq_cache == "q8_0/tcq3"


def test_tag_validates_the_config_first(tmp_path):
    path = synthetic_gguf(tmp_path / "h80.gguf", head=80)
    out = tmp_path / "o.gguf"
    r = run_cli("tag", path, "--cache", "f16/turbo3", "-o", out)
    assert r.exit_code == 1
    assert r.output == ("error: V cache type turbo3 stores blocks of 64 values, "
                        "but the model's head size 80 is not a multiple of 64\n")
    r = run_cli("tag", path, "--cache", "q8_0/turbo3:x", "-o", out)
    assert r.exit_code == 1 and "cannot read cache config 'q8_0/turbo3:x'" in r.output
    assert not out.exists() and not list(tmp_path.glob(".o.gguf.*"))


@pytest.mark.native
@pytest.mark.model
def test_session_takes_the_tag_and_explicit_options_win(tagged):
    from tq_gguf import Llama

    for kwargs, expected in (({}, "turbo4/turbo3:b2:sk"), ({"cache_v": "turbo4"}, "turbo4/turbo4:b2:sk"),
                             ({"cache": "balanced"}, "q8_0/tcq3")):
        llm = Llama(tagged, n_ctx=256, n_threads=2, **kwargs)
        try:
            assert str(llm.cache_config) == expected
            assert llm.cache_info().config == expected
        finally:
            llm.close()


@pytest.mark.native
@pytest.mark.model
def test_stock_llamacpp_loads_the_tagged_file(smollm2, tagged):
    """llama.cpp ignores the unknown key: the tagged file generates what the untagged one does."""
    import llama_cpp

    def greedy(path):
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False)
        try:
            out = llm.create_completion("The three primary colors are", max_tokens=12, temperature=0.0)
            return out["choices"][0]["text"], llm.metadata.get("tq.cache")
        finally:
            llm.close()

    text, tag = greedy(tagged)
    assert (text, tag) == (greedy(smollm2)[0], "turbo4/turbo3:b2:sk") and text.strip()
