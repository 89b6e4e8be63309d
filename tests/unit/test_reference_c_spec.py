"""A plain C transcription of docs/FORMAT.md, compiled against the generated header,
must produce the reference's bytes: the spec is implementable as written and
native/tq-codebooks.h is usable from C. Skipped where no C compiler exists."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tq_gguf.reference import QTYPES, TYPE_SIZE, dequantize, quantize

REPO = Path(__file__).resolve().parents[2]
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")

SPEC_C = r"""
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "tq-codebooks.h"

static float tree(const float * v) {           /* FORMAT.md 5.3: halving tree */
    float s[32];
    for (int i = 0; i < 32; ++i) s[i] = v[i] + v[i + 32];
    for (int h = 16; h >= 1; h /= 2) for (int i = 0; i < h; ++i) s[i] = s[i] + s[i + h];
    return s[0];
}

static uint16_t to_half(float f) {             /* RNE, subnormals kept, saturating */
    uint32_t x; memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
    if (a >= 0x477ff000u) return (uint16_t) (sign | 0x7bffu);          /* >= 65520: saturate */
    if (a < 0x38800000u) {                                             /* fp16 subnormal or zero */
        if (a < 0x33000000u) return (uint16_t) sign;                   /* <= 2^-25: zero */
        uint32_t m = (a & 0x7fffffu) | 0x800000u, e = a >> 23;
        uint32_t shift = 126 - e, h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        h += (rem > half) || (rem == half && (h & 1));
        return (uint16_t) (sign | h);
    }
    uint32_t h = ((a >> 13) - (112u << 10)), rem = a & 0x1fffu;
    h += (rem > 0x1000u) || (rem == 0x1000u && (h & 1));
    return (uint16_t) (sign | h);
}

static void quantize_block(const float * xin, int bits, uint8_t * out) {
    const float * C = bits == 2 ? tq_centroids_2bit : bits == 3 ? tq_centroids_3bit : tq_centroids_4bit;
    const int n = 1 << bits;
    uint8_t idx[64];
    uint16_t d;
    int finite = 1;
    for (int i = 0; i < 64; ++i) finite &= isfinite(xin[i]) != 0;
    if (!finite) {
        d = 0x7e00; memset(idx, 0, 64);
    } else {
        float x[64], sq[64];
        for (int i = 0; i < 64; ++i) {
            float v = fminf(fmaxf(xin[i], -0x1p60f), 0x1p60f);
            x[i] = fabsf(v) < 0x1p-63f ? 0.0f : v;
            sq[i] = x[i] * x[i];
        }
        const float ss = tree(sq);
        if (ss == 0.0f) {
            d = 0; memset(idx, n / 2 - 1, 64);
        } else {
            const float norm = sqrtf(ss), inv = 1.0f / norm;
            const float * P = bits == 2 ? &tq_search_midpoints_2bit[0][0] : bits == 3 ? &tq_search_midpoints_3bit[0][0]
                                                                       : &tq_search_midpoints_4bit[0][0];
            const int half = n / 2;
            float best = -INFINITY, best_cs = 0.0f;
            for (int t = 0; t < 8; ++t) {             /* FORMAT.md 5.6: the scale search */
                uint8_t k[64];
                float p[64], c2[64];
                for (int i = 0; i < 64; ++i) {
                    const float u = x[i] * inv, a = fabsf(u);
                    int cnt = 0;
                    for (int j = 0; j < half - 1; ++j) cnt += a > P[t * (half - 1) + j];
                    k[i] = (uint8_t) (u > 0.0f ? half + cnt : half - 1 - cnt);
                    const float c = fabsf(C[k[i]]);
                    p[i] = fabsf(x[i]) * c;
                    c2[i] = c * c;
                }
                const float cs = tree(c2), score = tree(p) / sqrtf(cs);
                if (score > best) { best = score; best_cs = cs; memcpy(idx, k, 64); }
            }
            d = to_half(norm / sqrtf(best_cs));
        }
    }
    out[0] = (uint8_t) d; out[1] = (uint8_t) (d >> 8);
    if (bits == 4) {
        for (int j = 0; j < 32; ++j) out[2 + j] = (uint8_t) (idx[j] | idx[j + 32] << 4);
    } else {
        for (int j = 0; j < 16; ++j)
            out[2 + j] = (uint8_t) ((idx[j] & 3) | (idx[j + 16] & 3) << 2 | (idx[j + 32] & 3) << 4 | (idx[j + 48] & 3) << 6);
        if (bits == 3)
            for (int j = 0; j < 8; ++j) {
                uint8_t h = 0;
                for (int k = 0; k < 8; ++k) h |= (uint8_t) (((idx[j + 8 * k] >> 2) & 1) << k);
                out[18 + j] = h;
            }
    }
}

int main(int argc, char ** argv) {
    const int bits = argv[1][0] - '0', size = 2 + 64 * bits / 8;
    float x[64];
    uint8_t out[34];
    (void) argc;
    while (fread(x, sizeof(float), 64, stdin) == 64) {
        quantize_block(x, bits, out);
        fwrite(out, 1, (size_t) size, stdout);
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def spec_binary(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("cspec")
    (d / "spec.c").write_text(SPEC_C)
    exe = d / "spec"
    subprocess.run(
        [CC, "-std=c99", "-O2", "-ffp-contract=off", "-fno-fast-math", "-I", str(REPO / "native"),
         str(d / "spec.c"), "-o", str(exe), "-lm"],
        check=True,
        capture_output=True,
    )
    return exe


def _blocks() -> np.ndarray:
    rng = np.random.default_rng(21)
    parts = [
        rng.standard_normal((400, 64)),
        rng.standard_t(2, (200, 64)),
        rng.standard_normal((50, 64)) * 1e5,
        rng.standard_normal((50, 64)) * 1e-6,
        rng.standard_normal((50, 64)) * 1e-19,
        rng.standard_normal((50, 64)) * 1e-40,
        rng.standard_normal((50, 64)) * 1e25,
        rng.integers(-3, 4, (50, 64)) / 4.0,
    ]
    x = np.concatenate(parts).astype(np.float32)
    x[0] = 0
    x[1] = -0.0
    x[2, 5] = np.nan
    x[3, 60] = np.inf
    x[4, :] = 0
    x[4, 17] = 2.5
    return x


@pytest.mark.parametrize("qtype", QTYPES)
def test_c_transcription_matches_reference(spec_binary, qtype):
    x = _blocks()
    bits = int(qtype[-1])
    got = subprocess.run([str(spec_binary), str(bits)], input=x.tobytes(), capture_output=True, check=True).stdout
    want = quantize(x, qtype)
    assert len(got) == x.shape[0] * TYPE_SIZE[qtype]
    raw = np.frombuffer(got, dtype=np.uint8).reshape(want.shape)
    mismatched = np.flatnonzero((raw != want).any(axis=1))
    assert mismatched.size == 0, f"blocks differ: {mismatched[:10]}"
    assert np.array_equal(dequantize(raw, qtype).view(np.uint32), dequantize(want, qtype).view(np.uint32))
