// memory/stream_read/<bytes>/t<threads>: the streaming-read ceiling itself, so every
// run prints what bw_frac divides by (DRAM-resident and L2/L3-resident sizes).
#include "bench_common.hpp"

namespace {
void bm_stream_read(benchmark::State& st, std::size_t bytes, int threads) {
    const auto& k = *dsv4::kernels_for(dsv4::best_tier(dsv4::host_cpu()));
    const std::size_t copies = bench::cold_copies(bytes);
    std::vector<bench::buffer> bufs;
    for (std::size_t i = 0; i < copies; ++i) bufs.emplace_back(bytes);
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
    const std::size_t chunk = 64 * 1024;
    std::size_t i = 0;
    for (auto _ : st) {
        auto& b = bufs[i++ % copies];
        std::atomic<uint64_t> acc{0};
        bench::parallel_rows(threads, (bytes + chunk - 1) / chunk, 1, [&](std::size_t c0, std::size_t c1) {
            const std::size_t lo = c0 * chunk, hi = std::min(bytes, c1 * chunk);
            acc += k.stream_read(b.data() + lo, hi - lo);
        });
        benchmark::DoNotOptimize(acc.load());
    }
    st.SetBytesProcessed(int64_t(double(bytes) * double(st.iterations())));
}

const bool registered = [] {
    for (std::size_t mib : {1, 4, 16, 64}) {
        for (int t : bench::thread_counts()) {
            const std::size_t bytes = mib << 20;
            benchmark::RegisterBenchmark(
                ("memory/stream_read/" + std::to_string(mib) + "MiB/t" + std::to_string(t)).c_str(),
                bm_stream_read, bytes, t)
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond);
        }
    }
    return true;
}();
}  // namespace
