// dsv4/kernel_table.hpp - the table of kernel entry points that runtime dispatch
// selects from. One instance per tier is compiled (dispatch/dsv4_tier.cpp); the
// struct holds only function pointers, so it is the same type in every translation
// unit whatever its ISA flags.
#pragma once

#include "gemv_types.hpp"
#include "isa.hpp"

namespace dsv4 {

enum class fp8_sim_revision : int;
struct sparse_attention_args;
struct compressor_pool_group;
struct indexer_score_args;
enum class topk_order : int;

struct kernel_table {
    /// The tier this table's code was compiled for, as seen by the preprocessor inside
    /// its own translation unit (tests use it to prove a forced tier really ran).
    tier compiled_for;

    // codec (kernels/codec.hpp)
    void (*decode_e4m3)(const uint8_t*, float*, std::size_t) noexcept;
    void (*decode_bf16)(const uint16_t*, float*, std::size_t) noexcept;
    void (*encode_bf16)(const float*, uint16_t*, std::size_t) noexcept;
    void (*decode_fp16)(const uint16_t*, float*, std::size_t) noexcept;
    void (*encode_e4m3)(const float*, uint8_t*, std::size_t) noexcept;
    void (*encode_e2m1)(const float*, uint8_t*, std::size_t) noexcept;
    void (*act_quant_fp8_row)(const uint16_t*, std::size_t, std::size_t, uint8_t*, uint8_t*) noexcept;
    void (*act_quant_fp8_sim_row)(uint16_t*, std::size_t, std::size_t, fp8_sim_revision) noexcept;
    void (*fp4_act_quant_row)(const uint16_t*, std::size_t, uint8_t*, uint8_t*) noexcept;
    void (*fp4_act_quant_sim_row)(uint16_t*, std::size_t) noexcept;

    // memory (kernels/memory.hpp)
    uint64_t (*stream_read)(const void*, std::size_t) noexcept;

    // gemv (kernels/gemv.hpp): row-range kernels, rows [r0, r1)
    void (*fp8_acts_to_f32)(const uint8_t*, const uint8_t*, std::size_t, float*) noexcept;
    void (*quantize_q8_row)(const uint16_t*, std::size_t, int8_t*, float*, int32_t*) noexcept;
    void (*f32_gemv_rows)(const f32_matrix&, const f32_rows&, const gemv_out&, std::size_t, std::size_t) noexcept;
    void (*bf16_gemv_rows)(const bf16_matrix&, const f32_rows&, const gemv_out&, std::size_t, std::size_t) noexcept;
    void (*bf16_gemv_bf16_rows)(const bf16_matrix&, const bf16_rows&, const gemv_out&, std::size_t,
                                std::size_t) noexcept;
    void (*fp8_gemv_rows)(const fp8_matrix&, const f32_rows&, const gemv_out&, std::size_t, std::size_t) noexcept;
    void (*fp8_grouped_gemv_rows)(const fp8_matrix&, std::size_t, const f32_rows&, const gemv_out&, std::size_t,
                                  std::size_t) noexcept;
    void (*fp8_gemv_bf16_rows)(const fp8_matrix&, const bf16_block_rows&, const gemv_out&, std::size_t,
                               std::size_t) noexcept;
    void (*fp8_grouped_gemv_bf16_rows)(const fp8_matrix&, std::size_t, const bf16_block_rows&, const gemv_out&,
                                       std::size_t, std::size_t) noexcept;
    void (*to_bf16_blocks_row)(const float*, std::size_t, uint16_t*, int32_t*) noexcept;
    void (*fp4_gemv_rows)(const fp4_matrix&, const f32_rows&, const gemv_out&, std::size_t, std::size_t) noexcept;
    void (*fp4_gemv_q8_rows)(const fp4_matrix&, const q8_rows&, const gemv_out&, std::size_t, std::size_t) noexcept;
    void (*fp4_gate_up_rows)(const fp4_matrix&, const fp4_matrix&, const f32_rows&, const swiglu_epilogue&,
                             const gemv_out&, std::size_t, std::size_t) noexcept;
    void (*fp4_gate_up_q8_rows)(const fp4_matrix&, const fp4_matrix&, const q8_rows&, const swiglu_epilogue&,
                                const gemv_out&, std::size_t, std::size_t) noexcept;
    // norms (kernels/norm.hpp), RoPE (kernels/rope.hpp), attention (kernels/attention.hpp)
    void (*rmsnorm_row)(const uint16_t*, const uint16_t*, std::size_t, float, uint16_t*) noexcept;
    void (*q_head_norm_rows)(const uint16_t*, std::size_t, std::size_t, float, uint16_t*) noexcept;
    void (*rope_rows)(uint16_t*, std::size_t, std::size_t, const float*, bool) noexcept;
    void (*sparse_attention_rows)(const sparse_attention_args&, std::size_t, std::size_t, std::size_t, std::size_t,
                                  float*) noexcept;
    // compute ceiling (kernels/peak.hpp)
    uint64_t (*fma_peak)(uint64_t, float*) noexcept;
    uint64_t (*bf16_dot_peak)(uint64_t, float*) noexcept;
    uint64_t (*int8_peak)(uint64_t, int, int32_t*) noexcept;  // (iters, width_bits, out)
    // Hadamard (kernels/hadamard.hpp), compressor pooling (kernels/compressor.hpp), indexer
    // scores (kernels/indexer.hpp), top-k (kernels/topk.hpp)
    void (*hadamard_row)(uint16_t*, std::size_t) noexcept;
    void (*compressor_pool_row)(const compressor_pool_group&, const compressor_pool_group&, std::size_t, float*) noexcept;
    void (*indexer_scores_rows)(const indexer_score_args&, std::size_t, std::size_t, float*) noexcept;
    void (*topk_row)(const float*, std::size_t, std::size_t, topk_order, int32_t*, uint32_t*) noexcept;

    // mhc (kernels/mhc.hpp): token-batched
    void (*hc_norm_rows)(const uint16_t*, std::size_t, std::size_t, std::size_t, float, float*, std::size_t,
                         float*) noexcept;
    void (*hc_split_rows)(const float*, const float*, std::size_t, const float*, const float*, int, float, float*,
                          float*, float*, float*) noexcept;
    void (*hc_head_pre_rows)(const float*, const float*, std::size_t, float, const float*, float, float*,
                             float*) noexcept;
    void (*hc_combine_rows)(const uint16_t*, std::size_t, std::size_t, std::size_t, const float*, uint16_t*,
                            std::size_t) noexcept;
    void (*hc_post_rows)(const uint16_t*, std::size_t, const uint16_t*, std::size_t, const float*, const float*,
                         std::size_t, std::size_t, uint16_t*, std::size_t) noexcept;

    // moe (kernels/moe.hpp)
    void (*moe_combine_rows)(const uint16_t* const*, std::size_t, std::size_t, uint16_t*) noexcept;
    void (*swiglu_bf16_row)(const uint16_t*, const uint16_t*, std::size_t, float, uint16_t*) noexcept;
};

namespace detail {
// Defined once per tier by dispatch/dsv4_tier.cpp (compiled with that tier's flags).
const kernel_table& kernel_table_scalar() noexcept;
const kernel_table& kernel_table_avx2() noexcept;
const kernel_table& kernel_table_avx2_vnni() noexcept;
const kernel_table& kernel_table_avx512() noexcept;
const kernel_table& kernel_table_avx512_vnni() noexcept;
const kernel_table& kernel_table_avx512_bf16() noexcept;
}  // namespace detail

// Runtime selection, defined in dispatch/dsv4_select.cpp (runtime-dispatch builds only).

/// The features of the CPU this process runs on (detected once).
const cpu_features& host_cpu() noexcept;
/// The tier runtime dispatch uses: DSV4_ISA if set, else the best the CPU supports.
/// Throws dsv4::error if DSV4_ISA names an unknown tier or one this CPU cannot run.
tier active_tier();
/// The kernel table of active_tier() (resolved once, then a cached pointer).
const kernel_table& active_kernels();
/// The table compiled for tier t, or nullptr if this CPU cannot run it.
const kernel_table* kernels_for(tier t) noexcept;

}  // namespace dsv4
