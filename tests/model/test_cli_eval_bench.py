"""`tq-gguf eval` and `bench` on SmolLM2 through the built llama-perplexity and llama-bench.

Kept small for a 2-core machine: one chunk of 256 tokens (128 scored) and one
thread. Measured there: q8_0/q8_0 KLD 0.0043, q8_0/turbo4 0.0126, q8_0/turbo2
0.137, q8_0/turbo2:b2 (the first and last 2 layers at q8_0) 0.087.
"""

from __future__ import annotations

import json

import pytest
from helpers import run_cli

from tq_gguf.analysis import evaluate
from tq_gguf.analysis.evaluate import Evaluation, Score, parse_kld
from tq_gguf.cli.eval import eval_lines
from tq_gguf.errors import TqError
from tq_gguf.gguf import ggufinfo
from tq_gguf.kv import cachetypes
from tq_gguf.kv.cacheconfig import CacheConfig

EVAL_CONFIGS = "f16/f16,q8_0/q8_0,q8_0/turbo4,q8_0/turbo2,q8_0/turbo2:b2"


def bits(k: str, v: str) -> float:
    return (cachetypes.get(k).bits_per_value + cachetypes.get(v).bits_per_value) / 2


@pytest.fixture(scope="module")
def evaluation(default_model_path, tmp_path_factory):
    plot = tmp_path_factory.mktemp("eval") / "kld.png"
    r = run_cli("eval", default_model_path, "--configs", EVAL_CONFIGS, "--chunks", 1, "--ctx", 256, "-t", 1,
                "--plot", plot, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    return data, {s["config"]: s for s in data["scores"]}, plot


def test_eval_reports_what_it_ran(evaluation, default_model_path):
    data, scores, _ = evaluation
    assert data["chunks"] == 1 and data["n_ctx"] == 256
    assert data["model"] == str(default_model_path)
    assert "release notes" in data["text"]
    assert list(scores) == ["f16/f16", "q8_0/q8_0", "q8_0/turbo4", "q8_0/turbo2", "q8_0/turbo2:b2"]
    assert scores["q8_0/q8_0"]["preset"] == "lossless" and scores["q8_0/turbo2:b2"]["preset"] is None


def test_f16_scored_against_its_own_logits_is_the_baseline(evaluation):
    data, scores, _ = evaluation
    base, f16 = data["base"], scores["f16/f16"]
    assert base["kld"] is None and base["top1"] is None and base["bits_per_value"] == 16
    assert 1 < base["ppl"] < 1000
    # the same cache again: identical logits, so no divergence and the same perplexity
    assert abs(f16["kld"]) < 1e-6
    assert f16["top1"] == 100
    assert f16["ppl"] == pytest.approx(base["ppl"], rel=1e-4)
    assert f16["ppl_ratio"] == pytest.approx(1, abs=1e-4)


def test_kld_is_small_for_q8_0_and_grows_as_values_lose_bits(evaluation):
    _, scores, _ = evaluation
    kld = {name: s["kld"] for name, s in scores.items()}
    assert 0 < kld["q8_0/q8_0"] < 0.02
    assert kld["q8_0/q8_0"] < kld["q8_0/turbo4"] < kld["q8_0/turbo2"]
    assert scores["q8_0/q8_0"]["top1"] > scores["q8_0/turbo2"]["top1"]
    for s in scores.values():
        assert s["ppl_ratio"] == pytest.approx(s["ppl"] / evaluation[0]["base"]["ppl"], rel=2e-3)


def test_mixed_config_reaches_llama_perplexity_per_layer(evaluation, default_model_path):
    _, scores, _ = evaluation
    # the protected layers change the result: the per-layer lists were applied, not just -ctk/-ctv
    assert scores["q8_0/turbo2:b2"]["kld"] < scores["q8_0/turbo2"]["kld"]
    info = ggufinfo.read(default_model_path)
    n_protected = 4  # first and last 2 of SmolLM2's 30 layers keep q8_0 values
    v_bits = ((info.n_layer - n_protected) * cachetypes.get("turbo2").bits_per_value
              + n_protected * cachetypes.get("q8_0").bits_per_value) / info.n_layer
    assert scores["q8_0/turbo2:b2"]["bits_per_value"] == pytest.approx((8.5 + v_bits) / 2)


def test_bits_and_sizes(evaluation, default_model_path):
    data, scores, _ = evaluation
    assert scores["q8_0/q8_0"]["bits_per_value"] == pytest.approx(bits("q8_0", "q8_0"))
    assert scores["q8_0/turbo4"]["bits_per_value"] == pytest.approx(bits("q8_0", "turbo4"))
    info = ggufinfo.read(default_model_path)
    assert data["kv_ctx"] == info.n_ctx_train
    for name, s in scores.items():
        assert s["kv_bytes"] == CacheConfig.parse(name).kv_bytes(info, data["kv_ctx"])


def test_plot_is_a_png(evaluation):
    import matplotlib.image

    *_, plot = evaluation
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(plot).shape
    assert width > 400 and height > 300


def test_eval_table(evaluation):
    data, _, _ = evaluation
    data = {k: v for k, v in data.items() if k != "plot"}
    ev = Evaluation(**{**data, "base": Score(**data["base"]), "scores": [Score(**s) for s in data["scores"]]})
    lines = eval_lines(ev)
    assert "1 chunk of 256 tokens" in lines[0]
    header = lines[2].split()
    assert header[:4] == ["config", "preset", "bits/val", "KV"]
    assert "PPL/f16" in header and "KLD" in header and "top-1" in header
    table = lines[3:lines.index("", 3)]
    rows = {line.split()[0] + (" base" if "(base)" in line else ""): line for line in table}
    assert lines[-1].startswith("f16 base logits: ") and data["base_logits"] in lines[-1]
    assert "180.0 MiB" in rows["f16/f16 base"] and "0 (reference)" in rows["f16/f16 base"]
    assert "0.00000 ± 0.00000" in rows["f16/f16"] and "-0.00000" not in rows["f16/f16"]
    assert "lossless" in rows["q8_0/q8_0"] and "95.6 MiB" in rows["q8_0/q8_0"]


def test_the_f16_base_is_kept_and_reused_by_a_later_run(evaluation, default_model_path):
    data, _, _ = evaluation
    again = run_cli("eval", default_model_path, "--configs", "q8_0/turbo3", "--chunks", 1, "--ctx", 256, "-t", 1,
                    "--json")
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["base_reused"] and second["base_logits"] == data["base_logits"]
    assert second["base"] == data["base"]  # the stored perplexity, not a new run's
    # llama-perplexity's base file: 2 bytes per vocabulary entry for each scored token (127 of the
    # second half's 128: the first has no prediction scored), plus a little header
    assert 120 * 49152 * 2 < second["base_logits_bytes"] < 130 * 49152 * 2
    # another context is another base
    other = run_cli("eval", default_model_path, "--configs", "q8_0/q8_0", "--chunks", 1, "--ctx", 128, "-t", 1,
                    "--json")
    assert other.exit_code == 0, other.output
    assert json.loads(other.stdout)["base_logits"] != data["base_logits"]


def test_parse_kld_single_chunk_uses_the_chunk_row():
    # llama-perplexity prints its summary only from 2 chunks on; one chunk has just the table row
    out = ("chunk  PPL  ln(PPL(Q)/PPL(base))  KL Divergence  Δp RMS  Same top p\n"
           "   1     101.5671 ±   50.8834      -0.01174 ±    0.01358       0.00527 ±    0.00045"
           "     1.805 ±  0.402 %    93.651 ±  3.097 %\n")
    stats = parse_kld(out, "q8_0/q8_0")
    assert stats["ppl"] == 101.5671 and stats["kld"] == 0.00527 and stats["top1"] == 93.651
    assert stats["ppl_ratio"] == pytest.approx(0.98833, abs=1e-5)


class TestEvalBadInput:
    def test_unknown_type(self, default_model_path):
        r = run_cli("eval", default_model_path, "--configs", "q8_0/turbo5")
        assert r.exit_code == 2 and "unknown cache type 'turbo5'" in r.output

    def test_odd_context(self, default_model_path):
        r = run_cli("eval", default_model_path, "--configs", "q8_0/q8_0", "--ctx", 129)
        assert r.exit_code == 1
        assert r.output.strip().splitlines()[-1].startswith("error: context 129 does not split")

    def test_context_beyond_training(self, default_model_path):
        r = run_cli("eval", default_model_path, "--configs", "q8_0/q8_0", "--ctx", 16384)
        assert r.exit_code == 1
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: context 16384 is beyond"), lines
        assert "training context (8192 tokens)" in lines[0] and "--allow-beyond-train" in lines[0]

    def test_allow_beyond_train_lets_the_context_through(self, default_model_path):
        configs = [CacheConfig.parse("q8_0/q8_0")]
        with pytest.raises(TqError, match="beyond"):
            evaluate.checked(default_model_path, configs, 16384)
        assert evaluate.checked(default_model_path, configs, 16384, allow_beyond_train=True) == configs

    def test_text_too_short(self, default_model_path, tmp_path):
        short = tmp_path / "short.txt"
        short.write_text("Too short to evaluate.\n")
        r = run_cli("eval", default_model_path, "--configs", "q8_0/q8_0", "--ctx", 64, "--text", short, "-t", 1)
        assert r.exit_code == 1
        assert "error: llama-perplexity printed no perplexity for f16/f16" in r.output
        assert "you need at least 128 tokens" in r.output


@pytest.fixture(scope="module")
def bench_json(default_model_path):
    r = run_cli("bench", default_model_path, "--configs", "q8_0/tcq3,lossless", "-p", 8, "-n", 2,
                "--depths", "0,16", "-r", 1, "-t", 1, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_bench_measures_the_baselines_first_and_ratios_against_them(bench_json):
    results = bench_json["results"]
    assert [r["config"] for r in results] == ["f16/f16", "q8_0/q8_0", "q8_0/tcq3"]
    assert results[1]["preset"] == "lossless" and results[2]["preset"] == "balanced"
    tests = ["tg2 @ d0", "tg2 @ d16", "pp8 @ d0", "pp8 @ d16"]
    base = {b: {t["test"]: t["tokens_per_s"] for t in results[i]["tests"]} for i, b in enumerate(("f16", "q8_0"))}
    for r in results:
        assert [t["test"] for t in r["tests"]] == tests
        for t in r["tests"]:
            assert t["tokens_per_s"] > 0
            assert t["ratio_f16_f16"] == pytest.approx(t["tokens_per_s"] / base["f16"][t["test"]])
            assert t["ratio_q8_0_q8_0"] == pytest.approx(t["tokens_per_s"] / base["q8_0"][t["test"]])
    assert all(t["ratio_f16_f16"] == 1.0 for t in results[0]["tests"])


def test_bench_reports_bytes_read_against_the_copy_speed(bench_json, default_model_path):
    weights = default_model_path.stat().st_size
    assert bench_json["weight_bytes"] == weights and bench_json["copy_bytes_per_s"] > 1e8
    read = {r["config"]: {t["test"]: t.get("read_bytes_per_token") for t in r["tests"]} for r in bench_json["results"]}
    # decode tests only; at depth 16 the view is 256 cells of 30 layers x 192 values of K and of V
    assert read["f16/f16"]["pp8 @ d16"] is None
    per_cell = {"f16/f16": 2 * 2 * 192 * 30, "q8_0/q8_0": 2 * 204 * 30, "q8_0/tcq3": (204 + 78) * 30}
    for config, cell in per_cell.items():
        assert read[config]["tg2 @ d16"] == weights + 256 * cell
    for r in bench_json["results"]:
        for t in r["tests"]:
            if "read_bytes_per_token" in t:
                want = t["tokens_per_s"] * t["read_bytes_per_token"] / bench_json["copy_bytes_per_s"]
                assert t["bandwidth_share"] == pytest.approx(want)


def test_bench_table(default_model_path):
    r = run_cli("bench", default_model_path, "--configs", "q8_0/turbo3", "-p", 0, "-n", 2, "--depths", 0,
                "-r", 1, "-t", 1)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert "1 thread," in lines[0] and "ratios to f16/f16 and q8_0/q8_0" in lines[0]
    assert lines[2].split() == ["config", "tg2", "@", "d0"]  # -p 0: no prefill column
    assert lines[3].startswith("f16/f16") and "(1.00x " in lines[3]
    assert lines[4].startswith("q8_0/q8_0") and lines[4].endswith(" 1.00x)")
    assert lines[5].startswith("q8_0/turbo3") and lines[5].endswith("x)")
    assert lines[7].startswith("decode against memory bandwidth: a plain copy moved")
    assert lines[9].split()[0] == "config" and lines[11].startswith("q8_0/q8_0") and lines[11].endswith("%")
    # each config's figures go to stderr as soon as llama-bench gives them, the table's to one decimal
    progress = r.stderr.splitlines()
    assert [line.split(":")[0] for line in progress] == ["llama-bench 1/3 f16/f16", "llama-bench 2/3 q8_0/q8_0",
                                                          "llama-bench 3/3 q8_0/turbo3"]
    assert progress[2] == f"llama-bench 3/3 q8_0/turbo3: tg2 @ d0 {lines[5].split()[1]} tok/s"


def test_bench_rounds_run_the_configs_in_turns_and_report_medians(default_model_path):
    r = run_cli("bench", default_model_path, "--configs", "q8_0/turbo3", "-p", 0, "-n", 2, "--depths", 0,
                "-r", 1, "-t", 1, "--rounds", 3)
    assert r.exit_code == 0, r.output
    progress = [line.split(": ") for line in r.stderr.splitlines()]
    names = ["f16/f16", "q8_0/q8_0", "q8_0/turbo3"]
    assert [p[0] for p in progress] == [f"llama-bench {i + 1}/9 {names[i % 3]}" for i in range(9)]
    lines = r.stdout.splitlines()
    assert "1 repetition, 3 rounds in turns (medians);" in lines[0]
    for name, line in zip(names, lines[3:6]):
        per_round = [float(p[1].split()[-2]) for p in progress if p[0].endswith(" " + name)]
        assert line.split()[0] == name
        assert abs(float(line.split()[1]) - sorted(per_round)[1]) <= 0.051  # the median, as printed to 0.1


def test_median_speed_takes_the_middle_round_and_its_spread():
    from tq_gguf.analysis.bench import Speed, median_speed
    one = Speed(10.0, 0.3)
    assert median_speed([one]) is one  # one round keeps llama-bench's own spread
    got = median_speed([Speed(10.0, 0.1), Speed(30.0, 0.1), Speed(11.0, 0.1)])
    assert got.tokens_per_s == 11.0  # the median, not the mean (17.0) a slow or fast spell would pull
    assert got.stddev == pytest.approx(11.269, abs=1e-3)  # sample spread of 10, 30, 11


class TestBenchBadInput:
    def test_mixed_config_is_refused_by_name(self, default_model_path):
        r = run_cli("bench", default_model_path, "--configs", "q8_0/turbo3,q8_0/turbo2:b2")
        assert r.exit_code == 1
        assert r.output.strip().splitlines() == [
            "error: llama-bench has no per-layer cache types, so it cannot run q8_0/turbo2:b2, which keeps "
            "the first and last 2 layers at q8_0; bench q8_0/turbo2 instead"]

    def test_nothing_to_measure(self, default_model_path):
        r = run_cli("bench", default_model_path, "-p", 0, "-n", 0)
        assert r.exit_code == 2 and "-p and -n are both 0" in r.output

    def test_bad_depths(self, default_model_path):
        r = run_cli("bench", default_model_path, "--depths", "0,-5")
        assert r.exit_code == 2 and "integers >= 0" in r.output
