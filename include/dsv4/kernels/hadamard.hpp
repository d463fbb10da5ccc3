// dsv4/kernels/hadamard.hpp - the Hadamard rotation of spec §3.4 as a fast Walsh-Hadamard
// transform. Public entry points: dsv4/hadamard.hpp.
//
// rotate(x) = (x · H_n) · n^-1/2 with H_n in Sylvester (natural) order, H[i][j] =
// (-1)^popcount(i & j); bf16 in and out, f32 inside (fast_hadamard_transform semantics):
//   t = FWHT(x) in f32, stages h = 1, 2, 4, ..., n/2 in that order, each pair (i, i + h)
//       with i & h == 0 becoming (x_i + x_{i+h}, x_i - x_{i+h}), one f32 rounding per op;
//   y = bf16(t · f32(n^-1/2)).
// The stages below the vector width run inside registers (the partner lane is i ^ h:
// both sums are formed and the lane's own one is selected), the others between
// registers; every element sees the same operations in the same order on every tier,
// so every tier gives the scalar tier's bits. n = 128 is 8 zmm / 16 ymm of data.
#pragma once

#include "../simd/fmath.hpp"
#include "../simd/permute.hpp"

#include <cmath>

namespace dsv4 {

inline constexpr std::size_t hadamard_max_n = 1024;  ///< largest transform (V4 uses 128)

inline namespace DSV4_ISA_NS {
namespace kernels {
namespace hadamard_detail {

/// One in-register butterfly stage at lane distance H.
template <class A, int H> DSV4_INLINE simd::vf32<A> stage(simd::vf32<A> x, simd::vi32<A> iota) noexcept {
    using VI = simd::vi32<A>;
    const simd::vf32<A> p = simd::xor_lanes<H>(A{}, x);
    return simd::select_f<A>((iota & VI(H)) != VI(0), p - x, x + p);
}

template <class A> DSV4_INLINE simd::vf32<A> in_register_stages(simd::vf32<A> x, simd::vi32<A> iota) noexcept {
    x = stage<A, 1>(x, iota);
    x = stage<A, 2>(x, iota);
    x = stage<A, 4>(x, iota);
    if constexpr (simd::lanes<A>() == 16) x = stage<A, 8>(x, iota);
    return x;
}

/// Stages h0, 2*h0, ..., n/2 between the elements of t (R: float or a vector of W lanes,
/// h0 >= lanes of R), then y = bf16(t * f32(n^-1/2)).
template <class A, class R>
DSV4_INLINE void cross_stages_and_store(float* t, std::size_t n, std::size_t h0, uint16_t* x) noexcept {
    constexpr std::size_t step = std::is_same_v<R, float> ? 1 : simd::lanes<A>();
    for (std::size_t h = h0; h < n; h *= 2)
        for (std::size_t b0 = 0; b0 < n; b0 += 2 * h)
            for (std::size_t i = b0; i < b0 + h; i += step) {
                R a, b;
                if constexpr (step == 1) a = t[i], b = t[i + h];
                else a = R::load_aligned(t + i), b = R::load_aligned(t + i + h);
                const R s = a + b, d = a - b;
                if constexpr (step == 1) t[i] = s, t[i + h] = d;
                else s.store_aligned(t + i), d.store_aligned(t + i + h);
            }
    const float scale = float(1.0 / std::sqrt(double(n)));
    for (std::size_t i = 0; i < n; i += step) {
        if constexpr (step == 1) x[i] = f32_to_bf16(t[i] * scale);
        else simd::store_bf16<A>(x + i, R::load_aligned(t + i) * R(scale));
    }
}

}  // namespace hadamard_detail

/// In-place rotation of one bf16 vector of n elements (n a power of two, 1..1024).
template <class A> void hadamard_row(uint16_t* x, std::size_t n) noexcept {
    alignas(64) float t[hadamard_max_n];
    if constexpr (!simd::is_scalar<A>) {
        constexpr std::size_t W = simd::lanes<A>();
        if (n >= W) {
            alignas(64) int32_t lane[W];
            for (std::size_t l = 0; l < W; ++l) lane[l] = int32_t(l);
            const auto iota = simd::vi32<A>::load_aligned(lane);
            for (std::size_t i = 0; i < n; i += W)
                hadamard_detail::in_register_stages<A>(simd::load_bf16<A>(x + i), iota).store_aligned(t + i);
            hadamard_detail::cross_stages_and_store<A, simd::vf32<A>>(t, n, W, x);
            return;
        }
    }
    for (std::size_t i = 0; i < n; ++i) t[i] = bf16_to_f32(x[i]);
    hadamard_detail::cross_stages_and_store<A, float>(t, n, 1, x);
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
