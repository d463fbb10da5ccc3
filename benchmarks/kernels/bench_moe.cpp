// moe/<tier>/decode/<numerics>/t<threads> and moe/<tier>/prefill/T<tokens>/<numerics>/t<threads>:
// the MoE layer at V4-Flash shapes (dim 4096, inter 2048, 256 experts, top-6, FP4 routed + FP8
// shared experts, BF16 gate), weights cold.
//
// Cold weights: 64 distinct FP4 expert weight sets (12.75 MiB each, 816 MiB), 4 copies of the
// FP8 shared expert and of the gate; the 256 expert ids map onto the sets with a rotation
// that changes every iteration, so no iteration finds its weights in the 32 MiB LLC.
//  * decode: the gate bias forces experts 0..5 (the gate GEMV still runs in full); they land
//    on sets 6i..6i+5 (mod 16) in iteration i: a set comes back every 2.7 iterations, ~270 MiB
//    of traffic later.
//  * prefill: tokens route normally among experts 0..63 (bias), mapped onto the 64 sets: every
//    active expert has its own weights (with all 256 experts, 64 sets could not keep each read
//    cold), so each expert sees ~3x the tokens it would with 256 (T=64: ~6 instead of ~2).
// Counters: bytes_per_second = weight bytes streamed (gate + active experts + shared, scales
// included), bw_frac over this binary's streaming read of the very same weight buffers with
// the same thread count, taken just before and just after the timed loop (the better of the
// two, as bench_gemv does), tokens/s, and cpu_GB/s = weight bytes per CPU-second the process
// received, and cpu_bw_frac = that over the streaming read's bytes per CPU-second on the same
// buffers (on a shared machine the wall-clock rows also measure the neighbours' share of the
// cores; the CPU-time ones do not, though memory-bus contention still counts). The layer
// dispatches through the active tier: DSV4_ISA selects it (all tiers are compiled in);
// without it the best tier runs.
#include "bench_common.hpp"

#include <dsv4/moe.hpp>

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

constexpr std::size_t D = 4096, I = 2048, E = 256, K = 6, n_sets = 64, n_copies = 4;

struct weights_store {
    std::vector<bench::buffer> w1, w3, w2, s1, s3, s2;     // per set
    std::vector<bench::buffer> sw1, sw3, sw2, ss1, ss3, ss2;  // per shared copy
    std::vector<bench::buffer> gate;                        // per copy (identical contents)
    std::vector<float> bias_decode, bias_prefill;
    std::vector<uint16_t> x;  // [64, D]
    std::vector<int64_t> ids;

    static weights_store& get() {
        static weights_store s;
        return s;
    }
    static std::size_t expert_bytes() { return 2 * (I * D / 2 + I * D / 32) + D * I / 2 + D * I / 32; }
    static std::size_t shared_bytes() { return 2 * (I * D + (I / 128) * (D / 128)) + D * I + (D / 128) * (I / 128); }
    static std::size_t gate_bytes() { return E * D * 2; }

private:
    weights_store() {
        std::mt19937_64 rng(42);
        uint64_t z = 0x9E3779B97F4A7C15ull;
        auto fill = [&](bench::buffer& b, auto byte_of) {  // xorshift bytes, 8 per step
            for (std::size_t i = 0; i < b.size; i += 8) {
                z ^= z << 13, z ^= z >> 7, z ^= z << 17;
                for (std::size_t k = 0; k < 8 && i + k < b.size; ++k) b.data()[i + k] = byte_of(uint8_t(z >> (8 * k)));
            }
        };
        auto nib = [](uint8_t r) { return r; };
        auto e8 = [](uint8_t r) { return uint8_t(118 + (r & 7)); };  // scales 2^-9 .. 2^-2
        for (std::size_t s = 0; s < n_sets; ++s) {
            w1.emplace_back(I * D / 2), w3.emplace_back(I * D / 2), w2.emplace_back(D * I / 2);
            s1.emplace_back(I * D / 32), s3.emplace_back(I * D / 32), s2.emplace_back(D * I / 32);
            fill(w1.back(), nib), fill(w3.back(), nib), fill(w2.back(), nib);
            fill(s1.back(), e8), fill(s3.back(), e8), fill(s2.back(), e8);
        }
        for (std::size_t c = 0; c < n_copies; ++c) {
            sw1.emplace_back(I * D), sw3.emplace_back(I * D), sw2.emplace_back(D * I);
            ss1.emplace_back((I / 128) * (D / 128)), ss3.emplace_back((I / 128) * (D / 128));
            ss2.emplace_back((D / 128) * (I / 128));
            for (auto* b : {&sw1.back(), &sw3.back(), &sw2.back()}) bench::fill_e4m3(b->data(), b->size, rng());
            fill(ss1.back(), e8), fill(ss3.back(), e8), fill(ss2.back(), e8);
        }
        std::normal_distribution<float> nd(0.0f, 1.0f);
        gate.emplace_back(gate_bytes());
        auto* g0 = reinterpret_cast<uint16_t*>(gate[0].data());
        for (std::size_t i = 0; i < E * D; ++i) g0[i] = dsv4::f32_to_bf16(nd(rng) * 0.05f);
        for (std::size_t c = 1; c < n_copies; ++c) {
            gate.emplace_back(gate_bytes());
            std::memcpy(gate.back().data(), gate[0].data(), gate_bytes());
        }
        x.resize(64 * D);
        for (auto& v : x) v = dsv4::f32_to_bf16(nd(rng));
        ids.assign(64, 0);
        bias_decode.assign(E, 0.0f);
        bias_prefill.assign(E, 0.0f);
        for (std::size_t e = 0; e < E; ++e) {
            bias_decode[e] = e < K ? 100.0f : 0.0f;
            bias_prefill[e] = e < n_sets ? 100.0f : 0.0f;
        }
    }
};

/// Every buffer a benchmark rotates through (for the streaming-read ceiling on the same bytes).
std::vector<std::pair<const unsigned char*, std::size_t>> used_buffers(std::size_t sets) {
    auto& s = weights_store::get();
    std::vector<std::pair<const unsigned char*, std::size_t>> out;
    for (std::size_t k = 0; k < sets; ++k)
        for (const auto* v : {&s.w1, &s.w3, &s.w2, &s.s1, &s.s3, &s.s2}) out.emplace_back((*v)[k].data(), (*v)[k].size);
    for (std::size_t c = 0; c < n_copies; ++c) {
        for (const auto* v : {&s.sw1, &s.sw3, &s.sw2, &s.ss1, &s.ss3, &s.ss2}) out.emplace_back((*v)[c].data(), (*v)[c].size);
        out.emplace_back(s.gate[c].data(), s.gate[c].size);
    }
    return out;
}

/// Expert views with expert j on set (j + rot) % sets.
std::vector<dsv4::moe_expert_weights> expert_table(std::size_t rot, std::size_t sets) {
    auto& s = weights_store::get();
    std::vector<dsv4::moe_expert_weights> t(E);
    for (std::size_t j = 0; j < E; ++j) {
        const std::size_t k = (j + rot) % sets;
        t[j].w1 = {s.w1[k].data(), D / 2, s.s1[k].data(), D / 32, I, D};
        t[j].w3 = {s.w3[k].data(), D / 2, s.s3[k].data(), D / 32, I, D};
        t[j].w2 = {s.w2[k].data(), I / 2, s.s2[k].data(), I / 32, D, I};
    }
    return t;
}

dsv4::moe_weights layer_weights(const dsv4::moe_expert_weights* experts, std::size_t copy, const float* bias) {
    auto& s = weights_store::get();
    dsv4::moe_weights w;
    w.gate.gate = {reinterpret_cast<const uint16_t*>(s.gate[copy].data()), D, E, D};
    w.gate.bias = bias;
    w.experts = experts;
    w.shared.w1 = {s.sw1[copy].data(), D, s.ss1[copy].data(), D / 128, I, D};
    w.shared.w3 = {s.sw3[copy].data(), D, s.ss3[copy].data(), D / 128, I, D};
    w.shared.w2 = {s.sw2[copy].data(), I, s.ss2[copy].data(), I / 128, D, I};
    return w;
}

void bm_moe(benchmark::State& st, std::size_t T, dsv4::moe_numerics num, int threads) {
    auto& s = weights_store::get();
    const bool decode = T == 1;
    const float* bias = decode ? s.bias_decode.data() : s.bias_prefill.data();
    dsv4::moe_config c;
    c.numerics = num;
    // rotations: decode 8 tables (6 i mod 16), prefill 4 (16 i mod 64)
    std::vector<std::vector<dsv4::moe_expert_weights>> tables;
    const std::size_t n_rot = decode ? 8 : 4;
    for (std::size_t i = 0; i < n_rot; ++i) tables.push_back(decode ? expert_table(6 * i, 16) : expert_table(16 * i, n_sets));
    std::vector<unsigned char> scratch(dsv4::bytes_needed(c, T));
    const dsv4::moe_scratch sc{scratch.data(), scratch.size(), T};
    // active experts of this input (the routing does not depend on the rotation)
    std::size_t active = 0;
    {
        std::vector<int32_t> idx(T * K);
        std::vector<float> wts(T * K);
        dsv4::moe_route_tokens(c, layer_weights(tables[0].data(), 0, bias).gate, s.x.data(), D, nullptr, T,
                               {idx.data(), wts.data()}, sc);
        std::vector<bool> used(E);
        for (int32_t e : idx) used[std::size_t(e)] = true;
        for (bool u : used) active += u;
    }
    std::vector<uint16_t> y(T * D);
    const auto bufs = used_buffers(decode ? 16 : n_sets);
    const auto before = ceilings(bufs, threads);
    const double cpu0 = bench::process_cpu_seconds();
    {
        tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
        std::size_t it = 0;
        for (auto _ : st) {
            const auto w = layer_weights(tables[it % n_rot].data(), it % n_copies, bias);
            if (threads > 1) dsv4::par::moe_forward(c, w, s.x.data(), D, nullptr, T, y.data(), D, sc);
            else dsv4::moe_forward(c, w, s.x.data(), D, nullptr, T, y.data(), D, sc);
            benchmark::DoNotOptimize(y.data());
            ++it;
        }
    }
    const double cpu = bench::process_cpu_seconds() - cpu0;
    const auto after = ceilings(bufs, threads);
    const double bytes = double(weights_store::gate_bytes() + active * weights_store::expert_bytes() +
                                weights_store::shared_bytes());
    const double flops = 2.0 * double(T) * (double(E) * D + double(K) * 3 * I * D + 3.0 * I * D);
    bench::set_rate_counters(st, bytes, flops, std::max(before.first, after.first));
    st.counters["cpu_GB/s"] = bytes * double(st.iterations()) / cpu * 1e-9;
    st.counters["cpu_bw_frac"] = bytes * double(st.iterations()) / cpu / std::max(before.second, after.second);
    st.counters["tokens/s"] = benchmark::Counter(double(T) * double(st.iterations()), benchmark::Counter::kIsRate);
    st.counters["experts"] = double(active);
}

const bool registered = [] {
    const dsv4::tier t = dsv4::active_tier();  // the layer dispatches through the active table
    const std::string ts = bench::tier_str(t);
    for (auto num : {dsv4::moe_numerics::reference, dsv4::moe_numerics::fast}) {
        const std::string ns = num == dsv4::moe_numerics::fast ? "fast" : "reference";
        for (int th : bench::thread_counts()) {
            benchmark::RegisterBenchmark(("moe/" + ts + "/decode/" + ns + "/t" + std::to_string(th)).c_str(), bm_moe,
                                         std::size_t(1), num, th)
                ->UseRealTime()
                ->Unit(benchmark::kMillisecond);
            for (std::size_t T : {16, 64})
                benchmark::RegisterBenchmark(
                    ("moe/" + ts + "/prefill/T" + std::to_string(T) + "/" + ns + "/t" + std::to_string(th)).c_str(),
                    bm_moe, T, num, th)
                    ->UseRealTime()
                    ->Unit(benchmark::kMillisecond);
        }
    }
    return true;
}();

}  // namespace
