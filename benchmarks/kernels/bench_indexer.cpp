// Indexer and top-k benchmarks at V4-Flash shapes (64 heads x 128, top 512), one decode
// query against T = context / 4 keys (2K, 64K and 1M contexts: 512, 16384, 262144 keys):
//   indexer/<tier>/score/ctx<C>/t<T>        the score kernel alone; flops_frac = 2*64*128*T
//                                           flops per query over the tier's FMA peak
//   indexer/<tier>/score_topk/ctx<C>/t<T>   scores + top-512 (what a decode step selects with)
//   indexer/<tier>/decode_step/ctx<C>/t<T>  the whole decode step (active tier only): FP8 wq_b
//                                           [8192, 1024], RoPE, Hadamard, FP4, the indexer's
//                                           compressor step, weights_proj, scores, top-512;
//                                           weights warm
//   topk/<tier>/n<N>/k512                   top-512 of one row of N bf16-valued scores
// us_per_token is the cost per decode query (per row for topk). Keys and queries are
// Hadamard-rotated, FP4-simulated random vectors (the distribution the indexer sees).
#include "bench_common.hpp"

#include <dsv4/indexer.hpp>

#include <functional>
#include <random>

namespace {

constexpr std::size_t H = 64, D = 128, K = 512;

/// n random 128-vectors, rotated and FP4-simulated like the indexer's keys and queries.
std::vector<uint16_t> fp4_vectors(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<uint16_t> v(n * D);
    for (auto& x : v) x = dsv4::f32_to_bf16(nd(rng));
    dsv4::hadamard_rotate(v.data(), n, D, D);
    dsv4::fp4_act_quant_sim(v.data(), n, D, D);
    return v;
}

struct score_setup {
    std::size_t T;
    std::vector<uint16_t> keys;
    std::vector<float> q, w, scores, kscratch;
    std::vector<uint32_t> tk;
    dsv4::indexer_score_args a;
    explicit score_setup(std::size_t t) : T(t), keys(fp4_vectors(t, 3)) {
        const auto qb = fp4_vectors(H, 4);
        q.resize(H * D);
        dsv4::decode_bf16(qb.data(), q.data(), q.size());
        std::mt19937 rng(5);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        w.resize(H);
        for (auto& x : w) x = dsv4::round_bf16(dsv4::round_bf16(nd(rng)) * dsv4::indexer_weight_scale(H));
        scores.resize(T);
        kscratch.resize(dsv4::indexer_score_pieces * (dsv4::indexer_score_scratch_floats + 16));
        tk.resize(dsv4::topk_scratch_words(T, std::min(K, T)));
        a.q = q.data();
        a.q_stride = H * D;
        a.w = w.data();
        a.w_stride = H;
        a.queries = 1;
        a.heads = H;
        a.k = keys.data();
        a.k_stride = D;
        a.keys = T;
        a.scores = scores.data();
        a.scores_stride = T;
    }
    /// The library's split: up to indexer_score_pieces ranges of whole 48-key blocks.
    void score(const dsv4::kernel_table& kt, int threads) {
        const std::size_t blocks = (T + 47) / 48, pieces = std::min(dsv4::indexer_score_pieces, blocks);
        bench::parallel_rows(threads, pieces, 1, [&](std::size_t p0, std::size_t p1) {
            const std::size_t u0 = blocks * p0 / pieces * 48, u1 = std::min(T, blocks * p1 / pieces * 48);
            kt.indexer_scores_rows(a, u0, u1, kscratch.data() + p0 * (dsv4::indexer_score_scratch_floats + 16));
        });
    }
};

void reg(const std::string& name, std::function<void(benchmark::State&)> fn) {
    benchmark::RegisterBenchmark(name.c_str(), [fn](benchmark::State& st) { fn(st); })
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
}

void score_bench(benchmark::State& st, dsv4::tier tier, std::size_t T, int threads, bool with_topk) {
    const auto& kt = *dsv4::kernels_for(tier);
    score_setup s(T);
    const double peak = bench::fma_peak_flops(tier, threads);
    std::vector<int32_t> idx(K);
    {
        tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
        for (auto _ : st) {
            s.score(kt, threads);
            if (with_topk) kt.topk_row(s.scores.data(), T, std::min(K, T), dsv4::topk_order::score, idx.data(), s.tk.data());
            benchmark::DoNotOptimize(s.scores.data());
        }
    }
    bench::set_flops_counters(st, 2.0 * double(H * D) * double(T), peak);
    st.counters["us_per_token"] = bench::us_per(1.0);
}

void topk_bench(benchmark::State& st, dsv4::tier tier, std::size_t n) {
    const auto& kt = *dsv4::kernels_for(tier);
    std::mt19937 rng{unsigned(n)};
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> s(n);
    for (auto& x : s) x = dsv4::round_bf16(nd(rng) * 0.05f);  // bf16 scores: many ties, as the indexer's
    const std::size_t k = std::min(K, n);
    std::vector<uint32_t> ws(dsv4::topk_scratch_words(n, k));
    std::vector<int32_t> out(k);
    for (auto _ : st) {
        kt.topk_row(s.data(), n, k, dsv4::topk_order::score, out.data(), ws.data());
        benchmark::DoNotOptimize(out.data());
    }
    st.counters["us_per_token"] = bench::us_per(1.0);
    st.counters["ns_per_score"] = benchmark::Counter(double(n) * 1e-9, benchmark::Counter::kIsIterationInvariantRate |
                                                                           benchmark::Counter::kInvert);
}

/// The whole decode step through the public composite (active tier), at position ctx - 1.
void decode_step_bench(benchmark::State& st, std::size_t ctx, int threads) {
    constexpr std::size_t dim = 4096, ql = 1024;
    std::mt19937 rng(9);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_int_distribution<int> byte(0, 255);
    std::vector<uint8_t> wq(H * D * ql), wqs(H * D / 128 * ql / 128);
    bench::fill_e4m3(wq.data(), wq.size(), 9);  // checkpoint-like codes (bench_common.hpp)
    for (auto& b : wqs) b = uint8_t(118 + byte(rng) % 4);
    std::vector<uint16_t> wp(H * dim), wkv(256 * dim), wg(256 * dim), norm(128), x(dim), qr(ql);
    for (auto& v : wp) v = dsv4::f32_to_bf16(nd(rng) * 0.0156f);
    for (auto& v : wkv) v = dsv4::f32_to_bf16(nd(rng) * 0.0156f);
    for (auto& v : wg) v = dsv4::f32_to_bf16(nd(rng) * 0.0234f);
    for (auto& v : norm) v = dsv4::f32_to_bf16(1.0f);
    for (auto& v : x) v = dsv4::f32_to_bf16(nd(rng));
    for (auto& v : qr) v = dsv4::f32_to_bf16(nd(rng));
    std::vector<float> ape(4 * 256), freqs(32);
    for (auto& v : ape) v = nd(rng);
    dsv4::rope_freqs(dsv4::rope_config_compressed, freqs.data());
    dsv4::indexer_weights w;
    w.wq_b = {wq.data(), ql, wqs.data(), ql / 128, H * D, ql};
    w.weights_proj = {wp.data(), dim, H, dim};
    w.comp.wkv = {wkv.data(), dim, 256, dim};
    w.comp.wgate = {wg.data(), dim, 256, dim};
    w.comp.ape = ape.data();
    w.comp.norm = norm.data();
    dsv4::indexer_config cfg;
    cfg.comp.rope = {freqs.data(), nullptr, 0};
    const std::size_t max_keys = ctx / 4;
    std::vector<uint16_t> keys = fp4_vectors(max_keys, 3);
    dsv4::compressor_state state;
    dsv4::compressor_state_init(state, cfg.comp);
    std::vector<unsigned char> scratch(dsv4::indexer_decode_scratch_bytes(cfg, dim, ql, max_keys));
    std::vector<int32_t> idx(K);
    const int64_t p = int64_t(ctx) - 1;  // T = ctx / 4 keys; the step completes the last window
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
    auto run = [&](auto ex) {
        for (auto _ : st) {
            state.next_pos = p;  // the same step again (the emitted key overwrites the last row)
            dsv4::indexer_decode_on(ex, state, w, cfg, x.data(), qr.data(), p, {keys.data(), D, max_keys}, 128,
                                    idx.data(), max_keys, scratch.data(), scratch.size());
        }
    };
    if (threads <= 1) run(dsv4::serial_executor{});
    else run(dsv4::par::tbb_executor{});
    st.counters["us_per_token"] = bench::us_per(1.0);
}

const bool registered = [] {
    const std::pair<const char*, std::size_t> ctxs[] = {{"2K", 2048}, {"64K", 65536}, {"1M", 1 << 20}};
    for (dsv4::tier tier : bench::tiers()) {
        const std::string ts = bench::tier_str(tier);
        for (int t : bench::thread_counts())
            for (const auto& c : ctxs) {
                const char* cn = c.first;
                const std::size_t T = c.second / 4;
                const std::string tail = std::string("/ctx") + cn + "/t" + std::to_string(t);
                reg("indexer/" + ts + "/score" + tail, [=](benchmark::State& st) { score_bench(st, tier, T, t, false); });
                reg("indexer/" + ts + "/score_topk" + tail, [=](benchmark::State& st) { score_bench(st, tier, T, t, true); });
            }
        for (std::size_t n : {512u, 2048u, 16384u, 65536u, 262144u})
            reg("topk/" + ts + "/n" + std::to_string(n) + "/k512", [=](benchmark::State& st) { topk_bench(st, tier, n); });
    }
    const std::string ts = bench::tier_str(dsv4::active_tier());
    for (int t : bench::thread_counts())
        for (const auto& c : ctxs) {
            const std::size_t ctx = c.second;
            reg("indexer/" + ts + "/decode_step/ctx" + std::string(c.first) + "/t" + std::to_string(t),
                [ctx, t](benchmark::State& st) { decode_step_bench(st, ctx, t); });
        }
    return true;
}();

}  // namespace
