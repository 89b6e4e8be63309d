#if !defined(GGML_TURBO_QUANTIZE_COMP)
#define GGML_TURBO_QUANTIZE_COMP

// tq-gguf: quantize(dst_idx, src_idx) of the turbo types for ggml-vulkan's copy_to_quant.comp
// (SET_ROWS and f32/f16 -> turbo CPY), which includes this under DATA_A_TURBO in place of
// upstream's per-type quantize(); it reads data_s and writes data_q, that shader's buffers.
// TURBO_SRC_F16 says whether S_TYPE holds fp16 bits.

#include "turbo_funcs.glsl"

// Source value as float32 bits: f32 rows are read as bits, f16 rows (S_TYPE uint16_t) are
// widened exactly, so nothing is flushed before range conditioning.
uint turbo_src_bits(uint i) {
#if TURBO_SRC_F16
    return floatBitsToUint(tq_fp16_to_f32(uint(data_s[i])));
#else
    return floatBitsToUint(data_s[i]);
#endif
}

// One block per invocation, in exactly the order of FORMAT.md section 5 (the halving trees
// are written out, so the sums are the reference's whatever the subgroup size).
void quantize(uint dst_idx, uint src_idx)
{
    const uint N = 1u << TURBO_BITS;
    float x[QUANT_K_TURBO];
    uint idx[QUANT_K_TURBO];
    bool finite = true;

    [[unroll]] for (uint j = 0; j < QUANT_K_TURBO; ++j) {
        const uint b = turbo_src_bits(src_idx + j);
        finite = finite && (b & 0x7F800000u) != 0x7F800000u;
        x[j] = tq_condition_bits(b);
    }

    uint d = 0u;
    if (!finite) {
        d = 0x7E00u;
        [[unroll]] for (uint j = 0; j < QUANT_K_TURBO; ++j) {
            idx[j] = 0u;
        }
    } else {
        float s[32];
        [[unroll]] for (uint i = 0; i < 32; ++i) {
            s[i] = tq_square_rn(x[i]) + tq_square_rn(x[i + 32]);
        }
        [[unroll]] for (uint h = 16; h >= 1; h /= 2) {
            [[unroll]] for (uint i = 0; i < h; ++i) {
                s[i] = s[i] + s[i + h];
            }
        }
        const float ss = s[0];

        if (ss == 0.0) {
            [[unroll]] for (uint j = 0; j < QUANT_K_TURBO; ++j) {
                idx[j] = N/2 - 1;
            }
        } else {
            const float norm = tq_sqrt_rn(ss);
            const float inv  = tq_div_rn(1.0, norm);
            float u[QUANT_K_TURBO];
            [[unroll]] for (uint j = 0; j < QUANT_K_TURBO; ++j) {
                u[j] = x[j]*inv;
            }

            // step 6: the scale search. cnt[j] counts the positive midpoints of a candidate
            // below |u[j]| (strict: a tie goes to the index nearer zero); p and cs are the
            // halving trees of |x|*|C| and C*C over the candidate's centroids. The candidate
            // loop stays rolled: unrolled eight times the shader only compiles slower.
            uint  cnt[QUANT_K_TURBO];
            float best = 0.0;
            float cs   = 0.0;
            [[dont_unroll]] for (uint t = 0; t < TQ_SEARCH_STEPS; ++t) {
                uint k[QUANT_K_TURBO];
                [[unroll]] for (uint j = 0; j < QUANT_K_TURBO; ++j) {
                    const float a = abs(u[j]);
                    uint n = 0u;
                    [[unroll]] for (uint m = 0; m < N/2 - 1; ++m) {
                        n += a > tq_search_midpoint(TURBO_BITS, t, m) ? 1u : 0u;
                    }
                    k[j] = n;
                }
                float p[32];
                float c2[32];
                [[unroll]] for (uint i = 0; i < 32; ++i) {
                    // |C[idx]| is the positive half of the codebook
                    const float ca = tq_centroid(TURBO_BITS, N/2 + k[i]);
                    const float cb = tq_centroid(TURBO_BITS, N/2 + k[i + 32]);
                    p[i]  = tq_mul_rn(abs(x[i]), ca) + tq_mul_rn(abs(x[i + 32]), cb);
                    c2[i] = tq_square_rn(ca) + tq_square_rn(cb);
                }
                [[unroll]] for (uint h = 16; h >= 1; h /= 2) {
                    [[unroll]] for (uint i = 0; i < h; ++i) {
                        p[i]  = p[i] + p[i + h];
                        c2[i] = c2[i] + c2[i + h];
                    }
                }
                const float score = tq_div_rn(p[0], tq_sqrt_rn(c2[0]));
                // the first of equal scores stays
                if (t == 0 || score > best) {
                    best = score;
                    cs   = c2[0];
                    cnt  = k;
                }
            }
            [[unroll]] for (uint j = 0; j < QUANT_K_TURBO; ++j) {
                idx[j] = u[j] > 0.0 ? N/2 + cnt[j] : N/2 - 1 - cnt[j]; // +0 takes N/2 - 1
            }

            // step 7: norm-preserving scale from the winner's centroids
            const float cnorm = tq_sqrt_rn(cs);
            d = tq_scale_to_fp16(tq_div_rn(norm, cnorm));
        }
    }

    data_q[dst_idx].d = uint16_t(d);
#if TURBO_BITS == 4
    [[unroll]] for (uint j = 0; j < 32; ++j) {
        data_q[dst_idx].qs[j] = uint8_t(idx[j] | (idx[j + 32] << 4));
    }
#else
    [[unroll]] for (uint j = 0; j < 16; ++j) {
        data_q[dst_idx].qs[j] = uint8_t((idx[j] & 3u) | ((idx[j + 16] & 3u) << 2) | ((idx[j + 32] & 3u) << 4) | ((idx[j + 48] & 3u) << 6));
    }
#endif
#if TURBO_BITS == 3
    [[unroll]] for (uint j = 0; j < 8; ++j) {
        uint h = 0u;
        [[unroll]] for (uint b = 0; b < 8; ++b) {
            h |= ((idx[j + 8*b] >> 2) & 1u) << b;
        }
        data_q[dst_idx].qh[j] = uint8_t(h);
    }
#endif
}

#endif // !defined(GGML_TURBO_QUANTIZE_COMP)
