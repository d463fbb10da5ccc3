// peak/fma/<tier>/t<threads>: the FMA-throughput ceiling each tier's compute-bound rows
// divide by (flops_frac), measured by this binary with the tier's own fma_peak kernel.
// peak/int8/<tier>/w<512|256>/t<threads>: the int8 dot-product ceiling (int8_peak: vpdpbusd,
// or the vpmaddubsw pair form) per vector width; the FP4 GEMM rows divide by the better of
// the two (ceiling_GOP/s, peak_frac).
#include "bench_common.hpp"

namespace {
void bm_fma_peak(benchmark::State& st, dsv4::tier t, int threads) {
    const double peak = bench::fma_peak_flops(t, threads);
    const auto& k = *dsv4::kernels_for(t);
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
    const uint64_t iters = 1 << 14;
    uint64_t flops = 0;
    for (auto _ : st) {
        std::atomic<uint64_t> f{0};
        bench::parallel_rows(threads, std::size_t(8 * threads), 1, [&](std::size_t c0, std::size_t c1) {
            float out = 0;
            uint64_t n = 0;
            for (std::size_t c = c0; c < c1; ++c) n += k.fma_peak(iters, &out);
            f += n;
            benchmark::DoNotOptimize(out);
        });
        flops = f.load();
    }
    st.counters["GFLOP/s"] = benchmark::Counter(double(flops) * double(st.iterations()) * 1e-9, benchmark::Counter::kIsRate);
    st.counters["ceiling_GFLOP/s"] = peak * 1e-9;  // best of 7, what flops_frac divides by
    st.counters["core_cpu_GFLOP/s"] = bench::fma_peak_cpu_flops(t) * 1e-9;  // per thread-CPU-second (cpu_frac)
}

// peak/bf16dot/<tier>/t<threads>: the bf16 dot-product ceiling (vdpbf16ps on avx512_bf16,
// the FMA ceiling elsewhere) that bench_gemm's peak_frac divides by.
void bm_bf16_dot_peak(benchmark::State& st, dsv4::tier t, int threads) {
    double peak = 0;
    for (auto _ : st) peak = bench::peak_flops_of(&dsv4::kernel_table::bf16_dot_peak, t, threads);
    st.counters["ceiling_GFLOP/s"] = peak * 1e-9;
    st.counters["fma_ceiling_GFLOP/s"] = bench::fma_peak_flops(t, threads) * 1e-9;
}

void bm_int8_peak(benchmark::State& st, dsv4::tier t, int width, int threads) {
    const auto& k = *dsv4::kernels_for(t);
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
    const uint64_t iters = 1 << 14;
    uint64_t ops = 0;
    for (auto _ : st) {
        std::atomic<uint64_t> f{0};
        bench::parallel_rows(threads, std::size_t(8 * threads), 1, [&](std::size_t c0, std::size_t c1) {
            int32_t out = 0;
            uint64_t n = 0;
            for (std::size_t c = c0; c < c1; ++c) n += k.int8_peak(iters, width, &out);
            f += n;
            benchmark::DoNotOptimize(out);
        });
        ops = f.load();
    }
    st.counters["GOP/s"] = benchmark::Counter(double(ops) * double(st.iterations()) * 1e-9, benchmark::Counter::kIsRate);
    st.counters["ceiling_GOP/s"] = bench::int8_peak_ops(t, threads) * 1e-9;  // best of 7, what peak_frac divides by
}

const bool registered = [] {
    for (dsv4::tier t : bench::tiers())
        for (int th : bench::thread_counts()) {
            benchmark::RegisterBenchmark(("peak/fma/" + bench::tier_str(t) + "/t" + std::to_string(th)).c_str(),
                                         bm_fma_peak, t, th)
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond);
            for (int width : {512, 256})
                if (width == 256 || t == dsv4::tier::avx512 || t == dsv4::tier::avx512_vnni || t == dsv4::tier::avx512_bf16)
                    benchmark::RegisterBenchmark(("peak/int8/" + bench::tier_str(t) + "/w" + std::to_string(width) + "/t" +
                                                  std::to_string(th)).c_str(),
                                                 bm_int8_peak, t, width, th)
                        ->UseRealTime()
                        ->Unit(benchmark::kMicrosecond);
        }
    for (dsv4::tier t : bench::tiers())
        for (int th : bench::thread_counts())
            benchmark::RegisterBenchmark(("peak/bf16dot/" + bench::tier_str(t) + "/t" + std::to_string(th)).c_str(),
                                         bm_bf16_dot_peak, t, th)
                ->Iterations(1)
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond);
    return true;
}();
}  // namespace
