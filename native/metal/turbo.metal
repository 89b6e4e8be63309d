// tq-gguf: set_rows and get_rows of the turbo KV-cache types and of the trellis-coded value
// types tcq2 and tcq3. The device code is in tq-metal.h; it mirrors the CUDA kernels line by
// line. Compiled by ggml-metal from ggml/src/tq/metal like fa_vec_turbo.metal.
// The tcq kernels at the end have NOT been compiled (no Metal toolchain here; see tq-metal.h).
#include "common.h"
#include "tq-metal.h"

// One threadgroup per row, one simdgroup per 64-value block (the counterpart of CUDA's
// k_set_rows_turbo): FORMAT.md fixes the sum of squares to a halving tree that is a
// 32-lane shuffle butterfly, so a block cannot be quantized by a single thread.
template<typename TI, typename block_q>
kernel void kernel_set_rows_turbo(
        constant ggml_metal_kargs_set_rows & args,
        device const  void * src0,
        device const  void * src1,
        device       float * dst,
        uint3                tgpig[[threadgroup_position_in_grid]],
        ushort               tiisg[[thread_index_in_simdgroup]],
        ushort               sgitg[[simdgroup_index_in_threadgroup]],
        ushort3              ntg  [[threads_per_threadgroup]]) {
    const int32_t i03 = tgpig.z;
    const int32_t i02 = tgpig.y;
    const int32_t i01 = tgpig.x;

    const int32_t i12 = i03%args.ne12;
    const int32_t i11 = i02%args.ne11;

    const int32_t i10 = i01;
    const TI      i1  = ((const device TI *) ((const device char *) src1 + i10*args.nb10 + i11*args.nb11 + i12*args.nb12))[0];

          device block_q * dst_row = (      device block_q *) ((      device char *) dst  +  i1*args.nb1  + i02*args.nb2  + i03*args.nb3);
    const device float   * src_row = (const device float   *) ((const device char *) src0 + i01*args.nb01 + i02*args.nb02 + i03*args.nb03);

    // the loop bound is the same for all threads of a simdgroup, which must stay together
    for (int ind = sgitg; ind < args.nk0; ind += ntg.y) {
        tq_metal_quantize_block<block_q>(src_row + QK_TURBO*ind, dst_row[ind], tiisg);
    }
}

typedef decltype(kernel_set_rows_turbo<int64_t, block_turbo2>) set_rows_turbo_t;

template [[host_name("kernel_set_rows_f32_i64_turbo2")]] kernel set_rows_turbo_t kernel_set_rows_turbo<int64_t, block_turbo2>;
template [[host_name("kernel_set_rows_f32_i32_turbo2")]] kernel set_rows_turbo_t kernel_set_rows_turbo<int32_t, block_turbo2>;
template [[host_name("kernel_set_rows_f32_i64_turbo3")]] kernel set_rows_turbo_t kernel_set_rows_turbo<int64_t, block_turbo3>;
template [[host_name("kernel_set_rows_f32_i32_turbo3")]] kernel set_rows_turbo_t kernel_set_rows_turbo<int32_t, block_turbo3>;
template [[host_name("kernel_set_rows_f32_i64_turbo4")]] kernel set_rows_turbo_t kernel_set_rows_turbo<int64_t, block_turbo4>;
template [[host_name("kernel_set_rows_f32_i32_turbo4")]] kernel set_rows_turbo_t kernel_set_rows_turbo<int32_t, block_turbo4>;

// get_rows: the same thread layout as quantize.metal's kernel_get_rows_q, 16 values per
// thread (nl = 4 per block)
template<typename block_q, short nl, void (*dequantize_func)(device const block_q *, short, thread float4x4 &)>
kernel void kernel_get_rows_turbo(
        constant ggml_metal_kargs_get_rows & args,
        device const void * src0,
        device const void * src1,
        device       void * dst,
        uint3               tgpig[[threadgroup_position_in_grid]],
        ushort              tiitg[[thread_index_in_threadgroup]],
        ushort3             ntg  [[threads_per_threadgroup]]) {
    const int32_t iw0 = tgpig.x/args.ne10;
    const int32_t i10 = tgpig.x%args.ne10;
    const int32_t i11 = tgpig.y;
    const int32_t i12 = tgpig.z;

    const int32_t r = ((const device int32_t *) ((const device char *) src1 + i12*args.nb12 + i11*args.nb11 + i10*args.nb10))[0];

    const int32_t i02 = i11;
    const int32_t i03 = i12;

    auto psrc = (device const block_q *) ((const device char *) src0 + i03*args.nb03 + i02*args.nb02 +   r*args.nb01);
    auto pdst = (device      float4x4 *) ((      device char *) dst  + i12*args.nb3  + i11*args.nb2  + i10*args.nb1);

    const int ind = iw0*ntg.x + tiitg;
    if (ind < args.ne00t) {
        float4x4 temp;
        dequantize_func(psrc + ind/nl, ind%nl, temp);
        pdst[ind] = temp;
    }
}

typedef decltype(kernel_get_rows_turbo<block_turbo2, 4, dequantize_turbo2>) get_rows_turbo_t;

template [[host_name("kernel_get_rows_turbo2")]] kernel get_rows_turbo_t kernel_get_rows_turbo<block_turbo2, 4, dequantize_turbo2>;
template [[host_name("kernel_get_rows_turbo3")]] kernel get_rows_turbo_t kernel_get_rows_turbo<block_turbo3, 4, dequantize_turbo3>;
template [[host_name("kernel_get_rows_turbo4")]] kernel get_rows_turbo_t kernel_get_rows_turbo<block_turbo4, 4, dequantize_turbo4>;

// tcq2/tcq3 set_rows: the same geometry as kernel_set_rows_turbo (one simdgroup per block,
// tq_metal_tcq_quantize_block, CUDA's tq_cuda_tcq_quantize_block). NOT COMPILED.
template<typename TI, typename block_q>
kernel void kernel_set_rows_tcq(
        constant ggml_metal_kargs_set_rows & args,
        device const  void * src0,
        device const  void * src1,
        device       float * dst,
        uint3                tgpig[[threadgroup_position_in_grid]],
        ushort               tiisg[[thread_index_in_simdgroup]],
        ushort               sgitg[[simdgroup_index_in_threadgroup]],
        ushort3              ntg  [[threads_per_threadgroup]]) {
    const int32_t i03 = tgpig.z;
    const int32_t i02 = tgpig.y;
    const int32_t i01 = tgpig.x;

    const int32_t i12 = i03%args.ne12;
    const int32_t i11 = i02%args.ne11;

    const int32_t i10 = i01;
    const TI      i1  = ((const device TI *) ((const device char *) src1 + i10*args.nb10 + i11*args.nb11 + i12*args.nb12))[0];

          device block_q * dst_row = (      device block_q *) ((      device char *) dst  +  i1*args.nb1  + i02*args.nb2  + i03*args.nb3);
    const device float   * src_row = (const device float   *) ((const device char *) src0 + i01*args.nb01 + i02*args.nb02 + i03*args.nb03);

    // the loop bound is the same for all threads of a simdgroup, which must stay together
    for (int ind = sgitg; ind < args.nk0; ind += ntg.y) {
        tq_metal_tcq_quantize_block<block_q>(src_row + QK_TCQ*ind, dst_row[ind], tiisg);
    }
}

typedef decltype(kernel_set_rows_tcq<int64_t, block_tcq2>) set_rows_tcq_t;

template [[host_name("kernel_set_rows_f32_i64_tcq2")]] kernel set_rows_tcq_t kernel_set_rows_tcq<int64_t, block_tcq2>;
template [[host_name("kernel_set_rows_f32_i32_tcq2")]] kernel set_rows_tcq_t kernel_set_rows_tcq<int32_t, block_tcq2>;
template [[host_name("kernel_set_rows_f32_i64_tcq3")]] kernel set_rows_tcq_t kernel_set_rows_tcq<int64_t, block_tcq3>;
template [[host_name("kernel_set_rows_f32_i32_tcq3")]] kernel set_rows_tcq_t kernel_set_rows_tcq<int32_t, block_tcq3>;

// tcq2/tcq3 get_rows: kernel_get_rows_turbo with the tcq decoder (16 values per thread). NOT COMPILED.
typedef decltype(kernel_get_rows_turbo<block_tcq2, 4, dequantize_tcq2>) get_rows_tcq_t;

template [[host_name("kernel_get_rows_tcq2")]] kernel get_rows_tcq_t kernel_get_rows_turbo<block_tcq2, 4, dequantize_tcq2>;
template [[host_name("kernel_get_rows_tcq3")]] kernel get_rows_tcq_t kernel_get_rows_turbo<block_tcq3, 4, dequantize_tcq3>;
