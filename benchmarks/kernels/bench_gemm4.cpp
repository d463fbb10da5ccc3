// FP4 small-M GEMM (kernels/gemm_fp4.hpp) at the routed-expert shapes, fast mode, through
// the row-range entry points the MoE calls (from gemm4_min_m<tier> rows on they run the GEMM):
//   gemm4/gate_up/<tier>/2048x4096/m<M>/t<T>   fp4_gate_up_q8_rows (w1 + w3 + SwiGLU)
//   gemm4/w2/<tier>/4096x2048/m<M>/t<T>        fp4_gemv_q8_rows
// M in {3 (the row path, below the threshold), 4, 8, 16, 32, 64}. One copy of the weights
// (8 / 4 MiB: an expert read once per chunk, warm after the first iteration).
// Counters: GOP/s (2 per multiply-add) and peak_frac = GOP/s over the tier's int8
// dot-product ceiling measured by this binary (peak/int8/<tier>/t<T>, kernels/peak.hpp);
// at t1 also cpu_peak_frac = ops per second of the thread's CPU time over the ceiling per
// CPU-second (robust to neighbours taking the core).
#include "bench_common.hpp"

#include <dsv4/gemv.hpp>

#include <random>

namespace {

struct fp4_copy {
    std::vector<uint8_t> w, s;
    fp4_copy(std::size_t n, std::size_t k, uint64_t seed) : w(n * k / 2), s(n * k / 32) {
        std::mt19937_64 rng(seed);
        for (auto& b : w) b = uint8_t(rng());
        for (auto& b : s) b = uint8_t(118 + rng() % 8);
    }
    dsv4::fp4_matrix view(std::size_t n, std::size_t k) const { return {w.data(), k / 2, s.data(), k / 32, n, k}; }
};

struct q8_copy {
    std::vector<int8_t> q;
    std::vector<float> d, route;
    std::vector<int32_t> c;
    std::size_t m, k;
    q8_copy(std::size_t m_, std::size_t k_) : q(m_ * k_), d(m_ * k_ / 32), route(m_, 0.3f), c(m_ * k_ / 32), m(m_), k(k_) {
        const auto xb = bench::random_bf16(m * k);
        dsv4::quantize_q8(xb.data(), k, m, k, q.data(), k, d.data(), k / 32, c.data(), k / 32);
    }
    dsv4::q8_rows rows() const { return {q.data(), k, d.data(), k / 32, c.data(), k / 32, m}; }
};

void bm(benchmark::State& st, dsv4::tier t, bool gate_up, std::size_t m, int threads) {
    const auto& K = *dsv4::kernels_for(t);
    const std::size_t n = gate_up ? 2048 : 4096, k = gate_up ? 4096 : 2048;
    static const fp4_copy w1(2048, 4096, 1), w3(2048, 4096, 3), w2(4096, 2048, 2);
    const q8_copy x(m, k);
    std::vector<uint16_t> y(m * n);
    const dsv4::gemv_out out{nullptr, y.data(), n};
    const dsv4::swiglu_epilogue e{x.route.data(), 10.0f};
    const double peak = bench::int8_peak_ops(t, threads);
    const double cpu_peak = threads == 1 ? bench::int8_peak_cpu_ops(t) : 0.0;
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
    const double c0 = bench::thread_cpu_seconds();
    for (auto _ : st)
        bench::parallel_rows(threads, n, 32, [&](std::size_t r0, std::size_t r1) {
            if (gate_up) K.fp4_gate_up_q8_rows(w1.view(n, k), w3.view(n, k), x.rows(), e, out, r0, r1);
            else K.fp4_gemv_q8_rows(w2.view(n, k), x.rows(), out, r0, r1);
        });
    const double cpu = bench::thread_cpu_seconds() - c0;
    const double ops = 2.0 * double(m * n * k) * (gate_up ? 2 : 1) * double(st.iterations());
    st.counters["GOP/s"] = benchmark::Counter(ops * 1e-9, benchmark::Counter::kIsRate);
    st.counters["peak_frac"] = benchmark::Counter(ops / peak, benchmark::Counter::kIsRate);
    st.counters["peak_GOP/s"] = peak * 1e-9;
    // one thread: ops per second of its CPU time over the int8 ceiling per CPU-second (what a
    // loaded machine cannot lower)
    if (threads == 1) st.counters["cpu_peak_frac"] = ops / cpu / cpu_peak;
}

const bool registered = [] {
    for (dsv4::tier t : bench::tiers())
        for (int th : bench::thread_counts())
            for (bool gu : {true, false})
                for (std::size_t m : {3, 4, 8, 16, 32, 64}) {
                    const std::string name = std::string("gemm4/") + (gu ? "gate_up/" : "w2/") + bench::tier_str(t) + "/" +
                                             (gu ? "2048x4096" : "4096x2048") + "/m" + std::to_string(m) + "/t" +
                                             std::to_string(th);
                    benchmark::RegisterBenchmark(name.c_str(), bm, t, gu, m, th)->UseRealTime()->Unit(benchmark::kMicrosecond);
                }
    return true;
}();

}  // namespace
