"""`tq-gguf needle` on SmolLM2: a short sweep (2 lengths x 3 depths x 2 configs, 1 trial), its
result cache and resume, the heatmap, the prefix reuse it relies on, and bad input.

Lengths of 512 and 1024 tokens keep the sweep near a minute on 2 cores. The sweep
runs on its own text (git's release notes plus a line naming the test's temporary
folder), so its cache entries are its own and the first run computes every cell.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tq_gguf.analysis import needle, needlerun
from tq_gguf.analysis.evaltext import git_release_notes
from tq_gguf.cli import main
from tq_gguf.gguf import ggufinfo
from tq_gguf.kv.cacheconfig import CacheConfig

CONFIGS = ["f16/f16", "q8_0/turbo3"]
LENGTHS = [512, 1024]
DEPTHS = [0.0, 0.5, 1.0]


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture(scope="module")
def haystack_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("needle")
    text = folder / "haystack.txt"
    text.write_text(git_release_notes(60_000) + f"\nWritten for {folder}.\n")
    return text


def sweep_args(model, text, *extra):
    return ("needle", model, "--configs", ",".join(CONFIGS), "--lengths", ",".join(map(str, LENGTHS)),
            "--depths", ",".join(f"{d:g}" for d in DEPTHS), "--trials", 1, "--text", text, "-t", 2, *extra)


@pytest.fixture(scope="module")
def first(default_model_path, haystack_file, tmp_path_factory):
    plot = tmp_path_factory.mktemp("plot") / "needle.png"
    r = run_cli(*sweep_args(default_model_path, haystack_file, "--plot", plot, "--json"))
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    yield data, r.stderr, plot
    shutil.rmtree(data["cache_dir"], ignore_errors=True)  # this text's cells are of no use to anyone else


def test_sweep_reports_one_row_per_trial(first, default_model_path):
    data, _, _ = first
    assert data["model"] == str(default_model_path)
    assert data["configs"] == CONFIGS and data["lengths"] == LENGTHS and data["depths"] == DEPTHS
    assert data["trials"] == 1 and data["kind"] == "passphrase"
    assert data["computed"] == 12 and data["reused"] == 0
    rows = data["results"]
    assert [(r["config"], r["length"], r["depth"]) for r in rows] == \
        [(c, n, d) for c in CONFIGS for n in LENGTHS for d in DEPTHS]
    for r in rows:
        assert r["needle"] == needle.make_secret("passphrase", f"{r['length']} {r['depth']:g} 0")
        assert r["found"] == needle.is_found(r["answer"], r["needle"])
        assert r["prompt_tokens"] + needle.ANSWER_TOKENS <= r["length"]
        assert abs(r["needle_depth"] - r["depth"]) < 0.1
    # every config answered the same prompts
    by_cell = {}
    for r in rows:
        by_cell.setdefault((r["length"], r["depth"]), set()).add((r["needle"], r["prompt_tokens"]))
    assert all(len(v) == 1 for v in by_cell.values())
    # real answers reach the scorer: SmolLM2 with an f16 cache finds a needle just before the question
    assert all(r["found"] for r in rows if r["config"] == "f16/f16" and r["depth"] == 1.0)


def test_depths_reuse_the_haystack_before_the_needle(first):
    data, _, _ = first
    rows = {(r["config"], r["length"], r["depth"]): r for r in data["results"]}
    for config in CONFIGS:
        for length in LENGTHS:
            # depth 1 runs first for a length and evaluates its whole prompt (but the instruction,
            # which the cell before shared); depth 0.5 then only what follows its needle, about half
            full = rows[config, length, 1.0]
            half = rows[config, length, 0.5]
            assert full["evaluated_tokens"] > 0.9 * full["prompt_tokens"]
            assert 0.4 * half["prompt_tokens"] < half["evaluated_tokens"] < 0.6 * half["prompt_tokens"]


def test_progress_shows_cells_and_an_eta(first):
    _, stderr, _ = first
    lines = [line for line in stderr.splitlines() if line.startswith("[")]
    assert len(lines) == 12 and lines[-1].startswith("[12/12] q8_0/turbo3 length 1024 depth 0 trial 0")
    assert all("ETA" in line for line in lines)


def test_heatmap_is_written(first):
    import matplotlib.image

    _, _, plot = first
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(plot).shape
    assert width > 300 and height > 150
    assert plot.stat().st_size < 200_000


def test_second_run_reads_every_cell_from_the_cache(first, default_model_path, haystack_file, monkeypatch):
    data, _, _ = first

    def no_generation(self, cell):
        raise AssertionError(f"{cell} was run again")

    monkeypatch.setattr(needlerun._Runner, "run", no_generation)
    r = run_cli(*sweep_args(default_model_path, haystack_file, "--json"))
    assert r.exit_code == 0, r.output
    again = json.loads(r.stdout)
    assert again["computed"] == 0 and again["reused"] == 12
    assert again["results"] == data["results"]


def test_an_interrupted_sweep_resumes_with_the_missing_cells(first, default_model_path, haystack_file):
    data, _, _ = first
    lost = needlerun.cell_file(Path(data["cache_dir"]), needlerun.Cell(CacheConfig.parse("q8_0/turbo3"), 1024, 0.5, 0))
    lost.unlink()
    r = run_cli(*sweep_args(default_model_path, haystack_file, "--json"))
    assert r.exit_code == 0, r.output
    resumed = json.loads(r.stdout)
    assert resumed["computed"] == 1 and resumed["reused"] == 11
    # greedy decoding of the same prompt gives the same answer; only the timing differs
    strip = lambda rows: [{k: v for k, v in row.items() if k not in ("seconds", "evaluated_tokens")} for row in rows]
    assert strip(resumed["results"]) == strip(data["results"])


def test_table_output(default_model_path, haystack_file, first):
    r = run_cli(*sweep_args(default_model_path, haystack_file))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert "passphrase needle" in lines[0] and "1 trial per cell" in lines[0]
    assert lines[2].split() == ["config", "length", "d=0", "d=0.5", "d=1", "all"]
    assert lines[3].split()[:2] == ["f16/f16", "512"] and lines[5].split()[0] == "q8_0/turbo3"
    assert "0 cells run" in r.stdout and "12 read from" in r.stdout


@pytest.mark.parametrize("config", ["f16/f16", "q8_0/turbo3"])
def test_prefix_reuse_gives_the_logits_of_a_fresh_evaluation(default_model_path, config):
    """What the sweep's depth ordering relies on: evaluating only a prompt's suffix after another
    prompt sharing its prefix yields the same logits as evaluating the whole prompt afresh."""
    from tq_gguf import Llama  # loads the native library, which collecting the unit tests must not need

    llm = Llama(default_model_path, cache=config, n_ctx=768, flash_attn=True, n_threads=2, n_threads_batch=2)
    try:
        hay = needle.Haystack(git_release_notes(60_000), lambda s: llm.tokenize(s.encode(), add_bos=False),
                              prefix=llm.tokenize(b"", add_bos=True))
        deep = hay.prompt(768, 0.9, "passphrase", "amber-falcon-42").tokens
        shallow = hay.prompt(768, 0.4, "passphrase", "velvet-tulip-17").tokens
        shared = llm.longest_token_prefix(deep, shallow)
        # a fresh run splits the prompt into batches at 512 (n_batch), a reused one at `shared`:
        # the last token's batch differs, its logits must not
        assert 200 < shared < len(shallow) - 300

        def last_logits():
            return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()

        llm.reset()
        llm.eval(shallow)
        fresh = last_logits()
        llm.reset()
        llm.eval(deep)
        llm.n_tokens = shared
        llm.eval(shallow[shared:])
        reused = last_logits()
    finally:
        llm.close()
    assert np.array_equal(fresh, reused)


def test_found_means_retrieved_from_the_prompt(default_model_path, haystack_file, monkeypatch):
    """The scorer's "found" is earned: f16 retrieves the needle of an easy cell (just before the
    question), and the same cell with a decoy needle in the haystack instead is not found, the
    model answering the decoy it was shown, so a config that never retrieves cannot pass."""
    body, source = needlerun.load_text(haystack_file)
    runner = needlerun._Runner(default_model_path, 512, 2, body, source, "passphrase")
    cell = needlerun.Cell(CacheConfig.parse("f16/f16"), 512, 1.0, 0)
    decoy = needle.make_secret("passphrase", "a decoy, not the cell's needle")
    real_sentence = needle.needle_sentence
    try:
        easy = runner.run(cell)
        monkeypatch.setattr(needle, "needle_sentence", lambda kind, secret: real_sentence(kind, decoy))
        decoyed = runner.run(cell)
    finally:
        runner.close()
    assert easy["found"], easy
    assert decoyed["needle"] == easy["needle"] != decoy
    assert not decoyed["found"], decoyed
    assert needle.is_found(decoyed["answer"], decoy), decoyed  # it read the prompt: the decoy is what it saw


# Bad input: one `error:` line, exit status 1, before any generation.

def error_line(r) -> str:
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_a_length_beyond_the_training_context_is_refused(default_model_path):
    line = error_line(run_cli("needle", default_model_path, "--lengths", "4096,16384", "--quick"))
    assert "length 16384" in line and "training context (8192 tokens)" in line
    assert "--allow-beyond-train" in line


def test_allow_beyond_train_lets_the_length_through(default_model_path):
    info = ggufinfo.read(default_model_path)
    with pytest.raises(needle.NeedleError, match="training context"):
        needlerun.check(info, [CacheConfig.parse("f16/f16")], [16384], [0.5], 1, "passphrase", False)
    needlerun.check(info, [CacheConfig.parse("f16/f16")], [16384], [0.5], 1, "passphrase", True)


def test_a_text_too_short_for_the_length_is_refused(default_model_path, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Only a few sentences here. Not nearly enough. " * 20)
    line = error_line(run_cli("needle", default_model_path, "--quick", "--configs", "f16/f16", "--lengths", 1024,
                              "--text", short))
    assert f"{short} is too short for length 1024" in line and "tokens" in line


@pytest.mark.parametrize("configs, message", [
    ("f16/f16,q8_0/turbo9", "turbo9"),
    ("balanced,fast", "fast"),
])
def test_an_unknown_config_is_refused(default_model_path, configs, message):
    assert message in error_line(run_cli("needle", default_model_path, "--quick", "--configs", configs))


@pytest.mark.parametrize("args, message", [
    (("--depths", "0,1.5"), "depth 1.5 is outside 0..1"),
    (("--lengths", "1024,abc"), "not a comma-separated list"),
    (("--lengths", "100"), "too short for a haystack"),
])
def test_bad_depths_and_lengths_are_refused(default_model_path, args, message):
    assert message in error_line(run_cli("needle", default_model_path, "--quick", *args))
