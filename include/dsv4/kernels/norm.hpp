// dsv4/kernels/norm.hpp - RMSNorm kernels (spec §3.1). Public entry points: dsv4/norm.hpp.
//
// Sums of squares use 16 interleaved partial sums (partial k takes the elements i = k
// mod 16, in order) folded by a fixed pairwise tree: AVX-512 holds the 16 partials in
// one register, AVX2 in two, the scalar tier in an array, and all three add the same
// numbers in the same order. Every tier therefore gives the scalar tier's bits.
#pragma once

#include "../simd/fmath.hpp"

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace kernels {
namespace norm {

/// sum_i term(x_i) over n bf16 values, 16 interleaved partials + a fixed tree.
template <class A, class F> DSV4_INLINE float sum16(const uint16_t* x, std::size_t n, F term) noexcept {
    alignas(64) float part[16] = {};
    std::size_t done = 0;  // elements summed by the vector loop (a multiple of 16)
    if constexpr (!simd::is_scalar<A>) {
        constexpr std::size_t W = simd::lanes<A>(), R = 16 / W;
        using V = simd::vf32<A>;
        V acc[R];
        for (auto& v : acc) v = V(0.0f);
        done = n / 16 * 16;
        for (std::size_t i = 0; i < done; i += 16)
            for (std::size_t k = 0; k < R; ++k) acc[k] = acc[k] + term(simd::load_bf16<A>(x + i + k * W));
        for (std::size_t k = 0; k < R; ++k) acc[k].store_aligned(part + k * W);
    }
    for (std::size_t i = done; i < n; ++i) part[i % 16] = part[i % 16] + term(bf16_to_f32(x[i]));
    for (std::size_t w = 8; w >= 1; w /= 2)
        for (std::size_t k = 0; k < w; ++k) part[k] = part[k] + part[k + w];
    return part[0];
}

/// y = bf16(w * (x * r)) (or bf16(x * r) without w), r = 1 / sqrt(mean + eps) in f32.
template <class A>
DSV4_INLINE void scale_row(const uint16_t* x, const uint16_t* w, std::size_t n, float r, uint16_t* y) noexcept {
    std::size_t done = 0;
    if constexpr (!simd::is_scalar<A>) {
        constexpr std::size_t W = simd::lanes<A>();
        using V = simd::vf32<A>;
        const V rv(r);
        done = n / W * W;
        for (std::size_t i = 0; i < done; i += W) {
            V v = simd::load_bf16<A>(x + i) * rv;
            if (w) v = simd::load_bf16<A>(w + i) * v;
            simd::store_bf16<A>(y + i, v);
        }
    }
    for (std::size_t i = done; i < n; ++i) {
        float v = bf16_to_f32(x[i]) * r;
        if (w) v = bf16_to_f32(w[i]) * v;
        y[i] = f32_to_bf16(v);
    }
}

}  // namespace norm

/// Weighted RMSNorm of one row (spec §3.1): y = bf16(w * (x * rsqrt(mean(x^2) + eps))),
/// all in f32, one rounding. w == nullptr means w = 1. y may alias x.
template <class A>
void rmsnorm_row(const uint16_t* x, const uint16_t* w, std::size_t n, float eps, uint16_t* y) noexcept {
    // bf16 squares are exact in f32; rounded() keeps FMA contraction from changing that
    // on some tiers only (x^2 below the normal range would round differently).
    const float ss = norm::sum16<A>(x, n, [](auto v) { return simd::rounded(v * v); });
    const float r = 1.0f / std::sqrt(ss / float(n) + eps);
    norm::scale_row<A>(x, w, n, r, y);
}

/// Unweighted per-head q norm in the official bf16 arithmetic (spec §3.1), on `heads`
/// consecutive vectors of `dim`: sq = bf16(q^2), m = bf16(f32(sum sq) / dim),
/// v = bf16(m + eps), r = bf16(1 / sqrt(v)), y = bf16(q * r). y may alias q.
template <class A>
void q_head_norm_rows(const uint16_t* q, std::size_t heads, std::size_t dim, float eps, uint16_t* y) noexcept {
    for (std::size_t h = 0; h < heads; ++h) {
        const uint16_t* x = q + h * dim;
        const float ss = norm::sum16<A>(x, dim, [](auto v) { return simd::round_bf16_nonneg(simd::rounded(v * v)); });
        const float m = round_bf16(ss / float(dim));
        const float v = round_bf16(m + eps);
        const float r = round_bf16(1.0f / std::sqrt(v));
        norm::scale_row<A>(x, nullptr, dim, r, y + h * dim);
    }
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
