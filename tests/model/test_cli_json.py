"""`--json` output of info, models list, build and run: one parseable object with the real values."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tq_gguf.cli import main
from tq_gguf.gguf import ggufinfo
from tq_gguf.kv.cacheconfig import CacheConfig


def invoke(*args):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


def test_info_json_lists_the_turbo_types_of_the_build(native_lib):
    data = json.loads(invoke("info", "--json").output)
    in_build = {ct["name"] for ct in data["cache_types"] if ct["in_build"]}
    assert {"turbo2", "turbo3", "turbo4", "q8_0", "f16"} <= in_build
    assert "CPU" in data["backends"] and data["build"]["patches"][0].startswith("0001-")


def test_info_lists_when_the_cpu_attention_kernel_declines(native_lib, monkeypatch):
    from tq_gguf.native import backendops

    data = json.loads(invoke("info", "--json").output)["cpu_attention"]
    assert data["kernel_on"] and data["declines_when"] == [text for text, _ in backendops.flash_attn_declines()]
    assert any("GGML_TQ_FA=0" in text for text in data["declines_when"])
    monkeypatch.setenv("GGML_TQ_FA", "0")
    assert not json.loads(invoke("info", "--json").output)["cpu_attention"]["kernel_on"]
    assert "turbo kernel off (GGML_TQ_FA=0)" in invoke("info").output


def test_models_list_json(default_model_path):
    data = json.loads(invoke("models", "list", "--json").output)
    default = [m for m in data if m["default"]]
    assert len(default) == 1 and default[0]["fetched"] and default[0]["bytes"] == default_model_path.stat().st_size


def test_build_json_reports_the_installed_build(native_lib):
    from tq_gguf.nativebuild.builder import current_key

    result = CliRunner().invoke(main, ["build", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["key"] == current_key("cpu") and data["reused"]


def test_run_json_has_the_text_and_the_cache_it_used(default_model_path):
    data = json.loads(invoke("run", str(default_model_path), "--cache", "q8_0/turbo2:b2", "-p", "Hello", "-n", "4",
                             "--ctx", "256", "-t", "2", "--json").stdout)
    info = ggufinfo.read(default_model_path)
    assert data["config"] == "q8_0/turbo2:b2" and data["n_generated"] == 4 and data["text"]
    assert data["kv_bytes"] == CacheConfig.parse("q8_0/turbo2:b2").kv_bytes(info, 256)
    assert data["kv_bytes_f16"] == CacheConfig.parse("f16/f16").kv_bytes(info, 256)


def test_run_json_is_not_for_chat():
    result = CliRunner().invoke(main, ["run", "--chat", "--json"])
    assert result.exit_code == 2 and "--json is for one completion" in result.output
