"""`tq-gguf verify` and its harness (tq_gguf.analysis.verify): every compiled kernel against the reference,
and proof that the harness notices kernels that are wrong."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from helpers import run_cli

from tq_gguf import reference as ref
from tq_gguf.analysis import verify
from tq_gguf.kv import cachetypes
from tq_gguf.native import ggml


@pytest.fixture(scope="module")
def report(native_lib):
    return verify.run()


@pytest.fixture(scope="module")
def inputs():
    return verify.make_inputs()


def test_every_compiled_kernel_matches_the_reference(report):
    variants = ggml.cpu_variants()
    assert "generic" in variants and "default" in variants
    seen = {(r.backend, r.variant, r.qtype, r.check): r for r in report.results}
    kernel_checks = [c for c in verify.CHECKS if c != "flash_attn"]
    assert set(cachetypes.TCQ_TYPES) <= set(verify.QTYPES)
    for variant in variants:
        for qtype in verify.QTYPES:
            for check in kernel_checks:
                r = seen[("CPU", variant, qtype, check)]
                if cachetypes.get(qtype).value_only and check in ("dot", "attention"):
                    assert r.status == "n/a" and "value type" in r.detail, r
                    continue
                # the CPU kernels follow the spec's order: zero error, not merely within tolerance
                assert r.status == "exact" and r.rows > 0, r
            # ggml's flash-attention op runs the dispatched kernels: one row, for "default"
            fa = seen[("CPU", variant, qtype, "flash_attn")]
            assert (fa.status in ("ok", "exact") and fa.rows > 0) if variant == "default" else fa.status == "n/a", fa
    for qtype in verify.QTYPES:
        assert seen[("ggml-base", "reference", qtype, "quantize")].status == "exact"
        assert seen[("ggml-base", "reference", qtype, "dequantize")].status == "exact"
        assert seen[("ggml-base", "reference", qtype, "dot")].status == "n/a"
    assert report.ok and not report.notes
    assert len(report.results) == (len(variants) + 1) * len(verify.QTYPES) * len(verify.CHECKS)


def test_real_rows_are_used(inputs):
    names = [name for name, _ in inputs.rows]
    assert names[:2] == ["random", "edge"]
    assert {n.split("/")[0] for n in names[2:]} == {"smollm2-135m", "gemma3-270m", "qwen2.5-coder-1.5b"}
    assert [a[0] for a in inputs.attention] == ["random", "gemma3-270m", "qwen2.5-coder-1.5b", "smollm2-135m"]


def test_cli_table(native_lib):
    r = run_cli("verify")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == ["backend", "variant", "type", *verify.CHECKS]
    for variant in ggml.cpu_variants():
        for qtype in verify.QTYPES:
            value_only = cachetypes.get(qtype).value_only
            cells = [("n/a" if value_only and c in ("dot", "attention") else "exact") for c in verify.CHECKS[:-1]]
            row = f"{'CPU':<10} {variant:<10} {qtype:<7} " + " ".join(f"{c:<11}" for c in cells)
            assert any(line.startswith(row) for line in lines), row
    assert any(line.startswith("inputs: ") and "kv_rows.npz" in line for line in lines)


def test_cli_json_and_type_filter(native_lib):
    r = run_cli("verify", "--type", "turbo3", "--random-only", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["ok"] is True
    assert {row["qtype"] for row in data["results"]} == {"turbo3"}
    assert not any("kv_rows" in line for line in data["inputs"])


def _generic():
    return next(k for k in verify._cpu_kernels() if k.variant == "generic")


def test_a_wrong_byte_fails_quantize(native_lib, inputs):
    good = _generic()

    def quantize(x, qtype):
        out = good.quantize(x, qtype).copy()
        if len(out) > 3:
            out[3, 0] ^= 1  # the scale's lowest bit of row 3's first block
        return out

    bad = verify.Kernel("CPU", "broken", quantize, good.dequantize, good.dot)
    results = {r.check: r for r in verify.check_kernel(bad, "turbo2", inputs)}
    assert results["quantize"].status == "FAIL"
    n_sets = sum(1 for _, x in inputs.rows if len(x) > 3)
    n_rows = sum(len(x) for _, x in inputs.rows)
    assert results["quantize"].detail == f"{n_sets} of {n_rows} rows differ in bytes; first: random row 3"
    assert results["dequantize"].status == results["dot"].status == "exact"


@pytest.mark.parametrize("qtype", cachetypes.TCQ_TYPES)
def test_a_wrong_tcq_byte_or_float_fails(native_lib, inputs, qtype):
    """The tcq types are held to the trellis reference: a branch bit flipped in the encoder's
    output, or one ulp in the decoder's, fails; the untouched kernels are exact."""
    good = _generic()
    size = cachetypes.get(qtype).type_size

    def quantize(x, qt):
        out = good.quantize(x, qt).copy()
        if len(out) > 3:
            out[3, size - 1] ^= 0x40  # a branch bit of value 62 in row 3's first block
        return out

    def dequantize(raw, qt, n):
        out = good.dequantize(raw, qt, n).copy()
        out[-1, -1] = np.nextafter(out[-1, -1], np.float32(np.inf))
        return out

    results = {r.check: r for r in verify.check_kernel(verify.Kernel("CPU", "broken", quantize, dequantize, None),
                                                        qtype, inputs)}
    assert results["quantize"].status == results["dequantize"].status == "FAIL", results
    fine = {r.check: r.status for r in verify.check_kernel(good, qtype, inputs)}
    assert fine["quantize"] == fine["dequantize"] == "exact", fine


def test_a_wrong_float_fails_dequantize(native_lib, inputs):
    good = _generic()

    def dequantize(raw, qtype, n):
        out = good.dequantize(raw, qtype, n).copy()
        out[-1, -1] = np.nextafter(out[-1, -1], np.float32(np.inf))  # one ulp in the last value
        return out

    bad = verify.Kernel("CPU", "broken", good.quantize, dequantize, good.dot)
    results = {r.check: r for r in verify.check_kernel(bad, "turbo4", inputs)}
    assert results["dequantize"].status == "FAIL" and "float bits" in results["dequantize"].detail


@pytest.mark.parametrize("share, status", [(0.5, "ok"), (3.0, "FAIL")])
def test_dot_is_judged_by_the_format_bound(native_lib, inputs, share, status):
    """A dot product off by a share of FORMAT.md's bound: within it is "ok", beyond it fails,
    and attention built on it follows."""
    good = _generic()

    def dot(raw, q, qtype):
        exact = good.dot(raw, q, qtype).astype(np.float64)
        tol = verify.dot_tolerance(q, ref.dequantize(raw, qtype))
        return (exact + share * tol).astype(np.float32)

    bad = verify.Kernel("CPU", "shifted", good.quantize, good.dequantize, dot)
    results = {r.check: r for r in verify.check_kernel(bad, "turbo3", inputs)}
    assert results["dot"].status == status
    # float32 rounding of the shifted value moves the ratio slightly
    assert results["dot"].worst == pytest.approx(share, rel=0.05)
    if status == "ok":
        assert results["attention"].status in ("ok", "exact") and results["attention"].worst <= 1


def test_attention_tolerance_bounds_what_score_errors_can_do():
    """The derivation in verify's docstring, checked: scores moved by at most D never move the
    output by more than attention_tolerance."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        scores = rng.standard_normal((1, 64)) * rng.uniform(0.1, 20)
        v = rng.standard_normal((64, 8)) * rng.lognormal(0, 2, size=(1, 8))
        d = rng.uniform(1e-7, 1e-2)
        moved = scores + rng.uniform(-d, d, size=scores.shape)
        tol = verify.attention_tolerance(np.full(64, d), v)
        assert (np.abs(verify.attention(moved, v) - verify.attention(scores, v)) <= tol).all()


def test_dot_tolerance_is_the_format_formula():
    q = np.array([[1.0, -2.0, 0.5, 0.0]], np.float32)
    y = np.array([[3.0, 1.0, -4.0, 7.0]], np.float32)
    assert verify.dot_tolerance(q, y)[0] == (4 + 2) * 2.0**-24 * (3 + 2 + 2 + 0)


def test_cli_fails_on_a_broken_kernel(native_lib, monkeypatch):
    good = _generic()

    def dot(raw, q, qtype):
        # scaled, not shifted: softmax would forgive a constant shift of every score
        return good.dot(raw, q, qtype) * np.float32(1.5)

    monkeypatch.setitem(verify.KERNEL_SOURCES, "CPU",
                        lambda: [verify.Kernel("CPU", "broken", good.quantize, good.dequantize, dot)])
    r = run_cli("verify", "--type", "turbo2", "--random-only")
    assert r.exit_code == 1
    assert r.output.splitlines()[-1] == "error: 2 of 10 checks failed"  # dot and attention
    assert "FAIL: CPU broken turbo2 dot: error " in r.output


def test_backends_without_a_harness_or_device_are_shown(native_lib, monkeypatch):
    monkeypatch.setattr(ggml, "backends", lambda: ["CPU", "Vulkan", "Foo"])
    monkeypatch.setitem(verify.KERNEL_SOURCES, "Vulkan", lambda: [])  # built, but no device here
    rep = verify.run(types=("turbo4",), rows_path=None)
    skipped = [(r.backend, r.status, r.detail) for r in rep.results if r.backend in ("Vulkan", "Foo")]
    assert skipped == [
        ("Vulkan", "skipped", "the build has the Vulkan backend but this machine has no Vulkan device"),
        ("Foo", "skipped", "tq_gguf.analysis.verify has no harness for the Foo backend yet")]
    assert rep.ok
    assert "skipped: Foo - turbo4 quantize: tq_gguf.analysis.verify has no harness for the Foo backend yet" \
        in rep.table_lines()


def test_missing_real_rows_are_a_note(native_lib, tmp_path):
    rep = verify.run(types=("turbo2",), rows_path=tmp_path / "none.npz", kernels=[])
    assert rep.notes == [f"no real K/V rows ({tmp_path / 'none.npz'} is not here): random rows and edge cases only"]


def test_bad_rows_files(native_lib, tmp_path):
    text = tmp_path / "rows.npz"
    text.write_text("not an archive")
    r = run_cli("verify", "--rows", text)
    assert r.exit_code == 1 and r.output.startswith(f"error: cannot read K/V rows from {text}: ")
    odd = tmp_path / "odd.npz"
    np.savez(odd, k=np.ones((4, 48), np.float32))
    r = run_cli("verify", "--rows", odd)
    assert r.exit_code == 1
    assert r.output == f"error: {odd}: k has shape (4, 48); expected (rows, width) with width a multiple of 64\n"
    r = run_cli("verify", "--rows", tmp_path / "missing.npz")
    assert r.exit_code == 1 and r.output == f"error: K/V rows file {tmp_path / 'missing.npz'} does not exist\n"


def test_flash_attention_off_by_a_fraction_of_a_level_fails(native_lib, inputs):
    """A backend whose attention output is 1% too large (what a decode one codebook step off
    does to a few rows) is caught; ggml's own CPU op passes."""
    good = next(k for k in verify.compiled_kernels()[0] if k.variant == "default")

    def inflated(q, k, v, k_type, v_type):
        return good.flash_attn(q, k, v, k_type, v_type) * np.float32(1.01)

    bad = verify.Kernel("CPU", "inflated", good.quantize, good.dequantize, good.dot, inflated)
    results = {r.check: r for r in verify.check_kernel(bad, "turbo3", inputs)}
    assert results["flash_attn"].status == "FAIL", results["flash_attn"]
    assert {r.check: r.status for r in verify.check_kernel(good, "turbo3", inputs)}["flash_attn"] in ("ok", "exact")


def test_a_head_size_limit_leaves_those_heads_out_and_says_so(native_lib, inputs):
    """On a software Vulkan device (lavapipe) the flash-attention check stops at head 128: the
    larger heads are not run, and the result says which; with no head left it is 'skipped'."""
    good = next(k for k in verify.compiled_kernels()[0] if k.variant == "default")
    seen = []

    def recording(q, k, v, k_type, v_type):
        seen.append(k.shape[-1])
        return good.flash_attn(q, k, v, k_type, v_type)

    heads = sorted({a[2].shape[-1] for a in inputs.attention})
    assert heads[0] < heads[-1], heads
    limited = replace(good, variant="limited", flash_attn=recording, flash_attn_max_head=heads[0])
    fa = {r.check: r for r in verify.check_kernel(limited, "turbo4", inputs)}["flash_attn"]
    assert set(seen) == {heads[0]}
    assert fa.status in ("ok", "exact") and f"head {heads[-1]}" in fa.detail, fa
    report = verify.Report(results=[fa])
    assert any(line.startswith(f"{fa.status}: CPU limited turbo4 flash_attn: ") for line in report.table_lines())

    none_left = replace(good, variant="limited", flash_attn=recording, flash_attn_max_head=heads[0] - 1)
    fa = {r.check: r for r in verify.check_kernel(none_left, "turbo4", inputs)}["flash_attn"]
    assert fa.status == "skipped" and f"head {heads[0]}" in fa.detail, fa


def test_a_device_is_held_to_its_own_q8_0_error_only_where_that_misses_the_tolerance(native_lib, inputs):
    """Where the device's stock q8_0 flash attention misses the tolerance on an input, a turbo
    type may miss it by as much (times STOCK_MARGIN) and no more; where q8_0 meets it, so must turbo."""
    good = next(k for k in verify.compiled_kernels()[0] if k.variant == "default")
    # An error of `off` times the input's largest |v| on every output: the same size over a
    # turbo cache and a q8_0 one whatever the rows hold, and far beyond the tolerance.
    off = 0.05

    def shifted(out, v, amount):
        return out + np.float32(amount * np.abs(v).max())

    def inflated(q, k, v, k_type, v_type):
        return shifted(good.flash_attn(q, k, v, k_type, v_type), v, off)

    def stock(amount):
        return lambda q, k, v: shifted(good.flash_attn(q, k, v, "q8_0", "q8_0"), v, amount)

    def flash_attn(kernel):
        return {r.check: r for r in verify.check_kernel(kernel, "turbo3", inputs)}["flash_attn"]

    bad = verify.Kernel("CPU", "inflated", None, None, None, inflated)
    assert flash_attn(bad).status == "FAIL"
    as_bad_as_q8_0 = flash_attn(replace(bad, flash_attn_q8_0=stock(off)))
    assert as_bad_as_q8_0.status == "ok" and "held to" in as_bad_as_q8_0.detail, as_bad_as_q8_0
    worse_than_q8_0 = flash_attn(replace(bad, flash_attn_q8_0=stock(off / (2 * verify.STOCK_MARGIN))))
    assert worse_than_q8_0.status == "FAIL", worse_than_q8_0
    q8_0_meets_it = flash_attn(replace(bad, flash_attn_q8_0=stock(0.0)))
    assert q8_0_meets_it.status == "FAIL", q8_0_meets_it
