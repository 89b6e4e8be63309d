#if !defined(GGML_TCQ_FA_DEQUANT_COMP)
#define GGML_TCQ_FA_DEQUANT_COMP

// tq-gguf: the trellis-coded value types in ggml-vulkan's flash attention: FA_DEQUANT4_TCQ2/3(BUF)
// return values iqs .. iqs + 3 of block ib of a V buffer, for flash_attn_dequant.glsl, which
// includes this after turbo_fa_dequant.glsl (FA_TURBO_WORD) and switches on the type to them.
// They expand where a_offset, ib and iqs are in scope.
//
// Each value decodes alone (FORMAT.md 12.6): its level is picked by its rank and the window
// of memory + 1 branch bits ending at it. iqs is a multiple of 4 below 64, so the four values
// lie in one 16-bit word h = iqs / 16 of the branch plane qb, and their windows in that word
// and the one before it (zero before value 0).

#include "tcq_funcs.glsl"

// the 32-bit window qb[h] : qb[h - 1] of the branch plane, u[16 (h - 1)] in bit 0
#define FA_TCQ_BRANCHES(BUF)                                                                      \
    ((uint(BUF.data[a_offset + ib].qb[iqs / 16]) << 16)                                           \
     | (iqs >= 16 ? uint(BUF.data[a_offset + ib].qb[(iqs / 16 + 3) & 3]) : 0u))

#define FA_TCQ_RETURN(BUF, BITS, R) {                                                             \
    const uint b = FA_TCQ_BRANCHES(BUF) >> (16u + iqs % 16u - tq_tcq_memory(BITS));               \
    const uint wm = (2u << tq_tcq_memory(BITS)) - 1u;                                             \
    const uvec4 w = uvec4(b, b >> 1, b >> 2, b >> 3) & wm;                                        \
    const FLOAT_TYPE d = FLOAT_TYPE(tq_fp16_to_f32(uint(BUF.data[a_offset + ib].d)));            \
    return d * FLOAT_TYPEV4(tq_tcq_window_level(BITS, w.x, R.x), tq_tcq_window_level(BITS, w.y, R.y), \
                            tq_tcq_window_level(BITS, w.z, R.z), tq_tcq_window_level(BITS, w.w, R.w)); \
}

// tcq2: 1-bit ranks, value i in bit i % 16 of 16-bit word i / 16
#define FA_DEQUANT4_TCQ2(BUF) {                                                                   \
    const uint rw = uint(BUF.data[a_offset + ib].qs[iqs / 16]) >> (iqs % 16);                    \
    const uvec4 r = uvec4(rw, rw >> 1, rw >> 2, rw >> 3) & 1u;                                    \
    FA_TCQ_RETURN(BUF, 2, r)                                                                      \
}

// tcq3: 2-bit ranks in turbo2's arrangement, bytes iqs % 16 .. + 3 shifted by 2 (iqs / 16)
#define FA_DEQUANT4_TCQ3(BUF) {                                                                   \
    const uint rw = FA_TURBO_WORD(BUF, qs, iqs % 16) >> (2 * (iqs / 16));                          \
    const uvec4 r = uvec4(rw, rw >> 8, rw >> 16, rw >> 24) & 3u;                                  \
    FA_TCQ_RETURN(BUF, 3, r)                                                                      \
}

#endif // !defined(GGML_TCQ_FA_DEQUANT_COMP)
