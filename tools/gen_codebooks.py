#!/usr/bin/env python3
"""Generate every table of the turbo types: codebooks and block layouts, for each language.

One source, two parts:

* the type table, `tq_gguf/kv/cachetypes.py` (`CACHE_TYPES`): name, values per block,
  bytes per block and codebook index bits of each turbo type;
* the Lloyd-Max codebooks, solved here from the law of one coordinate of a uniform
  point on the unit sphere of R^d, d = the block size (no data involved).

From them this tool writes the files that C, CUDA, Metal, GLSL and Python compile or
import (`OUTPUTS` below). Each one says it is generated; none is edited by hand.

Block layout. A block is the fp16 scale `d` followed by bit planes of the indices, the
ggml way: `qs` holds the low 2 or 4 bits of each index (an even number of bits, so that
a byte never splits an index), `qh` the rest, one bit per value (turbo3, like q5_0's
high bits). The sizes must add up to the table's bytes per block; the generator refuses
a row whose layout it cannot derive. Where each index sits inside its plane is the
kernels' business (docs/FORMAT.md, section 4).

Codebook law. For a uniform point on the unit sphere of R^d one coordinate has the
density

    f(x) = Γ(d/2) / (√π Γ((d-1)/2)) · (1 - x²)^((d-3)/2),   -1 ≤ x ≤ 1,

and the codebooks are its Lloyd-Max (MSE-optimal scalar) quantizers at 2^bits levels.

Solver (float64 NumPy, deterministic):

* Start from the quantiles of the density's Gaussian approximation N(0, 1/d),
  nudged into symmetric order.
* Lloyd iteration: boundaries = midpoints of neighbouring centroids; each
  centroid = conditional mean of f over its cell. The cell integrals
  ∫f and ∫x·f are computed with 96-point Gauss-Legendre quadrature on each
  cell. The integrand (1-x²)^30.5 is analytic inside (-1, 1) and its mass near
  the endpoint singularities is below 1e-30, so the rule is accurate to
  float64 rounding; solving again with 200 points and iterating to an exact
  fixed point gives the same float32 tables bit for bit.
* Symmetry is imposed after every step (c ← (c - reverse(c)) / 2).
* Stop when no centroid moves by more than 1e-16 (or 200000 iterations).

Output rounding: centroids are the float64 solution rounded to float32 (round
to nearest even). Midpoints are (c32[k] + c32[k+1]) / 2 evaluated exactly in
float64 and rounded to float32, so an index chosen by comparison with them is
the nearest float32 centroid (up to that final rounding, which the spec makes
normative). The centre midpoint of these symmetric codebooks is exactly 0.

Scale search. The encoder tries SEARCH_STEPS scaled copies of each codebook and keeps
the one that fits the block best (docs/FORMAT.md, section 5, step 6). Candidate t scales
the codebook by F[t] = f32(2^((t - SEARCH_CENTRE) / SEARCH_PER_OCTAVE)), so F rises
from 2^(-4/12) ≈ 0.794 to 2^(3/12) ≈ 1.189 and F[SEARCH_CENTRE] = 1 is the plain
codebook. Every backend compares against the same products, tabulated here: the
positive midpoints of candidate t are f32(F[t] · M[j]), each one correctly rounded
float32 product (the float64 product of two float32 values is exact). The grid was
measured in docs/FORMAT.md, section 11.5; eight steps keep 97-99 % of what 32 give.

Usage:

    python3 tools/gen_codebooks.py            # rewrite the generated files in the repo
    python3 tools/gen_codebooks.py --out DIR  # write them under DIR, at their repo paths
    python3 tools/gen_codebooks.py --check    # exit 1, one line per stale file, if any is stale

The outputs are byte-for-byte reproducible: same NumPy float64 arithmetic, fixed
iteration rule, values printed exactly (hex floats, float32 bit patterns, or decimals
that round to the same float32).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tq_gguf.kv import cachetypes  # noqa: E402

COMMAND = "python3 tools/gen_codebooks.py"
QUAD_POINTS = 96
TOL = 1e-16
MAX_ITER = 200_000

SEARCH_STEPS = 8       # candidate scales per block
SEARCH_CENTRE = 4      # the candidate that is the plain codebook (factor 1)
SEARCH_PER_OCTAVE = 12 # candidate factors are 2^(1/12) apart


@dataclass(frozen=True)
class Turbo:
    """One turbo type as the generated code sees it."""
    name: str    # "turbo3"
    bits: int    # codebook index bits per value
    block: int   # values per block
    size: int    # bytes per block
    qs: int      # bytes of the low-bit plane
    qh: int      # bytes of the high-bit plane (0: none)

    @property
    def enum(self) -> str:
        return f"GGML_TYPE_{self.name.upper()}"


def turbo_types() -> list[Turbo]:
    """The turbo rows of the type table, fewest bits first, with their derived layouts."""
    out = []
    for name in cachetypes.TURBO_TYPES:
        ct = cachetypes.get(name)
        bits = ct.index_bits
        low = min(bits & ~1, 4)
        qs, qh = ct.block_size * low // 8, ct.block_size * (bits - low) // 8
        if low == 0 or bits - low > 1 or 2 + qs + qh != ct.type_size:
            raise SystemExit(f"{name}: no fp16 scale + qs/qh layout of {bits}-bit indices gives "
                             f"{ct.type_size} bytes per {ct.block_size} values")
        out.append(Turbo(name, bits, ct.block_size, ct.type_size, qs, qh))
    if len({t.block for t in out}) != 1 or len({t.bits for t in out}) != len(out):
        raise SystemExit("the turbo types must share one block size and differ in index bits")
    return out


TYPES = turbo_types()
DIM = TYPES[0].block  # the codebook law's dimension: one block, one rotation group
BITS = tuple(t.bits for t in TYPES)


def log_norm_const(d: int) -> float:
    """log of Γ(d/2) / (√π Γ((d-1)/2)), the normaliser of the coordinate density."""
    return math.lgamma(d / 2) - 0.5 * math.log(math.pi) - math.lgamma((d - 1) / 2)


def density(x: np.ndarray, d: int = DIM) -> np.ndarray:
    """Density of one coordinate of a uniform unit vector in R^d."""
    x = np.asarray(x, dtype=np.float64)
    inside = np.clip(1.0 - x * x, 0.0, None)
    return np.exp(log_norm_const(d)) * inside ** ((d - 3) / 2)


_GL_X, _GL_W = np.polynomial.legendre.leggauss(QUAD_POINTS)


def cell_moments(edges: np.ndarray, d: int = DIM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """∫f, ∫x f and ∫x² f over each cell [edges[k], edges[k+1]] (Gauss-Legendre)."""
    a, b = edges[:-1, None], edges[1:, None]
    half = (b - a) / 2
    x = (a + b) / 2 + half * _GL_X[None, :]
    w = half * _GL_W[None, :] * density(x, d)
    return w.sum(axis=1), (w * x).sum(axis=1), (w * x * x).sum(axis=1)


def solve(levels: int, d: int = DIM) -> tuple[np.ndarray, int]:
    """Lloyd-Max centroids (ascending, float64) for `levels` levels; returns (centroids, iterations)."""
    # Gaussian-approximation start: centres of equal-probability cells of N(0, 1/d).
    p = (np.arange(levels) + 0.5) / levels
    # inverse normal CDF by bisection on math.erf (deterministic, no SciPy)
    lo, hi = np.full(levels, -10.0), np.full(levels, 10.0)
    for _ in range(200):
        mid = (lo + hi) / 2
        cdf = 0.5 * (1 + np.vectorize(math.erf)(mid / math.sqrt(2)))
        lo, hi = np.where(cdf < p, mid, lo), np.where(cdf < p, hi, mid)
    c = (lo + hi) / 2 / math.sqrt(d)
    c = (c - c[::-1]) / 2
    for it in range(1, MAX_ITER + 1):
        edges = np.concatenate(([-1.0], (c[:-1] + c[1:]) / 2, [1.0]))
        m0, m1, _ = cell_moments(edges, d)
        new = m1 / m0
        new = (new - new[::-1]) / 2
        delta = np.max(np.abs(new - c))
        c = new
        if delta <= TOL:
            return c, it
    raise RuntimeError(f"Lloyd-Max did not converge for {levels} levels")


def distortion(centroids: np.ndarray, midpoints: np.ndarray, d: int = DIM) -> float:
    """E‖u - Q(u)‖² for a uniform unit vector u in R^d: d times the per-coordinate MSE."""
    edges = np.concatenate(([-1.0], midpoints, [1.0]))
    m0, m1, m2 = cell_moments(edges, d)
    c = centroids.astype(np.float64)
    return float(d * np.sum(m2 - 2 * c * m1 + c * c * m0))


def float32_tables(c64: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The normative float32 centroids and midpoints derived from a float64 solution."""
    c32 = c64.astype(np.float32)
    wide = c32.astype(np.float64)
    m32 = ((wide[:-1] + wide[1:]) / 2).astype(np.float32)
    return c32, m32


def hexf(v: np.float32) -> str:
    """Shortest exact hex-float spelling of a float32 value (C99 and float.fromhex)."""
    v = float(v)
    if v == 0.0:
        return "-0x0p+0" if math.copysign(1.0, v) < 0 else "0x0p+0"
    h = v.hex()  # e.g. '-0x1.7ffe9c0000000p-3'
    mant, exp = h.split("p")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}p{int(exp)}"


def search_factors() -> np.ndarray:
    """F[t] = f32(2^((t - SEARCH_CENTRE) / SEARCH_PER_OCTAVE)), ascending; F[SEARCH_CENTRE] = 1."""
    t = np.arange(SEARCH_STEPS, dtype=np.float64)
    return np.exp2((t - SEARCH_CENTRE) / SEARCH_PER_OCTAVE).astype(np.float32)


def search_midpoints(m32: np.ndarray) -> np.ndarray:
    """(SEARCH_STEPS, levels/2 - 1) float32: the positive midpoints of each candidate, f32(F[t] · M[j])."""
    positive = m32[len(m32) // 2 + 1:].astype(np.float64)
    return (search_factors().astype(np.float64)[:, None] * positive[None, :]).astype(np.float32)


def build_tables() -> list[dict]:
    tables = []
    for bits in BITS:
        c64, iters = solve(1 << bits)
        c32, m32 = float32_tables(c64)
        if not np.array_equal(c32, -c32[::-1]) or m32[len(m32) // 2] != 0:
            raise SystemExit(f"{bits}-bit codebook is not exactly symmetric in float32")
        tables.append(
            {
                "bits": bits,
                "centroids": c32,
                "midpoints": m32,
                "search": search_midpoints(m32),
                "iterations": iters,
                "distortion": distortion(c32, m32),
            }
        )
    return tables


def generated(by: str = "") -> str:
    return f"GENERATED by `{COMMAND}` from the type table (tq_gguf/kv/cachetypes.py){by} -- do not edit."


def rows(values: list[str], per_line: int, indent: str) -> str:
    """Array literal body, `per_line` values a line."""
    lines = [", ".join(values[i:i + per_line]) for i in range(0, len(values), per_line)]
    return (",\n" + indent).join(lines)


def hex_list(arr: np.ndarray) -> list[str]:
    return [hexf(v) + "f" for v in arr]


def decimal(v: np.float32) -> str:
    """A decimal literal that rounds to exactly this float32 (9 significant digits suffice)."""
    text = f"{float(v):.9g}"
    return (text if any(ch in text for ch in ".e") else text + ".0") + "f"


def bits_of(v: np.float32) -> str:
    return f"0x{int(np.float32(v).view(np.uint32)):08X}u"


def is_turbo_expr() -> str:
    return " || ".join(f"type == {t.enum}" for t in TYPES)


def c_comment(lines: list[str]) -> list[str]:
    return [f"// {line}".rstrip() for line in lines]


# --- C ----------------------------------------------------------------------------------

def render_public_header(tables: list[dict]) -> str:
    out = c_comment([
        "tq-gguf: the turbo KV-cache types' sizes, for ggml and everything linking against it.",
        "",
        generated(),
        "Included by ggml-tq.h.",
    ])
    out += [
        "#pragma once",
        "",
        '#include "ggml.h"',
        "",
        "#include <stdbool.h>",
        "",
        "// values per block of every turbo type",
        f"#define GGML_TQ_BLOCK     {DIM}",
        "// the rotation acts on groups of one block: the codebooks are the optimum for a",
        f"// rotated block read as a uniform direction in R^{DIM}",
        "#define GGML_TQ_ROT_GROUP GGML_TQ_BLOCK",
        "",
        "static inline bool ggml_tq_is_turbo(enum ggml_type type) {",
        f"    return {is_turbo_expr()};",
        "}",
        "",
    ]
    return "\n".join(out)


def render_blocks_header(tables: list[dict]) -> str:
    out = c_comment([
        "tq-gguf: block layouts of the turbo KV-cache types (docs/FORMAT.md, section 4).",
        "",
        generated(),
        "Included by tq-quants.h once ggml_half is in scope (uint16_t on the host, half in CUDA).",
    ])
    out += ["#pragma once", "", "#define QK_TURBO GGML_TQ_BLOCK",
            "// candidate scales the encoder tries per block (FORMAT.md section 5, step 6)",
            f"#define TQ_SEARCH_STEPS {SEARCH_STEPS}", ""]
    for t in TYPES:
        fields = [("ggml_half d;", "scale (fp16)"),
                  (f"uint8_t   qs[{t.qs}];", ("all" if t.qh == 0 else f"low {t.bits - 1}") + " bits of each index")]
        if t.qh:
            fields.append((f"uint8_t   qh[{t.qh}];", "high bit of each index"))
        width = max(len(decl) for decl, _ in fields)
        out.append(f"// {t.name}: {t.bits}-bit indices, {t.size} bytes per {t.block} values")
        out.append("typedef struct {")
        out += [f"    {decl:<{width}} // {note}" for decl, note in fields]
        out.append(f"}} block_{t.name};")
        out.append(f'static_assert(sizeof(block_{t.name}) == {t.size}, "wrong {t.name} block size");')
        out.append("")
    return "\n".join(out)


def render_header(tables: list[dict]) -> str:
    out = c_comment([
        "tq-gguf: Lloyd-Max codebooks of the turbo KV-cache types (docs/FORMAT.md).",
        "",
        generated(" and the solver in that tool"),
        "The same values are in tq_gguf/reference/codebooks.py and the GPU headers this tool",
        "writes (tests/unit/test_codebooks.py and test_gpu_codebooks.py check that they agree).",
        "",
        f"Law: one coordinate of a uniform unit vector in R^{DIM}, density ∝ (1 - x²)^((d-3)/2).",
        "Index selection (FORMAT.md section 5, step 6): candidate t of the scale search compares",
        "|u| with tq_search_midpoints_<b>bit[t], the positive midpoints times the factor F[t].",
    ])
    out += c_comment([f"Candidate factors F[t]: {', '.join(hexf(v) for v in search_factors())}."])
    out += ["#pragma once", ""]
    for t in tables:
        b, n = t["bits"], 1 << t["bits"]
        out.append(f"// {b}-bit: {n} levels, E|u - Q(u)|^2 = {t['distortion']:.6f} for unit u in R^{DIM}")
        out.append(f"static const float tq_centroids_{b}bit[{n}] = {{ {', '.join(hex_list(t['centroids']))} }};")
        out.append(f"static const float tq_midpoints_{b}bit[{n - 1}] = {{ {', '.join(hex_list(t['midpoints']))} }};")
        out.append(f"static const float tq_search_midpoints_{b}bit[{SEARCH_STEPS}][{n // 2 - 1}] = {{")
        out += [f"    {{ {', '.join(hex_list(row))} }}," for row in t["search"]]
        out.append("};")
        out.append("")
    return "\n".join(out)


# --- CUDA -------------------------------------------------------------------------------

def render_cuda(tables: list[dict]) -> str:
    out = c_comment([
        "tq-gguf: the turbo types' codebooks as CUDA device tables, and their per-type traits.",
        "",
        generated(),
        "Included by tq-cuda.cuh: device code cannot read the host arrays of tq-codebooks.h.",
        "__device__ rather than __constant__: lanes look up different entries, which the",
        "constant cache would serialise, while global loads of one 64-byte table hit L1.",
    ])
    out += ["#pragma once", ""]
    for t in tables:
        b, n = t["bits"], 1 << t["bits"]
        for kind, count in (("centroids", n), ("midpoints", n - 1)):
            out.append(f"static __device__ const float tq_cuda_{kind}_{b}bit[{count}] = {{")
            out.append("    " + rows(hex_list(t[kind]), 4, "    ") + " };")
        out.append(f"// scale search: row t = the {n // 2 - 1} positive midpoints of candidate t")
        out.append(f"static __device__ const float tq_cuda_search_midpoints_{b}bit[{SEARCH_STEPS * (n // 2 - 1)}] = {{")
        out.append("    " + rows(hex_list(t["search"].reshape(-1)), n // 2 - 1, "    ") + " };")
    out += [
        "",
        f"#define TQ_CUDA_SEARCH_STEPS {SEARCH_STEPS}",
        "",
        "// Per-type constants and tables: one specialisation per type, like ggml_cuda_type_traits.",
        "template <ggml_type type> struct tq_cuda_type;",
        "",
    ]
    for t in TYPES:
        out += [
            f"template <> struct tq_cuda_type<{t.enum}> {{",
            f"    typedef block_{t.name} block;",
            f"    static constexpr int bits = {t.bits};",
            f"    static __device__ __forceinline__ const float * centroids() {{ return tq_cuda_centroids_{t.bits}bit; }}",
            f"    static __device__ __forceinline__ const float * midpoints() {{ return tq_cuda_midpoints_{t.bits}bit; }}",
            f"    static __device__ __forceinline__ const float * search_midpoints() {{ return tq_cuda_search_midpoints_{t.bits}bit; }}",
            "};",
            "",
        ]
    out += [
        "static constexpr __host__ __device__ bool tq_cuda_is_turbo(const ggml_type type) {",
        f"    return {is_turbo_expr()};",
        "}",
        "",
    ]
    return "\n".join(out)


# --- Metal ------------------------------------------------------------------------------

def render_metal(tables: list[dict]) -> str:
    out = c_comment([
        "tq-gguf: the turbo types' blocks, codebooks and per-type traits, for Metal.",
        "",
        generated(),
        "Inlined before tq-metal.h like the rest of ggml-metal's kernel headers. Metal sees",
        "ggml-common.h, which does not have the turbo blocks, so they are written here too.",
        "Codebooks in decimal: each literal rounds to exactly the float32 of tq-codebooks.h.",
    ])
    out += ["#pragma once", "", f"#define QK_TURBO {DIM}", ""]
    for t in TYPES:
        out.append("typedef struct {")
        out.append("    half    d;")
        out.append(f"    uint8_t qs[{t.qs}];")
        if t.qh:
            out.append(f"    uint8_t qh[{t.qh}];")
        out.append(f"}} block_{t.name};")
        out.append(f'static_assert(sizeof(block_{t.name}) == {t.size}, "wrong {t.name} block size");')
        out.append("")
    for t in tables:
        b, n = t["bits"], 1 << t["bits"]
        for kind, count in (("centroids", n), ("midpoints", n - 1)):
            out.append(f"constant float tq_metal_{kind}_{b}bit[{count}] = {{")
            out.append("    " + rows([decimal(v) for v in t[kind]], 4, "    ") + " };")
        out.append(f"// scale search: row t = the {n // 2 - 1} positive midpoints of candidate t")
        out.append(f"constant float tq_metal_search_midpoints_{b}bit[{SEARCH_STEPS * (n // 2 - 1)}] = {{")
        out.append("    " + rows([decimal(v) for v in t["search"].reshape(-1)], n // 2 - 1, "    ") + " };")
    out += ["", f"#define TQ_METAL_SEARCH_STEPS {SEARCH_STEPS}", "", "// Per-type constants and tables, one specialisation per block type.",
            "template <typename block_q> struct tq_metal_type;", ""]
    for t in TYPES:
        out += [
            f"template <> struct tq_metal_type<block_{t.name}> {{",
            f"    enum {{ bits = {t.bits} }};",
            f"    static constant float * centroids() {{ return tq_metal_centroids_{t.bits}bit; }}",
            f"    static constant float * midpoints() {{ return tq_metal_midpoints_{t.bits}bit; }}",
            f"    static constant float * search_midpoints() {{ return tq_metal_search_midpoints_{t.bits}bit; }}",
            "};",
            "",
        ]
    return "\n".join(out)


# --- GLSL (Vulkan) ----------------------------------------------------------------------

def render_glsl_blocks(tables: list[dict]) -> str:
    out = ["#if !defined(GGML_TQ_BLOCKS_COMP)", "#define GGML_TQ_BLOCKS_COMP", ""]
    out += c_comment([
        "tq-gguf: block layouts of the turbo KV-cache types for the Vulkan shaders.",
        "",
        generated(),
        "Included at the end of types.glsl. The scale is kept as raw fp16 bits (uint16_t) so",
        "that every decode goes through tq_fp16_to_f32 and stays exact whatever the device",
        "does with fp16 subnormals.",
    ])
    out += ["", f"#define QUANT_K_TURBO {DIM}", "#define QUANT_R_TURBO 1", ""]
    for t in TYPES:
        for packed in (False, True):
            elem, div = ("uint16_t", "/2") if packed else ("uint8_t", "")
            out.append(f"struct block_{t.name}{'_packed16' if packed else ''}")
            out.append("{")
            out.append("    uint16_t d;")
            out.append(f"    {elem} qs[{t.qs}{div}];")
            if t.qh:
                out.append(f"    {elem} qh[{t.qh}{div}];")
            out.append("};")
        out.append("")
    for t in TYPES:
        out += [
            f"#if defined(DATA_A_{t.name.upper()})",
            "#define DATA_A_TURBO",
            f"#define A_TYPE block_{t.name}",
            f"#define A_TYPE_PACKED16 block_{t.name}_packed16",
            f"#define TURBO_BITS {t.bits}",
            "#endif",
        ]
    out += [
        "#if defined(DATA_A_TURBO)",
        "#define QUANT_K QUANT_K_TURBO",
        "#define QUANT_R QUANT_R_TURBO",
        "#endif",
        "",
        "#endif // !defined(GGML_TQ_BLOCKS_COMP)",
        "",
    ]
    return "\n".join(out)


def render_glsl_codebooks(tables: list[dict]) -> str:
    out = ["#if !defined(GGML_TQ_CODEBOOKS_COMP)", "#define GGML_TQ_CODEBOOKS_COMP", ""]
    out += c_comment([
        "tq-gguf: codebooks of the turbo KV-cache types for the Vulkan shaders.",
        "",
        generated(),
        "Included by turbo_funcs.glsl. float32 bit patterns, equal to the hex floats of",
        "tq-codebooks.h: GLSL has no hex float literals.",
    ])
    out.append("")
    for t in tables:
        b, n = t["bits"], 1 << t["bits"]
        for kind, count in (("c", n), ("m", n - 1)):
            arr = t["centroids" if kind == "c" else "midpoints"]
            head = f"const uint tq_{kind}{b}_bits[{count}] = uint[{count}]("
            out.append(head + rows([bits_of(v) for v in arr], 8, " " * len(head)) + ");")
        count = SEARCH_STEPS * (n // 2 - 1)
        head = f"const uint tq_s{b}_bits[{count}] = uint[{count}]("
        out.append(head + rows([bits_of(v) for v in t["search"].reshape(-1)], n // 2 - 1, " " * len(head)) + ");")
    out += ["", "// scale search (FORMAT.md section 5, step 6): candidates per block, and positive",
            "// midpoint j of candidate t",
            f"#define TQ_SEARCH_STEPS {SEARCH_STEPS}u", "", "float tq_search_midpoint(uint bits, uint t, uint j) {"]
    for t in TYPES[:-1]:
        out.append(f"    if (bits == {t.bits}) return uintBitsToFloat(tq_s{t.bits}_bits[t*{(1 << t.bits) // 2 - 1}u + j]);")
    last = TYPES[-1].bits
    out.append(f"    return uintBitsToFloat(tq_s{last}_bits[t*{(1 << last) // 2 - 1}u + j]);")
    out.append("}")
    for kind, name in (("c", "centroid"), ("m", "midpoint")):
        out += ["", f"float tq_{name}(uint bits, uint k) {{"]
        for t in TYPES[:-1]:
            out.append(f"    if (bits == {t.bits}) return uintBitsToFloat(tq_{kind}{t.bits}_bits[k]);")
        out.append(f"    return uintBitsToFloat(tq_{kind}{TYPES[-1].bits}_bits[k]);")
        out.append("}")
    out += ["", "#endif // !defined(GGML_TQ_CODEBOOKS_COMP)", ""]
    return "\n".join(out)


# --- Python -----------------------------------------------------------------------------

def render_module(tables: list[dict]) -> str:
    out = [
        '"""Lloyd-Max codebooks of the turbo types (float32, exact).',
        "",
        generated(),
        "The C header native/tq-codebooks.h carries the same values; docs/FORMAT.md lists them.",
        "",
        "CENTROIDS[bits] holds the 2**bits levels in ascending order, MIDPOINTS[bits]",
        "the 2**bits - 1 decision thresholds between neighbours, both float32.",
        "DISTORTION[bits] is E|u - Q(u)|^2 of the float32 codebook for a uniform unit",
        f"vector u in R^{DIM} (exact quadrature, plain-norm reconstruction).",
        "SEARCH_FACTORS holds the scale search's candidate factors (ascending, float32) and",
        "SEARCH_MIDPOINTS[bits][t] the positive midpoints of candidate t, f32(F[t] * M[j]).",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import numpy as np",
        "",
        f"DIM = {DIM}",
        "",
        "",
        "def _f32(values: list[str]) -> np.ndarray:",
        "    arr = np.array([float.fromhex(v) for v in values], dtype=np.float64).astype(np.float32)",
        "    arr.setflags(write=False)",
        "    return arr",
        "",
        "",
    ]
    for const, kind in (("CENTROIDS", "centroids"), ("MIDPOINTS", "midpoints")):
        out.append(f"{const}: dict[int, np.ndarray] = {{")
        for t in tables:
            vals = ", ".join(f'"{hexf(v)}"' for v in t[kind])
            out.append(f"    {t['bits']}: _f32([{vals}]),")
        out += ["}", ""]
    out.append("DISTORTION: dict[int, float] = {")
    for t in tables:
        out.append(f"    {t['bits']}: {t['distortion']!r},")
    out += ["}", ""]
    out.append(f"SEARCH_FACTORS = _f32([{', '.join(chr(34) + hexf(v) + chr(34) for v in search_factors())}])")
    out += ["", "SEARCH_MIDPOINTS: dict[int, np.ndarray] = {"]
    for t in tables:
        vals = ", ".join(f'"{hexf(v)}"' for v in t["search"].reshape(-1))
        out.append(f"    {t['bits']}: _f32([{vals}]).reshape({SEARCH_STEPS}, -1),")
    out += ["}", ""]
    return "\n".join(out)


# Every generated file: repo path -> renderer.
OUTPUTS: dict[str, Callable[[list[dict]], str]] = {
    "native/include/ggml-tq-types.h": render_public_header,
    "native/tq-blocks.h": render_blocks_header,
    "native/tq-codebooks.h": render_header,
    "native/cuda/tq-codebooks.cuh": render_cuda,
    "native/metal/tq-metal-types.h": render_metal,
    "native/vulkan/tq-blocks.glsl": render_glsl_blocks,
    "native/vulkan/tq-codebooks.glsl": render_glsl_codebooks,
    "tq_gguf/reference/codebooks.py": render_module,
}


def render_all() -> dict[str, str]:
    tables = build_tables()
    return {rel: render(tables) for rel, render in OUTPUTS.items()}


def stale(root: Path = REPO) -> list[str]:
    """Generated files under `root` that differ from what this tool writes."""
    return [rel for rel, text in render_all().items()
            if not (root / rel).is_file() or (root / rel).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the files under this directory instead of the repo")
    ap.add_argument("--check", action="store_true", help="fail if a generated file in the repo is stale")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)

    if args.verbose:
        for t in build_tables():
            print(f"{t['bits']}-bit: {t['iterations']} iterations, distortion {t['distortion']:.6f}")
    if args.check:
        bad = stale()
        for rel in bad:
            print(f"stale: {rel} (run {COMMAND})", file=sys.stderr)
        return 1 if bad else 0

    root = args.out if args.out is not None else REPO
    for rel, text in render_all().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
