#if !defined(GGML_TURBO_FA_DEQUANT_COMP)
#define GGML_TURBO_FA_DEQUANT_COMP

// tq-gguf: the turbo types in ggml-vulkan's flash attention: FA_DEQUANT4_TURBO2/3/4(BUF)
// return values iqs .. iqs + 3 of block ib of a K or V buffer, for flash_attn_dequant.glsl,
// which includes this beside its own FA_DEQUANT4_* macros (they expand where a_offset, ib
// and iqs are in scope) and switches on the type to them.

#include "turbo_funcs.glsl"

// iqs is a multiple of 4 below 64, so the four indices share one shift: bytes
// (iqs % 16 .. +3) of the 2-bit plane (turbo2/3), (iqs % 32 .. +3) of the nibbles (turbo4)
// and bytes (iqs % 8 .. +3) of turbo3's high-bit plane.
#define FA_TURBO_WORD(BUF, FIELD, BYTE) \
    (uint(BUF.data[a_offset + ib].FIELD[(BYTE) / 2]) | (uint(BUF.data[a_offset + ib].FIELD[(BYTE) / 2 + 1]) << 16))

#define FA_TURBO_RETURN(BUF, BITS, K) {                                                           \
    const FLOAT_TYPE d = FLOAT_TYPE(tq_fp16_to_f32(uint(BUF.data[a_offset + ib].d)));            \
    return d * FLOAT_TYPEV4(tq_centroid(BITS, K.x), tq_centroid(BITS, K.y),                       \
                            tq_centroid(BITS, K.z), tq_centroid(BITS, K.w));                      \
}

#define FA_DEQUANT4_TURBO2(BUF) {                                                                 \
    const uint w = FA_TURBO_WORD(BUF, qs, iqs % 16) >> (2 * (iqs / 16));                           \
    const uvec4 k = uvec4(w, w >> 8, w >> 16, w >> 24) & 3u;                                      \
    FA_TURBO_RETURN(BUF, 2, k)                                                                    \
}

#define FA_DEQUANT4_TURBO3(BUF) {                                                                 \
    const uint w = FA_TURBO_WORD(BUF, qs, iqs % 16) >> (2 * (iqs / 16));                           \
    const uint h = FA_TURBO_WORD(BUF, qh, iqs % 8) >> (iqs / 8);                                   \
    const uvec4 k = (uvec4(w, w >> 8, w >> 16, w >> 24) & 3u)                                     \
                  | ((uvec4(h, h >> 8, h >> 16, h >> 24) & 1u) << 2);                             \
    FA_TURBO_RETURN(BUF, 3, k)                                                                    \
}

#define FA_DEQUANT4_TURBO4(BUF) {                                                                 \
    const uint w = FA_TURBO_WORD(BUF, qs, iqs % 32) >> (4 * (iqs / 32));                           \
    const uvec4 k = uvec4(w, w >> 8, w >> 16, w >> 24) & 0xFu;                                    \
    FA_TURBO_RETURN(BUF, 4, k)                                                                    \
}

#endif // !defined(GGML_TURBO_FA_DEQUANT_COMP)
