// dsv4/kernels/rope.hpp - RoPE on the trailing 64 dims (spec §3.3). Public: dsv4/rope.hpp.
//
// Interleaved pairs (re, im) = (x[2i], x[2i+1]). Each output is the sum of two products
// rounded to f32 separately (re*cos and im*sin, as the official complex multiply does),
// then rounded to bf16. The vector form multiplies x by (cos, cos) pairs and the
// pair-swapped x by (-sin, +sin) pairs (forward) or (+sin, -sin) (inverse): the same two
// products and the same add as the scalar form, so every tier gives the same bits.
#pragma once

#include "../simd/fmath.hpp"

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace kernels {

/// Rotates the 64 rope dims of `nvec` vectors: vector v's rope dims start at x + v*stride.
/// cs = [cos θ_0..θ_31, sin θ_0..θ_31] of the vectors' position (one token).
template <class A>
void rope_rows(uint16_t* x, std::size_t nvec, std::size_t stride, const float* cs, bool inverse) noexcept {
    alignas(64) float c2[64], s2[64];
    const float sg = inverse ? 1.0f : -1.0f;
    for (std::size_t i = 0; i < 32; ++i) {
        c2[2 * i] = c2[2 * i + 1] = cs[i];
        s2[2 * i] = sg * cs[32 + i];       // partner of re is im
        s2[2 * i + 1] = -sg * cs[32 + i];  // partner of im is re
    }
    for (std::size_t v = 0; v < nvec; ++v) {
        uint16_t* p = x + v * stride;
        if constexpr (simd::is_scalar<A>) {
            for (std::size_t i = 0; i < 64; i += 2) {
                const float re = bf16_to_f32(p[i]), im = bf16_to_f32(p[i + 1]);
                const float y0 = simd::rounded(re * c2[i]) + simd::rounded(im * s2[i]);
                const float y1 = simd::rounded(im * c2[i + 1]) + simd::rounded(re * s2[i + 1]);
                p[i] = f32_to_bf16(y0);
                p[i + 1] = f32_to_bf16(y1);
            }
        } else {
            constexpr std::size_t W = simd::lanes<A>();
            using V = simd::vf32<A>;
            for (std::size_t i = 0; i < 64; i += W) {
                const V xv = simd::load_bf16<A>(p + i);
                const V y = simd::rounded(xv * V::load_aligned(c2 + i)) +
                            simd::rounded(simd::swap_pairs(A{}, xv) * V::load_aligned(s2 + i));
                simd::store_bf16<A>(p + i, y);
            }
        }
    }
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
