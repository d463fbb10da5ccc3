// attention/<tier>/decode/<shape>/t<threads> and attention/<tier>/prefill/<shape>/t<threads>:
// sparse MQA attention at V4-Flash shapes (64 heads of 512, one shared KV head).
//   decode/r4_w128+k512    ratio-4 layer: 128 window slots + 512 indexer-selected entries of
//                          a 64K-token cache (16384 compressed rows), scattered
//   decode/r128_ctx{8K,64K,1M}  ratio-128 layer at position ctx-1: window + every completed
//                          entry (64, 512, 8192 of them)
//   prefill/r128_S{1K,4K}  ratio-128 prefill: kv = [S local rows ; S/128 compressed rows]
// Counters: GFLOP/s (4*H*D per valid index per query row: QK and PV), flops_frac (over
// the FMA ceiling of the same tier and thread count, measured by this binary's fma_peak
// kernel right before and after timing: the mean of the two, peak_GFLOP/s),
// KV_GB/s (bytes of KV rows gathered), and cpu_frac: flops per CPU-second the process
// received over one core's FMA peak per CPU-second (on a shared machine wall-clock rows
// also measure the neighbours; cpu_frac does not, and idle TBB spinning counts against it). Decode rotates through copies of the cache so it
// is read cold, as it is when 43 layers take turns. Every output is checked against the
// avx2 tier (bit-identical by construction) before timing; the scalar tier runs only the
// cheaper decode shapes (it is the portable reference, ~1000x slower).
#include "bench_common.hpp"

#include <dsv4/attention.hpp>

#include <random>

namespace {

constexpr std::size_t H = 64, D = 512;

struct attn_case {
    std::size_t tokens = 0, kv_rows = 0, idx_len = 0;
    std::vector<int32_t> idx;
    double flops = 0, kv_bytes = 0;  // per call
};

attn_case decode_r4() {
    attn_case c;
    c.tokens = 1;
    c.kv_rows = 128 + 16384;
    c.idx.resize(128 + 512);
    dsv4::window_indices_decode(65535, c.idx.data());
    std::mt19937 g(4);
    std::vector<int32_t> perm(16384);
    for (std::size_t i = 0; i < perm.size(); ++i) perm[i] = int32_t(128 + i);
    std::shuffle(perm.begin(), perm.end(), g);
    std::sort(perm.begin(), perm.begin() + 512);  // the indexer's top-k, in cache order
    std::copy(perm.begin(), perm.begin() + 512, c.idx.begin() + 128);
    c.idx_len = c.idx.size();
    return c;
}

attn_case decode_r128(std::size_t ctx) {
    attn_case c;
    c.tokens = 1;
    c.kv_rows = 128 + ctx / 128;
    c.idx.resize(128 + ctx / 128);
    c.idx_len = dsv4::attention_indices_decode(int64_t(ctx) - 1, 128, c.idx.data());
    return c;
}

attn_case prefill_r128(std::size_t S) {
    attn_case c;
    c.tokens = S;
    c.kv_rows = S + S / 128;
    c.idx_len = dsv4::attention_indices_prefill_width(S, 128);
    c.idx.resize(S * c.idx_len);
    dsv4::attention_indices_prefill(S, 128, c.idx.data(), c.idx_len);
    return c;
}

void count(attn_case& c) {
    std::size_t valid = 0;
    for (int32_t v : c.idx) valid += v >= 0;
    c.flops = 4.0 * double(H) * double(D) * double(valid);
    c.kv_bytes = double(valid) * double(D) * 2.0;
}

std::vector<uint16_t> random_bf16(std::size_t n, uint32_t seed, float sigma) {
    std::vector<uint16_t> x(n);
    std::mt19937 g(seed);
    std::normal_distribution<float> nd(0.0f, sigma);
    for (auto& v : x) v = dsv4::f32_to_bf16(nd(g));
    return x;
}

void bm_attention(benchmark::State& st, dsv4::tier t, attn_case c, int threads, bool cold) {
    count(c);
    const auto& k = *dsv4::kernels_for(t);
    const auto q = random_bf16(c.tokens * H * D, 1, 2.0f);
    std::vector<float> sink(H);
    for (std::size_t h = 0; h < H; ++h) sink[h] = float(int(h % 7) - 3);
    const std::size_t kv_bytes = c.kv_rows * D * 2;
    const std::size_t copies = cold ? bench::cold_copies(kv_bytes) : 1;
    std::vector<bench::buffer> kvs;
    {
        const auto kv = random_bf16(c.kv_rows * D, 2, 1.0f);
        for (std::size_t i = 0; i < copies; ++i) {
            kvs.emplace_back(kv_bytes);
            std::memcpy(kvs.back().data(), kv.data(), kv_bytes);
        }
    }
    std::vector<uint16_t> out(c.tokens * H * D), check(c.tokens * H * D);
    dsv4::sparse_attention_args a;
    a.q = q.data();
    a.q_stride = H * D;
    a.kv = reinterpret_cast<const uint16_t*>(kvs[0].data());
    a.kv_rows = c.kv_rows;
    a.kv_stride = D;
    a.idx = c.idx.data();
    a.idx_len = c.idx_len;
    a.idx_stride = c.idx_len;
    a.sink = sink.data();
    a.out = out.data();
    a.out_stride = H * D;
    a.tokens = c.tokens;
    a.heads = H;
    a.dim = D;
    a.scale = 1.0f / std::sqrt(float(D));

    std::vector<unsigned char> ws(dsv4::sparse_attention_parallel_scratch_bytes(H, D));
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));

    // verify before timing: the same bits as the avx2 tier on one thread (first 64 rows)
    if (const auto* ref = dsv4::kernels_for(dsv4::tier::avx2); ref && t != dsv4::tier::avx2) {
        dsv4::sparse_attention_parallel(a, ws.data(), ws.size(), k.sparse_attention_rows);
        auto b = a;
        b.out = check.data();
        b.tokens = std::min<std::size_t>(c.tokens, 64);
        ref->sparse_attention_rows(b, 0, b.tokens, 0, H, reinterpret_cast<float*>(ws.data()));
        if (!std::equal(check.begin(), check.begin() + long(b.tokens * H * D), out.begin())) {
            st.SkipWithError("output differs from the avx2 tier");
            return;
        }
    }

    const double cpu_peak = bench::fma_peak_cpu_flops(t);
    const double peak_before = bench::fma_peak_flops_now(t, threads, 3);
    std::size_t i = 0;
    const double cpu0 = bench::process_cpu_seconds();
    for (auto _ : st) {
        a.kv = reinterpret_cast<const uint16_t*>(kvs[i++ % copies].data());
        dsv4::sparse_attention_parallel(a, ws.data(), ws.size(), k.sparse_attention_rows);
        benchmark::DoNotOptimize(out.data());
    }
    const double cpu = bench::process_cpu_seconds() - cpu0;
    const double peak = 0.5 * (peak_before + bench::fma_peak_flops_now(t, threads, 3));
    bench::set_flops_counters(st, c.flops, peak);
    // per core-second this process received: what the kernel achieves while it runs
    st.counters["cpu_frac"] = c.flops * double(st.iterations()) / (cpu * cpu_peak);
    st.counters["KV_GB/s"] = benchmark::Counter(c.kv_bytes * double(st.iterations()) * 1e-9, benchmark::Counter::kIsRate);
}

const bool registered = [] {
    struct shape {
        const char* name;
        attn_case (*make)();
        bool decode, scalar_too;
    };
    const shape shapes[] = {
        {"decode/r4_w128+k512", [] { return decode_r4(); }, true, true},
        {"decode/r128_ctx8K", [] { return decode_r128(8192); }, true, true},
        {"decode/r128_ctx64K", [] { return decode_r128(65536); }, true, true},
        {"decode/r128_ctx1M", [] { return decode_r128(1 << 20); }, true, false},
        {"prefill/r128_S1K", [] { return prefill_r128(1024); }, false, false},
        {"prefill/r128_S4K", [] { return prefill_r128(4096); }, false, false},
    };
    for (dsv4::tier t : bench::tiers())
        for (const auto& sh : shapes) {
            if (t == dsv4::tier::scalar && !sh.scalar_too) continue;
            for (int th : bench::thread_counts()) {
                if (t == dsv4::tier::scalar && th > 1) continue;
                benchmark::RegisterBenchmark(
                    ("attention/" + bench::tier_str(t) + "/" + sh.name + "/t" + std::to_string(th)).c_str(),
                    [make = sh.make, decode = sh.decode, t, th](benchmark::State& st) {
                        bm_attention(st, t, make(), th, decode);
                    })
                    ->UseRealTime()
                    ->Unit(benchmark::kMillisecond);
            }
        }
    return true;
}();

}  // namespace
