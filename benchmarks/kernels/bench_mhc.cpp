// mhc/<tier>/hc_pre/T<tokens>/t<threads>: hc_pre at dim 4096 (RMS of the 4 x 4096 streams,
// the 24 mixes from the F32 [24, 16384] fn, split + 20-iteration Sinkhorn, weighted sum),
// T = 1 (decode) and 64 (a prefill chunk); mhc/<tier>/hc_post/T<tokens>/t<threads>.
// fn is cold: one copy per layer-ish, rotated through enough copies (bench::cold_copies) that
// the model's 86 distinct hc fn tensors are mimicked (each decode step reads them from DRAM).
// Counters: bytes_per_second = fn bytes + stream bytes, bw_frac over the streaming read of
// the same fn copies just before and after the timed loop (the better), cpu_bw_frac (the same
// per CPU-second the process received, see bench_moe.cpp), tokens/s. Like moe/,
// the layer runs on the active tier (DSV4_ISA selects it).
#include "bench_common.hpp"

#include <dsv4/mhc.hpp>

#include <random>

namespace {

/// Streaming-read ceiling of bufs (bench::stream_read_bps, 3 passes) in wall-clock bytes/s,
/// and the same bytes per CPU-second this process spent on it.
std::pair<double, double> ceilings(const std::vector<std::pair<const unsigned char*, std::size_t>>& bufs, int threads) {
    double total = 0;
    for (const auto& b : bufs) total += double(b.second);
    const double c0 = bench::process_cpu_seconds();
    const double wall = bench::stream_read_bps(bufs, threads);
    return {wall, 3.0 * total / (bench::process_cpu_seconds() - c0)};
}

constexpr std::size_t D = 4096, W = 4 * D, NM = 24;

void bm_hc_pre(benchmark::State& st, std::size_t T, int threads) {
    const std::size_t fn_bytes = NM * W * 4;
    const std::size_t copies = bench::cold_copies(fn_bytes);
    std::vector<bench::buffer> fns;
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (std::size_t c = 0; c < copies; ++c) {
        fns.emplace_back(fn_bytes);
        auto* f = reinterpret_cast<float*>(fns.back().data());
        if (c == 0)
            for (std::size_t i = 0; i < NM * W; ++i) f[i] = nd(rng) * (1.5f / 128.0f);
        else
            std::memcpy(f, fns[0].data(), fn_bytes);
    }
    std::vector<float> scale{0.8f, 0.6f, 1.7f}, base(NM);
    for (auto& b : base) b = nd(rng);
    std::vector<uint16_t> H(T * W), y(T * D);
    for (auto& h : H) h = dsv4::f32_to_bf16(nd(rng));
    std::vector<float> post(4 * T), comb(16 * T);
    const dsv4::hc_config cfg{D, 20};
    std::vector<unsigned char> scratch(dsv4::bytes_needed(cfg, T));
    const dsv4::hc_scratch sc{scratch.data(), scratch.size()};
    std::vector<std::pair<const unsigned char*, std::size_t>> bufs;
    for (const auto& f : fns) bufs.emplace_back(f.data(), fn_bytes);
    const auto before = ceilings(bufs, threads);
    const double cpu0 = bench::process_cpu_seconds();
    {
        tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
        std::size_t it = 0;
        for (auto _ : st) {
            const dsv4::hc_pre_weights w{reinterpret_cast<const float*>(fns[it++ % copies].data()), scale.data(),
                                         base.data()};
            const dsv4::hc_pre_out out{y.data(), post.data(), comb.data()};
            if (threads > 1) dsv4::par::hc_pre(cfg, w, H.data(), T, out, sc);
            else dsv4::hc_pre(cfg, w, H.data(), T, out, sc);
            benchmark::DoNotOptimize(y.data());
        }
    }
    const double cpu = bench::process_cpu_seconds() - cpu0;
    const auto after = ceilings(bufs, threads);
    const double bytes = double(fn_bytes + T * W * 2);
    const double flops = double(T) * (2.0 * NM * W + 2.0 * W);
    bench::set_rate_counters(st, bytes, flops, std::max(before.first, after.first));
    st.counters["cpu_bw_frac"] = bytes * double(st.iterations()) / cpu / std::max(before.second, after.second);
    st.counters["tokens/s"] = benchmark::Counter(double(T) * double(st.iterations()), benchmark::Counter::kIsRate);
}

void bm_hc_post(benchmark::State& st, std::size_t T, int threads) {
    std::mt19937 rng(9);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<uint16_t> H(T * W), y(T * D), out(T * W);
    for (auto& h : H) h = dsv4::f32_to_bf16(nd(rng));
    for (auto& h : y) h = dsv4::f32_to_bf16(nd(rng));
    std::vector<float> post(4 * T, 0.7f), comb(16 * T, 0.25f);
    const dsv4::hc_config cfg{D, 20};
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
    for (auto _ : st) {
        if (threads > 1) dsv4::par::hc_post(cfg, y.data(), H.data(), post.data(), comb.data(), T, out.data());
        else dsv4::hc_post(cfg, y.data(), H.data(), post.data(), comb.data(), T, out.data());
        benchmark::DoNotOptimize(out.data());
    }
    st.SetBytesProcessed(int64_t(double(T * (W * 2 * 2 + D * 2)) * double(st.iterations())));
    st.counters["tokens/s"] = benchmark::Counter(double(T) * double(st.iterations()), benchmark::Counter::kIsRate);
}

const bool registered = [] {
    const std::string ts = bench::tier_str(dsv4::active_tier());
    for (int th : bench::thread_counts())
        for (std::size_t T : {1, 64}) {
            const std::string suffix = "/T" + std::to_string(T) + "/t" + std::to_string(th);
            benchmark::RegisterBenchmark(("mhc/" + ts + "/hc_pre" + suffix).c_str(), bm_hc_pre, T, th)
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond);
            benchmark::RegisterBenchmark(("mhc/" + ts + "/hc_post" + suffix).c_str(), bm_hc_post, T, th)
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond);
        }
    return true;
}();

}  // namespace
