// GEMV/GEMM benchmarks at V4-Flash shapes, weights cold (rotated copies totalling far
// more than the LLC), per tier, M in {1, 4, 16, 64}, 1 thread and all threads.
//   fp4_gemv/<tier>/<N>x<K>/m<M>/t<T>       fastest FP4 path (int8 activations)
//   fp4_gemv_ref/<tier>/...                 reference mode (exact FP8 activations)
//   fp4_gate_up/<tier>/..., fp4_gate_up_ref  fused expert w1+w3+SwiGLU (2 matrices)
//   fp8_gemv/<tier>/..., fp8_grouped_gemv/<tier>/8x1024x4096/... (wo_a)   fast FP8 mode
//                                           (bf16 block activations, vdpbf16ps on avx512_bf16)
//   fp8_gemv_ref/<tier>/..., fp8_grouped_gemv_ref/<tier>/...              reference mode
//   bf16_gemv/<tier>/..., f32_gemv/<tier>/...   (f32 activations)
//   bf16_gemv_bf16/<tier>/...               BF16 weights x bf16 activations (the head)
//   gemv_hot/<fmt>/<tier>/<N>x<K>/m<M>/t1   hot rate per core: one ~1 MiB copy of the weights
//                                           (L2-resident), one thread, rates over CPU time;
//                                           fmt fp4, fp4_ref, fp8, fp8_ref, bf16, bf16_bf16
//   gemv_hot_core/<fmt>/<tier>/<class>/...  the same (m1) on one core of each core class
//                                           (hybrid.hpp: P, E; "any" on one-type CPUs)
// Counters: bytes_per_second (weight bytes), GFLOP/s, bw_frac = achieved bytes/s over the
// streaming-read ceiling measured by this binary on the same bytes (same copies, threads;
// for gemv_hot the L2-resident read rate).
#include "bench_common.hpp"

#include <dsv4/gemv.hpp>
#include <dsv4/hybrid.hpp>

#include <functional>
#include <random>

namespace {

enum class fmt { fp4, fp8, bf16, f32 };

/// Cold copies of one weight matrix (plus its scales), shared by all rows of a shape.
struct weight_set {
    fmt f;
    std::size_t n, k, w_bytes, s_bytes;
    std::vector<bench::buffer> w, s;
};

weight_set& weights(fmt f, std::size_t n, std::size_t k, bool hot = false) {
    static std::map<std::tuple<int, std::size_t, std::size_t, bool>, std::unique_ptr<weight_set>> cache;
    auto& slot = cache[{int(f), n, k, hot}];
    if (slot) return *slot;
    slot = std::make_unique<weight_set>();
    weight_set& ws = *slot;
    ws.f = f;
    ws.n = n;
    ws.k = k;
    switch (f) {
        case fmt::fp4: ws.w_bytes = n * k / 2; ws.s_bytes = n * k / 32; break;
        case fmt::fp8: ws.w_bytes = n * k; ws.s_bytes = ((n + 127) / 128) * (k / 128); break;
        case fmt::bf16: ws.w_bytes = n * k * 2; ws.s_bytes = 0; break;
        case fmt::f32: ws.w_bytes = n * k * 4; ws.s_bytes = 0; break;
    }
    const std::size_t copies = hot ? 1 : bench::cold_copies(ws.w_bytes + ws.s_bytes);
    std::mt19937_64 rng(n * 31 + k);
    for (std::size_t c = 0; c < copies; ++c) {
        ws.w.emplace_back(ws.w_bytes);
        ws.s.emplace_back(std::max<std::size_t>(ws.s_bytes, 1));
        unsigned char* w = ws.w.back().data();
        if (f == fmt::bf16) {
            auto* p = reinterpret_cast<uint16_t*>(w);
            for (std::size_t i = 0; i < n * k; ++i) p[i] = dsv4::f32_to_bf16(float(int(rng() % 2001) - 1000) * 1e-5f);
        } else if (f == fmt::f32) {
            auto* p = reinterpret_cast<float*>(w);
            for (std::size_t i = 0; i < n * k; ++i) p[i] = float(int(rng() % 2001) - 1000) * 1e-5f;
        } else if (f == fmt::fp8) {
            bench::fill_e4m3(w, ws.w_bytes, rng());  // checkpoint-like codes (bench_common.hpp)
            for (std::size_t i = 0; i < ws.s_bytes; ++i) ws.s.back().data()[i] = uint8_t(118 + rng() % 8);
        } else {
            for (std::size_t i = 0; i < ws.w_bytes; i += 8) {
                uint64_t v = rng();
                std::memcpy(w + i, &v, std::min<std::size_t>(8, ws.w_bytes - i));
            }
            for (std::size_t i = 0; i < ws.s_bytes; ++i) ws.s.back().data()[i] = uint8_t(118 + rng() % 8);
        }
    }
    return ws;
}

struct acts {
    std::vector<float> f32;
    std::vector<int8_t> q;
    std::vector<float> d;
    std::vector<int32_t> c;
    std::vector<float> route;
    std::vector<uint16_t> xb;  // fast FP8 mode: to_bf16_blocks of f32
    std::vector<int32_t> shift;
};
acts make_acts(std::size_t m, std::size_t k) {
    acts a;
    std::mt19937 rng(unsigned(m * 7 + k));
    std::vector<uint16_t> xb(m * k);
    for (auto& v : xb) v = dsv4::f32_to_bf16(float(int(rng() % 2001) - 1000) * 1e-3f);
    a.f32.resize(m * k);
    dsv4::decode_bf16(xb.data(), a.f32.data(), xb.size());
    if (k % 32 == 0) {
        a.q.resize(m * k);
        a.d.resize(m * k / 32);
        a.c.resize(m * k / 32);
        dsv4::quantize_q8(xb.data(), k, m, k, a.q.data(), k, a.d.data(), k / 32, a.c.data(), k / 32);
    }
    if (k % 128 == 0) {
        a.xb.resize(m * k);
        a.shift.resize(m * k / 128);
        dsv4::to_bf16_blocks(a.f32.data(), k, m, k, a.xb.data(), k, a.shift.data(), k / 128);
    }
    a.route.assign(m, 0.3f);
    return a;
}

/// The kernel call for one weight copy over rows [r0, r1).
using row_call = std::function<void(std::size_t copy, std::size_t r0, std::size_t r1)>;

/// Times `call` over all rows, one weight copy per iteration (cold), and sets the
/// counters. The ceiling is this binary's streaming read of the very same copies, taken
/// just before and just after the timed loop (median of both sets of passes).
void run(benchmark::State& st, std::size_t n, double bytes_per_iter, double flops_per_iter,
         const std::vector<std::pair<const unsigned char*, std::size_t>>& bufs, std::size_t copies, int threads,
         const row_call& call) {
    const double before = bench::stream_read_bps(bufs, threads);
    {
        tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
        std::size_t it = 0;
        for (auto _ : st) {
            const std::size_t c = it++ % copies;
            bench::parallel_rows(threads, n, 16, [&](std::size_t r0, std::size_t r1) { call(c, r0, r1); });
        }
    }
    const double after = bench::stream_read_bps(bufs, threads);
    bench::set_rate_counters(st, bytes_per_iter, flops_per_iter, std::max(before, after));
}

std::vector<std::pair<const unsigned char*, std::size_t>> buffers_of(const weight_set& ws) {
    std::vector<std::pair<const unsigned char*, std::size_t>> out;
    for (std::size_t c = 0; c < ws.w.size(); ++c) {
        out.emplace_back(ws.w[c].data(), ws.w_bytes);
        if (ws.s_bytes) out.emplace_back(ws.s[c].data(), ws.s_bytes);
    }
    return out;
}

std::string shape_name(std::size_t n, std::size_t k, std::size_t m, int t) {
    return std::to_string(n) + "x" + std::to_string(k) + "/m" + std::to_string(m) + "/t" + std::to_string(t);
}

/// real_time = false: rates over the thread's CPU time (one-thread hot runs: a neighbour's
/// preemption does not count against the kernel).
void reg(const std::string& name, std::function<void(benchmark::State&)> fn, bool real_time = true) {
    auto* b = benchmark::RegisterBenchmark(name.c_str(), [fn](benchmark::State& st) { fn(st); });
    if (real_time) b->UseRealTime();
    b->Unit(benchmark::kMicrosecond);
}

/// One GEMV over rows [r0, r1) of weight copy c, as a benchmark row times it: FP4 and FP8
/// take the fast path's activations (int8 / bf16 blocks) when `fast`, else the reference
/// path's f32 rows; BF16 takes bf16 activations (bf16_gemv_bf16) when `fast`, else f32; F32
/// has one path.
void call_rows(const dsv4::kernel_table& K, const weight_set& ws, std::size_t c, bool fast, const acts& a,
               std::size_t m, const dsv4::gemv_out& out, std::size_t r0, std::size_t r1) {
    const std::size_t n = ws.n, k = ws.k;
    const unsigned char* w = ws.w[c].data();
    switch (ws.f) {
        case fmt::fp4: {
            const dsv4::fp4_matrix W{w, k / 2, ws.s[c].data(), k / 32, n, k};
            if (fast) K.fp4_gemv_q8_rows(W, {a.q.data(), k, a.d.data(), k / 32, a.c.data(), k / 32, m}, out, r0, r1);
            else K.fp4_gemv_rows(W, {a.f32.data(), k, m}, out, r0, r1);
            break;
        }
        case fmt::fp8: {
            const dsv4::fp8_matrix W{w, k, ws.s[c].data(), k / 128, n, k};
            if (fast) K.fp8_gemv_bf16_rows(W, {a.xb.data(), k, a.shift.data(), k / 128, m}, out, r0, r1);
            else K.fp8_gemv_rows(W, {a.f32.data(), k, m}, out, r0, r1);
            break;
        }
        case fmt::bf16: {
            const dsv4::bf16_matrix W{reinterpret_cast<const uint16_t*>(w), k, n, k};
            if (fast) K.bf16_gemv_bf16_rows(W, {a.xb.data(), k, m}, out, r0, r1);
            else K.bf16_gemv_rows(W, {a.f32.data(), k, m}, out, r0, r1);
            break;
        }
        case fmt::f32:
            K.f32_gemv_rows({reinterpret_cast<const float*>(w), k, n, k}, {a.f32.data(), k, m}, out, r0, r1);
            break;
    }
}

/// Registers `name`: call_rows over cold copies of an n x k matrix of format f, m activation
/// rows, t threads.
void reg_cold(const std::string& name, dsv4::tier tier, fmt f, bool fast, std::size_t n, std::size_t k, std::size_t m,
              int t) {
    reg(name, [=](benchmark::State& st) {
        const auto& K = *dsv4::kernels_for(tier);
        auto& ws = weights(f, n, k);
        const auto a = make_acts(m, k);
        std::vector<float> y(m * n);
        const dsv4::gemv_out out{y.data(), nullptr, n};
        run(st, n, double(ws.w_bytes + ws.s_bytes), 2.0 * m * n * k, buffers_of(ws), ws.w.size(), t,
            [&](std::size_t c, std::size_t r0, std::size_t r1) { call_rows(K, ws, c, fast, a, m, out, r0, r1); });
    });
}

const bool registered = [] {
    const std::size_t ms[] = {1, 4, 16, 64};
    for (dsv4::tier tier : bench::tiers()) {
        const std::string ts = bench::tier_str(tier);
        for (int t : bench::thread_counts()) {
            for (std::size_t m : ms) {
                // FP4 routed experts: w1/w3 2048x4096, w2 4096x2048
                for (const auto& nk : {std::pair<std::size_t, std::size_t>{2048, 4096}, {4096, 2048}}) {
                    const std::size_t n = nk.first, k = nk.second;
                    for (bool fast : {true, false})
                        reg_cold(std::string(fast ? "fp4_gemv/" : "fp4_gemv_ref/") + ts + "/" + shape_name(n, k, m, t),
                                 tier, fmt::fp4, fast, n, k, m, t);
                }
                // fused gate+up of one routed expert: two 2048x4096 FP4 matrices
                for (bool fast : {true, false}) {
                    const std::size_t n = 2048, k = 4096;
                    reg(std::string(fast ? "fp4_gate_up/" : "fp4_gate_up_ref/") + ts + "/" + shape_name(n, k, m, t),
                        [=](benchmark::State& st) {
                            const auto& K = *dsv4::kernels_for(tier);
                            auto& ws = weights(fmt::fp4, n, k);
                            const auto a = make_acts(m, k);
                            std::vector<float> h(m * n);
                            const dsv4::gemv_out out{h.data(), nullptr, n};
                            const dsv4::swiglu_epilogue e{a.route.data(), 10.0f};
                            const std::size_t copies = ws.w.size() / 2;
                            run(st, n, 2.0 * double(ws.w_bytes + ws.s_bytes), 4.0 * m * n * k, buffers_of(ws), copies, t,
                                [&](std::size_t c, std::size_t r0, std::size_t r1) {
                                    const dsv4::fp4_matrix W1{ws.w[2 * c].data(), k / 2, ws.s[2 * c].data(), k / 32, n, k};
                                    const dsv4::fp4_matrix W3{ws.w[2 * c + 1].data(), k / 2, ws.s[2 * c + 1].data(), k / 32, n, k};
                                    if (fast)
                                        K.fp4_gate_up_q8_rows(W1, W3, {a.q.data(), k, a.d.data(), k / 32, a.c.data(), k / 32, m}, e, out, r0, r1);
                                    else
                                        K.fp4_gate_up_rows(W1, W3, {a.f32.data(), k, m}, e, out, r0, r1);
                                });
                        });
                }
                // FP8: wq_a, wq_b, wkv, wo_b, shared expert w1/w3 and w2
                for (const auto& nk : {std::pair<std::size_t, std::size_t>{1024, 4096}, {32768, 1024}, {512, 4096},
                                    {4096, 8192}, {2048, 4096}, {4096, 2048}}) {
                    const std::size_t n = nk.first, k = nk.second;
                    for (bool fast : {true, false})
                        reg_cold(std::string(fast ? "fp8_gemv/" : "fp8_gemv_ref/") + ts + "/" + shape_name(n, k, m, t),
                                 tier, fmt::fp8, fast, n, k, m, t);
                }
                // wo_a: 8 groups of 1024x4096 (bf16 activations, no act_quant)
                for (bool fast : {true, false})
                reg(std::string(fast ? "fp8_grouped_gemv/" : "fp8_grouped_gemv_ref/") + ts + "/8x1024x4096/m" + std::to_string(m) + "/t" + std::to_string(t),
                    [=](benchmark::State& st) {
                        const auto& K = *dsv4::kernels_for(tier);
                        const std::size_t n = 8192, k = 4096;
                        auto& ws = weights(fmt::fp8, n, k);
                        const auto a = make_acts(m, 8 * k);
                        std::vector<float> y(m * n);
                        run(st, n, double(ws.w_bytes + ws.s_bytes), 2.0 * m * n * k, buffers_of(ws), ws.w.size(), t,
                            [&](std::size_t c, std::size_t r0, std::size_t r1) {
                                const dsv4::fp8_matrix W{ws.w[c].data(), k, ws.s[c].data(), k / 128, n, k};
                                if (fast)
                                    K.fp8_grouped_gemv_bf16_rows(W, 8, {a.xb.data(), 8 * k, a.shift.data(), 8 * k / 128, m}, {y.data(), nullptr, n}, r0, r1);
                                else
                                    K.fp8_grouped_gemv_rows(W, 8, {a.f32.data(), 8 * k, m}, {y.data(), nullptr, n}, r0, r1);
                            });
                    });
                // BF16: gate 256x4096, head 129280x4096
                for (const auto& nk : {std::pair<std::size_t, std::size_t>{256, 4096}, {129280, 4096}}) {
                    const std::size_t n = nk.first, k = nk.second;
                    // f32 activations, and bf16 ones (the head: vdpbf16ps on avx512_bf16)
                    for (const bool bx : {false, true})
                        reg_cold((bx ? "bf16_gemv_bf16/" : "bf16_gemv/") + ts + "/" + shape_name(n, k, m, t), tier,
                                 fmt::bf16, bx, n, k, m, t);
                }
                // F32: the hc functions [24, 16384]
                reg_cold("f32_gemv/" + ts + "/" + shape_name(24, 16384, m, t), tier, fmt::f32, false, 24, 16384, m, t);
            }
        }
        // hot rates per core: ~1 MiB of weights, read from L2 after the first pass
        for (std::size_t m : {std::size_t(1), std::size_t(4)}) {
            for (const char* f : {"fp4", "fp4_ref", "fp8", "fp8_ref", "bf16", "bf16_bf16"}) {
                const std::string fs = f;
                const fmt ff = fs.starts_with("fp4") ? fmt::fp4 : fs.starts_with("fp8") ? fmt::fp8 : fmt::bf16;
                const std::size_t k = 2048, n = ff == fmt::fp4 ? 1024 : ff == fmt::fp8 ? 512 : 256;
                // fp4 / fp8: the fast path unless _ref; bf16: bf16 activations for bf16_bf16
                const bool fast = ff == fmt::bf16 ? fs == "bf16_bf16" : !fs.ends_with("_ref");
                reg("gemv_hot/" + fs + "/" + ts + "/" + shape_name(n, k, m, 1), [=](benchmark::State& st) {
                    const auto& K = *dsv4::kernels_for(tier);
                    auto& ws = weights(ff, n, k, true);
                    const auto a = make_acts(m, k);
                    std::vector<float> y(m * n);
                    const dsv4::gemv_out out{y.data(), nullptr, n};
                    run(st, n, double(ws.w_bytes + ws.s_bytes), 2.0 * m * n * k, buffers_of(ws), 1, 1,
                        [&](std::size_t, std::size_t r0, std::size_t r1) { call_rows(K, ws, 0, fast, a, m, out, r0, r1); });
                }, false);
            }
        }
        // per-core-type hot rates (m1): one core of each class, pinned while it runs
        static const dsv4::hybrid_placement placement(dsv4::detect_core_classes());
        for (std::size_t ci = 0; ci < placement.classes().size(); ++ci) {
            for (const char* f : {"fp4", "fp8", "fp8_ref", "bf16"}) {
                const std::string fs = f;
                const fmt ff = fs.starts_with("fp4") ? fmt::fp4 : fs.starts_with("fp8") ? fmt::fp8 : fmt::bf16;
                const std::size_t k = 2048, n = ff == fmt::fp4 ? 1024 : ff == fmt::fp8 ? 512 : 256, m = 1;
                const bool fast = ff != fmt::bf16 && !fs.ends_with("_ref");  // bf16: f32 activations
                reg("gemv_hot_core/" + fs + "/" + ts + "/" + placement.classes()[ci].label + "/" + shape_name(n, k, m, 1),
                    [=](benchmark::State& st) {
                        const auto& K = *dsv4::kernels_for(tier);
                        auto& ws = weights(ff, n, k, true);
                        const auto a = make_acts(m, k);
                        std::vector<float> y(m * n);
                        const dsv4::gemv_out out{y.data(), nullptr, n};
                        const auto call = [&] { call_rows(K, ws, 0, fast, a, m, out, 0, n); };
                        placement.run_on(ci, [&] {
                            for (auto _ : st) call();
                        });
                        st.SetBytesProcessed(int64_t(double(ws.w_bytes + ws.s_bytes) * double(st.iterations())));
                        st.counters["cores"] = double(placement.classes()[ci].cores);
                    },
                    false);
            }
        }
    }
    return true;
}();

}  // namespace
