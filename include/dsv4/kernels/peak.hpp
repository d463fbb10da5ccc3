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

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
