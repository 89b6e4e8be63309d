"""The GPU headers' codebooks equal native/tq-codebooks.h bit for bit, and their trellis tables the spec's.

Device code cannot read the host arrays of tq-codebooks.h, so tools/gen_codebooks.py
writes each GPU language its own tables: hex floats for CUDA, decimal literals for
Metal (which must round to exactly the normative float32 values), float32 bit patterns
for GLSL. This parses what each compiler will read, independently of the generator."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
NATIVE = REPO / "native"
SEARCH_STEPS = int(re.search(r"#define TQ_SEARCH_STEPS (\d+)", (NATIVE / "tq-blocks.h").read_text()).group(1))


KINDS = {"c": "centroids", "m": "midpoints", "s": "search_midpoints"}


def _tables(path: Path, prefix: str) -> dict[str, np.ndarray]:
    """Every codebook array of a C-like header, flattened (the scale search's table is
    two-dimensional in tq-codebooks.h, one row per candidate, and flat in the GPU headers)."""
    text = path.read_text()
    out = {}
    for m in re.finditer(rf"{prefix}(search_midpoints|centroids|midpoints)_(\d)bit((?:\[\w+\])+)\s*=\s*\{{(.*?)\}};",
                         text, re.S):
        values = [v.strip() for v in re.sub(r"[{}]", " ", m.group(4)).split(",") if v.strip()]
        parsed = [float.fromhex(v.rstrip("f")) if "0x" in v else float(v.rstrip("f")) for v in values]
        arr = np.array(parsed, dtype=np.float64).astype(np.float32)
        dims = [SEARCH_STEPS if d == "TQ_SEARCH_STEPS" else int(d) for d in re.findall(r"\[(\w+)\]", m.group(3))]
        assert len(arr) == int(np.prod(dims))
        out[f"{m.group(1)}_{m.group(2)}"] = arr
    return out


def _glsl_tables(path: Path) -> dict[str, np.ndarray]:
    out = {}
    for kind, bits, count, body in re.findall(r"const uint tq_([cms])(\d)_bits\[(\d+)\]\s*=\s*uint\[\d+\]\(([^)]*)\)",
                                              path.read_text()):
        words = [int(w.strip().rstrip("u"), 16) for w in body.split(",")]
        assert len(words) == int(count)
        out[f"{KINDS[kind]}_{bits}"] = np.array(words, dtype=np.uint32).view(np.float32)
    return out


REFERENCE = _tables(NATIVE / "tq-codebooks.h", "tq_")


@pytest.mark.parametrize("tables", [
    pytest.param(lambda: _tables(NATIVE / "cuda" / "tq-codebooks.cuh", "tq_cuda_"), id="cuda"),
    pytest.param(lambda: _tables(NATIVE / "metal" / "tq-metal-types.h", "tq_metal_"), id="metal"),
    pytest.param(lambda: _glsl_tables(NATIVE / "vulkan" / "tq-codebooks.glsl"), id="glsl"),
])
def test_gpu_tables_match_the_reference(tables):
    found = tables()
    assert sorted(found) == sorted(REFERENCE)
    for name, ref in REFERENCE.items():
        assert found[name].view(np.uint32).tolist() == ref.view(np.uint32).tolist(), name


def test_reference_header_matches_the_python_module():
    from tq_gguf.reference.codebooks import CENTROIDS, MIDPOINTS, SEARCH_MIDPOINTS

    assert len(REFERENCE) == 3 * len(CENTROIDS)
    for bits in CENTROIDS:
        assert REFERENCE[f"centroids_{bits}"].view(np.uint32).tolist() == CENTROIDS[bits].view(np.uint32).tolist()
        assert REFERENCE[f"midpoints_{bits}"].view(np.uint32).tolist() == MIDPOINTS[bits].view(np.uint32).tolist()
        assert (REFERENCE[f"search_midpoints_{bits}"].view(np.uint32).tolist()
                == SEARCH_MIDPOINTS[bits].reshape(-1).view(np.uint32).tolist())


# --- the trellis-coded types' tables (native/tq-tcq-tables.h's values, per GPU language) ---

TCQ_HEADERS = {"cuda": (NATIVE / "cuda" / "tq-tcq-tables.cuh", "tq_cuda_"),
               "metal": (NATIVE / "metal" / "tq-metal-tcq.h", "tq_metal_")}


def _tcq_arrays(path: Path, prefix: str) -> dict[str, np.ndarray]:
    """Every `<prefix>tcqN_<name>[n] = { ... };` of a header, as float32 (floats) or uint8 (the subset table)."""
    out = {}
    for m in re.finditer(rf"{prefix}(tcq\d)_(\w+)\[(\d+)\]\s*=\s*\{{(.*?)\}};", path.read_text(), re.S):
        values = [v.strip().rstrip("f") for v in m.group(4).split(",") if v.strip()]
        assert len(values) == int(m.group(3)), m.group(0)[:80]
        if m.group(2) == "subset":
            out[f"{m.group(1)}_{m.group(2)}"] = np.array([int(v) for v in values], np.uint8)
        else:
            parsed = [float.fromhex(v) if "0x" in v else float(v) for v in values]
            out[f"{m.group(1)}_{m.group(2)}"] = np.array(parsed, dtype=np.float64).astype(np.float32)
    return out


def _window_levels(name: str) -> np.ndarray:
    """The level of a value, derived from the spec's tables alone: by its window w of branch bits
    (u[i - m] in bit 0 .. u[i] in bit m) and its rank r, as [w][r]."""
    from tq_gguf.kv.cachetypes import TRELLIS_TYPES
    from tq_gguf.reference import trellistables as tt

    t = TRELLIS_TYPES[name]
    ranks = t.levels // 4
    out = np.zeros((2 << t.memory, ranks), np.float32)
    for w in range(2 << t.memory):
        u = w >> t.memory & 1
        state = sum(((w >> (t.memory - k)) & 1) << (k - 1) for k in range(1, t.memory + 1))  # bit k-1: u[i-k]
        for r in range(ranks):
            out[w, r] = tt.LEVELS[name][tt.SUBSET[name][state][u] + 4 * r]
    return out.ravel()


@pytest.mark.parametrize("lang", TCQ_HEADERS)
@pytest.mark.parametrize("name", ["tcq2", "tcq3"])
def test_gpu_trellis_tables_equal_the_spec(lang, name):
    from tq_gguf.reference import trellistables as tt

    path, prefix = TCQ_HEADERS[lang]
    got = _tcq_arrays(path, prefix)
    want = {"levels": tt.LEVELS[name], "midpoints": np.asarray(tt.SUBSET_MIDPOINTS[name]).ravel(),
            "inv_factors": tt.INV_FACTORS[name], "factors_sq": tt.FACTORS_SQ[name],
            "subset": np.asarray(tt.SUBSET[name], np.uint8).ravel(), "window_levels": _window_levels(name)}
    assert {k.split("_", 1)[1] for k in got if k.startswith(name)} == set(want)
    for key, value in want.items():
        g, w = got[f"{name}_{key}"], np.asarray(value)
        if g.dtype == np.float32:  # bit for bit
            g, w = g.view(np.uint32), w.astype(np.float32).view(np.uint32)
        assert np.array_equal(g, w), f"{lang} {name} {key}"


@pytest.mark.parametrize("name", ["tcq2", "tcq3"])
def test_glsl_trellis_tables_equal_the_spec(name):
    """GLSL has no hex floats: the Vulkan shaders read float32 bit patterns (the subset table is
    the formula of FORMAT.md 12.2 there, held to the spec by tests/gpu/test_vulkan.py's bytes)."""
    from tq_gguf.reference import trellistables as tt

    text = (NATIVE / "vulkan" / "tq-tcq-tables.glsl").read_text()
    got = {m.group(1): np.array([int(v, 16) for v in re.findall(r"0x([0-9A-F]+)u", m.group(3))], np.uint32)
           for m in re.finditer(rf"const uint tq_{name}_(\w+)_bits\[(\d+)\]\s*=\s*uint\[\d+\]\((.*?)\);", text, re.S)}
    want = {"levels": tt.LEVELS[name], "midpoints": np.asarray(tt.SUBSET_MIDPOINTS[name]).ravel(),
            "inv_factors": tt.INV_FACTORS[name], "factors_sq": tt.FACTORS_SQ[name]}
    assert set(got) == set(want)
    for key, value in want.items():
        assert np.array_equal(got[key], np.asarray(value, np.float32).view(np.uint32)), key
