// dsv4/simd/permute.hpp - lane permutations for the Hadamard transform, the indexer's
// K-block transpose and the top-k filter: xsimd 8.1 has no lane-xor swizzle, no
// movemask and no tile transpose, so each is one small overload per ISA family.
#pragma once

#include "vec.hpp"

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace simd {

// Declared for every arch so generic bodies can name them; never callable for scalar.
template <int H, class A, class... T> requires is_scalar<A> void xor_lanes(A, T...) = delete;
template <class A, class... T> requires is_scalar<A> void movemask(A, T...) = delete;
template <class A, class... T> requires is_scalar<A> void transpose_u32(A, T...) = delete;

#if defined(__AVX2__)
/// Lane i <- lane i ^ H (H = 1, 2, 4): the butterfly partner at distance H.
template <int H> DSV4_INLINE vf32<arch::avx2> xor_lanes(arch::avx2, vf32<arch::avx2> x) noexcept {
    static_assert(H == 1 || H == 2 || H == 4, "lane distance must be < 8");
    if constexpr (H == 1) return _mm256_permute_ps(x, 0xB1);
    else if constexpr (H == 2) return _mm256_permute_ps(x, 0x4E);
    else return _mm256_permute2f128_ps(x, x, 0x01);
}
/// Bit l = lane l of a comparison result.
DSV4_INLINE uint32_t movemask(arch::avx2, xsimd::batch_bool<float, xarch<arch::avx2>> m) noexcept {
    return uint32_t(_mm256_movemask_ps(m));
}
/// In-place 8x8 transpose of 32-bit lanes: r[i] lane j <-> r[j] lane i.
DSV4_INLINE void transpose_u32(arch::avx2, vi32<arch::avx2>* r) noexcept {
    __m256i t[8], u[8];
    for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_epi32(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_epi32(r[k], r[k + 1]);
    }
    for (int m = 0; m < 8; m += 4) {  // u[m + c], 128-bit lane L = column 4L + c, rows m..m+3
        u[m + 0] = _mm256_unpacklo_epi64(t[m], t[m + 2]);
        u[m + 1] = _mm256_unpackhi_epi64(t[m], t[m + 2]);
        u[m + 2] = _mm256_unpacklo_epi64(t[m + 1], t[m + 3]);
        u[m + 3] = _mm256_unpackhi_epi64(t[m + 1], t[m + 3]);
    }
    for (int c = 0; c < 4; ++c) {
        r[c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x31);
    }
}
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__)
template <int H> DSV4_INLINE vf32<arch::avx512> xor_lanes(arch::avx512, vf32<arch::avx512> x) noexcept {
    static_assert(H == 1 || H == 2 || H == 4 || H == 8, "lane distance must be < 16");
    if constexpr (H == 1) return _mm512_permute_ps(x, 0xB1);
    else if constexpr (H == 2) return _mm512_permute_ps(x, 0x4E);
    else if constexpr (H == 4) return _mm512_shuffle_f32x4(x, x, 0xB1);  // 128-bit lanes (1, 0, 3, 2)
    else return _mm512_shuffle_f32x4(x, x, 0x4E);                         // (2, 3, 0, 1)
}
DSV4_INLINE uint32_t movemask(arch::avx512, xsimd::batch_bool<float, xarch<arch::avx512>> m) noexcept {
    return uint32_t(static_cast<__mmask16>(m));
}
/// In-place 16x16 transpose of 32-bit lanes.
DSV4_INLINE void transpose_u32(arch::avx512, vi32<arch::avx512>* r) noexcept {
    __m512i t[16], u[16];
    for (int k = 0; k < 16; k += 2) {
        t[k] = _mm512_unpacklo_epi32(r[k], r[k + 1]);
        t[k + 1] = _mm512_unpackhi_epi32(r[k], r[k + 1]);
    }
    for (int m = 0; m < 16; m += 4) {  // u[m + c], 128-bit lane L = column 4L + c, rows m..m+3
        u[m + 0] = _mm512_unpacklo_epi64(t[m], t[m + 2]);
        u[m + 1] = _mm512_unpackhi_epi64(t[m], t[m + 2]);
        u[m + 2] = _mm512_unpacklo_epi64(t[m + 1], t[m + 3]);
        u[m + 3] = _mm512_unpackhi_epi64(t[m + 1], t[m + 3]);
    }
    for (int c = 0; c < 4; ++c) {  // 4x4 transpose of 128-bit lanes of u[c], u[4+c], u[8+c], u[12+c]
        const __m512i w0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44);
        const __m512i w1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
        const __m512i w2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44);
        const __m512i w3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_i32x4(w0, w2, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(w0, w2, 0xDD);
        r[8 + c] = _mm512_shuffle_i32x4(w1, w3, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(w1, w3, 0xDD);
    }
}
#endif

}  // namespace simd
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
