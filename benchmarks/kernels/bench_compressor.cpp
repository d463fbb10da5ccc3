// Compressor benchmarks at V4-Flash shapes (model dim 4096), on the active tier (the
// compressor's entry points dispatch through it; DSV4_ISA picks another):
//   compressor/<tier>/decode/<kind>/t<T>     one decode step, weights cold (rotated copies)
//   compressor/<tier>/prefill1K/<kind>/t<T>  a prefill of 1024 tokens (weights warm)
// kinds: r4_d512 (main compressor of a ratio-4 layer: wkv/wgate [1024, 4096]),
//        r128_d512 (ratio-128 layer: [512, 4096]), r4_d128_rot (the indexer's: [256, 4096],
//        Hadamard + FP4). Counters: us_per_token; decode: bw_frac (the two projections'
//        bytes over the streaming ceiling of the same copies); prefill: GFLOP/s and
//        flops_frac (the projections' 2*2cd*4096 flops per token over the FMA peak).
#include "bench_common.hpp"

#include <dsv4/compressor.hpp>

#include <functional>
#include <random>

namespace {

struct kind {
    const char* name;
    std::size_t ratio, d;
    bool rotate;
};
constexpr kind kinds[] = {{"r4_d512", 4, 512, false}, {"r128_d512", 128, 512, false}, {"r4_d128_rot", 4, 128, true}};
constexpr std::size_t model_dim = 4096;

/// Weights of one compressor in `copies` cold copies (wkv then wgate in each).
struct comp_setup {
    dsv4::compressor_config cfg;
    std::size_t cd = 0, mat_bytes = 0;
    std::vector<bench::buffer> w;  // per copy: wkv | wgate
    std::vector<float> ape, freqs, rows;
    std::vector<uint16_t> norm;
    comp_setup(const kind& k, std::size_t copies) {
        cfg.ratio = k.ratio;
        cfg.head_dim = k.d;
        cfg.rotate = k.rotate;
        cd = dsv4::compressor_c(k.ratio) * k.d;
        mat_bytes = cd * model_dim * 2;
        std::mt19937 rng(unsigned(cd + k.ratio));
        std::normal_distribution<float> nd(0.0f, 1.0f);
        for (std::size_t c = 0; c < copies; ++c) {
            w.emplace_back(2 * mat_bytes);
            auto* p = reinterpret_cast<uint16_t*>(w.back().data());
            if (c == 0)
                for (std::size_t i = 0; i < 2 * cd * model_dim; ++i) p[i] = dsv4::f32_to_bf16(nd(rng) * 0.0156f);
            else
                std::memcpy(p, w.front().data(), 2 * mat_bytes);
        }
        ape.resize(k.ratio * cd);
        for (auto& v : ape) v = nd(rng);
        norm.resize(k.d);
        for (auto& v : norm) v = dsv4::f32_to_bf16(1.0f + 0.25f * nd(rng));
        freqs.resize(32);
        dsv4::rope_freqs(dsv4::rope_config_compressed, freqs.data());
        rows.resize(4096 * dsv4::rope_row_floats);
        dsv4::rope_table_fill(freqs.data(), 4096, rows.data());
        cfg.rope = {freqs.data(), rows.data(), 4096};
    }
    dsv4::compressor_weights weights(std::size_t c) const {
        const auto* p = reinterpret_cast<const uint16_t*>(w[c].data());
        dsv4::compressor_weights cw;
        cw.wkv = {p, model_dim, cd, model_dim};
        cw.wgate = {p + cd * model_dim, model_dim, cd, model_dim};
        cw.ape = ape.data();
        cw.norm = norm.data();
        return cw;
    }
};

std::vector<uint16_t> random_x(std::size_t tokens) {
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<uint16_t> x(tokens * model_dim);
    for (auto& v : x) v = dsv4::f32_to_bf16(nd(rng));
    return x;
}

void reg(const std::string& name, std::function<void(benchmark::State&)> fn) {
    benchmark::RegisterBenchmark(name.c_str(), [fn](benchmark::State& st) { fn(st); })
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
}

template <class F> void with_threads(int threads, F&& f) {
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
    if (threads <= 1) f(dsv4::serial_executor{});
    else f(dsv4::par::tbb_executor{});
}

void decode_bench(benchmark::State& st, const kind& k, int threads) {
    const std::size_t copies = bench::cold_copies(2 * k.d * dsv4::compressor_c(k.ratio) * model_dim * 2);
    comp_setup s(k, copies);
    const std::size_t max_tokens = 4096, cap = max_tokens / k.ratio;
    const auto x = random_x(64);
    std::vector<uint16_t> cache(cap * k.d);
    std::vector<unsigned char> scratch(dsv4::compressor_scratch_bytes(s.cfg, model_dim));
    dsv4::compressor_state state;
    dsv4::compressor_state_init(state, s.cfg);
    std::vector<std::pair<const unsigned char*, std::size_t>> bufs;
    for (const auto& b : s.w) bufs.emplace_back(b.data(), 2 * s.mat_bytes);
    const double before = bench::stream_read_bps(bufs, threads);
    std::size_t steps = 0;
    with_threads(threads, [&](auto ex) {
        int64_t p = 0;
        for (auto _ : st) {
            if (p == int64_t(max_tokens)) p = 0;  // p = 0 starts a new sequence (resets)
            dsv4::compressor_decode_on(ex, state, s.weights(steps % copies), s.cfg, x.data() + (p % 64) * model_dim, p,
                                       {cache.data(), k.d, cap}, scratch.data(), scratch.size());
            ++p;
            ++steps;
        }
    });
    const double after = bench::stream_read_bps(bufs, threads);
    bench::set_rate_counters(st, double(2 * s.mat_bytes), 2.0 * 2.0 * double(s.cd * model_dim), std::max(before, after));
    st.counters["us_per_token"] = bench::us_per(1.0);
}

void prefill_bench(benchmark::State& st, const kind& k, int threads, dsv4::tier tier) {
    comp_setup s(k, 1);
    const std::size_t S = 1024;
    const auto x = random_x(S);
    std::vector<uint16_t> cache(S / k.ratio * k.d);
    std::vector<unsigned char> scratch(dsv4::compressor_scratch_bytes(s.cfg, model_dim));
    dsv4::compressor_state state;
    dsv4::compressor_state_init(state, s.cfg);
    const double peak = bench::fma_peak_flops(tier, threads);
    with_threads(threads, [&](auto ex) {
        for (auto _ : st)
            dsv4::compressor_prefill_on(ex, state, s.weights(0), s.cfg, x.data(), model_dim, S,
                                        {cache.data(), k.d, S / k.ratio}, scratch.data(), scratch.size());
    });
    const double flops = double(S) * 2.0 * 2.0 * double(s.cd * model_dim);
    bench::set_flops_counters(st, flops, peak);
    st.counters["us_per_token"] = bench::us_per(double(S));
}

const bool registered = [] {
    const dsv4::tier tier = dsv4::active_tier();
    const std::string ts = bench::tier_str(tier);
    for (int t : bench::thread_counts())
        for (const kind& k : kinds) {
            const std::string tn = "/t" + std::to_string(t);
            reg("compressor/" + ts + "/decode/" + k.name + tn, [k, t](benchmark::State& st) { decode_bench(st, k, t); });
            reg("compressor/" + ts + "/prefill1K/" + k.name + tn,
                [k, t, tier](benchmark::State& st) { prefill_bench(st, k, t, tier); });
        }
    return true;
}();

}  // namespace
