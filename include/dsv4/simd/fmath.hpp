// dsv4/simd/fmath.hpp - f32 arithmetic that gives the same bits on every tier.
//
// Kernels that must agree bit for bit across tiers (norms, RoPE, attention) are written
// once over freg<A>: a plain float for arch::scalar, an xsimd batch otherwise. Three
// things make the same source give the same bits everywhere:
//  * fmadd() is always a fused multiply-add (std::fma on the scalar tier; xsimd 8.1's
//    AVX-512 fma is x*y+z and would rely on the compiler contracting it);
//  * rounded() stops the compiler from contracting a product into a later add (GCC
//    contracts across statements under -ffp-contract=fast, its GNU-mode default, and
//    only the tiers with FMA hardware would be affected);
//  * exp_f32() is one polynomial evaluated with those two primitives, so every tier
//    computes the same function; no per-ISA math library.
// Everything else (loads, stores, broadcasts, bit casts) is exact by nature.
#pragma once

#include "../kernels/codec.hpp"
#include "vec.hpp"

#include <cmath>
#include <utility>

/// Forces a lambda's body inline (for the small bodies that simd::unroll expands).
#if defined(__GNUC__)
#  define DSV4_LAMBDA_INLINE __attribute__((always_inline))
#else
#  define DSV4_LAMBDA_INLINE
#endif

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace simd {

/// Hint: bring the cache line at p towards L2 (a no-op where the builtin is missing).
DSV4_INLINE void prefetch_l2(const void* p) noexcept {
#if defined(__GNUC__)
    __builtin_prefetch(p, 0, 2);
#else
    (void)p;
#endif
}

template <class F, int... I> DSV4_INLINE void unroll_seq(F& f, std::integer_sequence<int, I...>) {
    (f(std::integral_constant<int, I>{}), ...);
}
/// f(std::integral_constant<int, I>{}) for I = 0 .. N-1 as straight-line code. Register
/// tiles index their accumulator arrays through it: with a loop instead, GCC 12 unrolls
/// a 24-accumulator tile only after its scalar-replacement pass and leaves the tile in
/// memory (a 2-3x slowdown). Pass lambdas marked DSV4_LAMBDA_INLINE.
template <int N, class F> DSV4_INLINE void unroll(F&& f) { unroll_seq(f, std::make_integer_sequence<int, N>{}); }

template <class A> struct freg_of { using type = vf32<A>; };
template <> struct freg_of<arch::scalar> { using type = float; };
template <class A> struct ireg_of { using type = vi32<A>; };
template <> struct ireg_of<arch::scalar> { using type = int32_t; };
/// One f32 register of arch A (float on the scalar tier) and its int32 twin.
template <class A> using freg = typename freg_of<A>::type;
template <class A> using ireg = typename ireg_of<A>::type;

template <class A> DSV4_INLINE freg<A> loadu(const float* p) noexcept {
    if constexpr (is_scalar<A>) return *p;
    else return vf32<A>::load_unaligned(p);
}
DSV4_INLINE void storeu(float* p, float v) noexcept { *p = v; }
template <class T, class X> DSV4_INLINE void storeu(float* p, xsimd::batch<T, X> v) noexcept { v.store_unaligned(p); }

/// bf16 bit patterns -> f32 register (exact).
template <class A> DSV4_INLINE freg<A> load_bf16(const uint16_t* p) noexcept {
    if constexpr (is_scalar<A>) return bf16_to_f32(*p);
    else return kernels::vec::bf16_to_f32<A>(load_u16_as_i32(A{}, p));
}
/// f32 register -> bf16 bit patterns (RNE).
template <class A> DSV4_INLINE void store_bf16(uint16_t* p, freg<A> v) noexcept {
    if constexpr (is_scalar<A>) *p = f32_to_bf16(v);
    else store_i32_as_u16(A{}, kernels::vec::f32_to_bf16<A>(v), p);
}

DSV4_INLINE float fmadd(float a, float b, float c) noexcept { return std::fma(a, b, c); }
// vmax / vmin return b when a or b is NaN (as maxps / minps do): vmax(c, x) propagates a NaN x.
DSV4_INLINE float vmax(float a, float b) noexcept { return a > b ? a : b; }
DSV4_INLINE float vmin(float a, float b) noexcept { return a < b ? a : b; }
DSV4_INLINE int32_t to_bits(float x) noexcept { return std::bit_cast<int32_t>(x); }
DSV4_INLINE float from_bits(int32_t x) noexcept { return std::bit_cast<float>(x); }

/// x, materialised as a rounded f32: no FMA contraction can reach across it.
DSV4_INLINE float rounded(float x) noexcept {
#if defined(__GNUC__) && (defined(__SSE2__) || defined(__x86_64__))
    __asm__("" : "+x"(x));
#else
    volatile float v = x;
    x = v;
#endif
    return x;
}

template <class T, class X> DSV4_INLINE xsimd::batch<T, X> vmax(xsimd::batch<T, X> a, xsimd::batch<T, X> b) noexcept {
    return xsimd::max(a, b);
}
template <class T, class X> DSV4_INLINE xsimd::batch<T, X> vmin(xsimd::batch<T, X> a, xsimd::batch<T, X> b) noexcept {
    return xsimd::min(a, b);
}
template <class X> DSV4_INLINE xsimd::batch<int32_t, X> to_bits(xsimd::batch<float, X> x) noexcept {
    return xsimd::bitwise_cast<xsimd::batch<int32_t, X>>(x);
}
template <class X> DSV4_INLINE xsimd::batch<float, X> from_bits(xsimd::batch<int32_t, X> x) noexcept {
    return xsimd::bitwise_cast<xsimd::batch<float, X>>(x);
}

// Declared for every arch so generic bodies can name them; never callable for scalar.
template <class A, class... T> requires is_scalar<A> void swap_pairs(A, T...) = delete;

#if defined(__AVX2__)
DSV4_INLINE vf32<arch::avx2> fmadd(vf32<arch::avx2> a, vf32<arch::avx2> b, vf32<arch::avx2> c) noexcept {
    return _mm256_fmadd_ps(a, b, c);
}
DSV4_INLINE vf32<arch::avx2> rounded(vf32<arch::avx2> x) noexcept {
    __m256 r = x;
    __asm__("" : "+x"(r));
    return r;
}
/// (x0, x1, x2, x3, ...) -> (x1, x0, x3, x2, ...): the partner of each interleaved pair.
DSV4_INLINE vf32<arch::avx2> swap_pairs(arch::avx2, vf32<arch::avx2> x) noexcept {
    return _mm256_permute_ps(x, 0xB1);
}
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__)
DSV4_INLINE vf32<arch::avx512> fmadd(vf32<arch::avx512> a, vf32<arch::avx512> b, vf32<arch::avx512> c) noexcept {
    return _mm512_fmadd_ps(a, b, c);
}
DSV4_INLINE vf32<arch::avx512> rounded(vf32<arch::avx512> x) noexcept {
    __m512 r = x;
    __asm__("" : "+v"(r));
    return r;
}
DSV4_INLINE vf32<arch::avx512> swap_pairs(arch::avx512, vf32<arch::avx512> x) noexcept {
    return _mm512_permute_ps(x, 0xB1);
}
#endif

/// bf16(x) as an f32 value, for x >= 0 finite (softmax weights): RNE on the bit pattern.
template <class V> DSV4_INLINE V round_bf16_nonneg(V x) noexcept {
    const auto b = to_bits(x);
    using I = decltype(b);
    return from_bits((b + I(0x7FFF) + ((b >> 16) & I(1))) & I(int32_t(0xFFFF0000u)));
}

/// e^x in f32 for any x, the same bits on every tier (Cephes expf: Cody-Waite reduction
/// by ln 2, degree-6 polynomial; within 1 ulp of the correctly rounded value over
/// [-87, 88], checked in tests). Results below 2^-126 are gradual (subnormal), x < -104
/// gives +0, x > 88.73 gives +inf; -inf gives +0; NaN gives NaN (the clamp keeps it: vmax
/// and vmin return their second operand when one is NaN, on every tier).
template <class V> DSV4_INLINE V exp_f32(V x) noexcept {
    x = vmin(V(100.0f), vmax(V(-110.0f), x));
    const V magic(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer (RNE)
    const V t = rounded(rounded(x * V(1.44269504088896341f)) + magic);
    const auto n = to_bits(t) - to_bits(magic);  // round(x / ln2), |n| <= 160
    const V nf = t - magic;                      // exact
    V r = fmadd(nf, V(-0.693359375f), x);        // exact: 0.693359375 has 9 significant bits
    r = fmadd(nf, V(2.12194440e-4f), r);
    V p(1.9875691500e-4f);
    p = fmadd(p, r, V(1.3981999507e-3f));
    p = fmadd(p, r, V(8.3334519073e-3f));
    p = fmadd(p, r, V(4.1665795894e-2f));
    p = fmadd(p, r, V(1.6666665459e-1f));
    p = fmadd(p, r, V(5.0000001201e-1f));
    const V y = rounded(fmadd(p, rounded(r * r), r)) + V(1.0f);
    // 2^n in two exact halves, so that subnormal results round once and n = 128 overflows.
    using I = decltype(n);
    const I n1 = n >> 1, n2 = n - n1;
    const V s1 = from_bits((n1 + I(127)) << 23), s2 = from_bits((n2 + I(127)) << 23);
    return rounded(rounded(y * s1) * s2);
}

}  // namespace simd
}  // namespace DSV4_ISA_NS
}  // namespace dsv4

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace simd {

template <class A, class... T> requires is_scalar<A> void transpose(A, T...) = delete;

#if defined(__AVX2__)
/// In-register transpose of an 8 x 8 f32 tile: r[i][j] <- r[j][i].
DSV4_INLINE void transpose(arch::avx2, vf32<arch::avx2> (&r)[8]) noexcept {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; ++i) {
        u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 4; ++i) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__)
/// In-register transpose of a 16 x 16 f32 tile: r[i][j] <- r[j][i].
DSV4_INLINE void transpose(arch::avx512, vf32<arch::avx512> (&r)[16]) noexcept {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; ++i) {  // pairs of rows, interleaved by element
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {  // quads of rows, interleaved by element pair
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    // u[4q + k] holds, in each 128-bit lane L, column 4L + k of rows 4q .. 4q+3
    for (int k = 0; k < 4; ++k) {
        const __m512 lo01 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0x44);    // lanes 0,1 of rows 0-3 | 4-7
        const __m512 hi01 = _mm512_shuffle_f32x4(u[k], u[4 + k], 0xEE);    // lanes 2,3
        const __m512 lo23 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0x44);
        const __m512 hi23 = _mm512_shuffle_f32x4(u[8 + k], u[12 + k], 0xEE);
        r[k] = _mm512_shuffle_f32x4(lo01, lo23, 0x88);       // column k:      lane 0 of each
        r[4 + k] = _mm512_shuffle_f32x4(lo01, lo23, 0xDD);   // column 4 + k:  lane 1
        r[8 + k] = _mm512_shuffle_f32x4(hi01, hi23, 0x88);   // column 8 + k:  lane 2
        r[12 + k] = _mm512_shuffle_f32x4(hi01, hi23, 0xDD);  // column 12 + k: lane 3
    }
}
#endif

}  // namespace simd
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
