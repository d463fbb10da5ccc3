// dsv4/kernels/peak.hpp - the FMA-throughput and int8 dot-product ceilings of a tier,
// measured by the same binary that runs the kernels (benchmarks print compute-bound rows
// as flops_frac / peak_frac).
#pragma once

#include "../simd/fmath.hpp"

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace kernels {
/// Runs `iters` rounds of independent multiply-add chains and returns the flops done
/// (2 per lane per multiply-add); the folded result goes to *out so nothing is elided.
/// Enough chains to cover FMA latency x ports (4 cycles x 2 on current x86 cores):
/// 24 of 32 zmm, 12 of 16 ymm. The scalar tier has no FMA instruction: it runs separate
/// multiplies and adds, its own ceiling.
template <class A> uint64_t fma_peak(uint64_t iters, float* out) noexcept {
    using V = simd::freg<A>;
    constexpr int K = simd::is_avx512<A> ? 24 : (simd::is_scalar<A> ? 8 : 12);
    V acc[K];
    for (int k = 0; k < K; ++k) acc[k] = V(1.0f + 0.001f * float(k));
    const V b(0.99990f), c(1.0e-4f);
    // straight-line rounds (simd::unroll) keep the chains in registers; a loop over the
    // array lets the compiler interchange the loops and run the chains through memory
    for (uint64_t it = 0; it < iters; ++it)
        simd::unroll<K>([&](auto k) DSV4_LAMBDA_INLINE {
            if constexpr (simd::is_scalar<A>) acc[k] = acc[k] * b + c;
            else acc[k] = simd::fmadd(acc[k], b, c);
        });
    V sum(0.0f);
    for (int k = 0; k < K; ++k) sum = sum + acc[k];
    if constexpr (simd::is_scalar<A>) *out = sum;
    else *out = xsimd::hadd(sum);
    return iters * uint64_t(K) * simd::lanes<A>() * 2;
}

/// The bf16 dot-product ceiling: on avx512_bf16, independent vdpbf16ps chains (24 of 32
/// zmm), 4 flops per f32 lane (2 products, 2 adds), the unit the fast FP8 GEMM
/// (gemm_fp8.hpp) runs on. Other tiers make their bf16 products with FMAs: their ceiling
/// is fma_peak's.
template <class A> uint64_t bf16_dot_peak(uint64_t iters, float* out) noexcept {
#if defined(__AVX512BF16__)
    if constexpr (std::is_base_of_v<arch::avx512_bf16, A>) {
        constexpr int K = 24;
        __m512 acc[K];
        for (int k = 0; k < K; ++k) acc[k] = _mm512_set1_ps(1.0f + 0.001f * float(k));
        const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3F803F80);  // (1, 1)
        const __m512bh b = (__m512bh)_mm512_set1_epi32(0x38D138D1);  // (1e-4, 1e-4)
        for (uint64_t it = 0; it < iters; ++it)
            simd::unroll<K>([&](auto k) DSV4_LAMBDA_INLINE { acc[k] = _mm512_dpbf16_ps(acc[k], a, b); });
        __m512 sum = _mm512_setzero_ps();
        for (int k = 0; k < K; ++k) sum = _mm512_add_ps(sum, acc[k]);
        *out = xsimd::hadd(simd::vf32<A>(sum));
        return iters * uint64_t(K) * 16 * 4;
    }
#endif
    return fma_peak<A>(iters, out);
}

/// The int8 dot-product ceiling: `iters` rounds of independent u8 x s8 -> int32 chains with
/// the tier's instruction at `width_bits` (512 on the AVX-512 tiers, else 256; 256 always
/// works), returning the ops done (2 per multiply-add). VNNI tiers run vpdpbusd (4 products
/// per int32 lane); the others the form the fast FP4 kernels use without it: two vpmaddubsw
/// summed as int16, one vpmaddwd, one add (8 products per lane, 5 instructions). Each chain
/// feeds its own state back as the signed operand so that no product is loop-invariant.
/// The widths differ by core: on Zen 4 a 512-bit vpdpbusd makes half the products per
/// cycle of two 256-bit ones, so the ceiling is the better of both (bench_common.hpp).
/// The scalar tier runs int32 multiply-adds.
template <class A> uint64_t int8_peak(uint64_t iters, int width_bits, int32_t* out) noexcept {
    (void)width_bits;
#if defined(__AVX512F__) && defined(__AVX512BW__)
    if constexpr (simd::is_avx512<A>) {
        if (width_bits == 512) {
#  if defined(__AVX512VNNI__)
            constexpr bool vnni = std::is_base_of_v<arch::avx512_vnni, A>;
#  else
            constexpr bool vnni = false;
#  endif
            constexpr int K = vnni ? 24 : 20;
            __m512i v[K];
            for (int k = 0; k < K; ++k) v[k] = _mm512_set1_epi32(0x01020304 + k);
            const __m512i u0 = _mm512_set1_epi8(5), u1 = _mm512_set1_epi8(7), one = _mm512_set1_epi16(1);
            for (uint64_t it = 0; it < iters; ++it)
                simd::unroll<K>([&](auto k) DSV4_LAMBDA_INLINE {
#  if defined(__AVX512VNNI__)
                    if constexpr (vnni) v[k] = _mm512_dpbusd_epi32(v[k], u0, v[k]);
                    else
#  endif
                        v[k] = _mm512_add_epi32(
                            v[k], _mm512_madd_epi16(
                                      _mm512_add_epi16(_mm512_maddubs_epi16(u0, v[k]), _mm512_maddubs_epi16(u1, v[k])), one));
                });
            __m512i sum = v[0];
            for (int k = 1; k < K; ++k) sum = _mm512_add_epi32(sum, v[k]);
            alignas(64) int32_t l[16];  // (GCC 12's _mm512_reduce_add_epi32 trips -Wuninitialized)
            _mm512_store_si512(l, sum);
            uint32_t t = 0;  // unsigned: the chains' values are arbitrary, wrap-around is defined
            for (int i = 0; i < 16; ++i) t += uint32_t(l[i]);
            *out = int32_t(t & 0x7FFFFFFF);
            return iters * uint64_t(K) * 64 * (vnni ? 1 : 2) * 2;
        }
    }
#endif
#if defined(__AVX2__)
    if constexpr (std::is_base_of_v<arch::avx2, A> || simd::is_avx512<A>) {
#  if defined(__AVX512VNNI__)
        constexpr bool vnni = std::is_base_of_v<arch::avx512_vnni, A>;
#  elif defined(__AVXVNNI__)
        constexpr bool vnni = std::is_base_of_v<arch::avx2_vnni, A>;
#  else
        constexpr bool vnni = false;
#  endif
        // 12 chains (the maddubs form needs temporaries: 10): on Zen 4, 24 chains of 256-bit
        // vpdpbusd (registers 16-31 in use) ran at half the rate of 12
        constexpr int K = vnni ? 12 : 10;
        __m256i v[K];
        for (int k = 0; k < K; ++k) v[k] = _mm256_set1_epi32(0x01020304 + k);
        const __m256i u0 = _mm256_set1_epi8(5), u1 = _mm256_set1_epi8(7), one = _mm256_set1_epi16(1);
        for (uint64_t it = 0; it < iters; ++it)
            simd::unroll<K>([&](auto k) DSV4_LAMBDA_INLINE {
#  if defined(__AVX512VNNI__)
                if constexpr (vnni) v[k] = _mm256_dpbusd_epi32(v[k], u0, v[k]);
                else
#  elif defined(__AVXVNNI__)
                if constexpr (vnni) v[k] = _mm256_dpbusd_avx_epi32(v[k], u0, v[k]);
                else
#  endif
                    v[k] = _mm256_add_epi32(v[k], _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(u0, v[k]),
                                                                                      _mm256_maddubs_epi16(u1, v[k])),
                                                                    one));
            });
        __m256i sum = v[0];
        for (int k = 1; k < K; ++k) sum = _mm256_add_epi32(sum, v[k]);
        alignas(32) int32_t l[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(l), sum);
        uint32_t t = 0;
        for (int i = 0; i < 8; ++i) t += uint32_t(l[i]);
        *out = int32_t(t & 0x7FFFFFFF);
        return iters * uint64_t(K) * 32 * (vnni ? 1 : 2) * 2;
    }
#endif
    if constexpr (simd::is_scalar<A>) {
        constexpr int K = 8;
        uint32_t v[K];  // unsigned: wrap-around is defined
        for (int k = 0; k < K; ++k) v[k] = uint32_t(k + 1);
        const uint32_t b = 3, c = 1;
        for (uint64_t it = 0; it < iters; ++it)
            simd::unroll<K>([&](auto k) DSV4_LAMBDA_INLINE { v[k] = v[k] * b + c; });
        uint32_t sum = 0;
        for (int k = 0; k < K; ++k) sum += v[k];
        *out = int32_t(sum & 0x7FFFFFFF);
        return iters * uint64_t(K) * 2;
    }
    return 0;
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
