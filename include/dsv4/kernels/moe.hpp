// dsv4/kernels/moe.hpp - the MoE layer's own kernels (spec §8); the public layer, its
// layouts and the phases are in moe.hpp. The projections themselves are the GEMV family's
// (fp4_gate_up / fp4_gemv for routed experts, fp8_gemv for the shared one, bf16_gemv for
// the gate): this file holds only what sits between them.
#pragma once

#include "gemv.hpp"

#include <cmath>

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace kernels {

/// Combine (spec §8.4) of one output row: out[i] = bf16( ((0 + p_0[i]) + p_1[i]) + ... ),
/// the parts being bf16 rows, added in f32 in the given order (the caller passes the routed
/// outputs in ascending expert id, then the shared one). Bit-exact on every tier: the same
/// f32 additions in the same order (starting from +0 as the reference does, so that a sum of
/// negative zeros is +0).
template <class Arch>
void moe_combine_rows(const uint16_t* const* parts, std::size_t nparts, std::size_t n, uint16_t* out) noexcept {
    std::size_t i = 0;
    if constexpr (!simd::is_scalar<Arch>) {
        using vf = simd::vf32<Arch>;
        constexpr std::size_t W = simd::lanes<Arch>();
        for (; i + W <= n; i += W) {
            vf acc(0.0f);
            for (std::size_t p = 0; p < nparts; ++p)
                acc = acc + vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, parts[p] + i));
            simd::store_i32_as_u16(Arch{}, vec::f32_to_bf16<Arch>(acc), out + i);
        }
    }
    for (; i < n; ++i) {
        float acc = 0.0f;
        for (std::size_t p = 0; p < nparts; ++p) acc = acc + bf16_to_f32(parts[p][i]);
        out[i] = f32_to_bf16(acc);
    }
}

/// SwiGLU of the shared expert (spec §8.3) on bf16 projections a = w1 x, b = w3 x:
/// h[i] = bf16( silu(min(a, limit)) * clamp(b, -limit, limit) ), no clamp if limit <= 0.
/// The same function as the routed experts' fused epilogue (gemv_detail::swiglu) with
/// routing weight 1, so both expert kinds share one definition of the clamp order.
template <class Arch>
void swiglu_bf16_row(const uint16_t* a, const uint16_t* b, std::size_t n, float limit, uint16_t* h) noexcept {
    for (std::size_t i = 0; i < n; ++i)
        h[i] = f32_to_bf16(gemv_detail::swiglu(bf16_to_f32(a[i]), bf16_to_f32(b[i]), 1.0f, limit));
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
