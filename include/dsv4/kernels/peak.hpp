// dsv4/kernels/peak.hpp - the FMA-throughput ceiling of a tier, measured by the same
// binary that runs the kernels (benchmarks print compute-bound rows as flops_frac).
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

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
