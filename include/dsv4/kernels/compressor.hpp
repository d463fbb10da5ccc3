// dsv4/kernels/compressor.hpp - the compressor's gated pooling (spec §5.1). Public entry
// points and the state machine: dsv4/compressor.hpp.
//
// For every channel c of an entry, over its slots j (overlap: the previous window's A
// half, then the own window's B half; otherwise the r tokens of the window):
//   m = max_j z_j[c],  e_j = e^(z_j[c] - m),  out[c] = (sum_j e_j k_j[c]) / (sum_j e_j)
// in f32: the sums run over the slots in order (group a, then group b) starting from 0,
// the numerator with fused multiply-adds, e^x is simd::exp_f32 (the same function on every
// tier). Channels sit in the vector lanes, so every tier computes the scalar tier's bits;
// an empty slot (k = 0, z = -inf) contributes exact zeros, so skipping it gives the same
// bits as pooling it.
#pragma once

#include "../simd/fmath.hpp"

#include <limits>
#include <type_traits>

namespace dsv4 {

/// A run of pooling slots: slot j's K values at k + j*stride and its scores (gate logits
/// plus ape) at z + j*stride, `d` channels each. n may be 0.
struct compressor_pool_group {
    const float* k = nullptr;
    const float* z = nullptr;
    std::size_t stride = 0;
    std::size_t n = 0;
};

inline namespace DSV4_ISA_NS {
namespace kernels {
namespace pool_detail {

template <class A, class V> DSV4_INLINE V ld(const float* p) noexcept {
    if constexpr (std::is_same_v<V, float>) return *p;
    else return V::load_unaligned(p);
}

/// Channels [c, c + lanes of V) of one entry.
template <class A, class V>
DSV4_INLINE void pool_lanes(const compressor_pool_group& a, const compressor_pool_group& b, std::size_t c,
                            float* out) noexcept {
    V m(-std::numeric_limits<float>::infinity());
    for (const compressor_pool_group* g : {&a, &b})
        for (std::size_t j = 0; j < g->n; ++j) m = simd::vmax(m, ld<A, V>(g->z + j * g->stride + c));
    V den(0.0f), num(0.0f);
    for (const compressor_pool_group* g : {&a, &b})
        for (std::size_t j = 0; j < g->n; ++j) {
            const V e = simd::exp_f32(ld<A, V>(g->z + j * g->stride + c) - m);
            den = den + e;
            num = simd::fmadd(e, ld<A, V>(g->k + j * g->stride + c), num);
        }
    const V r = num / den;
    if constexpr (std::is_same_v<V, float>) out[c] = r;
    else r.store_unaligned(out + c);
}

}  // namespace pool_detail

/// Pools one entry of d channels from the slots of a then b (see the file comment).
template <class A>
void compressor_pool_row(const compressor_pool_group& a, const compressor_pool_group& b, std::size_t d,
                         float* out) noexcept {
    std::size_t c = 0;
    if constexpr (!simd::is_scalar<A>) {
        constexpr std::size_t W = simd::lanes<A>();
        for (; c + W <= d; c += W) pool_detail::pool_lanes<A, simd::vf32<A>>(a, b, c, out);
    }
    for (; c < d; ++c) pool_detail::pool_lanes<A, float>(a, b, c, out);
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
