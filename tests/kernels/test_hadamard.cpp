// tests/kernels/test_hadamard.cpp - the Hadamard rotation (spec §3.4; label: indexer): against the matrix definition (float64
// sum -> f32 -> * f32(n^-1/2) -> bf16) within one bf16 ulp plus the butterfly's own rounding;
// every tier == scalar.
#include "indexer_support.hpp"

#include <dsv4/indexer.hpp>
#include <oneapi/tbb/global_control.h>
#include <algorithm>
#include <cstdio>
#include <limits>
#include <numeric>

using namespace dsv4_test;
using namespace indexer_test;

// ------------------------------------------------------------------ Hadamard

TEST_CASE("hadamard: against the matrix definition, every tier == scalar") {
    const auto& act = active();
    const auto& sca = scalar_table();
    rng r(11);
    std::size_t n_total = 0, n_exact = 0;
    for (std::size_t n : {1u, 2u, 4u, 8u, 16u, 32u, 64u, 128u, 256u, 1024u}) {
        std::vector<std::vector<uint16_t>> rows;
        for (float sc : {1.0f, 1e4f, 1e-4f, 3e-38f}) rows.push_back(random_bf16(r, n, sc));
        rows.push_back(std::vector<uint16_t>(n, 0));
        rows.push_back(std::vector<uint16_t>(n, dsv4::f32_to_bf16(1.0f)));
        std::vector<uint16_t> one(n, 0);
        one[n / 3] = dsv4::f32_to_bf16(-2.5f);
        rows.push_back(one);
        std::vector<uint16_t> mixed = random_bf16(r, n, 1.0f);
        for (std::size_t i = 0; i < n; i += 3) mixed[i] = dsv4::f32_to_bf16(r.normal() * 1e5f);
        rows.push_back(mixed);
        for (const auto& x : rows) {
            std::vector<uint16_t> y = x, ys = x;
            dsv4::hadamard_rotate(y.data(), 1, n, n);
            sca.hadamard_row(ys.data(), n);
            CHECK(y == ys);
            const float scale = float(1.0 / std::sqrt(double(n)));
            double sabs = 0;
            for (auto v : x) sabs += std::fabs(bf16v(v));
            for (std::size_t i = 0; i < n; ++i) {
                double t = 0;
                for (std::size_t j = 0; j < n; ++j) t += (std::popcount(unsigned(i & j)) & 1) ? -bf16v(x[j]) : bf16v(x[j]);
                const uint16_t want = dsv4::f32_to_bf16(float(t) * scale);
                const double ulp = std::max(std::ldexp(1.0, int(std::floor(std::log2(std::max(std::fabs(bf16v(want)), 1e-40)))) - 7), 0x1p-133);
                const double tol = ulp + std::log2(double(n)) * 0x1p-24 * sabs * double(scale);
                CHECK(std::fabs(bf16v(y[i]) - bf16v(want)) <= tol);
                ++n_total;
                n_exact += y[i] == want;
            }
        }
    }
    std::vector<uint16_t> x = random_bf16(r, 3 * 200, 1.0f), y = x;
    dsv4::hadamard_rotate(x.data(), 3, 128, 200);  // strided rows, the gaps untouched
    for (std::size_t i = 128; i < 200; ++i) CHECK(x[i] == y[i]);
    CHECK_THROWS_AS(dsv4::hadamard_rotate(x.data(), 1, 96, 96), dsv4::error);
    MESSAGE("hadamard: " << n_exact << " of " << n_total << " outputs equal the matrix definition's bits");
    (void)act;
}
