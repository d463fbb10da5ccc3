// tests/test_gemv.cpp - dequant-fused GEMV/GEMM (label: gemv).
//
// Bounds. Reference mode: |y - y_exact| <= K * 2^-24 * y_abs (+ the output rounding),
// valid for any order of f32 summation; y_exact and y_abs come from NumPy (exact f64).
// Fast FP4 mode (int8 activations): |y - sum_k x_k w_k| <= sum_b (d_b/2) sum_{k in b}|w_k|
// + K * 2^-24 * sum|x w|, computed here in double from the golden's own bytes.
#include "test_support.hpp"

#include <dsv4/gemv.hpp>
#include <dsv4/parallel.hpp>

#include <algorithm>
#include <cstdio>

using namespace dsv4_test;

namespace {

constexpr double u32 = 0x1p-24;

struct bound_report {
    double worst = 0;  // max |err| / bound
    std::size_t n = 0, bad = 0;
    void add(double err, double bound) {
        ++n;
        const double r = bound > 0 ? err / bound : (err > 0 ? 1e30 : 0);
        worst = std::max(worst, r);
        bad += err > bound;
    }
};

double dequant_fp4(const std::vector<uint8_t>& w, const std::vector<uint8_t>& s, std::size_t k, std::size_t n,
                   std::size_t i) {
    const uint8_t byte = w[n * (k / 2) + i / 2];
    return double(dsv4::e2m1_to_f32((i & 1) ? byte >> 4 : byte & 0xF)) * double(dsv4::e8m0_to_f32(s[n * (k / 32) + i / 32]));
}

std::vector<float> acts_f32(const golden& g, std::size_t m, std::size_t k) {
    const auto codes = g.get<uint8_t>("a_codes");
    const auto scales = g.get<uint8_t>("a_scales");
    std::vector<float> a(m * k);
    dsv4::fp8_acts_to_f32(codes.data(), k, scales.data(), k / 128, m, k, a.data(), k);
    return a;
}

/// Checks y (f32 [m, n]) against the golden's y_exact / y_abs with the reference bound.
void check_ref(const golden& g, const std::vector<float>& y, std::size_t m, std::size_t n, std::size_t k,
               const char* what) {
    const auto ye = g.get<double>("y_exact");
    const auto ya = g.get<double>("y_abs");
    bound_report r;
    for (std::size_t i = 0; i < m * n; ++i)
        r.add(std::fabs(double(y[i]) - ye[i]), double(k) * u32 * ya[i] + 0x1p-149 * double(k));
    CAPTURE(g.dir);
    CAPTURE(what);
    CHECK(r.bad == 0);
    MESSAGE(std::string(what) << " " << g.dir.substr(g.dir.rfind('/') + 1) << ": worst |err|/bound = " << r.worst);
}

/// Runs `fn(table, out)` with f32 output and with bf16 output; checks bf16 == bf16(f32).
template <class Fn> std::vector<float> run_both_outputs(std::size_t m, std::size_t n, Fn&& fn) {
    std::vector<float> y(m * n, -1.0f);
    fn(dsv4::gemv_out{y.data(), nullptr, n});
    std::vector<uint16_t> yb(m * n);
    fn(dsv4::gemv_out{nullptr, yb.data(), n});
    std::size_t diff = 0;
    for (std::size_t i = 0; i < m * n; ++i) diff += yb[i] != dsv4::f32_to_bf16(y[i]);
    CHECK(diff == 0);
    return y;
}

std::vector<std::string> cases_with_prefix(const std::string& prefix) {
    std::vector<std::string> out;
    for (const auto& c : golden_cases("gemv"))
        if (c.rfind(prefix, 0) == 0) out.push_back(c);
    return out;
}

bool is_plain(const std::string& name, const char* prefix) {
    return name.rfind(prefix, 0) == 0 && name.find("grouped") == std::string::npos &&
           name.find("gate_up") == std::string::npos;
}

}  // namespace

TEST_CASE("gemv: FP4 reference mode against the goldens (f32 and bf16 output)") {
    std::size_t count = 0;
    for (const auto& name : cases_with_prefix("fp4_")) {
        if (!is_plain(name, "fp4_")) continue;
        golden g("gemv", name);
        const auto ws = g.shape("w");
        const std::size_t n = ws[0], k = ws[1] * 2, m = g.shape("x")[0];
        const auto w = g.get<uint8_t>("w");
        const auto s = g.get<uint8_t>("w_scale");
        const auto a = acts_f32(g, m, k);
        const dsv4::fp4_matrix W{w.data(), k / 2, s.data(), k / 32, n, k};
        const auto y = run_both_outputs(m, n, [&](dsv4::gemv_out o) { dsv4::fp4_gemv(W, {a.data(), k, m}, o); });
        check_ref(g, y, m, n, k, "fp4");
        ++count;
    }
    CHECK(count >= 9);
}

TEST_CASE("gemv: FP8 reference mode against the goldens") {
    std::size_t count = 0;
    for (const auto& name : cases_with_prefix("fp8_")) {
        if (!is_plain(name, "fp8_")) continue;
        golden g("gemv", name);
        const auto ws = g.shape("w");
        const std::size_t n = ws[0], k = ws[1], m = g.shape("x")[0];
        const auto w = g.get<uint8_t>("w");
        const auto s = g.get<uint8_t>("w_scale");
        const auto a = acts_f32(g, m, k);
        const dsv4::fp8_matrix W{w.data(), k, s.data(), k / 128, n, k};
        const auto y = run_both_outputs(m, n, [&](dsv4::gemv_out o) { dsv4::fp8_gemv(W, {a.data(), k, m}, o); });
        check_ref(g, y, m, n, k, "fp8");
        ++count;
    }
    CHECK(count >= 8);
}

TEST_CASE("gemv: BF16 and F32 weights against the goldens") {
    std::size_t count = 0;
    for (const auto& name : golden_cases("gemv")) {
        const bool bf16 = name.rfind("bf16_", 0) == 0, f32 = name.rfind("f32_", 0) == 0;
        if (!bf16 && !f32) continue;
        golden g("gemv", name);
        const auto ws = g.shape("w");
        const std::size_t n = ws[0], k = ws[1], m = g.shape("x")[0];
        const auto x = g.get<float>("x");
        std::vector<float> y;
        if (bf16) {
            const auto w = g.get<uint16_t>("w");
            const dsv4::bf16_matrix W{w.data(), k, n, k};
            y = run_both_outputs(m, n, [&](dsv4::gemv_out o) { dsv4::bf16_gemv(W, {x.data(), k, m}, o); });
        } else {
            const auto w = g.get<float>("w");
            const dsv4::f32_matrix W{w.data(), k, n, k};
            y = run_both_outputs(m, n, [&](dsv4::gemv_out o) { dsv4::f32_gemv(W, {x.data(), k, m}, o); });
        }
        check_ref(g, y, m, n, k, bf16 ? "bf16" : "f32");
        ++count;
    }
    CHECK(count >= 10);
}

TEST_CASE("gemv: grouped FP8 projection (wo_a) against the goldens") {
    std::size_t count = 0;
    for (const auto& name : cases_with_prefix("fp8_grouped_")) {
        golden g("gemv", name);
        const std::size_t groups = std::size_t(g.scalar_i64("groups"));
        const auto ws = g.shape("w");
        const std::size_t n = ws[0], k = ws[1], m = g.shape("x")[0];
        const auto w = g.get<uint8_t>("w");
        const auto s = g.get<uint8_t>("w_scale");
        const auto xb = g.get<uint16_t>("x");
        std::vector<float> x(xb.size());
        dsv4::decode_bf16(xb.data(), x.data(), x.size());
        const dsv4::fp8_matrix W{w.data(), k, s.data(), k / 128, n, k};
        const auto y = run_both_outputs(
            m, n, [&](dsv4::gemv_out o) { dsv4::fp8_grouped_gemv(W, groups, {x.data(), groups * k, m}, o); });
        check_ref(g, y, m, n, k, "fp8_grouped");
        ++count;
    }
    CHECK(count >= 3);
}

TEST_CASE("gemv: FP4 fast mode (int8 activations) within its derived bound, and vs reference mode") {
    std::size_t count = 0;
    for (const auto& name : cases_with_prefix("fp4_")) {
        if (!is_plain(name, "fp4_")) continue;
        golden g("gemv", name);
        const auto ws = g.shape("w");
        const std::size_t n = ws[0], k = ws[1] * 2, m = g.shape("x")[0];
        const auto w = g.get<uint8_t>("w");
        const auto s = g.get<uint8_t>("w_scale");
        const auto xb = g.get<uint16_t>("x");
        std::vector<int8_t> q(m * k);
        std::vector<float> d(m * k / 32);
        std::vector<int32_t> c(m * k / 32);
        dsv4::quantize_q8(xb.data(), k, m, k, q.data(), k, d.data(), k / 32, c.data(), k / 32);
        const dsv4::fp4_matrix W{w.data(), k / 2, s.data(), k / 32, n, k};
        const auto y = run_both_outputs(
            m, n, [&](dsv4::gemv_out o) { dsv4::fp4_gemv_q8(W, {q.data(), k, d.data(), k / 32, c.data(), k / 32, m}, o); });
        const auto a = acts_f32(g, m, k);
        std::vector<float> yref(m * n);
        dsv4::fp4_gemv(W, {a.data(), k, m}, {yref.data(), nullptr, n});
        bound_report r;
        double max_diff_ref = 0, max_y = 0;
        for (std::size_t mi = 0; mi < m; ++mi)
            for (std::size_t ni = 0; ni < n; ++ni) {
                double exact = 0, abs_sum = 0, qerr = 0;
                for (std::size_t b = 0; b < k / 32; ++b) {
                    double wabs = 0;
                    for (std::size_t i = b * 32; i < b * 32 + 32; ++i) {
                        const double wv = dequant_fp4(w, s, k, ni, i), xv = dsv4::bf16_to_f32(xb[mi * k + i]);
                        exact += wv * xv;
                        abs_sum += std::fabs(wv * xv);
                        wabs += std::fabs(wv);
                    }
                    qerr += double(d[mi * (k / 32) + b]) / 2 * wabs * (1 + 1e-6);
                }
                r.add(std::fabs(double(y[mi * n + ni]) - exact), qerr + double(k) * u32 * abs_sum * 2 + 1e-300);
                max_diff_ref = std::max(max_diff_ref, std::fabs(double(y[mi * n + ni]) - yref[mi * n + ni]));
                max_y = std::max(max_y, std::fabs(double(yref[mi * n + ni])));
            }
        CAPTURE(name);
        CHECK(r.bad == 0);
        MESSAGE("fp4 fast " << name << ": worst |err|/bound = " << r.worst
                            << ", max|fast - reference| / max|y| = " << max_diff_ref / max_y);
        ++count;
    }
    CHECK(count >= 9);
}

TEST_CASE("gemv: fused FP4 gate+up with SwiGLU against the goldens (both modes)") {
    std::size_t count = 0;
    for (const auto& name : cases_with_prefix("fp4_gate_up_")) {
        golden g("gemv", name);
        const auto ws = g.shape("w1");
        const std::size_t n = ws[0], k = ws[1] * 2, m = g.shape("x")[0];
        const auto w1 = g.get<uint8_t>("w1"), w3 = g.get<uint8_t>("w3");
        const auto s1 = g.get<uint8_t>("w1_scale"), s3 = g.get<uint8_t>("w3_scale");
        const float rw = g.get<float>("route_weight")[0], limit = g.get<float>("limit")[0];
        const auto h_ref = g.get<float>("h_from_exact");
        const auto y1a = g.get<double>("y1_abs"), y3a = g.get<double>("y3_abs");
        const auto y1e = g.get<double>("y1_exact"), y3e = g.get<double>("y3_exact");
        const auto a = acts_f32(g, m, k);
        const dsv4::fp4_matrix W1{w1.data(), k / 2, s1.data(), k / 32, n, k}, W3{w3.data(), k / 2, s3.data(), k / 32, n, k};
        std::vector<float> rws(m, rw);
        const dsv4::swiglu_epilogue e{rws.data(), limit};
        std::vector<float> h(m * n);
        dsv4::fp4_gate_up(W1, W3, {a.data(), k, m}, e, {h.data(), nullptr, n});
        // The kernel's bf16(y) may sit one bf16 step from bf16(y_exact) when its f32 sum is
        // within the accumulation bound of a rounding boundary: allow that, nothing more.
        std::size_t bad = 0, exact = 0;
        for (std::size_t i = 0; i < m * n; ++i) {
            const double b1 = double(k) * u32 * y1a[i], b3 = double(k) * u32 * y3a[i];
            const bool near1 = dsv4::round_bf16(float(y1e[i] - b1)) != dsv4::round_bf16(float(y1e[i] + b1));
            const bool near3 = dsv4::round_bf16(float(y3e[i] - b3)) != dsv4::round_bf16(float(y3e[i] + b3));
            const double tol = (near1 || near3 ? 0x1p-7 : 0x1p-20) * (std::fabs(h_ref[i]) + 1e-30) + 1e-30;
            bad += std::fabs(double(h[i]) - h_ref[i]) > tol;
            exact += h[i] == h_ref[i];
        }
        CAPTURE(name);
        CHECK(bad == 0);
        MESSAGE("gate_up " << name << ": " << exact << "/" << m * n << " bit-identical to the golden");
        // fast mode: the same epilogue on int8 activations; error set by the activation rounding
        const auto xb = g.get<uint16_t>("x");
        std::vector<int8_t> q(m * k);
        std::vector<float> d(m * k / 32);
        std::vector<int32_t> c(m * k / 32);
        dsv4::quantize_q8(xb.data(), k, m, k, q.data(), k, d.data(), k / 32, c.data(), k / 32);
        std::vector<float> hq(m * n);
        dsv4::fp4_gate_up_q8(W1, W3, {q.data(), k, d.data(), k / 32, c.data(), k / 32, m}, e, {hq.data(), nullptr, n});
        double num = 0, den = 0;
        for (std::size_t i = 0; i < m * n; ++i) {
            num += (hq[i] - h[i]) * double(hq[i] - h[i]);
            den += double(h[i]) * h[i];
        }
        const double rel = std::sqrt(num / den);
        MESSAGE("gate_up fast " << name << ": relative L2 difference from reference mode " << rel);
        // reference mode rounds activations to e4m3 (up to 2^-4 relative each); fast mode
        // to int8 per 32 (far finer): their distance is mostly the FP8 rounding.
        CHECK(rel < 0.1);
        ++count;
    }
    CHECK(count >= 3);
}

namespace {
struct random_fp4 {
    std::size_t n, k, pad;  // row stride = k/2 + pad bytes
    std::vector<uint8_t> w, s;
    random_fp4(std::size_t n_, std::size_t k_, std::size_t pad_, rng& r) : n(n_), k(k_), pad(pad_) {
        w.assign(n * (k / 2 + pad), 0xFF);
        s.assign(n * (k / 32 + pad), 0xFF);  // NaN scales in the padding: must never be read
        for (std::size_t i = 0; i < n; ++i) {
            for (std::size_t j = 0; j < k / 2; ++j) w[i * (k / 2 + pad) + j] = uint8_t(r.u32());
            for (std::size_t j = 0; j < k / 32; ++j) s[i * (k / 32 + pad) + j] = uint8_t(120 + r.u32() % 8);
        }
    }
    dsv4::fp4_matrix view() const { return {w.data(), k / 2 + pad, s.data(), k / 32 + pad, n, k}; }
};
std::vector<uint16_t> random_x(std::size_t m, std::size_t k, rng& r) {
    std::vector<uint16_t> x(m * k);
    for (auto& v : x) v = dsv4::f32_to_bf16(r.normal());
    return x;
}
}  // namespace

TEST_CASE("gemv: every tier vs scalar, M = 1..9, odd N, strided rows, any row split (deterministic)") {
    rng r(7);
    const auto& act = active();
    const auto& ref = scalar_table();
    // k = 384: whole groups of 4 blocks; 1120 = 2 superblocks of 16 blocks + 3 blocks;
    // 1664 = 3 superblocks + one whole group (every loop of the fast FP4 kernel)
    for (const auto& mk : {std::pair<std::size_t, std::size_t>{1, 384}, {2, 384}, {3, 384}, {4, 384}, {5, 384},
                           {7, 384}, {9, 384}, {1, 1120}, {3, 1120}, {4, 1664}, {6, 1664}}) {
        // plain variables: Clang 14 cannot capture structured bindings (doctest's CAPTURE)
        const std::size_t m = mk.first, k = mk.second;
        const std::size_t n = 37, pad = 5;
        CAPTURE(m);
        CAPTURE(k);
        random_fp4 W(n, k, pad, r);
        const auto xb = random_x(m, k, r);
        std::vector<float> x(m * (k + 3), std::numeric_limits<float>::quiet_NaN());  // strided, NaN padding
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < k; ++j) x[i * (k + 3) + j] = dsv4::bf16_to_f32(xb[i * k + j]);
        const dsv4::f32_rows X{x.data(), k + 3, m};
        std::vector<float> y1(m * n), y2(m * n), y3(m * n);
        act.fp4_gemv_rows(W.view(), X, {y1.data(), nullptr, n}, 0, n);
        ref.fp4_gemv_rows(W.view(), X, {y2.data(), nullptr, n}, 0, n);
        // any split of the rows gives the same bits
        for (std::size_t a = 0; a < n;) {
            const std::size_t b = std::min(n, a + 1 + r.u32() % 9);
            act.fp4_gemv_rows(W.view(), X, {y3.data(), nullptr, n}, a, b);
            a = b;
        }
        CHECK(std::memcmp(y1.data(), y3.data(), y1.size() * 4) == 0);
        for (std::size_t i = 0; i < m * n; ++i) {
            const std::size_t mi = i / n, ni = i % n;
            double abs_sum = 0;
            for (std::size_t j = 0; j < k; ++j) {
                const uint8_t byte = W.w[ni * (k / 2 + pad) + j / 2];
                const double wv = double(dsv4::e2m1_to_f32((j & 1) ? byte >> 4 : byte & 0xF)) *
                                  double(dsv4::e8m0_to_f32(W.s[ni * (k / 32 + pad) + j / 32]));
                abs_sum += std::fabs(double(x[mi * (k + 3) + j]) * wv);
            }
            CHECK(std::isfinite(y1[i]));
            CHECK(std::fabs(y1[i] - y2[i]) <= 2 * double(k) * u32 * abs_sum + 1e-30);
        }
        // fast mode: integer dots are exact, only the f32 accumulation order differs
        std::vector<int8_t> q(m * (k + 8));
        std::vector<float> d(m * (k / 32 + 2));
        std::vector<int32_t> c(m * (k / 32 + 3));
        dsv4::quantize_q8(xb.data(), k, m, k, q.data(), k + 8, d.data(), k / 32 + 2, c.data(), k / 32 + 3);
        const dsv4::q8_rows Q{q.data(), k + 8, d.data(), k / 32 + 2, c.data(), k / 32 + 3, m};
        act.fp4_gemv_q8_rows(W.view(), Q, {y1.data(), nullptr, n}, 0, n);
        ref.fp4_gemv_q8_rows(W.view(), Q, {y2.data(), nullptr, n}, 0, n);
        for (std::size_t i = 0; i < m * n; ++i) CHECK(std::fabs(y1[i] - y2[i]) <= 1e-5 * (std::fabs(y2[i]) + 1.0));
        // the oneTBB wrapper gives the single-threaded bits
        dsv4::par::fp4_gemv_q8(W.view(), Q, {y3.data(), nullptr, n});
        CHECK(std::memcmp(y1.data(), y3.data(), y1.size() * 4) == 0);
    }
}

TEST_CASE("gemv: FP8 rows at every kind of block scale (folded into the weights or not) within the f32 bound") {
    // The AVX-512 row multiplies decoded weights by their block scale when the E8M0 byte is in
    // [fp8_fold_e_min, fp8_fold_e_max] and takes the two-step path outside; both must stay
    // within K * 2^-24 * sum|x w| (+ K * 2^-149 where results are subnormal) of the exact sum.
    rng r(12);
    const std::size_t n = 9, k = 384, m = 3;
    std::vector<uint8_t> w(n * k);
    for (std::size_t i = 0; i < w.size(); ++i) {
        uint8_t c = uint8_t(r.u32());
        if (i % 5 == 0) c = uint8_t((c & 0x87));  // subnormal codes (exponent 0)
        if ((c & 0x7F) == 0x7F) c = 0x42;
        w[i] = c;
    }
    std::vector<float> x(m * k);
    for (auto& v : x) v = dsv4::round_bf16(r.normal());
    for (unsigned e : {0u, 1u, 9u, 10u, 11u, 100u, 127u, 133u, 134u, 135u, 200u}) {
        CAPTURE(e);
        const std::vector<uint8_t> s(k / 128, uint8_t(e));
        const dsv4::fp8_matrix W{w.data(), k, s.data(), 0, n, k};  // one block row: stride unused
        std::vector<float> y(m * n);
        active().fp8_gemv_rows(W, {x.data(), k, m}, {y.data(), nullptr, n}, 0, n);
        const double sc = std::ldexp(1.0, int(e) - 127);
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < n; ++j) {
                double exact = 0, mag = 0;
                for (std::size_t q = 0; q < k; ++q) {
                    const double p = double(dsv4::e4m3_to_f32(w[j * k + q])) * sc * double(x[i * k + q]);
                    exact += p;
                    mag += std::fabs(p);
                }
                CHECK(std::fabs(double(y[i * n + j]) - exact) <= double(k) * 0x1p-24 * mag + double(k) * 0x1p-149);
            }
    }
}

TEST_CASE("gemv: BF16 weights x bf16 activations (the head) within the f32 bound; off avx512_bf16 bit-identical "
          "to bf16_gemv on the widened activations; any row split; padded rows") {
    rng r(23);
    const bool dp = dsv4::active_tier() == dsv4::tier::avx512_bf16;  // vdpbf16ps: its own sum order
    for (const std::size_t k : {std::size_t(4096), std::size_t(200), std::size_t(37)})
        for (const std::size_t m : {std::size_t(1), std::size_t(2), std::size_t(3), std::size_t(4), std::size_t(5),
                                    std::size_t(9)}) {
            const std::size_t n = 67, wpad = 9, xpad = 5;
            std::vector<uint16_t> w(n * (k + wpad), 0x7FC0), x(m * (k + xpad), 0x7FC0);  // NaN padding
            for (std::size_t i = 0; i < n; ++i)
                for (std::size_t j = 0; j < k; ++j) w[i * (k + wpad) + j] = dsv4::f32_to_bf16(0.05f * r.normal());
            for (std::size_t i = 0; i < m; ++i)
                for (std::size_t j = 0; j < k; ++j) x[i * (k + xpad) + j] = dsv4::f32_to_bf16(2.0f * r.normal());
            const dsv4::bf16_matrix W{w.data(), k + wpad, n, k};
            const dsv4::bf16_rows X{x.data(), k + xpad, m};
            CAPTURE(k);
            CAPTURE(m);
            const auto y = run_both_outputs(m, n, [&](dsv4::gemv_out o) { dsv4::bf16_gemv_bf16(W, X, o); });
            // exact sums in double, the header's bound (every product is exact in f32)
            bound_report rep;
            for (std::size_t i = 0; i < m; ++i)
                for (std::size_t nn = 0; nn < n; ++nn) {
                    double exact = 0, mag = 0;
                    for (std::size_t j = 0; j < k; ++j) {
                        const double p = double(dsv4::bf16_to_f32(w[nn * (k + wpad) + j])) *
                                         double(dsv4::bf16_to_f32(x[i * (k + xpad) + j]));
                        exact += p;
                        mag += std::fabs(p);
                    }
                    rep.add(std::fabs(double(y[i * n + nn]) - exact), double(k) * u32 * mag + double(k) * 0x1p-149);
                }
            CHECK(rep.bad == 0);
            // the widened activations through bf16_gemv: the same bits off avx512_bf16
            std::vector<float> xf(m * k), y2(m * n);
            for (std::size_t i = 0; i < m; ++i)
                for (std::size_t j = 0; j < k; ++j) xf[i * k + j] = dsv4::bf16_to_f32(x[i * (k + xpad) + j]);
            dsv4::bf16_gemv(W, {xf.data(), k, m}, {y2.data(), nullptr, n});
            std::size_t differ = 0;
            for (std::size_t i = 0; i < m * n; ++i) differ += !same_float(y[i], y2[i]);
            if (!dp) CHECK(differ == 0);
            // each activation row alone (M = 1) gives the bits it gets in the M tile
            std::size_t tile_differ = 0;
            for (std::size_t i = 0; i < m; ++i) {
                std::vector<float> y1(n);
                dsv4::bf16_gemv_bf16(W, {x.data() + i * (k + xpad), k, 1}, {y1.data(), nullptr, n});
                for (std::size_t nn = 0; nn < n; ++nn) tile_differ += !same_float(y1[nn], y[i * n + nn]);
            }
            CHECK(tile_differ == 0);
            // any split of the rows gives the same bits
            std::vector<float> y3(m * n, -1.0f);
            for (std::size_t a = 0; a < n;) {
                const std::size_t b = std::min(n, a + 1 + r.u32() % 20);
                dsv4::bf16_gemv_bf16(W, X, {y3.data(), nullptr, n}, a, b);
                a = b;
            }
            std::size_t split_differ = 0;
            for (std::size_t i = 0; i < m * n; ++i) split_differ += !same_float(y[i], y3[i]);
            CHECK(split_differ == 0);
        }
    // the public entry point checks its arguments
    std::vector<uint16_t> w(64 * 64), x(128);
    std::vector<float> y(64);
    const dsv4::bf16_matrix W{w.data(), 64, 64, 64};
    CHECK_THROWS_WITH_AS(dsv4::bf16_gemv_bf16(W, {nullptr, 64, 1}, {y.data(), nullptr, 64}),
                         doctest::Contains("bf16_gemv_bf16"), dsv4::error);
    CHECK_THROWS_AS(dsv4::bf16_gemv_bf16(W, {x.data(), 32, 2}, {y.data(), nullptr, 64}), dsv4::error);
    CHECK_THROWS_AS(dsv4::bf16_gemv_bf16({w.data(), 32, 64, 64}, {x.data(), 64, 1}, {y.data(), nullptr, 64}),
                    dsv4::error);
    CHECK_THROWS_AS(dsv4::bf16_gemv_bf16(W, {x.data(), 64, 1}, {y.data(), nullptr, 64}, 3, 65), dsv4::error);
}

TEST_CASE("gemv: FP8 and BF16 tiers vs scalar with padded rows") {
    rng r(11);
    const std::size_t n = 131, k = 256, m = 6, wpad = 64;
    std::vector<uint8_t> w(n * (k + wpad), 0x7F), s(2 * 4, 0xFF);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < k; ++j) {
            uint8_t c = uint8_t(r.u32());
            if ((c & 0x7F) == 0x7F) c = 0x42;
            w[i * (k + wpad) + j] = c;
        }
    for (std::size_t i = 0; i < 2; ++i)
        for (std::size_t j = 0; j < 2; ++j) s[i * 4 + j] = uint8_t(115 + r.u32() % 10);
    std::vector<float> x(m * k);
    for (auto& v : x) v = dsv4::round_bf16(r.normal());
    const dsv4::fp8_matrix W{w.data(), k + wpad, s.data(), 4, n, k};
    std::vector<float> y1(m * n), y2(m * n);
    active().fp8_gemv_rows(W, {x.data(), k, m}, {y1.data(), nullptr, n}, 0, n);
    scalar_table().fp8_gemv_rows(W, {x.data(), k, m}, {y2.data(), nullptr, n}, 0, n);
    for (std::size_t i = 0; i < m * n; ++i) {
        CHECK(std::isfinite(y1[i]));
        CHECK(std::fabs(y1[i] - y2[i]) <= 1e-5 * (std::fabs(y2[i]) + 1.0));
    }
    std::vector<uint16_t> wb(n * (k + 7), 0xFFC0);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < k; ++j) wb[i * (k + 7) + j] = dsv4::f32_to_bf16(r.normal());
    const dsv4::bf16_matrix B{wb.data(), k + 7, n, k};
    active().bf16_gemv_rows(B, {x.data(), k, m}, {y1.data(), nullptr, n}, 0, n);
    scalar_table().bf16_gemv_rows(B, {x.data(), k, m}, {y2.data(), nullptr, n}, 0, n);
    for (std::size_t i = 0; i < m * n; ++i) CHECK(std::fabs(y1[i] - y2[i]) <= 1e-4 * (std::fabs(y2[i]) + 1.0));
}

namespace {
/// Fast FP8 mode bound for one output (double, from the inputs' own bytes): the reference
/// bound K * 2^-24 * sum|x w| (+ K * 2^-149), plus what the fast path may drop: products
/// with subnormal weight codes (read as zero by vdpbf16ps), products with activations below
/// 2^-108 of their block's largest |x| (not normal after the block shift), and partial sums
/// below 2^-126 flushed in the shifted domain (64 per block, scaled back). x must fit bf16.
struct fp8_fast_bound {
    double exact = 0, bound = 0, mag = 0, dropped = 0;  // mag = sum|x w|; dropped: as described
};
fp8_fast_bound fp8_fast_expect(const uint8_t* w_row, const uint8_t* s_row, const float* x, std::size_t k) {
    fp8_fast_bound r;
    double mag = 0, dropped = 0;
    for (std::size_t b0 = 0; b0 < k; b0 += 128) {
        const double sc = double(dsv4::e8m0_to_f32(s_row[b0 / 128]));
        double amax = 0;
        for (std::size_t i = b0; i < b0 + 128; ++i) amax = std::max(amax, std::fabs(double(x[i])));
        for (std::size_t i = b0; i < b0 + 128; ++i) {
            const double p = double(dsv4::e4m3_to_f32(w_row[i])) * sc * double(x[i]);
            r.exact += p;
            mag += std::fabs(p);
            if ((w_row[i] & 0x78) == 0 || std::fabs(double(x[i])) < amax * 0x1p-108) dropped += std::fabs(p);
        }
        dropped += 64 * 0x1p-126 * sc * std::ldexp(1.0, 120) * amax * 0x1p-108;
    }
    r.bound = double(k) * 0x1p-24 * mag + double(k) * 0x1p-149 + dropped;
    r.mag = mag;
    r.dropped = dropped;
    return r;
}
}  // namespace

TEST_CASE("gemv: FP8 fast mode (bf16 block activations) against the goldens, and vs reference mode") {
    std::size_t count = 0;
    for (const auto& name : cases_with_prefix("fp8_")) {
        const bool grouped = name.find("grouped") != std::string::npos;
        if (!grouped && !is_plain(name, "fp8_")) continue;
        golden g("gemv", name);
        const std::size_t groups = grouped ? std::size_t(g.scalar_i64("groups")) : 1;
        const auto ws = g.shape("w");
        const std::size_t n = ws[0], k = ws[1], m = g.shape("x")[0], kx = groups * k;
        const auto w = g.get<uint8_t>("w");
        const auto s = g.get<uint8_t>("w_scale");
        std::vector<float> a;
        if (grouped) {  // wo_a: plain bf16 activations
            const auto xb = g.get<uint16_t>("x");
            a.resize(xb.size());
            dsv4::decode_bf16(xb.data(), a.data(), a.size());
        } else {
            a = acts_f32(g, m, k);
        }
        std::vector<uint16_t> xb(m * kx);
        std::vector<int32_t> sh(m * kx / 128);
        dsv4::to_bf16_blocks(a.data(), kx, m, kx, xb.data(), kx, sh.data(), kx / 128);
        for (std::size_t i = 0; i < m * kx; ++i)  // FP8 / bf16 values: the conversion is exact
            REQUIRE(std::ldexp(double(dsv4::bf16_to_f32(xb[i])), -sh[i / 128]) == double(a[i]));
        const dsv4::fp8_matrix W{w.data(), k, s.data(), k / 128, n, k};
        const dsv4::bf16_block_rows X{xb.data(), kx, sh.data(), kx / 128, m};
        const auto y = run_both_outputs(m, n, [&](dsv4::gemv_out o) {
            if (grouped) dsv4::fp8_grouped_gemv_bf16(W, groups, X, o);
            else dsv4::fp8_gemv_bf16(W, X, o);
        });
        std::vector<float> yref(m * n);
        if (grouped) dsv4::fp8_grouped_gemv(W, groups, {a.data(), kx, m}, {yref.data(), nullptr, n});
        else dsv4::fp8_gemv(W, {a.data(), k, m}, {yref.data(), nullptr, n});
        bound_report r;
        double max_diff_ref = 0, max_y = 0;
        for (std::size_t mi = 0; mi < m; ++mi)
            for (std::size_t ni = 0; ni < n; ++ni) {
                const std::size_t g0 = grouped ? ni / (n / groups) : 0;
                const auto e = fp8_fast_expect(w.data() + ni * k, s.data() + (ni / 128) * (k / 128),
                                               a.data() + mi * kx + g0 * k, k);
                r.add(std::fabs(double(y[mi * n + ni]) - e.exact), e.bound);
                max_diff_ref = std::max(max_diff_ref, std::fabs(double(y[mi * n + ni]) - yref[mi * n + ni]));
                max_y = std::max(max_y, std::fabs(double(yref[mi * n + ni])));
            }
        CAPTURE(name);
        CHECK(r.bad == 0);
        MESSAGE("fp8 fast " << name << ": worst |err|/bound = " << r.worst
                            << ", max|fast - reference| / max|y| = " << max_diff_ref / max_y);
        ++count;
    }
    CHECK(count >= 11);
}

TEST_CASE("gemv: FP8 fast mode on every tier: M = 1..9, N = 131 (two scale rows), padded rows, any row split, "
          "extreme scales and activations") {
    rng r(21);
    const std::size_t n = 131, k = 384, wpad = 64;
    std::vector<uint8_t> w(n * (k + wpad), 0x7F);  // NaN codes in the padding: must never be read
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < k; ++j) {
            uint8_t c = uint8_t(r.u32());
            if (j % 7 == 0) c &= 0x87;  // subnormal codes
            if ((c & 0x7F) == 0x7F) c = 0x42;
            w[i * (k + wpad) + j] = c;
        }
    // E8M0 per 128x128 block: typical, and the extremes (scale_pow2's multi-step paths)
    const std::vector<std::vector<unsigned>> scale_sets = {
        {117, 121, 119, 116, 120, 118}, {0, 1, 254, 9, 134, 200}, {127, 3, 250, 60, 190, 100}};
    for (const auto& es : scale_sets)
        for (std::size_t m : {std::size_t(1), std::size_t(2), std::size_t(4), std::size_t(5), std::size_t(9)}) {
            CAPTURE(m);
            CAPTURE(es[0]);
            std::vector<uint8_t> sc(2 * 5, 0xFF);
            for (std::size_t i = 0; i < 2; ++i)
                for (std::size_t j = 0; j < 3; ++j) sc[i * 5 + j] = uint8_t(es[i * 3 + j]);
            const dsv4::fp8_matrix W{w.data(), k + wpad, sc.data(), 5, n, k};
            // activations: bf16 values, one block per row at an extreme magnitude, one all zero
            const std::size_t xs = k + 40;
            std::vector<float> a(m * xs, std::numeric_limits<float>::quiet_NaN());
            for (std::size_t i = 0; i < m; ++i)
                for (std::size_t j = 0; j < k; ++j) {
                    float v = dsv4::round_bf16(r.normal());
                    if (j / 128 == 1) v *= (i % 3 == 0) ? 0x1p-120f : (i % 3 == 1 ? 0x1p100f : 1.0f);
                    if (j / 128 == 2 && i % 4 == 3) v = 0.0f;
                    if (j % 97 == 5) v *= 0x1p-60f;  // tiny beside the block's largest
                    a[i * xs + j] = v;
                }
            std::vector<uint16_t> xb(m * (k + 16), 0x7FC0);
            std::vector<int32_t> sh(m * 5, 1 << 20);
            dsv4::to_bf16_blocks(a.data(), xs, m, k, xb.data(), k + 16, sh.data(), 5);
            const dsv4::bf16_block_rows X{xb.data(), k + 16, sh.data(), 5, m};
            std::vector<float> y1(m * n), y2(m * n), y3(m * n);
            active().fp8_gemv_bf16_rows(W, X, {y1.data(), nullptr, n}, 0, n);
            scalar_table().fp8_gemv_bf16_rows(W, X, {y2.data(), nullptr, n}, 0, n);
            for (std::size_t a0 = 0; a0 < n;) {  // any split of the rows gives the same bits
                const std::size_t b = std::min(n, a0 + 1 + r.u32() % 40);
                active().fp8_gemv_bf16_rows(W, X, {y3.data(), nullptr, n}, a0, b);
                a0 = b;
            }
            CHECK(std::memcmp(y1.data(), y3.data(), y1.size() * 4) == 0);
            dsv4::par::fp8_gemv_bf16(W, X, {y3.data(), nullptr, n});
            CHECK(std::memcmp(y1.data(), y3.data(), y1.size() * 4) == 0);
            bound_report rep_act, rep_scalar;
            for (std::size_t i = 0; i < m; ++i)
                for (std::size_t j = 0; j < n; ++j) {
                    const auto e = fp8_fast_expect(w.data() + j * (k + wpad), sc.data() + (j / 128) * 5, a.data() + i * xs, k);
                    // sums beyond f32 (scale 2^127 on large blocks) come out non-finite: inf, or NaN
                    // where vector lanes overflowed to opposite infinities
                    if (std::fabs(e.exact) >= 0x1p128) {
                        CHECK_FALSE(std::isfinite(y1[i * n + j]));
                        continue;
                    }
                    rep_act.add(std::fabs(double(y1[i * n + j]) - e.exact), e.bound);
                    rep_scalar.add(std::fabs(double(y2[i * n + j]) - e.exact), e.bound);
                }
            CHECK(rep_act.bad == 0);
            CHECK(rep_scalar.bad == 0);
        }
}

TEST_CASE("gemv: FP8 fast mode uses subnormal weight codes exactly except on avx512_bf16 (DAZ there)") {
    // subnormal codes (|w| <= 7 * 2^-9) beside normal ones, activations within 2^8 of their
    // block's largest: every product is exact on every tier, so the only error left is the
    // f32 summation, except that avx512_bf16 (vdpbf16ps, DAZ inputs) counts subnormals as 0
    rng r(77);
    const std::size_t n = 9, k = 512;
    std::vector<uint8_t> w(n * k), sc(k / 128);
    for (std::size_t i = 0; i < w.size(); ++i) {
        uint8_t c = uint8_t(r.u32());
        c = (i % 3 == 0) ? uint8_t(c & 0x80) | uint8_t(1 + r.u32() % 7) : uint8_t(c & 0xF7);  // subnormal / normal
        w[i] = (c & 0x7F) == 0x7F ? 0x42 : c;
    }
    for (std::size_t b = 0; b < k / 128; ++b) sc[b] = uint8_t(112 + 3 * b);
    const bool daz = active().compiled_for == dsv4::tier::avx512_bf16;
    for (std::size_t m : {std::size_t(1), std::size_t(2), std::size_t(4), std::size_t(7), std::size_t(13)}) {
        CAPTURE(m);
        std::vector<float> a(m * k);
        for (auto& v : a) v = dsv4::round_bf16(float(std::ldexp(1.0 + r.u32() % 127 / 128.0, -int(r.u32() % 8))) *
                                               (r.u32() % 2 ? 1.0f : -1.0f));
        std::vector<uint16_t> xb(m * k);
        std::vector<int32_t> sh(m * k / 128);
        dsv4::to_bf16_blocks(a.data(), k, m, k, xb.data(), k, sh.data(), k / 128);
        std::vector<float> y(m * n);
        dsv4::fp8_gemv_bf16({w.data(), k, sc.data(), k / 128, n, k}, {xb.data(), k, sh.data(), k / 128, m},
                            {y.data(), nullptr, n});
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < n; ++j) {
                double exact = 0, mag = 0;
                for (std::size_t q = 0; q < k; ++q) {
                    const uint8_t c = w[j * k + q];
                    if (daz && (c & 0x78) == 0) continue;
                    const double p = double(dsv4::e4m3_to_f32(c)) * double(dsv4::e8m0_to_f32(sc[q / 128])) *
                                     double(a[i * k + q]);
                    exact += p;
                    mag += std::fabs(p);
                }
                CHECK(std::fabs(double(y[i * n + j]) - exact) <= double(k) * 0x1p-24 * mag);
            }
    }
    // which path the forward and the MoE take in fast mode (fp8_bf16_preferred)
    const dsv4::tier t = active().compiled_for;
    CHECK(dsv4::fp8_bf16_preferred(1) == (t == dsv4::tier::avx2 || t == dsv4::tier::avx2_vnni || t == dsv4::tier::avx512_bf16));
    CHECK(dsv4::fp8_bf16_preferred(2) == (t == dsv4::tier::avx512_bf16));
    const bool avx2 = t == dsv4::tier::avx2 || t == dsv4::tier::avx2_vnni, avx512 = t >= dsv4::tier::avx512;
    CHECK(dsv4::fp8_bf16_preferred(dsv4::kernels::fp8_gemm_min_m - 1) == (t == dsv4::tier::avx512_bf16));
    CHECK(dsv4::fp8_bf16_preferred(dsv4::kernels::fp8_gemm_min_m) == avx512);  // the GEMM
    CHECK(dsv4::fp8_bf16_preferred(dsv4::fp8_bf16_min_m_avx2 - 1) == avx512);
    CHECK(dsv4::fp8_bf16_preferred(dsv4::fp8_bf16_min_m_avx2) == (avx2 || avx512));
    CHECK(dsv4::fp8_bf16_preferred(64) == (t != dsv4::tier::scalar));
    CHECK(dsv4::fp8_bf16_possible() == (t != dsv4::tier::scalar));
}

TEST_CASE("gemv: FP8 fast mode propagates non-finite activations and NaN scales") {
    const std::size_t n = 3, k = 256;
    std::vector<uint8_t> w(n * k, 0x38), sc(2, 120);  // 0x38 = 1.0
    std::vector<float> a(2 * k, 0.5f);
    a[130] = std::numeric_limits<float>::infinity();  // row 0, block 1
    a[k + 7] = std::numeric_limits<float>::quiet_NaN();  // row 1, block 0
    std::vector<uint16_t> xb(2 * k);
    std::vector<int32_t> sh(4);
    dsv4::to_bf16_blocks(a.data(), k, 2, k, xb.data(), k, sh.data(), 2);
    std::vector<float> y(2 * n);
    dsv4::fp8_gemv_bf16({w.data(), k, sc.data(), 2, n, k}, {xb.data(), k, sh.data(), 2, 2}, {y.data(), nullptr, n});
    for (std::size_t j = 0; j < n; ++j) {
        CHECK(std::isinf(y[j]));
        CHECK(std::isnan(y[n + j]));
    }
    sc[1] = 255;  // NaN scale
    std::fill(a.begin(), a.end(), 0.5f);
    dsv4::to_bf16_blocks(a.data(), k, 2, k, xb.data(), k, sh.data(), 2);
    dsv4::fp8_gemv_bf16({w.data(), k, sc.data(), 2, n, k}, {xb.data(), k, sh.data(), 2, 2}, {y.data(), nullptr, n});
    for (float v : y) CHECK(std::isnan(v));
}

TEST_CASE("gemv: FP8 fast mode small-M GEMM (M = 4..263, kernels/gemm_fp8.hpp) within its bound, any row split") {
    // M >= fp8_gemm_min_m = 5 runs the GEMM on every SIMD tier (the row kernel on scalar and for M = 4):
    // every output within (128 + K/128) * 2^-24 * sum|a w| of the exact sum of the products the
    // fast path keeps (fp8_fast_expect's dropped terms added), within both bounds of the scalar
    // tier, and bit-identical whatever the row split (awkward r0 / r1 across panels and 128-row
    // scale blocks). Rows: 300 (three scale rows), K = 640, padded weight and activation rows.
    rng r(1515);
    const std::size_t n = 300, k = 640, wpad = 32, nb = k / 128;
    std::vector<uint8_t> w(n * (k + wpad), 0x7F);  // NaN codes in the padding: never read
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < k; ++j) {
            uint8_t c = uint8_t(r.u32());
            if (j % 11 == 0) c &= 0x87;  // subnormal codes
            if ((c & 0x7F) == 0x7F) c = 0x42;
            w[i * (k + wpad) + j] = c;
        }
    std::vector<uint8_t> sc(3 * (nb + 1), 0xFF);
    for (std::size_t i = 0; i < 3; ++i)
        for (std::size_t b = 0; b < nb; ++b) sc[i * (nb + 1) + b] = uint8_t(i == 2 && b == 1 ? 3 : 112 + r.u32() % 12);
    const dsv4::fp8_matrix W{w.data(), k + wpad, sc.data(), nb + 1, n, k};
    const double u = 0x1p-24;
    // 24: two full 12-row tiles of the AVX-512 f32 variant; 70: a second 64-row chunk of the
    // f32 variant; 263: a second 256-row chunk of the bf16 one
    for (std::size_t m : {std::size_t(4), std::size_t(5), std::size_t(8), std::size_t(13), std::size_t(24), std::size_t(32),
                          std::size_t(64), std::size_t(70), std::size_t(263)}) {
        CAPTURE(m);
        const std::size_t xs = k + 24;
        std::vector<float> a(m * xs, std::numeric_limits<float>::quiet_NaN());
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < k; ++j) {
                float v = dsv4::round_bf16(r.normal());
                if (j / 128 == 3) v *= (i % 3 == 0) ? 0x1p-90f : (i % 3 == 1 ? 0x1p40f : 1.0f);
                a[i * xs + j] = v;
            }
        std::vector<uint16_t> xb(m * (k + 8), 0x7FC0);
        std::vector<int32_t> sh(m * (nb + 2), 1 << 20);
        dsv4::to_bf16_blocks(a.data(), xs, m, k, xb.data(), k + 8, sh.data(), nb + 2);
        const dsv4::bf16_block_rows X{xb.data(), k + 8, sh.data(), nb + 2, m};
        std::vector<float> y1(m * n), y2(m * n), y3(m * n, -1.0f);
        active().fp8_gemv_bf16_rows(W, X, {y1.data(), nullptr, n}, 0, n);
        scalar_table().fp8_gemv_bf16_rows(W, X, {y2.data(), nullptr, n}, 0, n);
        for (std::size_t a0 = 0; a0 < n;) {
            const std::size_t b = std::min(n, a0 + 1 + r.u32() % 70);
            active().fp8_gemv_bf16_rows(W, X, {y3.data(), nullptr, n}, a0, b);
            a0 = b;
        }
        CHECK(std::memcmp(y1.data(), y3.data(), y1.size() * 4) == 0);
        if (m > 5) {  // an (m, n) is the same bits in any M (tile sizes and chunks differ)
            std::vector<float> y5(5 * n);
            active().fp8_gemv_bf16_rows(W, {xb.data(), k + 8, sh.data(), nb + 2, 5}, {y5.data(), nullptr, n}, 0, n);
            CHECK(std::memcmp(y1.data(), y5.data(), y5.size() * 4) == 0);
        }
        bound_report rep, rep_scalar;
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < n; ++j) {
                const auto e = fp8_fast_expect(w.data() + j * (k + wpad), sc.data() + (j / 128) * (nb + 1),
                                               a.data() + i * xs, k);
                const double gemm = (128.0 + double(nb)) * u * e.mag + double(k) * 0x1p-149 + e.dropped;
                rep.add(std::fabs(double(y1[i * n + j]) - e.exact), m >= 5 ? gemm : e.bound);
                rep_scalar.add(std::fabs(double(y1[i * n + j]) - double(y2[i * n + j])), e.bound + gemm);
            }
        CHECK(rep.bad == 0);
        CHECK(rep_scalar.bad == 0);
        MESSAGE("fp8 gemm m=" << m << ": worst |err|/bound = " << rep.worst << ", vs scalar " << rep_scalar.worst);
    }
    // a NaN block scale (E8M0 255) makes its rows NaN; an Inf activation its row's outputs
    // non-finite (Inf, or NaN where weights of both signs meet it)
    sc[1] = 255;
    const std::size_t m = 9;
    std::vector<float> a(m * k, 0.25f);
    a[3 * k + 200] = std::numeric_limits<float>::infinity();
    std::vector<uint16_t> xb(m * k);
    std::vector<int32_t> sh(m * nb);
    dsv4::to_bf16_blocks(a.data(), k, m, k, xb.data(), k, sh.data(), nb);
    std::vector<float> y(m * n);
    dsv4::fp8_gemv_bf16(W, {xb.data(), k, sh.data(), nb, m}, {y.data(), nullptr, n});
    for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < n; ++j) {
            CAPTURE(i);
            CAPTURE(j);
            if (j < 128) CHECK(std::isnan(y[i * n + j]));
            else if (i == 3) CHECK_FALSE(std::isfinite(y[i * n + j]));
            else CHECK(std::isfinite(y[i * n + j]));
        }
}

TEST_CASE("gemv: preconditions are checked at the public entry points") {
    std::vector<uint8_t> w(64 * 64), s(64 * 4);
    std::vector<float> x(256), y(256);
    const dsv4::fp4_matrix bad_k{w.data(), 24, s.data(), 2, 4, 48};
    CHECK_THROWS_AS(dsv4::fp4_gemv(bad_k, {x.data(), 48, 1}, {y.data(), nullptr, 4}), dsv4::error);
    const dsv4::fp8_matrix bad8{w.data(), 64, s.data(), 1, 4, 64};
    CHECK_THROWS_AS(dsv4::fp8_gemv(bad8, {x.data(), 64, 1}, {y.data(), nullptr, 4}), dsv4::error);
    const dsv4::fp4_matrix ok{w.data(), 32, s.data(), 2, 4, 64};
    CHECK_THROWS_AS(dsv4::fp4_gemv(ok, {x.data(), 64, 1}, {nullptr, nullptr, 4}), dsv4::error);
    CHECK_THROWS_AS(dsv4::fp4_gemv(ok, {x.data(), 64, 1}, {y.data(), nullptr, 4}, 2, 5), dsv4::error);
    CHECK_THROWS_AS(dsv4::fp4_gemv(ok, {nullptr, 64, 1}, {y.data(), nullptr, 4}), dsv4::error);
    CHECK_THROWS_AS(dsv4::fp4_gemv({nullptr, 32, s.data(), 2, 4, 64}, {x.data(), 64, 1}, {y.data(), nullptr, 4}),
                    dsv4::error);
    CHECK_THROWS_AS(dsv4::fp4_gemv(ok, {x.data(), 10, 2}, {y.data(), nullptr, 4}), dsv4::error);
    const dsv4::fp8_matrix g8{w.data(), 128, s.data(), 1, 4, 128};
    CHECK_THROWS_AS(dsv4::fp8_grouped_gemv(g8, 3, {x.data(), 384, 1}, {y.data(), nullptr, 4}), dsv4::error);
    std::vector<uint16_t> xb(256);
    std::vector<int32_t> sh(4);
    CHECK_THROWS_AS(dsv4::to_bf16_blocks(x.data(), 64, 1, 64, xb.data(), 64, sh.data(), 1), dsv4::error);
    CHECK_THROWS_AS(dsv4::fp8_gemv_bf16(g8, {nullptr, 128, sh.data(), 1, 1}, {y.data(), nullptr, 4}), dsv4::error);
    CHECK_THROWS_AS(dsv4::fp8_gemv_bf16(g8, {xb.data(), 64, sh.data(), 1, 2}, {y.data(), nullptr, 4}), dsv4::error);
    CHECK_THROWS_AS(dsv4::fp8_grouped_gemv_bf16(g8, 3, {xb.data(), 384, sh.data(), 3, 1}, {y.data(), nullptr, 4}),
                    dsv4::error);
}
