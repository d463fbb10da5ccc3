// Small-M FP8 GEMM (kernels/gemm_fp8.hpp) at V4-Flash shapes, as the prefill runs it: M in
// {4, 5, 8, 12, 16, 32, 64, 512} activation rows (4: the row kernel, 5: the GEMM's first size,
// 12: the AVX2 tiers' crossover with the reference path, fp8_bf16_min_m_avx2; 512: a whole
// default prefill chunk, SIMD tiers only), the row-range
// kernels split over threads as par:: does (grain 32). One weight copy per shape, re-read every iteration (the GEMM is compute-bound
// from M = 8: 16 flops per weight byte).
//   gemm_fp8/<tier>/<name>/m<M>/t<T>       fast FP8 mode (fp8_gemv_bf16_rows: the GEMM from
//                                          fp8_gemm_min_m rows, bf16 dot products on
//                                          avx512_bf16, f32 FMAs on the other SIMD tiers)
//   gemm_fp8_ref/<tier>/<name>/m<M>/t<T>   reference mode (fp8_gemv_rows, f32 activations)
// Shapes: wq_a 1024x4096, wq_b 32768x1024, wkv 512x4096, wo_a 8 groups of 1024x4096,
// wo_b 4096x8192, shared expert w1/w3 2048x4096 and w2 4096x2048.
// Counters: GFLOP/s; peak_frac = GFLOP/s over the same binary's bf16 dot-product ceiling
// (peak/bf16dot: vdpbf16ps on avx512_bf16, the FMA ceiling elsewhere); fma_frac = over the
// FMA ceiling (peak/fma), for the same tier and thread count.
#include "bench_common.hpp"

#include <dsv4/gemv.hpp>

#include <random>

namespace {

struct shape {
    const char* name;
    std::size_t n, k, groups;
};
constexpr shape shapes[] = {{"wq_a_1024x4096", 1024, 4096, 1},  {"wq_b_32768x1024", 32768, 1024, 1},
                            {"wkv_512x4096", 512, 4096, 1},     {"wo_a_8x1024x4096", 8192, 4096, 8},
                            {"wo_b_4096x8192", 4096, 8192, 1},  {"shared_w1_2048x4096", 2048, 4096, 1},
                            {"shared_w2_4096x2048", 4096, 2048, 1}};

void bm_gemm_fp8(benchmark::State& st, dsv4::tier t, shape s, std::size_t m, int threads, bool fast) {
    const auto& K = *dsv4::kernels_for(t);
    const std::size_t n = s.n, k = s.k, kx = s.groups * k;
    std::mt19937_64 rng(n * 31 + k);
    std::vector<uint8_t> w(n * k), sc(((n + 127) / 128) * (k / 128));
    for (auto& c : w) {
        c = uint8_t(rng());
        if ((c & 0x7F) == 0x7F) c = 0x42;  // no NaN codes
    }
    for (auto& e : sc) e = uint8_t(114 + rng() % 8);
    std::vector<float> a(m * kx);
    for (auto& v : a) v = dsv4::round_bf16(float(int(rng() % 2001) - 1000) * 1e-3f);
    std::vector<uint16_t> xb(m * kx);
    std::vector<int32_t> sh(m * kx / 128);
    dsv4::to_bf16_blocks(a.data(), kx, m, kx, xb.data(), kx, sh.data(), kx / 128);
    std::vector<float> y(m * n);
    const dsv4::fp8_matrix W{w.data(), k, sc.data(), k / 128, n, k};
    const dsv4::bf16_block_rows X{xb.data(), kx, sh.data(), kx / 128, m};
    const dsv4::f32_rows XF{a.data(), kx, m};
    const dsv4::gemv_out out{y.data(), nullptr, n};
    const double bf16_peak = bench::peak_flops_of(&dsv4::kernel_table::bf16_dot_peak, t, threads);
    const double fma_peak = bench::fma_peak_flops(t, threads);
    {
        tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
        for (auto _ : st)
            bench::parallel_rows(threads, n, 32, [&](std::size_t r0, std::size_t r1) {
                if (fast && s.groups > 1) K.fp8_grouped_gemv_bf16_rows(W, s.groups, X, out, r0, r1);
                else if (fast) K.fp8_gemv_bf16_rows(W, X, out, r0, r1);
                else if (s.groups > 1) K.fp8_grouped_gemv_rows(W, s.groups, XF, out, r0, r1);
                else K.fp8_gemv_rows(W, XF, out, r0, r1);
            });
    }
    benchmark::DoNotOptimize(y.data());
    const double flops = 2.0 * double(m) * double(n) * double(k) * double(st.iterations());
    st.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
    st.counters["peak_frac"] = benchmark::Counter(flops / bf16_peak, benchmark::Counter::kIsRate);
    st.counters["fma_frac"] = benchmark::Counter(flops / fma_peak, benchmark::Counter::kIsRate);
}

const bool registered = [] {
    for (dsv4::tier t : bench::tiers())
        for (int th : bench::thread_counts())
            for (std::size_t m : {4, 5, 8, 12, 16, 32, 64, 512})
                for (const shape& s : shapes) {
                    if (m == 512 && t == dsv4::tier::scalar) continue;  // minutes per iteration
                    for (bool fast : {true, false})
                        benchmark::RegisterBenchmark((std::string(fast ? "gemm_fp8/" : "gemm_fp8_ref/") +
                                                      bench::tier_str(t) + "/" + s.name + "/m" + std::to_string(m) +
                                                      "/t" + std::to_string(th))
                                                         .c_str(),
                                                     bm_gemm_fp8, t, s, m, th, fast)
                            ->UseRealTime()
                            ->Unit(benchmark::kMicrosecond);
                }
    return true;
}();

}  // namespace
