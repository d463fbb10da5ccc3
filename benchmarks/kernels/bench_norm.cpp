// rmsnorm/<tier>/4096 and q_head_norm/<tier>/64x512: the norms at V4 shapes (bytes/s of
// activations; per-token vector ops around attention and the MoE).
#include "bench_common.hpp"

#include <dsv4/norm.hpp>

namespace {
void bm_rmsnorm(benchmark::State& st, dsv4::tier t) {
    const auto& k = *dsv4::kernels_for(t);
    const auto x = bench::random_bf16(4096), w = bench::random_bf16(4096);
    std::vector<uint16_t> y(4096);
    for (auto _ : st) {
        k.rmsnorm_row(x.data(), w.data(), 4096, 1e-6f, y.data());
        benchmark::DoNotOptimize(y.data());
    }
    st.SetBytesProcessed(int64_t(st.iterations()) * 4096 * 2);
}

void bm_q_head_norm(benchmark::State& st, dsv4::tier t) {
    const auto& k = *dsv4::kernels_for(t);
    const auto q = bench::random_bf16(64 * 512);
    std::vector<uint16_t> y(q.size());
    for (auto _ : st) {
        k.q_head_norm_rows(q.data(), 64, 512, 1e-6f, y.data());
        benchmark::DoNotOptimize(y.data());
    }
    st.SetBytesProcessed(int64_t(st.iterations()) * int64_t(q.size()) * 2);
}

const bool registered = [] {
    for (dsv4::tier t : bench::tiers()) {
        const std::string ts = bench::tier_str(t);
        benchmark::RegisterBenchmark(("rmsnorm/" + ts + "/4096").c_str(), bm_rmsnorm, t);
        benchmark::RegisterBenchmark(("q_head_norm/" + ts + "/64x512").c_str(), bm_q_head_norm, t);
    }
    return true;
}();
}  // namespace
