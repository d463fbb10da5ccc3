// tests/kernels/test_norm.cpp - RMSNorm and the per-head q norm (label: attention): goldens, every tier == scalar.
#include "attention_support.hpp"

#include <dsv4/attention.hpp>
#include <dsv4/norm.hpp>
#include <dsv4/rope.hpp>
#include <oneapi/tbb/global_control.h>
#include <algorithm>
#include <cstdio>
#include <limits>
#include <numeric>

using namespace dsv4_test;
using namespace attention_test;

// ---------------------------------------------------------------------------------- norms

TEST_CASE("norm: rmsnorm against the goldens (f32 math, one rounding)") {
    for (const char* name : {"rmsnorm_512", "rmsnorm_1024", "rmsnorm_4096", "rmsnorm_7"}) {
        golden g("attention", name);
        const auto xs = g.shape("x");
        const std::size_t R = xs[0], n = xs[1];
        const auto x = g.get<uint16_t>("x"), w = g.get<uint16_t>("w"), want = g.get<uint16_t>("y");
        const float eps = g.get<float>("eps").at(0);
        std::vector<uint16_t> y(R * n);
        dsv4::rmsnorm(x.data(), R, n, n, w.data(), eps, y.data(), n);
        const auto st = compare(y, want);
        CAPTURE(name);
        MESSAGE(std::string(name) << ": " << st.str());
        CHECK(st.max <= 1);
        CHECK(st.differ * 200 <= st.n);  // f32-ulp sum-order differences flip < 0.5 %
        for (std::size_t i = 0; i < n; ++i) CHECK((y[4 * n + i] & 0x7FFF) == 0);  // the zero row stays (+-)zero
        // in place gives the same
        std::vector<uint16_t> z = x;
        dsv4::rmsnorm(z.data(), R, n, n, w.data(), eps, z.data(), n);
        CHECK(z == y);
    }
}

TEST_CASE("norm: per-head q norm in bf16 arithmetic against the goldens; the f32 variant's distance") {
    for (const char* name : {"q_head_norm_S3_H64_D512", "q_head_norm_S5_H4_D64"}) {
        golden g("attention", name);
        const auto qs = g.shape("q");
        const std::size_t S = qs[0], H = qs[1], D = qs[2];
        const auto q = g.get<uint16_t>("q"), want = g.get<uint16_t>("y");
        const float eps = g.get<float>("eps").at(0);
        std::vector<uint16_t> y(q.size()), yf(q.size());
        dsv4::q_head_norm(q.data(), S, H, D, H * D, eps, y.data(), H * D);
        dsv4::q_head_norm(q.data(), S, H, D, H * D, eps, yf.data(), H * D, dsv4::q_norm_arith::f32);
        const auto st = compare(y, want), stf = compare(yf, want);
        CAPTURE(name);
        MESSAGE(std::string(name) << ": bf16 arithmetic " << st.str() << "; f32 variant vs official " << stf.str());
        CHECK(st.max <= 1);
        CHECK(stf.max <= 2);  // the documented bound of the f32 variant
        for (std::size_t i = 0; i < D; ++i) CHECK(y[i] == 0);  // q[0,0] = 0 -> zeros
    }
}

TEST_CASE("norm: every tier equals scalar bit for bit") {
    rng r(7);
    for (std::size_t n : {std::size_t(1), std::size_t(7), std::size_t(16), std::size_t(33), std::size_t(512),
                          std::size_t(4096), std::size_t(4099)}) {
        std::vector<uint16_t> x(n), w(n), y1(n), y2(n);
        for (auto& v : x) v = rand_bf16(r, std::ldexp(1.0f, int(r.u32() % 20) - 10));
        for (auto& v : w) v = rand_bf16(r, 1.0f);
        active().rmsnorm_row(x.data(), w.data(), n, 1e-6f, y1.data());
        scalar_table().rmsnorm_row(x.data(), w.data(), n, 1e-6f, y2.data());
        CAPTURE(n);
        CHECK(y1 == y2);
        active().q_head_norm_rows(x.data(), 1, n, 1e-6f, y1.data());
        scalar_table().q_head_norm_rows(x.data(), 1, n, 1e-6f, y2.data());
        CHECK(y1 == y2);
    }
}
