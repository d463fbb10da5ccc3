// rope/<tier>/q64x512/{table,fly} and norm rows: the per-token vector ops around attention.
// RoPE of one token's 64 query heads at a position, its cos/sin row taken from a
// precomputed table or computed on the fly (what positions beyond a table's rows use);
// rmsnorm/<tier>/4096 and q_head_norm/<tier>/64x512 at V4 shapes.
#include "bench_common.hpp"

#include <dsv4/norm.hpp>
#include <dsv4/rope.hpp>

namespace {
std::vector<uint16_t> random_bf16(std::size_t n) {
    std::vector<uint16_t> x(n);
    uint32_t s = 777;
    for (auto& v : x) {
        s = s * 1664525u + 1013904223u;
        v = dsv4::f32_to_bf16((float(s >> 8) * 0x1p-24f - 0.5f) * 4.0f);
    }
    return x;
}

void bm_rope(benchmark::State& st, dsv4::tier t, bool table) {
    const auto& k = *dsv4::kernels_for(t);
    float freqs[32];
    dsv4::rope_freqs(dsv4::rope_config_compressed, freqs);
    const std::size_t rows = 4096;
    std::vector<float> tab(rows * dsv4::rope_row_floats);
    dsv4::rope_table_fill(freqs, rows, tab.data());
    auto q = random_bf16(64 * 512);
    int64_t pos = 0;
    alignas(64) float row[64];
    for (auto _ : st) {
        pos = (pos + 977) % int64_t(rows);
        const float* cs = tab.data() + pos * 64;
        if (!table) {
            dsv4::rope_cos_sin(freqs, pos, row);
            cs = row;
        }
        k.rope_rows(q.data() + 448, 64, 512, cs, false);
        benchmark::DoNotOptimize(q.data());
    }
    st.SetItemsProcessed(int64_t(st.iterations()));  // tokens
}

void bm_rmsnorm(benchmark::State& st, dsv4::tier t) {
    const auto& k = *dsv4::kernels_for(t);
    const auto x = random_bf16(4096), w = random_bf16(4096);
    std::vector<uint16_t> y(4096);
    for (auto _ : st) {
        k.rmsnorm_row(x.data(), w.data(), 4096, 1e-6f, y.data());
        benchmark::DoNotOptimize(y.data());
    }
    st.SetBytesProcessed(int64_t(st.iterations()) * 4096 * 2);
}

void bm_q_head_norm(benchmark::State& st, dsv4::tier t) {
    const auto& k = *dsv4::kernels_for(t);
    const auto q = random_bf16(64 * 512);
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
        benchmark::RegisterBenchmark(("rope/" + ts + "/q64x512/table").c_str(), bm_rope, t, true);
        benchmark::RegisterBenchmark(("rope/" + ts + "/q64x512/fly").c_str(), bm_rope, t, false);
        benchmark::RegisterBenchmark(("rmsnorm/" + ts + "/4096").c_str(), bm_rmsnorm, t);
        benchmark::RegisterBenchmark(("q_head_norm/" + ts + "/64x512").c_str(), bm_q_head_norm, t);
    }
    return true;
}();
}  // namespace
