#if !defined(GGML_TCQ_FUNCS_COMP)
#define GGML_TCQ_FUNCS_COMP

// tq-gguf: numerics of the trellis-coded value types tcq2 and tcq3 (docs/FORMAT.md, section 12),
// shared by their encoder (tcq_quantize.glsl, in copy_to_quant.comp) and their exact decoder
// (get_rows_quant.comp, copy_from_quant.comp). Flash attention decodes them with the macros of
// tcq_fa_dequant.glsl. The blocks and tables (tq-tcq-tables.glsl) come with types.glsl.
//
// The turbo types' exact arithmetic (turbo_funcs.glsl) carries over: fp16 bits widened and
// rounded by hand, sqrt and division on the integer significands, and every product that
// feeds an addition or a subtraction computed on the significands too, so that no float
// multiply is left for a compiler to fuse (FORMAT.md 12.5, numerics).

#include "turbo_funcs.glsl"

// Correctly rounded a*b for a zero or normal float32 a and a normal float32 b, where the
// product may underflow: the encoder's v = x[i] * s_t (FORMAT.md 12.5, step 6). A product below
// the normal range comes back as a zero of its sign. That is exact enough: such a v compares
// with every subset midpoint and subtracts from every level (all at least 2^-7 in magnitude)
// exactly as the reference's subnormal v does, which is the spec's own argument for FTZ.
float tq_tcq_mul(float a, float b) {
    const uint ab = floatBitsToUint(a);
    const uint bb = floatBitsToUint(b);
    const uint sign = (ab ^ bb) & 0x80000000u;
    if ((ab & 0x7FFFFFFFu) == 0u) {
        return uintBitsToFloat(sign);
    }
    // the 48-bit product of the significands, rounded to 24 bits, ties to even (tq_mul_rn)
    const uint64_t p = uint64_t((ab & 0x7FFFFFu) | 0x800000u) * uint64_t((bb & 0x7FFFFFu) | 0x800000u);
    const int shift = p >= (1ul << 47) ? 24 : 23;
    uint64_t q = p >> shift;
    const uint64_t rem = p & ((1ul << shift) - 1ul);
    const uint64_t mid = 1ul << (shift - 1);
    if (rem > mid || (rem == mid && (q & 1ul) != 0ul)) {
        q += 1ul;
    }
    int ex = int((ab >> 23) & 0xFFu) + int((bb >> 23) & 0xFFu) - 150 + shift;
    uint qq = uint(q);
    if (qq == 0x1000000u) {
        qq = 0x800000u;
        ex += 1;
    }
    if (ex <= 0) { // below 2^-126
        return uintBitsToFloat(sign);
    }
    return uintBitsToFloat(sign | (uint(ex) << 23) | (qq & 0x7FFFFFu));
}

// The level of value i from its window of memory + 1 branch bits (u[i - memory] in bit 0 ..
// u[i] in bit memory) and its rank: L[SUB[s_i][u_i] + 4 r_i] (FORMAT.md 12.2 and 12.6).
float tq_tcq_window_level(uint bits, uint w, uint r) {
    return tq_tcq_level(bits, tq_tcq_window_subset(bits, w) + 4u * r);
}

#if defined(DATA_A_TCQ) && defined(TCQ_DECODE_DATA_A)
// Value i of block ib of data_a: f32(d) * L[idx] as one float32 multiply (FORMAT.md 12.6),
// decoded on its own from the branch bits below it.
float tcq_dequant1(uint ib, uint i) {
    const float d = tq_fp16_to_f32(uint(data_a[ib].d));
    const uint m = tq_tcq_memory(TCQ_BITS);
    uint w = 0u;
    [[unroll]] for (uint k = 0u; k <= m; ++k) {
        const int p = int(i) - int(m) + int(k);
        if (p >= 0) {
            w |= ((uint(data_a[ib].qb[p / 8]) >> (p % 8)) & 1u) << k;
        }
    }
#if TCQ_BITS == 3
    const uint r = (uint(data_a[ib].qs[i % 16u]) >> (2u * (i / 16u))) & 3u;
#else
    const uint r = (uint(data_a[ib].qs[i / 8u]) >> (i % 8u)) & 1u;
#endif
    return d * tq_tcq_window_level(TCQ_BITS, w, r);
}
#endif

#endif // !defined(GGML_TCQ_FUNCS_COMP)
