// benchmarks/bench_common.hpp - tiers, thread counts, cold weight buffers, and the
// streaming-read ceiling that every bandwidth-bound row divides by (bw_frac).
#pragma once

#include <dsv4/formats.hpp>
#include <dsv4/kernel_table.hpp>

#include <benchmark/benchmark.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <time.h>
#include <vector>

#include <sys/mman.h>

namespace bench {

/// Tiers to benchmark: DSV4_ISA if set, else every tier this CPU runs.
inline std::vector<dsv4::tier> tiers() {
    std::vector<dsv4::tier> out;
    if (const char* e = std::getenv("DSV4_ISA"); e && *e) {
        out.push_back(dsv4::active_tier());  // validates the name
        return out;
    }
    for (dsv4::tier t : dsv4::all_tiers)
        if (dsv4::kernels_for(t)) out.push_back(t);
    return out;
}
/// n bf16 values uniform in [-2, 2) from a fixed LCG (activations and small weights).
inline std::vector<uint16_t> random_bf16(std::size_t n, uint32_t seed = 777) {
    std::vector<uint16_t> x(n);
    uint32_t s = seed;
    for (auto& v : x) {
        s = s * 1664525u + 1013904223u;
        v = dsv4::f32_to_bf16((float(s >> 8) * 0x1p-24f - 0.5f) * 4.0f);
    }
    return x;
}

inline std::string tier_str(dsv4::tier t) { return std::string(dsv4::tier_name(t)); }

/// 1 and all hardware threads (DSV4_BENCH_THREADS overrides the latter).
inline std::vector<int> thread_counts() {
    int all = int(std::max(1u, std::thread::hardware_concurrency()));
    if (const char* e = std::getenv("DSV4_BENCH_THREADS"); e && *e) all = std::max(1, std::atoi(e));
    return all == 1 ? std::vector<int>{1} : std::vector<int>{1, all};
}

/// Whether benchmark buffers may use transparent huge pages (DSV4_BENCH_HUGEPAGES=1).
/// Default: 4 KiB pages, as a memory-mapped checkpoint file is read in real decoding.
inline bool use_huge_pages() {
    const char* e = std::getenv("DSV4_BENCH_HUGEPAGES");
    return e && *e == '1';
}

/// 2 MiB-aligned buffer, written once so its pages are really backed.
struct buffer {
    std::unique_ptr<unsigned char, void (*)(void*)> p{nullptr, std::free};
    std::size_t size = 0;
    explicit buffer(std::size_t n, unsigned char fill = 0x5A) : size(n) {
        const std::size_t align = std::size_t(2) << 20, bytes = (n + align - 1) / align * align;
        p.reset(static_cast<unsigned char*>(std::aligned_alloc(align, bytes)));
        if (!p) throw std::bad_alloc();
        madvise(p.get(), bytes, use_huge_pages() ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
        std::memset(p.get(), fill, n);
    }
    unsigned char* data() const { return p.get(); }
};

/// Enough copies of a working set of `bytes` that rotating through them keeps every
/// access cold: together at least 4x the last-level cache (256 MiB floor).
/// e4m3 weight codes distributed like a real checkpoint's: normal weights quantised with the
/// block's amax at 448. Codes drawn uniformly from 65536 such samples, so subnormal codes
/// (|w| < 2^-6, ~1e-4 of a real checkpoint) are as rare as there: they are slow operands for
/// f32 multiplies on some cores, and uniformly random bytes (1/16 subnormal) would penalise
/// the f32 paths for a case the checkpoint does not have.
inline const std::array<uint8_t, 65536>& e4m3_code_table() {
    static const std::array<uint8_t, 65536> t = [] {
        std::array<float, 65536> v{};
        std::mt19937_64 rng(448);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        float amax = 0.0f;
        for (auto& x : v) amax = std::max(amax, std::fabs(x = nd(rng)));
        std::array<uint8_t, 65536> c{};
        for (std::size_t i = 0; i < c.size(); ++i) c[i] = dsv4::f32_to_e4m3(v[i] * (448.0f / amax));
        return c;
    }();
    return t;
}
/// Fills n bytes with e4m3_code_table codes (xorshift indices, deterministic per seed).
inline void fill_e4m3(unsigned char* p, std::size_t n, uint64_t seed) {
    const auto& t = e4m3_code_table();
    uint64_t z = seed | 1;
    for (std::size_t i = 0; i < n; i += 4) {
        z ^= z << 13, z ^= z >> 7, z ^= z << 17;
        for (std::size_t k = 0; k < 4 && i + k < n; ++k) p[i + k] = t[uint16_t(z >> (16 * k))];
    }
}

inline std::size_t cold_copies(std::size_t bytes) {
    const std::size_t want = std::size_t(256) << 20;
    if (bytes >= want) return 1;  // one pass over it already evicts the LLC
    return std::max<std::size_t>(2, (want + bytes - 1) / bytes);
}

/// Runs body(i) for i in [0, n) on `threads` threads with oneTBB (dynamic chunks: a
/// preempted thread does not stall the others).
template <class F> void parallel_rows(int threads, std::size_t n, std::size_t grain, F&& body) {
    if (threads <= 1) {
        body(std::size_t(0), n);
        return;
    }
    tbb::parallel_for(tbb::blocked_range<std::size_t>(0, n, grain),
                      [&](const tbb::blocked_range<std::size_t>& r) { body(r.begin(), r.end()); });
}

/// Streaming-read bandwidth (bytes/s) over the given cold buffers (each read whole, in
/// turn), with the best tier's read kernel on `threads` threads: the ceiling for bw_frac.
/// Median of `reps` passes over all buffers. Benchmarks call it on their own weight
/// copies right before and after timing, so both numbers share the machine's state.
inline double stream_read_bps(const std::vector<std::pair<const unsigned char*, std::size_t>>& bufs, int threads,
                              int reps = 3) {
    const auto& k = *dsv4::kernels_for(dsv4::best_tier(dsv4::host_cpu()));
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
    std::vector<double> rates;
    const std::size_t chunk = 64 * 1024;
    for (int rep = 0; rep < reps; ++rep) {
        double total = 0;
        const auto t0 = std::chrono::steady_clock::now();
        uint64_t sink = 0;
        for (const auto& [p, bytes] : bufs) {
            std::atomic<uint64_t> acc{0};
            parallel_rows(threads, (bytes + chunk - 1) / chunk, 1, [&, p = p, bytes = bytes](std::size_t c0, std::size_t c1) {
                const std::size_t lo = c0 * chunk, hi = std::min(bytes, c1 * chunk);
                acc += k.stream_read(p + lo, hi - lo);
            });
            sink += acc.load();
            total += double(bytes);
        }
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        benchmark::DoNotOptimize(sink);
        rates.push_back(total / s);
    }
    std::sort(rates.begin(), rates.end());
    return rates[rates.size() / 2];
}

/// The same on fresh buffers of `bytes` (as many copies as cold_copies() says), cached.
inline double stream_read_bps(std::size_t bytes, int threads) {
    static std::mutex mu;
    static std::map<std::pair<std::size_t, int>, double> cache;
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = cache.find({bytes, threads}); it != cache.end()) return it->second;
    std::vector<buffer> owned;
    std::vector<std::pair<const unsigned char*, std::size_t>> bufs;
    for (std::size_t i = 0; i < cold_copies(bytes); ++i) {
        owned.emplace_back(bytes);
        bufs.emplace_back(owned.back().data(), bytes);
    }
    return cache[{bytes, threads}] = stream_read_bps(bufs, threads, 5);
}

/// CPU seconds consumed by this process (all threads) / by the calling thread.
inline double process_cpu_seconds() {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}
inline double thread_cpu_seconds() {
    timespec t{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

/// Iterations of tier t's fma_peak kernel that take about 2 ms.
inline uint64_t fma_peak_iters(const dsv4::kernel_table& k) {
    float sink = 0;
    uint64_t iters = 1 << 12;
    for (;;) {
        const auto t0 = std::chrono::steady_clock::now();
        k.fma_peak(iters, &sink);
        if (std::chrono::steady_clock::now() - t0 > std::chrono::milliseconds(2) || iters > (uint64_t(1) << 40)) break;
        iters *= 2;
    }
    benchmark::DoNotOptimize(sink);
    return iters;
}

/// FMA throughput (flop/s, wall clock) of tier t's fma_peak kernel on `threads` threads,
/// measured now: dynamic chunks (24 per thread) of ~2 ms, the best of `reps` runs of
/// ~50 ms (other processes on the machine can only lower a ceiling).
inline double fma_peak_flops_now(dsv4::tier t, int threads, int reps) {
    const auto& k = *dsv4::kernels_for(t);
    static std::mutex mu;
    static std::map<int, uint64_t> iters_of;
    uint64_t iters;
    {
        std::lock_guard<std::mutex> lock(mu);
        auto it = iters_of.find(int(t));
        iters = it != iters_of.end() ? it->second : (iters_of[int(t)] = fma_peak_iters(k));
    }
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
    const std::size_t chunks = std::size_t(24 * threads);
    double best = 0;
    for (int rep = 0; rep < reps; ++rep) {
        std::atomic<uint64_t> flops{0};
        const auto t0 = std::chrono::steady_clock::now();
        parallel_rows(threads, chunks, 1, [&](std::size_t c0, std::size_t c1) {
            float out = 0;
            uint64_t f = 0;
            for (std::size_t c = c0; c < c1; ++c) f += k.fma_peak(iters, &out);
            flops += f;
            benchmark::DoNotOptimize(out);
        });
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, double(flops.load()) / s);
    }
    return best;
}

/// The FMA ceiling of tier t on `threads` threads (best of 7 runs), cached: the value
/// peak/fma/... prints. Compute-bound rows measure their own with fma_peak_flops_now()
/// right before and after timing, so the ratio shares the machine's state.
inline double fma_peak_flops(dsv4::tier t, int threads) {
    static std::mutex mu;
    static std::map<std::pair<int, int>, double> cache;
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = cache.find({int(t), threads}); it != cache.end()) return it->second;
    return cache[{int(t), threads}] = fma_peak_flops_now(t, threads, 7);
}

/// The same kernel's throughput per second of CPU time of one thread (thread CPU clock):
/// one core's ceiling, immune to the time other processes take. The ceiling for cpu_frac.
inline double fma_peak_cpu_flops(dsv4::tier t) {
    static std::mutex mu;
    static std::map<int, double> cache;
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = cache.find(int(t)); it != cache.end()) return it->second;
    const auto& k = *dsv4::kernels_for(t);
    const uint64_t iters = fma_peak_iters(k);
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
        float out = 0;
        uint64_t f = 0;
        const double t0 = thread_cpu_seconds();
        for (int c = 0; c < 24; ++c) f += k.fma_peak(iters, &out);
        benchmark::DoNotOptimize(out);
        best = std::max(best, double(f) / (thread_cpu_seconds() - t0));
    }
    return cache[int(t)] = best;
}

/// The ceiling of one of the table's peak kernels (fma_peak, bf16_dot_peak) on `threads`
/// threads, measured as fma_peak_flops_now does (chunks of ~2 ms, best of `reps`), cached.
using peak_kernel = uint64_t (*dsv4::kernel_table::*)(uint64_t, float*) noexcept;
inline double peak_flops_of(peak_kernel fn, dsv4::tier t, int threads, int reps = 7) {
    static std::mutex mu;
    struct entry {
        peak_kernel fn;
        int t, threads;
        double flops;
    };
    static std::vector<entry> cache;  // member pointers compare with == only
    std::lock_guard<std::mutex> lock(mu);
    for (const entry& e : cache)
        if (e.fn == fn && e.t == int(t) && e.threads == threads) return e.flops;
    const auto& k = *dsv4::kernels_for(t);
    float sink = 0;
    uint64_t iters = 1 << 12;
    for (;;) {
        const auto t0 = std::chrono::steady_clock::now();
        (k.*fn)(iters, &sink);
        if (std::chrono::steady_clock::now() - t0 > std::chrono::milliseconds(2) || iters > (uint64_t(1) << 40)) break;
        iters *= 2;
    }
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
    double best = 0;
    for (int rep = 0; rep < reps; ++rep) {
        std::atomic<uint64_t> flops{0};
        const auto t0 = std::chrono::steady_clock::now();
        parallel_rows(threads, std::size_t(24 * threads), 1, [&](std::size_t c0, std::size_t c1) {
            float out = 0;
            uint64_t f = 0;
            for (std::size_t c = c0; c < c1; ++c) f += (k.*fn)(iters, &out);
            flops += f;
            benchmark::DoNotOptimize(out);
        });
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, double(flops.load()) / s);
    }
    benchmark::DoNotOptimize(sink);
    cache.push_back({fn, int(t), threads, best});
    return best;
}

/// The int8 dot-product ceiling of tier t (kernels/peak.hpp int8_peak: ops/s, 2 per
/// multiply-add, wall clock) on `threads` threads, the better of the 512- and 256-bit forms
/// (Zen 4 makes twice the products per cycle with 256-bit vpdpbusd): dynamic chunks (24 per
/// thread) of ~2 ms, the best of `reps` runs (other processes can only lower a ceiling).
inline double int8_peak_ops_now(dsv4::tier t, int threads, int reps) {
    const auto& k = *dsv4::kernels_for(t);
    double best = 0;
    for (int width : {512, 256}) {
        uint64_t iters = 1 << 10;
        for (int32_t sink = 0;; iters *= 2) {
            const auto t0 = std::chrono::steady_clock::now();
            k.int8_peak(iters, width, &sink);
            benchmark::DoNotOptimize(sink);
            if (std::chrono::steady_clock::now() - t0 > std::chrono::milliseconds(2) || iters > (uint64_t(1) << 40)) break;
        }
        tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
        for (int rep = 0; rep < reps; ++rep) {
            std::atomic<uint64_t> ops{0};
            const auto t0 = std::chrono::steady_clock::now();
            parallel_rows(threads, std::size_t(24 * threads), 1, [&](std::size_t c0, std::size_t c1) {
                int32_t out = 0;
                uint64_t f = 0;
                for (std::size_t c = c0; c < c1; ++c) f += k.int8_peak(iters, width, &out);
                ops += f;
                benchmark::DoNotOptimize(out);
            });
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            best = std::max(best, double(ops.load()) / s);
        }
    }
    return best;
}

/// int8_peak_ops_now, best of 7, cached per (tier, threads): what peak/int8/... prints.
inline double int8_peak_ops(dsv4::tier t, int threads) {
    static std::mutex mu;
    static std::map<std::pair<int, int>, double> cache;
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = cache.find({int(t), threads}); it != cache.end()) return it->second;
    return cache[{int(t), threads}] = int8_peak_ops_now(t, threads, 7);
}

/// int8_peak per second of one thread's CPU time (best of 5, better width): the ceiling for
/// cpu_peak_frac, immune to the time other processes take the core.
inline double int8_peak_cpu_ops(dsv4::tier t) {
    static std::mutex mu;
    static std::map<int, double> cache;
    std::lock_guard<std::mutex> lock(mu);
    if (auto it = cache.find(int(t)); it != cache.end()) return it->second;
    const auto& k = *dsv4::kernels_for(t);
    double best = 0;
    for (int width : {512, 256})
        for (int rep = 0; rep < 5; ++rep) {
            int32_t out = 0;
            uint64_t f = 0;
            const double t0 = thread_cpu_seconds();
            for (int c = 0; c < 24; ++c) f += k.int8_peak(uint64_t(1) << 13, width, &out);
            benchmark::DoNotOptimize(out);
            best = std::max(best, double(f) / (thread_cpu_seconds() - t0));
        }
    return cache[int(t)] = best;
}

/// Sets GFLOP/s and flops_frac (achieved flop/s over the tier's FMA ceiling).
inline void set_flops_counters(benchmark::State& st, double flops_per_iter, double peak_flops) {
    const double it = double(st.iterations());
    st.counters["GFLOP/s"] = benchmark::Counter(flops_per_iter * it * 1e-9, benchmark::Counter::kIsRate);
    st.counters["flops_frac"] = benchmark::Counter(flops_per_iter * it / peak_flops, benchmark::Counter::kIsRate);
    st.counters["peak_GFLOP/s"] = peak_flops * 1e-9;
}

/// A counter of microseconds per item, `items` items per iteration (wall time).
inline benchmark::Counter us_per(double items) {
    return benchmark::Counter(items * 1e-6, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

/// Sets bytes/s, GFLOP/s and bw_frac (achieved bytes/s over the streaming ceiling).
inline void set_rate_counters(benchmark::State& st, double bytes_per_iter, double flops_per_iter,
                              double ceiling_bps) {
    const double it = double(st.iterations());
    st.SetBytesProcessed(int64_t(bytes_per_iter * it));
    st.counters["GFLOP/s"] = benchmark::Counter(flops_per_iter * it * 1e-9, benchmark::Counter::kIsRate);
    st.counters["bw_frac"] = benchmark::Counter(bytes_per_iter * it / ceiling_bps, benchmark::Counter::kIsRate);
    st.counters["ceiling_GB/s"] = ceiling_bps * 1e-9;
}

}  // namespace bench
