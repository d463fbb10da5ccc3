// tests/test_mhc.cpp - mHC hyper-connections (label: mhc), spec §7.
//
// Tolerances (docs/kernels/mhc.md):
//  * mix: |mix - golden| <= (K 2^-24 sum_k |v_k fn_k| + 2^-23 |dot|) r + 2^-23 |mix|, K = 4 dim
//    (f32 GEMV accumulation bound, computed here in double from the golden's own bytes);
//  * pre, post, comb from the golden mixes fed to the split kernel: |x - golden| <= 4e-6 |golden|
//    + 2e-8, and the same bits on every tier; from the kernel's own mixes: 1e-5 |golden| + 1e-7
//    plus the propagated mix error (sigmoid' <= 1/4; a Sinkhorn entry <= 4 |C| max|d logit|);
//  * y (bf16): 1 bf16 ulp + sum_j |d pre_j| |H_j| (+ f32 rounding); hc_post, hc_head: 1 ulp.
#include "test_support.hpp"

#include <dsv4/mhc.hpp>

#include <algorithm>
#include <cstdio>

using namespace dsv4_test;

namespace {

constexpr double u24 = 0x1p-24;

/// Distance in bf16 steps between two bf16 bit patterns (same sign handling as integers).
int bf16_ulps(uint16_t a, uint16_t b) {
    auto key = [](uint16_t v) { return (v & 0x8000) ? -int(v & 0x7FFF) : int(v); };
    return std::abs(key(a) - key(b));
}

struct ulp_report {
    std::size_t n = 0, exact = 0, within1 = 0;
    int worst = 0;
    void add(uint16_t a, uint16_t b) {
        const int d = bf16_ulps(a, b);
        ++n;
        exact += d == 0;
        within1 += d <= 1;
        worst = std::max(worst, d);
    }
};

struct rel_report {
    double worst = 0;  // max |err| / tol
    std::size_t bad = 0, n = 0;
    void add(double got, double want, double tol) {
        const double err = std::fabs(got - want);
        ++n;
        if (!(err <= tol)) ++bad;  // NaN counts as bad
        worst = std::max(worst, tol > 0 ? err / tol : (err > 0 ? 1e30 : 0.0));
    }
};

std::vector<std::string> cases(const char* prefix) {
    std::vector<std::string> out;
    for (const auto& c : golden_cases("mhc"))
        if (c.rfind(prefix, 0) == 0) out.push_back(c);
    return out;
}

struct hc_case {
    std::size_t T = 0, d = 0;
    int iters = 20;
    std::vector<uint16_t> H;
    std::vector<float> fn, scale, base;
    explicit hc_case(const golden& g) {
        const auto hs = g.shape("H");
        T = hs[0];
        d = hs[2];
        H = g.get<uint16_t>("H");
        fn = g.get<float>("fn");
        scale = g.get<float>("scale");
        base = g.get<float>("base");
        if (g.has("iters")) iters = int(g.scalar_i64("iters"));
    }
};

struct pre_result {
    std::vector<uint16_t> y;
    std::vector<float> post, comb, pre, mix;
};

pre_result run_hc_pre(const hc_case& c, bool parallel = false) {
    const dsv4::hc_config cfg{c.d, c.iters};
    std::vector<unsigned char> scratch(dsv4::bytes_needed(cfg, c.T));
    pre_result r;
    r.y.assign(c.T * c.d, 0xFFFF);
    r.post.assign(c.T * 4, -1);
    r.comb.assign(c.T * 16, -1);
    r.pre.assign(c.T * 4, -1);
    r.mix.assign(c.T * 24, -1);
    const dsv4::hc_pre_out out{r.y.data(), r.post.data(), r.comb.data(), r.pre.data(), r.mix.data()};
    const dsv4::hc_scratch s{scratch.data(), scratch.size()};
    if (parallel) dsv4::par::hc_pre(cfg, {c.fn.data(), c.scale.data(), c.base.data()}, c.H.data(), c.T, out, s);
    else dsv4::hc_pre(cfg, {c.fn.data(), c.scale.data(), c.base.data()}, c.H.data(), c.T, out, s);
    return r;
}

/// Bound on |mix_kernel - mix_golden| from the f32 accumulation of the K-long dot products.
std::vector<double> mix_bounds(const hc_case& c, std::size_t nmix, const std::vector<double>& mix_golden) {
    const std::size_t K = 4 * c.d;
    std::vector<double> b(c.T * nmix);
    for (std::size_t t = 0; t < c.T; ++t) {
        double ss = 0;
        for (std::size_t i = 0; i < K; ++i) {
            const double v = dsv4::bf16_to_f32(c.H[t * K + i]);
            ss += v * v;
        }
        const double r = 1.0 / std::sqrt(ss / double(K) + 1e-6);
        for (std::size_t m = 0; m < nmix; ++m) {
            double abs_sum = 0;
            for (std::size_t i = 0; i < K; ++i)
                abs_sum += std::fabs(double(dsv4::bf16_to_f32(c.H[t * K + i])) * c.fn[m * K + i]);
            const double g = mix_golden[t * nmix + m];
            // GEMV accumulation, rounding of dot, of r (a few ulp), of mix
            b[t * nmix + m] = double(K) * u24 * abs_sum * r + 8 * u24 * std::fabs(g) + 1e-30;
        }
    }
    return b;
}

}  // namespace

TEST_CASE("mhc: sigmoid saturates cleanly to exactly 0 and 1 (simd::exp_f32 underneath)") {
    using dsv4::kernels::hc_detail::sigmoid_f32;
    CHECK(sigmoid_f32(1e4f) == 1.0f);
    CHECK(sigmoid_f32(-1e4f) == 0.0f);
    CHECK(sigmoid_f32(0.0f) == 0.5f);
    CHECK(sigmoid_f32(-std::numeric_limits<float>::infinity()) == 0.0f);
    CHECK(sigmoid_f32(std::numeric_limits<float>::infinity()) == 1.0f);
    double worst = 0;
    for (float z = -80.0f; z <= 80.0f; z += 0.0173f) {
        const double want = 1.0 / (1.0 + std::exp(-double(z)));
        worst = std::max(worst, std::fabs(sigmoid_f32(z) - want) / want);
    }
    MESSAGE("sigmoid worst relative error " << worst << " over [-80, 80]");
    CHECK(worst <= 4 * 0x1p-24);
}

TEST_CASE("mhc: hc_pre against the goldens (mix, pre, post, comb, y), every iteration count") {
    std::size_t count = 0;
    for (const auto& name : cases("hc_pre_")) {
        golden g("mhc", name);
        const hc_case c(g);
        CAPTURE(name);
        const auto r = run_hc_pre(c);
        // mix
        const auto mix_g = g.get<double>("mix");
        const auto mb = mix_bounds(c, 24, mix_g);
        rel_report rm;
        for (std::size_t i = 0; i < mix_g.size(); ++i) rm.add(r.mix[i], mix_g[i], mb[i]);
        CHECK(rm.bad == 0);
        // pre / post / comb from the kernel's own mixes: the golden tolerance plus what the
        // kernel's (bounded, checked above) mix error moves them: sigmoid' <= 1/4; a Sinkhorn
        // entry moves by at most 4 |C| times the largest logit change of its token
        const auto pre_g = g.get<float>("pre"), post_g = g.get<float>("post"), comb_g = g.get<float>("comb");
        rel_report rp, rc;
        for (std::size_t t = 0; t < c.T; ++t) {
            double dcomb = 0;
            for (std::size_t m = 8; m < 24; ++m) dcomb = std::max(dcomb, std::fabs(r.mix[24 * t + m] - mix_g[24 * t + m]));
            dcomb *= std::fabs(c.scale[2]);
            for (std::size_t j = 0; j < 4; ++j) {
                const std::size_t i = 4 * t + j;
                const double dpre = 0.25 * std::fabs(c.scale[0]) * std::fabs(r.mix[24 * t + j] - mix_g[24 * t + j]);
                const double dpost = 0.5 * std::fabs(c.scale[1]) * std::fabs(r.mix[24 * t + 4 + j] - mix_g[24 * t + 4 + j]);
                rp.add(r.pre[i], pre_g[i], 1e-5 * std::fabs(pre_g[i]) + 1e-7 + dpre);
                rp.add(r.post[i], post_g[i], 1e-5 * std::fabs(post_g[i]) + 1e-7 + dpost);
            }
            for (std::size_t i = 16 * t; i < 16 * t + 16; ++i)
                rc.add(r.comb[i], comb_g[i], (1e-5 + 4 * dcomb) * std::fabs(comb_g[i]) + 1e-7);
        }
        CHECK(rp.bad == 0);
        CHECK(rc.bad == 0);
        // y (bf16): 1 ulp, plus what the kernel's pre error moves the f32 sum before rounding
        const auto y_g = g.get<uint16_t>("y");
        ulp_report ry;
        rel_report ryb;
        for (std::size_t t = 0; t < c.T; ++t)
            for (std::size_t i = 0; i < c.d; ++i) {
                const std::size_t o = t * c.d + i;
                double moved = 0, mag = 0;
                for (std::size_t j = 0; j < 4; ++j) {
                    const double h = std::fabs(dsv4::bf16_to_f32(c.H[(4 * t + j) * c.d + i]));
                    moved += std::fabs(double(r.pre[4 * t + j]) - pre_g[4 * t + j]) * h;
                    mag += std::fabs(pre_g[4 * t + j]) * h;
                }
                const double yk = dsv4::bf16_to_f32(r.y[o]), yg = dsv4::bf16_to_f32(y_g[o]);
                const double ulp = std::ldexp(1.0, std::max(std::ilogb(std::max(std::fabs(yk), std::fabs(yg)) + 1e-38), -126) - 7);
                ry.add(r.y[o], y_g[o]);
                ryb.add(yk, yg, ulp + moved + 4 * u24 * mag);
            }
        CHECK(ryb.bad == 0);
        MESSAGE(name << " (iters " << c.iters << "): mix worst/bound " << rm.worst << ", pre/post worst/tol " << rp.worst
                     << ", comb worst/tol " << rc.worst << ", y " << ry.exact << "/" << ry.n << " bit-identical, "
                     << ry.n - ry.within1 << " beyond 1 ulp (worst " << ry.worst << ", worst/bound " << ryb.worst << ")");
        for (float v : r.comb) CHECK(std::isfinite(v));
        ++count;
    }
    CHECK(count == 5);
}

TEST_CASE("mhc: split + Sinkhorn from the golden mixes, every tier vs golden and vs scalar") {
    const auto& act = active();
    const auto& ref = scalar_table();
    for (const auto& name : cases("hc_pre_")) {
        golden g("mhc", name);
        const hc_case c(g);
        CAPTURE(name);
        const auto mix_d = g.get<double>("mix");
        std::vector<float> dot(mix_d.begin(), mix_d.end()), ones(c.T, 1.0f);  // mix = dot * 1, exact
        std::vector<float> pre(4 * c.T), post(4 * c.T), comb(16 * c.T), mix(24 * c.T);
        std::vector<float> pre2(4 * c.T), post2(4 * c.T), comb2(16 * c.T);
        act.hc_split_rows(dot.data(), ones.data(), c.T, c.scale.data(), c.base.data(), c.iters, 1e-6f, mix.data(),
                          pre.data(), post.data(), comb.data());
        ref.hc_split_rows(dot.data(), ones.data(), c.T, c.scale.data(), c.base.data(), c.iters, 1e-6f, nullptr,
                          pre2.data(), post2.data(), comb2.data());
        CHECK(std::memcmp(mix.data(), dot.data(), dot.size() * 4) == 0);
        const auto pre_g = g.get<float>("pre"), post_g = g.get<float>("post"), comb_g = g.get<float>("comb");
        rel_report rp, rc;
        for (std::size_t i = 0; i < 4 * c.T; ++i) {
            rp.add(pre[i], pre_g[i], 4e-6 * std::fabs(pre_g[i]) + 2e-8);
            rp.add(post[i], post_g[i], 4e-6 * std::fabs(post_g[i]) + 2e-8);
        }
        for (std::size_t i = 0; i < 16 * c.T; ++i) rc.add(comb[i], comb_g[i], 4e-6 * std::fabs(comb_g[i]) + 2e-8);
        CHECK(rp.bad == 0);
        CHECK(rc.bad == 0);
        // the split is the same sequence of IEEE operations on every tier
        CHECK(std::memcmp(pre.data(), pre2.data(), pre.size() * 4) == 0);
        CHECK(std::memcmp(post.data(), post2.data(), post.size() * 4) == 0);
        CHECK(std::memcmp(comb.data(), comb2.data(), comb.size() * 4) == 0);
        MESSAGE(name << ": split from golden mix: pre/post worst/tol " << rp.worst << ", comb worst/tol " << rc.worst);
    }
}

TEST_CASE("mhc: comb is doubly stochastic after 20 iterations (columns to eps, rows as the reference)") {
    for (const auto& name : cases("hc_pre_")) {
        golden g("mhc", name);
        const hc_case c(g);
        if (c.iters != 20) continue;
        CAPTURE(name);
        const auto r = run_hc_pre(c);
        const auto comb_g = g.get<float>("comb");
        double col_dev = 0, row_diff = 0, row_dev = 0;
        for (std::size_t t = 0; t < c.T; ++t)
            for (std::size_t a = 0; a < 4; ++a) {
                double col = 0, row = 0, row_g = 0;
                for (std::size_t b = 0; b < 4; ++b) {
                    col += r.comb[16 * t + 4 * b + a];
                    row += r.comb[16 * t + 4 * a + b];
                    row_g += comb_g[16 * t + 4 * a + b];
                }
                col_dev = std::max(col_dev, std::fabs(col - 1));
                row_dev = std::max(row_dev, std::fabs(row - 1));
                row_diff = std::max(row_diff, std::fabs(row - row_g));
                CHECK(r.comb[16 * t + 4 * a] > 0);
            }
        // last step is a column step: column sums are s / (s + eps) ~ 1 - 1e-6 (+ rounding)
        CHECK(col_dev <= 2e-6);
        // rows converge geometrically; after 20 rounds they are where the reference's are
        CHECK(row_diff <= 1e-5);
        MESSAGE(name << ": max |colsum - 1| = " << col_dev << ", max |rowsum - 1| = " << row_dev
                     << ", max |rowsum - reference rowsum| = " << row_diff);
    }
    // and with enough iterations every row reaches 1 too: orientation and eps placement
    const auto& act = active();
    golden g("mhc", "hc_pre_d64_iters20");
    const hc_case c(g);
    const auto mix_d = g.get<double>("mix");
    std::vector<float> dot(mix_d.begin(), mix_d.end()), ones(c.T, 1.0f);
    std::vector<float> pre(4 * c.T), post(4 * c.T), comb(16 * c.T);
    act.hc_split_rows(dot.data(), ones.data(), c.T, c.scale.data(), c.base.data(), 2000, 1e-6f, nullptr, pre.data(),
                      post.data(), comb.data());
    double dev = 0;
    for (std::size_t t = 0; t < c.T; ++t)
        for (std::size_t a = 0; a < 4; ++a) {
            double row = 0, col = 0;
            for (std::size_t b = 0; b < 4; ++b) {
                row += comb[16 * t + 4 * a + b];
                col += comb[16 * t + 4 * b + a];
            }
            dev = std::max({dev, std::fabs(row - 1), std::fabs(col - 1)});
        }
    MESSAGE("2000 iterations: max |row or column sum - 1| = " << dev);
    CHECK(dev <= 1e-4);
}

TEST_CASE("mhc: large mixes saturate without NaN or Inf") {
    golden g("mhc", "hc_pre_large_mixes");
    const hc_case c(g);
    const auto r = run_hc_pre(c);
    std::size_t sat_pre = 0, sat_post = 0;
    for (std::size_t i = 0; i < 4 * c.T; ++i) {
        CHECK(std::isfinite(r.pre[i]));
        CHECK(std::isfinite(r.post[i]));
        sat_pre += r.pre[i] == 1e-6f || r.pre[i] == 1.0f + 1e-6f;
        sat_post += r.post[i] == 0.0f || r.post[i] == 2.0f;
    }
    for (float v : r.comb) {
        CHECK(std::isfinite(v));
        CHECK(v >= 0.0f);
        CHECK(v <= 1.0f);
    }
    for (uint16_t v : r.y) CHECK((v & 0x7F80) != 0x7F80);
    MESSAGE("large mixes: " << sat_pre << "/" << 4 * c.T << " pre and " << sat_post << "/" << 4 * c.T
                            << " post exactly saturated");
    CHECK(sat_pre >= c.T);
    CHECK(sat_post >= c.T);
}

TEST_CASE("mhc: hc_post against the goldens, in place, and the transpose matters") {
    for (const auto& name : cases("hc_post_")) {
        golden g("mhc", name);
        CAPTURE(name);
        const auto y = g.get<uint16_t>("y");
        const auto H = g.get<uint16_t>("H");
        const auto post = g.get<float>("post"), comb = g.get<float>("comb");
        const auto out_g = g.get<uint16_t>("out");
        const std::size_t T = g.shape("H")[0], d = g.shape("H")[2];
        const dsv4::hc_config cfg{d};
        std::vector<uint16_t> out(T * 4 * d);
        dsv4::hc_post(cfg, y.data(), H.data(), post.data(), comb.data(), T, out.data());
        ulp_report r;
        for (std::size_t i = 0; i < out.size(); ++i) r.add(out[i], out_g[i]);
        CHECK(r.worst <= 1);
        MESSAGE(name << ": " << r.exact << "/" << r.n << " bit-identical, worst " << r.worst << " ulp");
        // in place: H itself as the output, the same bits
        std::vector<uint16_t> Hi = H;
        dsv4::hc_post(cfg, y.data(), Hi.data(), post.data(), comb.data(), T, Hi.data());
        CHECK(Hi == out);
        // oneTBB wrapper, and per-token ranges
        std::vector<uint16_t> o2(out.size()), o3(out.size());
        dsv4::par::hc_post(cfg, y.data(), H.data(), post.data(), comb.data(), T, o2.data());
        for (std::size_t t = 0; t < T; ++t)
            dsv4::hc_post(cfg, y.data(), H.data(), post.data(), comb.data(), T, o3.data(), t, t + 1);
        CHECK(o2 == out);
        CHECK(o3 == out);
        // comb transposed gives something else (the contraction is over the first index)
        std::vector<float> combT(comb.size());
        for (std::size_t t = 0; t < T; ++t)
            for (std::size_t j = 0; j < 4; ++j)
                for (std::size_t k = 0; k < 4; ++k) combT[16 * t + 4 * k + j] = comb[16 * t + 4 * j + k];
        std::vector<uint16_t> oT(out.size());
        dsv4::hc_post(cfg, y.data(), H.data(), post.data(), combT.data(), T, oT.data());
        ulp_report rT;
        for (std::size_t i = 0; i < out.size(); ++i) rT.add(oT[i], out_g[i]);
        CHECK(rT.within1 < rT.n / 2);
    }
}

TEST_CASE("mhc: hc_head against the goldens") {
    for (const auto& name : cases("hc_head_")) {
        golden g("mhc", name);
        const hc_case c(g);
        CAPTURE(name);
        const dsv4::hc_config cfg{c.d};
        std::vector<unsigned char> scratch(dsv4::bytes_needed(cfg, c.T));
        std::vector<uint16_t> y(c.T * c.d);
        std::vector<float> pre(4 * c.T), mix(4 * c.T);
        dsv4::hc_head(cfg, {c.fn.data(), c.scale.data(), c.base.data()}, c.H.data(), c.T, {y.data(), pre.data(), mix.data()},
                      {scratch.data(), scratch.size()});
        const auto mix_g = g.get<double>("mix");
        const auto mb = mix_bounds(c, 4, mix_g);
        rel_report rm, rp;
        for (std::size_t i = 0; i < mix.size(); ++i) rm.add(mix[i], mix_g[i], mb[i]);
        const auto pre_g = g.get<float>("pre");
        for (std::size_t i = 0; i < pre.size(); ++i) rp.add(pre[i], pre_g[i], 1e-5 * std::fabs(pre_g[i]) + 1e-7);
        const auto y_g = g.get<uint16_t>("y");
        ulp_report ry;
        for (std::size_t i = 0; i < y.size(); ++i) ry.add(y[i], y_g[i]);
        CHECK(rm.bad == 0);
        CHECK(rp.bad == 0);
        CHECK(ry.worst <= 1);
        MESSAGE(name << ": mix worst/bound " << rm.worst << ", pre worst/tol " << rp.worst << ", y " << ry.exact << "/"
                     << ry.n << " bit-identical, worst " << ry.worst << " ulp");
        // the oneTBB wrapper gives the same bits
        std::vector<uint16_t> y2(y.size());
        dsv4::par::hc_head(cfg, {c.fn.data(), c.scale.data(), c.base.data()}, c.H.data(), c.T, {y2.data()},
                           {scratch.data(), scratch.size()});
        CHECK(y2 == y);
    }
}

TEST_CASE("mhc: results do not depend on the token split or on threads") {
    golden g("mhc", "hc_pre_d4096_t3");
    const hc_case c(g);
    const auto a = run_hc_pre(c, false);
    const auto b = run_hc_pre(c, true);
    CHECK(a.y == b.y);
    CHECK(std::memcmp(a.comb.data(), b.comb.data(), a.comb.size() * 4) == 0);
    CHECK(std::memcmp(a.post.data(), b.post.data(), a.post.size() * 4) == 0);
    // a foreign executor (ranges of 5, back to front), for 3 tokens and for 9
    auto odd_pool = [](std::size_t n, std::size_t, auto&& f) {
        for (std::size_t a = (n + 4) / 5 * 5; a > 0; a -= 5)
            if (a - 5 < n) f(a - 5, std::min(n, a));
    };
    {
        const dsv4::hc_config cfg{c.d, c.iters};
        std::vector<unsigned char> scratch(dsv4::bytes_needed(cfg, c.T));
        std::vector<uint16_t> y(c.T * c.d);
        std::vector<float> post(4 * c.T), comb(16 * c.T);
        dsv4::hc_pre_on(odd_pool, cfg, {c.fn.data(), c.scale.data(), c.base.data()}, c.H.data(), c.T,
                        {y.data(), post.data(), comb.data()}, {scratch.data(), scratch.size()});
        CHECK(y == a.y);
        CHECK(std::memcmp(comb.data(), a.comb.data(), comb.size() * 4) == 0);
        hc_case nine = c;  // 9 tokens: the token-block path
        nine.T = 9;
        for (std::size_t t = 3; t < 9; ++t)
            nine.H.insert(nine.H.end(), c.H.begin() + std::ptrdiff_t((t % 3) * 4 * c.d),
                          c.H.begin() + std::ptrdiff_t((t % 3 + 1) * 4 * c.d));
        const auto r9 = run_hc_pre(nine, true);
        std::vector<unsigned char> s9(dsv4::bytes_needed(cfg, 9));
        std::vector<uint16_t> y9(9 * c.d);
        std::vector<float> p9(36), c9(144);
        dsv4::hc_pre_on(odd_pool, cfg, {c.fn.data(), c.scale.data(), c.base.data()}, nine.H.data(), 9,
                        {y9.data(), p9.data(), c9.data()}, {s9.data(), s9.size()});
        CHECK(y9 == r9.y);
        CHECK(std::equal(r9.y.begin(), r9.y.begin() + std::ptrdiff_t(3 * c.d), a.y.begin()));
        CHECK(std::memcmp(c9.data(), r9.comb.data(), c9.size() * 4) == 0);
    }
    // token by token, each with its own one-token scratch
    for (std::size_t t = 0; t < c.T; ++t) {
        hc_case one = c;
        one.T = 1;
        one.H.assign(c.H.begin() + std::ptrdiff_t(t * 4 * c.d), c.H.begin() + std::ptrdiff_t((t + 1) * 4 * c.d));
        const auto r = run_hc_pre(one);
        CHECK(std::equal(r.y.begin(), r.y.end(), a.y.begin() + std::ptrdiff_t(t * c.d)));
        CHECK(std::memcmp(r.comb.data(), a.comb.data() + 16 * t, 64) == 0);
    }
    // stages with a token range and a mix-row split
    const dsv4::hc_config cfg{c.d, c.iters};
    std::vector<unsigned char> scratch(dsv4::bytes_needed(cfg, c.T));
    const dsv4::hc_scratch s{scratch.data(), scratch.size()};
    const dsv4::hc_pre_weights w{c.fn.data(), c.scale.data(), c.base.data()};
    std::vector<uint16_t> y(c.T * c.d);
    std::vector<float> post(4 * c.T), comb(16 * c.T);
    dsv4::hc_pre_norm(cfg, c.H.data(), c.T, s, 0, 1);
    dsv4::hc_pre_norm(cfg, c.H.data(), c.T, s, 1, 3);
    for (std::size_t r0 = 0; r0 < 24; r0 += 5) dsv4::hc_pre_mix(cfg, w, c.T, s, r0, std::min<std::size_t>(24, r0 + 5));
    dsv4::hc_pre_split(cfg, w, c.H.data(), c.T, {y.data(), post.data(), comb.data()}, s, 2, 3);
    dsv4::hc_pre_split(cfg, w, c.H.data(), c.T, {y.data(), post.data(), comb.data()}, s, 0, 2);
    CHECK(y == a.y);
    CHECK(std::memcmp(comb.data(), a.comb.data(), comb.size() * 4) == 0);
}

TEST_CASE("mhc: every tier vs scalar on random residuals (odd dims, many tokens)") {
    rng r(3);
    const auto& act = active();
    const auto& ref = scalar_table();
    for (std::size_t d : {7, 64, 72, 4096}) {
        const std::size_t T = 9, K = 4 * d;
        CAPTURE(d);
        std::vector<uint16_t> H(T * K), y1(T * d), y2(T * d);
        for (auto& v : H) v = dsv4::f32_to_bf16(r.normal() * 2.0f);
        std::vector<float> v1(T * K), v2(T * K), r1(T), r2(T);
        act.hc_norm_rows(H.data(), K, K, T, 1e-6f, v1.data(), K, r1.data());
        ref.hc_norm_rows(H.data(), K, K, T, 1e-6f, v2.data(), K, r2.data());
        CHECK(v1 == v2);  // exact conversion
        // sums of squares in another order: |d ss| <= K 2^-24 ss, so |d r| / r <= K 2^-25 + rounding
        for (std::size_t t = 0; t < T; ++t) CHECK(std::fabs(r1[t] - r2[t]) <= (double(K) * u24 / 2 + 4 * u24) * r2[t]);
        std::vector<float> pre(4 * T);
        for (auto& p : pre) p = r.uniform() * 1.5f;
        act.hc_combine_rows(H.data(), K, d, T, pre.data(), y1.data(), d);
        ref.hc_combine_rows(H.data(), K, d, T, pre.data(), y2.data(), d);
        CHECK(y1 == y2);  // one multiply and three FMAs per element on every tier
        std::vector<float> post(4 * T), comb(16 * T);
        for (auto& p : post) p = r.uniform() * 2.0f;
        for (auto& p : comb) p = r.uniform();
        std::vector<uint16_t> o1(T * K), o2(T * K);
        act.hc_post_rows(y1.data(), d, H.data(), K, post.data(), comb.data(), d, T, o1.data(), K);
        ref.hc_post_rows(y1.data(), d, H.data(), K, post.data(), comb.data(), d, T, o2.data(), K);
        CHECK(o1 == o2);
    }
    // Sinkhorn with iterations 1, 4, 20 on random logits of several magnitudes
    for (int iters : {1, 4, 20}) {
        for (float mag : {0.5f, 5.0f, 300.0f}) {
            const std::size_t T = 17;
            std::vector<float> dot(24 * T), rms(T, 1.0f), scale{0.7f, 0.9f, 1.3f}, base(24);
            for (auto& v : dot) v = r.normal() * mag;
            for (auto& v : base) v = r.normal();
            std::vector<float> p1(4 * T), q1(4 * T), c1(16 * T), p2(4 * T), q2(4 * T), c2(16 * T);
            act.hc_split_rows(dot.data(), rms.data(), T, scale.data(), base.data(), iters, 1e-6f, nullptr, p1.data(),
                              q1.data(), c1.data());
            ref.hc_split_rows(dot.data(), rms.data(), T, scale.data(), base.data(), iters, 1e-6f, nullptr, p2.data(),
                              q2.data(), c2.data());
            for (float v : c1) CHECK(std::isfinite(v));
            CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * 4) == 0);
            CHECK(std::memcmp(p1.data(), p2.data(), p1.size() * 4) == 0);
            CHECK(std::memcmp(q1.data(), q2.data(), q1.size() * 4) == 0);
        }
    }
}

TEST_CASE("mhc: preconditions are checked at the public entry points") {
    std::vector<uint16_t> H(4 * 64), y(64);
    std::vector<float> fn(24 * 256), scale(3), base(24), post(4), comb(16);
    const dsv4::hc_config cfg{64};
    std::vector<unsigned char> scratch(dsv4::bytes_needed(cfg, 1));
    const dsv4::hc_pre_weights w{fn.data(), scale.data(), base.data()};
    const dsv4::hc_pre_out out{y.data(), post.data(), comb.data()};
    CHECK_NOTHROW(dsv4::hc_pre(cfg, w, H.data(), 1, out, {scratch.data(), scratch.size()}));
    CHECK_NOTHROW(dsv4::hc_pre(cfg, w, nullptr, 0, {}, {}));  // no tokens: nothing needed
    CHECK(dsv4::bytes_needed(cfg, 0) == 0);
    CHECK_THROWS_AS(dsv4::hc_pre(cfg, w, H.data(), 1, out, {scratch.data(), scratch.size() - 65}), dsv4::error);
    CHECK_THROWS_AS(dsv4::hc_pre(cfg, w, H.data(), 2, out, {scratch.data(), scratch.size()}), dsv4::error);
    CHECK_THROWS_AS(dsv4::hc_pre({64, 0}, w, H.data(), 1, out, {scratch.data(), scratch.size()}), dsv4::error);
    CHECK_THROWS_AS(dsv4::hc_pre(cfg, {nullptr, scale.data(), base.data()}, H.data(), 1, out,
                                 {scratch.data(), scratch.size()}),
                    dsv4::error);
    CHECK_THROWS_AS(dsv4::hc_pre(cfg, w, H.data(), 1, {y.data(), nullptr, comb.data()}, {scratch.data(), scratch.size()}),
                    dsv4::error);
    CHECK_THROWS_AS(dsv4::hc_pre(cfg, w, H.data(), 1, out, {scratch.data(), scratch.size()}, 0, 2), dsv4::error);
    CHECK_THROWS_AS(dsv4::hc_post(cfg, y.data(), H.data(), post.data(), nullptr, 1, H.data()), dsv4::error);
    try {
        dsv4::hc_pre({64, -3}, w, H.data(), 1, out, {scratch.data(), scratch.size()});
    } catch (const dsv4::error& e) {
        CHECK(std::string(e.what()).find("hc_pre") != std::string::npos);
        CHECK(std::string(e.what()).find("sinkhorn_iters") != std::string::npos);
    }
}
