// dsv4/dispatch.hpp - how public entry points reach a kernel instantiation.
//
// DSV4_KERNEL(name) yields a pointer to kernels::name<Arch> for the arch in use: the
// runtime-selected table's entry under DSV4_RUNTIME_DISPATCH, otherwise the
// instantiation for this translation unit's own ISA (headers only, static dispatch).
// Fetch it once per call and loop outside; never dispatch inside a hot loop.
#pragma once

#include "kernel_table.hpp"
#include "kernels/gemv.hpp"
#include "kernels/memory.hpp"
#include "kernels/mhc.hpp"
#include "kernels/moe.hpp"
#include "kernels/codec.hpp"
#include "kernels/attention.hpp"
#include "kernels/compressor.hpp"
#include "kernels/hadamard.hpp"
#include "kernels/indexer.hpp"
#include "kernels/norm.hpp"
#include "kernels/peak.hpp"
#include "kernels/rope.hpp"
#include "kernels/topk.hpp"

namespace dsv4 {
inline namespace DSV4_ISA_NS {

/// Builds the kernel table for Arch. Instantiated by dispatch/dsv4_tier.cpp per tier.
template <class Arch> constexpr kernel_table make_kernel_table(tier compiled_for) noexcept {
    kernel_table t{};
    t.compiled_for = compiled_for;
    t.decode_e4m3 = &kernels::decode_e4m3<Arch>;
    t.decode_bf16 = &kernels::decode_bf16<Arch>;
    t.encode_bf16 = &kernels::encode_bf16<Arch>;
    t.decode_fp16 = &kernels::decode_fp16<Arch>;
    t.encode_e4m3 = &kernels::encode_e4m3<Arch>;
    t.encode_e2m1 = &kernels::encode_e2m1<Arch>;
    t.act_quant_fp8_row = &kernels::act_quant_fp8_row<Arch>;
    t.act_quant_fp8_sim_row = &kernels::act_quant_fp8_sim_row<Arch>;
    t.fp4_act_quant_row = &kernels::fp4_act_quant_row<Arch>;
    t.fp4_act_quant_sim_row = &kernels::fp4_act_quant_sim_row<Arch>;
    t.stream_read = &kernels::stream_read<Arch>;
    t.fp8_acts_to_f32 = &kernels::fp8_acts_to_f32<Arch>;
    t.quantize_q8_row = &kernels::quantize_q8_row<Arch>;
    t.f32_gemv_rows = &kernels::f32_gemv_rows<Arch>;
    t.bf16_gemv_rows = &kernels::bf16_gemv_rows<Arch>;
    t.bf16_gemv_bf16_rows = &kernels::bf16_gemv_bf16_rows<Arch>;
    t.fp8_gemv_rows = &kernels::fp8_gemv_rows<Arch>;
    t.fp8_grouped_gemv_rows = &kernels::fp8_grouped_gemv_rows<Arch>;
    t.fp8_gemv_bf16_rows = &kernels::fp8_gemv_bf16_rows<Arch>;
    t.fp8_grouped_gemv_bf16_rows = &kernels::fp8_grouped_gemv_bf16_rows<Arch>;
    t.to_bf16_blocks_row = &kernels::to_bf16_blocks_row<Arch>;
    t.fp4_gemv_rows = &kernels::fp4_gemv_rows<Arch>;
    t.fp4_gemv_q8_rows = &kernels::fp4_gemv_q8_rows<Arch>;
    t.fp4_gate_up_rows = &kernels::fp4_gate_up_rows<Arch>;
    t.fp4_gate_up_q8_rows = &kernels::fp4_gate_up_q8_rows<Arch>;
    t.rmsnorm_row = &kernels::rmsnorm_row<Arch>;
    t.q_head_norm_rows = &kernels::q_head_norm_rows<Arch>;
    t.rope_rows = &kernels::rope_rows<Arch>;
    t.sparse_attention_rows = &kernels::sparse_attention_rows<Arch>;
    t.fma_peak = &kernels::fma_peak<Arch>;
    t.bf16_dot_peak = &kernels::bf16_dot_peak<Arch>;
    t.int8_peak = &kernels::int8_peak<Arch>;
    t.hadamard_row = &kernels::hadamard_row<Arch>;
    t.compressor_pool_row = &kernels::compressor_pool_row<Arch>;
    t.indexer_scores_rows = &kernels::indexer_scores_rows<Arch>;
    t.topk_row = &kernels::topk_row<Arch>;
    t.hc_norm_rows = &kernels::hc_norm_rows<Arch>;
    t.hc_split_rows = &kernels::hc_split_rows<Arch>;
    t.hc_head_pre_rows = &kernels::hc_head_pre_rows<Arch>;
    t.hc_combine_rows = &kernels::hc_combine_rows<Arch>;
    t.hc_post_rows = &kernels::hc_post_rows<Arch>;
    t.moe_combine_rows = &kernels::moe_combine_rows<Arch>;
    t.swiglu_bf16_row = &kernels::swiglu_bf16_row<Arch>;
    return t;
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4

#if DSV4_RUNTIME_DISPATCH
#  define DSV4_KERNEL(name) (::dsv4::active_kernels().name)
#else
#  define DSV4_KERNEL(name) (&::dsv4::kernels::name<::dsv4::native_arch>)
#endif
