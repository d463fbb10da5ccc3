// dsv4/simd/mat4.hpp - a 4x4 f32 matrix held in registers (the mHC Sinkhorn, spec §7).
//
// Element [j][k] (row j, column k) sits at position 4j + k: 16 floats on the scalar tier,
// two ymm (rows 0-1, rows 2-3) on AVX2, one zmm on AVX-512. Kernel bodies apply
// elementwise operations to the parts; the row and column reductions below are the only
// per-ISA code. Every reduction returns a matrix whose element [j][k] holds the reduction of
// row j (resp. column k), in one fixed order on every tier:
//   row:    (c[j][0] + c[j][1]) + (c[j][2] + c[j][3])      (same pairing for max)
//   column: (c[0][k] + c[2][k]) + (c[1][k] + c[3][k])
// IEEE addition is commutative, so every lane of a vector reduction holds the same bits as
// the scalar one: the Sinkhorn gives identical results on every tier.
#pragma once

#include "fmath.hpp"

#include <algorithm>

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace simd {

template <class A> struct m44 {
    static constexpr int parts = is_scalar<A> ? 16 : (is_avx512<A> ? 1 : 2);
    static constexpr int width = 16 / parts;  ///< floats per part
    using part = freg<A>;                     ///< float on the scalar tier, else one vector
    part p[parts];
};

template <class A> DSV4_INLINE m44<A> m44_load(const float* c) noexcept {
    m44<A> m;
    if constexpr (is_scalar<A>)
        for (int i = 0; i < 16; ++i) m.p[i] = c[i];
    else
        for (int i = 0; i < m44<A>::parts; ++i) m.p[i] = vf32<A>::load_unaligned(c + i * m44<A>::width);
    return m;
}

template <class A> DSV4_INLINE void m44_store(const m44<A>& m, float* c) noexcept {
    if constexpr (is_scalar<A>)
        for (int i = 0; i < 16; ++i) c[i] = m.p[i];
    else
        for (int i = 0; i < m44<A>::parts; ++i) m.p[i].store_unaligned(c + i * m44<A>::width);
}

// ------------------------------------------------------------------ scalar
DSV4_INLINE m44<arch::scalar> row_sum4(const m44<arch::scalar>& m) noexcept {
    m44<arch::scalar> r;
    for (int j = 0; j < 4; ++j) {
        const float* c = m.p + 4 * j;
        const float s = (c[0] + c[1]) + (c[2] + c[3]);
        for (int k = 0; k < 4; ++k) r.p[4 * j + k] = s;
    }
    return r;
}
DSV4_INLINE m44<arch::scalar> row_max4(const m44<arch::scalar>& m) noexcept {
    m44<arch::scalar> r;
    for (int j = 0; j < 4; ++j) {
        const float* c = m.p + 4 * j;
        const float s = std::max(std::max(c[0], c[1]), std::max(c[2], c[3]));
        for (int k = 0; k < 4; ++k) r.p[4 * j + k] = s;
    }
    return r;
}
DSV4_INLINE m44<arch::scalar> col_sum4(const m44<arch::scalar>& m) noexcept {
    m44<arch::scalar> r;
    for (int k = 0; k < 4; ++k) {
        const float s = (m.p[k] + m.p[8 + k]) + (m.p[4 + k] + m.p[12 + k]);
        for (int j = 0; j < 4; ++j) r.p[4 * j + k] = s;
    }
    return r;
}

#if defined(__AVX2__)
// ------------------------------------------------------------------ AVX2: rows 0-1 | rows 2-3
template <class A> requires(!is_scalar<A> && !is_avx512<A>)
DSV4_INLINE m44<A> row_sum4(const m44<A>& m) noexcept {
    m44<A> r;
    for (int i = 0; i < 2; ++i) {
        const __m256 v = m.p[i];
        const __m256 s = _mm256_add_ps(v, _mm256_permute_ps(v, 0xB1));  // c0+c1, c1+c0, c2+c3, c3+c2
        r.p[i] = _mm256_add_ps(s, _mm256_permute_ps(s, 0x4E));
    }
    return r;
}
template <class A> requires(!is_scalar<A> && !is_avx512<A>)
DSV4_INLINE m44<A> row_max4(const m44<A>& m) noexcept {
    m44<A> r;
    for (int i = 0; i < 2; ++i) {
        const __m256 v = m.p[i];
        const __m256 s = _mm256_max_ps(v, _mm256_permute_ps(v, 0xB1));
        r.p[i] = _mm256_max_ps(s, _mm256_permute_ps(s, 0x4E));
    }
    return r;
}
template <class A> requires(!is_scalar<A> && !is_avx512<A>)
DSV4_INLINE m44<A> col_sum4(const m44<A>& m) noexcept {
    const __m256 t = _mm256_add_ps(m.p[0], m.p[1]);                          // r0+r2 | r1+r3
    const __m256 u = _mm256_add_ps(t, _mm256_permute2f128_ps(t, t, 0x01));  // (r0+r2)+(r1+r3) twice
    m44<A> r;
    r.p[0] = u;
    r.p[1] = u;
    return r;
}
#endif

#if defined(__AVX512F__)
// ------------------------------------------------------------------ AVX-512: one zmm
template <class A> requires is_avx512<A>
DSV4_INLINE m44<A> row_sum4(const m44<A>& m) noexcept {
    const __m512 v = m.p[0];
    const __m512 s = _mm512_add_ps(v, _mm512_permute_ps(v, 0xB1));
    m44<A> r;
    r.p[0] = _mm512_add_ps(s, _mm512_permute_ps(s, 0x4E));
    return r;
}
template <class A> requires is_avx512<A>
DSV4_INLINE m44<A> row_max4(const m44<A>& m) noexcept {
    const __m512 v = m.p[0];
    const __m512 s = _mm512_max_ps(v, _mm512_permute_ps(v, 0xB1));
    m44<A> r;
    r.p[0] = _mm512_max_ps(s, _mm512_permute_ps(s, 0x4E));
    return r;
}
template <class A> requires is_avx512<A>
DSV4_INLINE m44<A> col_sum4(const m44<A>& m) noexcept {
    const __m512 v = m.p[0];
    // 128-bit row blocks: (r0+r2, r1+r3, r2+r0, r3+r1), then add the neighbouring block
    const __m512 t = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(1, 0, 3, 2)));
    m44<A> r;
    r.p[0] = _mm512_add_ps(t, _mm512_shuffle_f32x4(t, t, _MM_SHUFFLE(2, 3, 0, 1)));
    return r;
}
#endif

}  // namespace simd
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
