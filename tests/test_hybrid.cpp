// tests/test_hybrid.cpp - placement of row-parallel work by core class (label: hybrid).
// This machine may have one core type: the split is tested on synthetic core-type tables,
// the arenas with classes that pin nothing (no cpus).
#include "test_support.hpp"

#include <dsv4/hybrid.hpp>
#include <dsv4/parallel.hpp>

#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>

using namespace dsv4_test;

namespace {
dsv4::core_class cls(std::size_t cores, double rate, const char* label = "any") {
    dsv4::core_class c;
    c.cores = cores;
    c.rate = rate;
    c.label = label;
    return c;
}

/// Every property of a split: contiguous, covers [0, n), sizes multiples of grain except the
/// last nonempty range, each within one grain unit of its exact share of the units.
void check_split(std::size_t n, const std::vector<dsv4::core_class>& c, std::size_t grain) {
    CAPTURE(n);
    CAPTURE(grain);
    const auto b = dsv4::proportional_bounds(n, c, grain);
    REQUIRE(b.size() == c.size() + 1);
    CHECK(b.front() == 0);
    CHECK(b.back() == n);
    std::size_t last = 0;
    for (std::size_t i = 0; i < c.size(); ++i) {
        REQUIRE(b[i] <= b[i + 1]);
        if (b[i + 1] > b[i]) last = i;
    }
    const std::size_t units = (n + grain - 1) / grain;
    double total = 0;
    for (const auto& x : c) total += x.rate > 0 ? double(x.cores) * x.rate : 0.0;
    for (std::size_t i = 0; i < c.size(); ++i) {
        const std::size_t sz = b[i + 1] - b[i];
        if (i != last) CHECK(sz % grain == 0);
        const double w = c[i].rate > 0 ? double(c[i].cores) * c[i].rate : 0.0;
        if (total > 0) {
            const double share = double(units) * w / total;
            const double got = double((sz + grain - 1) / grain);
            CHECK(std::fabs(got - share) < 1.0 + 1e-9);
            if (w == 0) CHECK(sz == 0);
        }
    }
}
}  // namespace

TEST_CASE("hybrid: proportional row split on synthetic core-type tables") {
    // Core Ultra 9 285H-like: 6 P at 2x, 8 E at 1x, 2 LP-E at 0.5x; 4096 rows, grain 32:
    // weights 12 : 8 : 1 of 128 units = 73.14, 48.76, 6.10 -> 73, 49 (largest remainder), 6
    const std::vector<dsv4::core_class> ultra = {cls(6, 2.0, "P"), cls(8, 1.0, "E"), cls(2, 0.5, "LPE")};
    const auto b = dsv4::proportional_bounds(4096, ultra, 32);
    CHECK(b == std::vector<std::size_t>{0, 73 * 32, 122 * 32, 4096});
    // equal rates: split by cores; 8 P + 16 E at equal rate, 3 units: 1 and 2
    CHECK(dsv4::proportional_bounds(96, {cls(8, 1.0), cls(16, 1.0)}, 32) == std::vector<std::size_t>{0, 32, 96});
    // ragged n: the last nonempty range takes the remainder
    CHECK(dsv4::proportional_bounds(100, {cls(1, 1.0), cls(1, 1.0)}, 32) == std::vector<std::size_t>{0, 64, 100});
    // a class of rate 0 gets nothing; all rates 0: by cores
    CHECK(dsv4::proportional_bounds(256, {cls(4, 0.0), cls(4, 1.0)}, 16) == std::vector<std::size_t>{0, 0, 256});
    CHECK(dsv4::proportional_bounds(256, {cls(1, 0.0), cls(3, 0.0)}, 16) == std::vector<std::size_t>{0, 64, 256});
    // degenerate: n = 0, n < grain, one class, grain 0
    CHECK(dsv4::proportional_bounds(0, ultra, 32) == std::vector<std::size_t>{0, 0, 0, 0});
    CHECK(dsv4::proportional_bounds(5, ultra, 32) == std::vector<std::size_t>{0, 5, 5, 5});
    CHECK(dsv4::proportional_bounds(77, {cls(3, 1.0)}, 8) == std::vector<std::size_t>{0, 77});
    CHECK(dsv4::proportional_bounds(3, {cls(1, 1.0), cls(2, 1.0)}, 0) == std::vector<std::size_t>{0, 1, 3});
    CHECK(dsv4::proportional_bounds(10, {}, 4) == std::vector<std::size_t>{0});
    // random tables: all invariants
    rng r(5);
    for (int t = 0; t < 500; ++t) {
        std::vector<dsv4::core_class> c;
        const std::size_t k = 1 + r.u32() % 4;
        for (std::size_t i = 0; i < k; ++i) c.push_back(cls(1 + r.u32() % 16, (r.u32() % 5 == 0) ? 0.0 : 0.1 + 4 * r.uniform()));
        check_split(r.u32() % 70000, c, 1 + r.u32() % 128);
    }
}

TEST_CASE("hybrid: placement covers every row once, each class inside its own range") {
    dsv4::hybrid_placement p({cls(1, 3.0, "P"), cls(1, 1.0, "E")});
    for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(31), std::size_t(1000), std::size_t(4096)}) {
        CAPTURE(n);
        const auto b = p.bounds(n, 16);
        std::vector<std::atomic<int>> hits(n);
        std::mutex mu;
        std::vector<std::pair<std::size_t, std::size_t>> calls;
        p.for_rows(n, 16, [&](std::size_t r0, std::size_t r1) {
            for (std::size_t i = r0; i < r1; ++i) hits[i]++;
            std::lock_guard<std::mutex> l(mu);
            calls.emplace_back(r0, r1);
        });
        for (std::size_t i = 0; i < n; ++i) CHECK(hits[i].load() == 1);
        for (const auto& [r0, r1] : calls) {  // no chunk straddles two classes' ranges
            bool inside = false;
            for (std::size_t i = 0; i + 1 < b.size(); ++i) inside = inside || (r0 >= b[i] && r1 <= b[i + 1]);
            CHECK(inside);
        }
        if (n == 4096) CHECK(b == std::vector<std::size_t>{0, 3072, 4096});
    }
    // calibration measures a rate per class (positive; equal work on one core type here)
    std::vector<float> v(1 << 14, 1.0f);
    float sink = 0;
    p.calibrate([&] {
        for (float& x : v) x = x * 0.999f + 0.001f;
        sink += v[7];
    }, 3);
    for (const auto& c : p.classes()) CHECK(c.rate > 0);
    CHECK(sink > 0);
}

TEST_CASE("hybrid: GEMVs through a placement_scope give the same bits") {
    rng r(9);
    const std::size_t n = 300, k = 512, m = 2;
    std::vector<uint8_t> w(n * k), s(((n + 127) / 128) * (k / 128));
    for (auto& c : w) c = uint8_t(r.u32()) & 0xF7;  // no NaN codes
    for (auto& e : s) e = uint8_t(116 + r.u32() % 8);
    std::vector<float> x(m * k);
    for (auto& v : x) v = dsv4::round_bf16(r.normal());
    const dsv4::fp8_matrix W{w.data(), k, s.data(), k / 128, n, k};
    std::vector<float> y0(m * n), y1(m * n, -1.0f);
    dsv4::fp8_gemv(W, {x.data(), k, m}, {y0.data(), nullptr, n});
    dsv4::hybrid_placement p({cls(1, 2.5, "P"), cls(1, 1.0, "E"), cls(1, 0.0, "idle")});
    CHECK(dsv4::par::current_placement() == nullptr);
    {
        dsv4::par::placement_scope sc(p);
        CHECK(dsv4::par::current_placement() == &p);
        dsv4::par::fp8_gemv(W, {x.data(), k, m}, {y1.data(), nullptr, n});
    }
    CHECK(dsv4::par::current_placement() == nullptr);
    CHECK(std::memcmp(y0.data(), y1.data(), y0.size() * 4) == 0);
}

TEST_CASE("hybrid: detection on this machine") {
    const auto c = dsv4::detect_core_classes();
    REQUIRE(!c.empty());
    std::size_t total = 0;
    for (const auto& x : c) {
        CHECK(x.cores >= 1);
        total += x.cores;
        MESSAGE("core class " << x.label << " (CPUID 0x1A type " << x.type_id << "): " << x.cores << " threads");
    }
    CHECK(total >= 1);
    MESSAGE("CPUID 0x1A core type of this thread: " << dsv4::cpuid_core_type());
    dsv4::hybrid_placement p(c);  // a real placement runs too
    std::vector<std::atomic<int>> hits(1000);
    p.for_rows(hits.size(), 32, [&](std::size_t a, std::size_t b) {
        for (std::size_t i = a; i < b; ++i) hits[i]++;
    });
    for (auto& h : hits) CHECK(h.load() == 1);
}

#if defined(__linux__)
TEST_CASE("hybrid: each class's rows run on its own CPUs; threads get their affinity back") {
    cpu_set_t before;
    CPU_ZERO(&before);
    REQUIRE(sched_getaffinity(0, sizeof before, &before) == 0);
    std::vector<int> cpus;
    for (int c = 0; c < CPU_SETSIZE && cpus.size() < 2; ++c)
        if (CPU_ISSET(c, &before)) cpus.push_back(c);
    if (cpus.size() < 2) return;  // needs two CPUs
    // a synthetic two-type table over two real CPUs: "P" = the first, "E" = the second
    dsv4::core_class p = cls(1, 2.0, "P"), e = cls(1, 1.0, "E");
    p.cpus = {cpus[0]};
    e.cpus = {cpus[1]};
    dsv4::hybrid_placement pl({p, e});
    const auto b = pl.bounds(3000, 8);
    std::mutex mu;
    std::vector<std::pair<std::size_t, int>> where;  // chunk start, CPU
    for (int rep = 0; rep < 3; ++rep)
        pl.for_rows(3000, 8, [&](std::size_t r0, std::size_t) {
            const int cpu = sched_getcpu();
            std::lock_guard<std::mutex> l(mu);
            where.emplace_back(r0, cpu);
        });
    for (const auto& [r0, cpu] : where) CHECK(cpu == (r0 < b[1] ? cpus[0] : cpus[1]));
    double tp = pl.time_on(0, [] { CHECK(sched_getcpu() >= 0); }, 1);
    CHECK(tp >= 0);
    cpu_set_t after;
    CPU_ZERO(&after);
    REQUIRE(sched_getaffinity(0, sizeof after, &after) == 0);
    CHECK(CPU_EQUAL(&before, &after));
}
#endif
