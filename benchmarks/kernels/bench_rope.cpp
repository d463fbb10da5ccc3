// rope/<tier>/q64x512/{table,fly}: a per-token vector op around attention.
// RoPE of one token's 64 query heads at a position, its cos/sin row taken from a
// precomputed table or computed on the fly (what positions beyond a table's rows use).
#include "bench_common.hpp"

#include <dsv4/rope.hpp>

namespace {
void bm_rope(benchmark::State& st, dsv4::tier t, bool table) {
    const auto& k = *dsv4::kernels_for(t);
    float freqs[32];
    dsv4::rope_freqs(dsv4::rope_config_compressed, freqs);
    const std::size_t rows = 4096;
    std::vector<float> tab(rows * dsv4::rope_row_floats);
    dsv4::rope_table_fill(freqs, rows, tab.data());
    auto q = bench::random_bf16(64 * 512);
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

const bool registered = [] {
    for (dsv4::tier t : bench::tiers()) {
        const std::string ts = bench::tier_str(t);
        benchmark::RegisterBenchmark(("rope/" + ts + "/q64x512/table").c_str(), bm_rope, t, true);
        benchmark::RegisterBenchmark(("rope/" + ts + "/q64x512/fly").c_str(), bm_rope, t, false);
    }
    return true;
}();
}  // namespace
