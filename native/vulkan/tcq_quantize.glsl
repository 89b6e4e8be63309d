#if !defined(GGML_TCQ_QUANTIZE_COMP)
#define GGML_TCQ_QUANTIZE_COMP

// tq-gguf: quantize(dst_idx, src_idx) of the trellis-coded value types tcq2 and tcq3 for
// ggml-vulkan's copy_to_quant.comp (SET_ROWS and f32 -> tcq CPY), which includes this under
// DATA_A_TCQ in place of upstream's per-type quantize(); it reads data_s and writes data_q,
// that shader's buffers. TURBO_SRC_F16 says whether S_TYPE holds fp16 bits, as for turbo.
//
// One block per invocation, the Viterbi search of FORMAT.md 12.5 in the order of the C
// reference (tq_tcq_quantize_block_ref in native/tq-tcq.c), so the bytes are the reference's:
//  - the halving trees are written out;
//  - every product that feeds an addition, a subtraction or a comparison is computed on the
//    integer significands and correctly rounded (tq_mul_rn, tq_square_rn, tq_tcq_mul), so no
//    float multiply is left for a compiler to fuse or reorder; sqrt and division are
//    turbo_funcs.glsl's exact ones;
//  - a state no path reaches yet costs 2^100 instead of the reference's +inf: Vulkan does not
//    promise to keep infinities without float controls, and 2^100 behaves as +inf does here
//    (2^100 + e == 2^100 for every error e < 3, which no reachable cost, at most 64 * 3, comes
//    near), so every decision and every reachable cost is the reference's.

#include "tcq_funcs.glsl"

// Source value as float32 bits: f32 rows are read as bits, f16 rows (S_TYPE uint16_t) are
// widened exactly, so nothing is flushed before range conditioning.
uint tcq_src_bits(uint i) {
#if TURBO_SRC_F16
    return floatBitsToUint(tq_fp16_to_f32(uint(data_s[i])));
#else
    return floatBitsToUint(data_s[i]);
#endif
}

#define TCQ_STATES  (1u << tq_tcq_memory(TCQ_BITS))
#define TCQ_NMID    (tq_tcq_ranks(TCQ_BITS) - 1u)
#define TCQ_SCALES  tq_tcq_scales(TCQ_BITS)
#define TCQ_UNREACHED uintBitsToFloat(0x71800000u) // 2^100

// rank of the nearest level of subset j: the midpoints below v (strict: on a midpoint, the lower rank)
uint tcq_rank(uint j, float v) {
    uint r = 0u;
    [[unroll]] for (uint k = 0u; k < TCQ_NMID; ++k) {
        r += v > tq_tcq_midpoint(TCQ_BITS, j, k) ? 1u : 0u;
    }
    return r;
}

void quantize(uint dst_idx, uint src_idx)
{
    float x[QUANT_K_TCQ];
    bool finite = true;
    [[unroll]] for (uint j = 0u; j < QUANT_K_TCQ; ++j) {
        const uint b = tcq_src_bits(src_idx + j);
        finite = finite && (b & 0x7F800000u) != 0x7F800000u;
        x[j] = tq_condition_bits(b);
    }

    uint  d = 0u;
    uvec2 branch = uvec2(0u);            // u[i]: bit i % 32 of word i / 32
    uint  rank[4] = uint[4](0u, 0u, 0u, 0u);
    if (!finite) {
        d = 0x7E00u;                     // step 1: every other bit 0
    } else {
        // step 3: sum of squares, the halving tree
        float s[32];
        [[unroll]] for (uint i = 0u; i < 32u; ++i) {
            s[i] = tq_square_rn(x[i]) + tq_square_rn(x[i + 32u]);
        }
        [[unroll]] for (uint h = 16u; h >= 1u; h /= 2u) {
            [[unroll]] for (uint i = 0u; i < h; ++i) {
                s[i] = s[i] + s[i + h];
            }
        }
        const float ss = s[0];

        if (ss != 0.0) {                 // step 4: an all-zero block stays all 0
            const float norm = tq_sqrt_rn(ss);
            const float inv  = tq_div_rn(1.0, norm);

            // step 6: one Viterbi per candidate. Bit k of byte i % 4 of took[16 t + i / 4]: state
            // k after value i came from its second predecessor p1.
            uint  took[16u * 4u];
            float best = 0.0;
            uint  win  = 0u;
            [[dont_unroll]] for (uint t = 0u; t < TCQ_SCALES; ++t) {
                const float st = tq_mul_rn(inv, tq_tcq_inv_factor(TCQ_BITS, t));
                float cost[8];
                [[unroll]] for (uint k = 0u; k < 8u; ++k) {
                    cost[k] = k == 0u ? 0.0 : TCQ_UNREACHED;  // every block starts in state 0
                }
                [[dont_unroll]] for (uint i = 0u; i < QUANT_K_TCQ; ++i) {
                    const float v = tq_tcq_mul(x[i], st);
                    float e[4];
                    [[unroll]] for (uint j = 0u; j < 4u; ++j) {
                        const float dl = v - tq_tcq_level(TCQ_BITS, j + 4u * tcq_rank(j, v));
                        e[j] = tq_square_rn(dl);
                    }
                    // state k is reached from p0 = k >> 1 and p1 = p0 + S/2 with branch bit k & 1
                    float next[8];
                    uint  tk = 0u;
                    [[unroll]] for (uint k = 0u; k < TCQ_STATES; ++k) {
                        const uint  p0 = k >> 1u;
                        const uint  p1 = p0 + TCQ_STATES / 2u;
                        const uint  b  = k & 1u;
                        const float c0 = cost[p0] + e[tq_tcq_subset(TCQ_BITS, p0, b)];
                        const float c1 = cost[p1] + e[tq_tcq_subset(TCQ_BITS, p1, b)];
                        const bool  one = c1 < c0;             // a tie keeps p0
                        next[k] = one ? c1 : c0;
                        tk |= (one ? 1u : 0u) << k;
                    }
                    [[unroll]] for (uint k = 0u; k < TCQ_STATES; ++k) {
                        cost[k] = next[k];
                    }
                    const uint slot = 16u * t + i / 4u;
                    const uint sh   = 8u * (i % 4u);
                    took[slot] = (sh == 0u ? 0u : took[slot]) | (tk << sh);
                }
                // every block ends in state 0; step 7: a tie keeps the earlier candidate
                const float metric = tq_mul_rn(cost[0], tq_tcq_factor_sq(TCQ_BITS, t));
                if (t == 0u || metric < best) {
                    best = metric;
                    win  = t;
                }
            }

            // step 8: the winner's path, traced back from state 0; each value's rank is the one
            // its search used
            const float sw = tq_mul_rn(inv, tq_tcq_inv_factor(TCQ_BITS, win));
            float c2[QUANT_K_TCQ];
            uint state = 0u;
            [[dont_unroll]] for (int i = int(QUANT_K_TCQ) - 1; i >= 0; --i) {
                const uint tk   = (took[16u * win + uint(i) / 4u] >> (8u * (uint(i) % 4u))) & 0xFFu;
                const uint prev = (state >> 1u) + ((tk >> state) & 1u) * (TCQ_STATES / 2u);
                const uint u    = state & 1u;
                const uint j    = tq_tcq_subset(TCQ_BITS, prev, u);
                const uint r    = tcq_rank(j, tq_tcq_mul(x[i], sw));
                branch[uint(i) / 32u] |= u << (uint(i) % 32u);
#if TCQ_BITS == 3
                rank[uint(i) / 16u] |= r << (2u * (uint(i) % 16u));
#else
                rank[uint(i) / 32u] |= r << (uint(i) % 32u);
#endif
                c2[i] = tq_square_rn(tq_tcq_level(TCQ_BITS, j + 4u * r));
                state = prev;
            }

            // step 9: the norm-preserving scale, |x| / |c|
            float t2[32];
            [[unroll]] for (uint i = 0u; i < 32u; ++i) {
                t2[i] = c2[i] + c2[i + 32u];
            }
            [[unroll]] for (uint h = 16u; h >= 1u; h /= 2u) {
                [[unroll]] for (uint i = 0u; i < h; ++i) {
                    t2[i] = t2[i] + t2[i + h];
                }
            }
            // step 10: fp16, round to nearest even, saturating at 65504
            d = tq_scale_to_fp16(tq_div_rn(norm, tq_sqrt_rn(t2[0])));
        }
    }

    // FORMAT.md 12.4
    data_q[dst_idx].d = uint16_t(d);
#if TCQ_BITS == 3
    [[unroll]] for (uint j = 0u; j < 16u; ++j) {
        uint q = 0u;
        [[unroll]] for (uint k = 0u; k < 4u; ++k) {
            q |= ((rank[k] >> (2u * j)) & 3u) << (2u * k);  // r[j + 16k], turbo2's arrangement
        }
        data_q[dst_idx].qs[j] = uint8_t(q);
    }
#else
    [[unroll]] for (uint j = 0u; j < 8u; ++j) {
        data_q[dst_idx].qs[j] = uint8_t((rank[j / 4u] >> (8u * (j % 4u))) & 0xFFu);
    }
#endif
    [[unroll]] for (uint j = 0u; j < 8u; ++j) {
        data_q[dst_idx].qb[j] = uint8_t((branch[j / 4u] >> (8u * (j % 4u))) & 0xFFu);
    }
}

#endif // !defined(GGML_TCQ_QUANTIZE_COMP)
