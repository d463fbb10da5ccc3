// act_quant/<tier>/<rows>x<cols>/b<block> and fp4_act_quant/...: activation quantisers
// at the shapes the model feeds them (4096-wide rows, decode and prefill chunks).
#include "bench_common.hpp"

#include <dsv4/codec.hpp>

namespace {
std::vector<uint16_t> random_bf16(std::size_t n) {
    std::vector<uint16_t> x(n);
    uint32_t s = 12345;
    for (auto& v : x) {
        s = s * 1664525u + 1013904223u;
        v = dsv4::f32_to_bf16((float(s >> 8) * 0x1p-24f - 0.5f) * 8.0f);
    }
    return x;
}

void bm_act_quant(benchmark::State& st, dsv4::tier t, std::size_t rows, std::size_t cols, std::size_t block) {
    const auto& k = *dsv4::kernels_for(t);
    const auto x = random_bf16(rows * cols);
    std::vector<uint8_t> codes(rows * cols), scales(rows * cols / block);
    for (auto _ : st) {
        for (std::size_t r = 0; r < rows; ++r)
            k.act_quant_fp8_row(&x[r * cols], cols, block, &codes[r * cols], &scales[r * cols / block]);
        benchmark::DoNotOptimize(codes.data());
    }
    st.SetItemsProcessed(int64_t(rows * cols) * st.iterations());
    st.SetBytesProcessed(int64_t(rows * cols * 2) * st.iterations());
}

void bm_fp4_act_quant(benchmark::State& st, dsv4::tier t, std::size_t rows, std::size_t cols) {
    const auto& k = *dsv4::kernels_for(t);
    const auto x = random_bf16(rows * cols);
    std::vector<uint8_t> packed(rows * cols / 2), scales(rows * cols / 32);
    for (auto _ : st) {
        for (std::size_t r = 0; r < rows; ++r)
            k.fp4_act_quant_row(&x[r * cols], cols, &packed[r * cols / 2], &scales[r * cols / 32]);
        benchmark::DoNotOptimize(packed.data());
    }
    st.SetItemsProcessed(int64_t(rows * cols) * st.iterations());
    st.SetBytesProcessed(int64_t(rows * cols * 2) * st.iterations());
}

const bool registered = [] {
    for (dsv4::tier t : bench::tiers()) {
        const std::string ts = bench::tier_str(t);
        for (std::size_t rows : {1, 64}) {
            for (std::size_t block : {64, 128})
                benchmark::RegisterBenchmark(("act_quant/" + ts + "/" + std::to_string(rows) + "x4096/b" +
                                              std::to_string(block)).c_str(),
                                             bm_act_quant, t, rows, std::size_t(4096), block);
            benchmark::RegisterBenchmark(("fp4_act_quant/" + ts + "/" + std::to_string(rows) + "x4096").c_str(),
                                         bm_fp4_act_quant, t, rows, std::size_t(4096));
        }
    }
    return true;
}();
}  // namespace
