#if !defined(GGML_TURBO_FUNCS_COMP)
#define GGML_TURBO_FUNCS_COMP

// tq-gguf: numerics of the turbo types (docs/FORMAT.md, sections 3-6), shared by the
// quantizer (copy_to_quant.comp) and the exact decoders (get_rows_quant.comp,
// copy_from_quant.comp) and flash attention (flash_attn_dequant.glsl).
//
// FORMAT.md wants the bytes of the C reference on every device. Vulkan only promises
// correctly rounded +, -, * (and comparisons); sqrt and division may be off by ULPs and
// fp16 conversions may flush subnormals or round differently. So:
//  - sqrt and division are computed on the integer significands (uint64_t, which
//    types.glsl already requires) and rounded to nearest-even by hand: correct by
//    construction, whatever the device's sqrt/div; the float sqrt/div only seed the
//    integer search, and the search fixes any error of the seed;
//  - float <-> fp16 are bit manipulations;
//  - the squares and products that feed the halving-tree sums are also computed on the
//    significands (tq_mul_rn, tq_square_rn): with no float multiply in front of those
//    additions there is nothing a compiler could fuse into an FMA. `precise`/NoContraction
//    is not enough on its own: spirv-opt's loop unroller (glslc -O, as vulkan-shaders-gen
//    runs it) drops the NoContraction decoration on the copies it makes. The remaining
//    float multiplies (x * inv, d * C) feed no addition;
//  - inputs are read as bits and conditioned (section 5, step 2) before any float
//    arithmetic, so FTZ/DAZ hardware sees no subnormal.

// Copied with the rest of native/ to ggml/src/tq/vulkan by tq-gguf's build; the shaders
// include it from there, and it finds ggml-vulkan's types.glsl the same way.
#include "../../ggml-vulkan/vulkan-shaders/types.glsl"
// tq_centroid(bits, k) and tq_midpoint(bits, k), generated from the type table
#include "tq-codebooks.glsl"

// exact widening of fp16 bits (subnormals, infinities and NaN included)
float tq_fp16_to_f32(uint h) {
    const uint sign = (h & 0x8000u) << 16;
    const uint e    = (h >> 10) & 0x1Fu;
    const uint m    = h & 0x3FFu;
    if (e == 0u) {
        // m * 2^-24 is exact and a normal float32 (or zero)
        const float v = float(m) * uintBitsToFloat(0x33800000u);
        return uintBitsToFloat(floatBitsToUint(v) | sign);
    }
    if (e == 31u) {
        return uintBitsToFloat(sign | 0x7F800000u | (m << 13));
    }
    return uintBitsToFloat(sign | ((e + 112u) << 23) | (m << 13));
}

// fp16 bits of a positive normal float32 scale: round to nearest even, fp16 subnormals
// kept, finite values beyond 65504 saturate (FORMAT.md section 5, step 8).
uint tq_scale_to_fp16(float f) {
    const uint b = floatBitsToUint(f);
    if (b > 0x477FE000u) { // > 65504
        return 0x7BFFu;
    }
    const int  e = int(b >> 23) - 127;
    const uint m = (b & 0x7FFFFFu) | 0x800000u;
    if (e >= -14) {
        uint v = (uint(e + 15) << 10) | ((m & 0x7FFFFFu) >> 13);
        const uint rem = m & 0x1FFFu;
        // a carry out of the mantissa correctly bumps the exponent
        if (rem > 0x1000u || (rem == 0x1000u && (v & 1u) != 0u)) {
            v += 1u;
        }
        return v;
    }
    // subnormal half: units of 2^-24, value = m * 2^(e+1) units
    const int shift = -e - 1; // >= 14
    if (shift >= 32) {
        return 0u;
    }
    uint v = m >> shift;
    const uint rem  = m & ((1u << shift) - 1u);
    const uint mid  = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (v & 1u) != 0u)) {
        v += 1u;
    }
    return v;
}

// Correctly rounded a*b where a is zero or a normal float32, b is a normal float32, and a
// nonzero product is a normal float32 (a zero a gives +0.0): the 48-bit product of the
// significands, rounded to 24 bits, ties to even. The encoder calls it for the squares of
// conditioned values (zero, or 2^-63 <= |x| <= 2^60) and of centroids, and for |x| * |C|
// (|C| in [2^-7, 1)).
float tq_mul_rn(float a, float b) {
    const uint ab = floatBitsToUint(a);
    const uint bb = floatBitsToUint(b);
    if ((ab & 0x7FFFFFFFu) == 0u) {
        return 0.0;
    }
    const uint64_t p = uint64_t((ab & 0x7FFFFFu) | 0x800000u) * uint64_t((bb & 0x7FFFFFu) | 0x800000u);
    const int shift = p >= (1ul << 47) ? 24 : 23;
    uint64_t q = p >> shift;
    const uint64_t rem = p & ((1ul << shift) - 1ul);
    const uint64_t mid = 1ul << (shift - 1);
    if (rem > mid || (rem == mid && (q & 1ul) != 0ul)) {
        q += 1ul;
    }
    // |a * b| = q * 2^(ea + eb - 300 + shift), ea and eb the biased exponents
    int ex = int((ab >> 23) & 0xFFu) + int((bb >> 23) & 0xFFu) - 150 + shift;
    uint qq = uint(q);
    if (qq == 0x1000000u) {
        qq = 0x800000u;
        ex += 1;
    }
    return uintBitsToFloat(((ab ^ bb) & 0x80000000u) | (uint(ex) << 23) | (qq & 0x7FFFFFu));
}

// Correctly rounded x*x, for a conditioned value or a centroid.
float tq_square_rn(float x) {
    return tq_mul_rn(x, x);
}

// Correctly rounded sqrt of a positive normal float32. With a = m * 2^e (m the 24-bit
// significand), n = m << s has an even exponent e - s and sqrt(n) in [2^23, 2^24), so the
// result is q * 2^((e - s)/2) with q = sqrt(n) rounded to an integer. q is found by an exact
// integer search from the float estimate (q^2 <= n < (q+1)^2), then rounded up iff
// n - q^2 > q, i.e. sqrt(n) > q + 1/2 (a square root of an integer is never a half-integer,
// so there are no ties).
float tq_sqrt_rn(float a) {
    const uint ab = floatBitsToUint(a);
    const int  e  = int(ab >> 23) - 150;
    const int  s  = (e & 1) == 0 ? 24 : 23;
    const uint64_t n = uint64_t((ab & 0x7FFFFFu) | 0x800000u) << s;
    int p = (e - s) / 2;
    uint q = clamp(uint(sqrt(float(n))), 0x800000u, 0xFFFFFFu);
    while (uint64_t(q) * uint64_t(q) > n) {
        q -= 1u;
    }
    while (uint64_t(q + 1u) * uint64_t(q + 1u) <= n) {
        q += 1u;
    }
    if (n - uint64_t(q) * uint64_t(q) > uint64_t(q)) {
        q += 1u;
    }
    if (q == 0x1000000u) {
        q = 0x800000u;
        p += 1;
    }
    return uintBitsToFloat((uint(p + 150) << 23) | (q & 0x7FFFFFu));
}

// Correctly rounded a / b for positive normal float32 a, b whose quotient is a normal
// float32 (range conditioning guarantees it for 1/norm, the scale search's p/sqrt(cs) and
// norm/cnorm). The quotient of the significands, scaled into [2^23, 2^24), is an exact
// 64-bit integer division; the remainder decides the rounding (ties to even).
float tq_div_rn(float a, float b) {
    const uint ab = floatBitsToUint(a);
    const uint bb = floatBitsToUint(b);
    const uint ma = (ab & 0x7FFFFFu) | 0x800000u;
    const uint mb = (bb & 0x7FFFFFu) | 0x800000u;
    const int  s  = ma >= mb ? 23 : 24;
    const uint64_t n = uint64_t(ma) << s;
    uint64_t q = n / uint64_t(mb);
    const uint64_t r2 = 2ul * (n - q * uint64_t(mb));
    if (r2 > uint64_t(mb) || (r2 == uint64_t(mb) && (q & 1ul) != 0ul)) {
        q += 1ul;
    }
    int p = int(ab >> 23) - int(bb >> 23) - s;
    uint qq = uint(q);
    if (qq == 0x1000000u) {
        qq = 0x800000u;
        p += 1;
    }
    return uintBitsToFloat((uint(p + 150) << 23) | (qq & 0x7FFFFFu));
}

// FORMAT.md section 5, step 2, on the bits: NaN/Inf are handled before, so the absolute
// bits order like the magnitudes.
float tq_condition_bits(uint b) {
    const uint a = b & 0x7FFFFFFFu;
    if (a < 0x20000000u) {          // |x| < 2^-63 (and -0.0) -> +0.0
        return 0.0;
    }
    if (a > 0x5D800000u) {          // |x| > 2^60 -> +-2^60
        return uintBitsToFloat((b & 0x80000000u) | 0x5D800000u);
    }
    return uintBitsToFloat(b);
}

#if defined(DATA_A_TURBO) && defined(TURBO_DECODE_DATA_A)
// Value i of block ib of data_a: f32(d) * C[idx] as one float32 multiply (FORMAT.md
// section 6). Kept apart from the generic v*dm.x + dm.y decode, whose "+ 0" would turn the
// -0.0 of a zero-scale block into +0.0.
float turbo_dequant1(uint ib, uint i) {
    const float d = tq_fp16_to_f32(uint(data_a[ib].d));
#if TURBO_BITS == 4
    const uint k = (uint(data_a[ib].qs[i % 32]) >> (4 * (i / 32))) & 0xFu;
#elif TURBO_BITS == 3
    const uint k = ((uint(data_a[ib].qs[i % 16]) >> (2 * (i / 16))) & 3u) | (((uint(data_a[ib].qh[i % 8]) >> (i / 8)) & 1u) << 2);
#else
    const uint k = (uint(data_a[ib].qs[i % 16]) >> (2 * (i / 16))) & 3u;
#endif
    return d * tq_centroid(TURBO_BITS, k);
}
#endif

#endif // !defined(GGML_TURBO_FUNCS_COMP)
