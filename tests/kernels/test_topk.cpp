// tests/kernels/test_topk.cpp - top-k selection (label: indexer): the goldens exactly; a stable full sort exactly (random,
// tied, all-equal, -0/+0, -inf, NaN rows; the sampled fast path and its fallback); every tier == scalar.
#include "indexer_support.hpp"

#include <dsv4/indexer.hpp>
#include <oneapi/tbb/global_control.h>
#include <algorithm>
#include <cstdio>
#include <limits>
#include <numeric>

using namespace dsv4_test;
using namespace indexer_test;

// ------------------------------------------------------------------ top-k

TEST_CASE("topk: the goldens exactly") {
    std::size_t count = 0;
    for (const auto& name : golden_cases("indexer")) {
        if (name.rfind("topk_", 0) != 0) continue;
        golden g("indexer", name);
        const auto sh = g.shape("scores");
        const std::size_t R = sh[0], T = sh[1], k = std::size_t(g.scalar_i64("k"));
        const auto s = g.get<float>("scores");
        const auto want = g.get<int32_t>("idx");
        std::vector<int32_t> got(R * k);
        std::vector<unsigned char> ws(dsv4::topk_scratch_bytes(T, k));
        dsv4::topk(s.data(), R, T, T, k, dsv4::topk_order::score, got.data(), k, ws.data(), ws.size());
        CAPTURE(name);
        CHECK(got == want);
        ++count;
    }
    CHECK(count == 12);
}

TEST_CASE("topk: equals a stable full sort on random, tied, all-equal and special rows; both paths") {
    const auto& act = active();
    const auto& sca = scalar_table();
    rng r(5);
    std::size_t rows = 0;
    for (std::size_t n : {1u, 2u, 7u, 100u, 600u, 4095u, 4096u, 8192u, 70000u, 262144u}) {
        for (int kind = 0; kind < 6; ++kind) {
            std::vector<float> s(n);
            for (std::size_t i = 0; i < n; ++i) {
                switch (kind) {
                    case 0: s[i] = r.normal(); break;                                           // random
                    case 1: s[i] = dsv4::round_bf16(r.normal()); break;                        // bf16 ties
                    case 2: s[i] = float(r.u32() % 8) * 0.25f; break;                          // coarse
                    case 3: s[i] = 1.5f; break;                                                // all equal
                    case 4: s[i] = (r.u32() & 1) ? 0.0f : -0.0f; break;                        // +-0
                    default: {                                                                 // specials
                        const uint32_t u = r.u32() % 10;
                        s[i] = u == 0 ? -std::numeric_limits<float>::infinity()
                             : u == 1 ? std::numeric_limits<float>::quiet_NaN()
                             : u == 2 ? std::numeric_limits<float>::infinity()
                                      : dsv4::round_bf16(r.normal());
                    }
                }
            }
            for (std::size_t k : {std::size_t(1), std::size_t(5), std::size_t(512), n}) {
                if (k > n) continue;
                for (auto order : {dsv4::topk_order::score, dsv4::topk_order::index}) {
                    const auto want = ref_topk(s.data(), n, k, order);
                    CAPTURE(n);
                    CAPTURE(kind);
                    CAPTURE(k);
                    CHECK(lib_topk(act, s, k, order) == want);
                    if (n <= 8192) CHECK(lib_topk(sca, s, k, order) == want);
                    ++rows;
                }
            }
        }
    }
    // fallback path: the 1024 sampled positions hold the largest values, so the sampled
    // threshold keeps fewer than k and the whole row is selected from
    for (std::size_t n : {8192u, 65536u}) {
        std::vector<float> s(n);
        for (std::size_t i = 0; i < n; ++i) s[i] = r.normal();
        for (std::size_t j = 0; j < dsv4::topk_sample; ++j) s[j * n / dsv4::topk_sample] = 100.0f + float(j % 50);
        const auto want = ref_topk(s.data(), n, 512, dsv4::topk_order::score);
        CHECK(lib_topk(act, s, 512, dsv4::topk_order::score) == want);
    }
    // fast path with ties straddling the threshold: many copies of the k-th value
    {
        const std::size_t n = 100000;
        std::vector<float> s(n, 0.5f);
        for (std::size_t i = 0; i < n; i += 7) s[i] = 1.0f + float(i % 300) * 1e-3f;
        CHECK(lib_topk(act, s, 512, dsv4::topk_order::score) == ref_topk(s.data(), n, 512, dsv4::topk_order::score));
    }
    MESSAGE("topk: " << rows << " rows equal to std::stable_sort");
}

TEST_CASE("topk: par::topk and argument errors") {
    rng r(9);
    const std::size_t R = 7, n = 5000, k = 512;
    std::vector<float> s(R * n);
    for (auto& v : s) v = dsv4::round_bf16(r.normal());
    std::vector<int32_t> a(R * k), b(R * k);
    std::vector<unsigned char> ws(dsv4::topk_scratch_bytes(n, k));
    dsv4::topk(s.data(), R, n, n, k, dsv4::topk_order::score, a.data(), k, ws.data(), ws.size());
    std::vector<unsigned char> pws(dsv4::par::topk_scratch_bytes(n, k));
    dsv4::par::topk(s.data(), R, n, n, k, dsv4::topk_order::score, b.data(), k, pws.data(), pws.size());
    CHECK(a == b);
    CHECK_THROWS_WITH_AS(dsv4::topk(s.data(), 1, 10, 10, 11, dsv4::topk_order::score, a.data(), 11, ws.data(), ws.size()),
                         doctest::Contains("topk"), dsv4::error);
    CHECK_THROWS_AS(dsv4::topk(s.data(), 1, n, n, k, dsv4::topk_order::score, a.data(), k, ws.data(), 100), dsv4::error);
}
