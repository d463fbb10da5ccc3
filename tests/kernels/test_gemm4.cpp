// tests/kernels/test_gemm4.cpp - the FP4 small-M GEMM (kernels/gemm_fp4.hpp) behind
// fp4_gemv_q8_rows / fp4_gate_up_q8_rows (label: gemv).
//
// The GEMM claims the row path's bits: every (m, n) equals what the row path gives for that
// activation row alone (M = 1 never takes the GEMM), whatever M, the row split or the tile
// the column falls in. Against the scalar tier (another f32 summation order of the same
// per-block terms t_b = dot_b * d_b * 2^(e_b-127)/2) the bound is 2 * (K/32) * 2^-24 *
// sum_b |t_b| (both sums within (K/32 - 1) * 2^-24 * sum|t_b| of the exact one).
#include "test_support.hpp"

#include <dsv4/gemv.hpp>

#include <algorithm>

using namespace dsv4_test;

namespace {

struct q8_acts {
    std::size_t m, k;
    std::vector<int8_t> q;
    std::vector<float> d;
    std::vector<int32_t> c;
    q8_acts(std::size_t m_, std::size_t k_, rng& r) : m(m_), k(k_), q(m * (k + 64)), d(m * (k / 32 + 3)), c(m * (k / 32 + 5)) {
        std::vector<uint16_t> x(m * k);
        for (auto& v : x) v = dsv4::f32_to_bf16(r.normal());
        dsv4::quantize_q8(x.data(), k, m, k, q.data(), k + 64, d.data(), k / 32 + 3, c.data(), k / 32 + 5);
    }
    dsv4::q8_rows rows(std::size_t m0, std::size_t mm) const {
        return {q.data() + m0 * (k + 64), k + 64, d.data() + m0 * (k / 32 + 3), k / 32 + 3, c.data() + m0 * (k / 32 + 5),
                k / 32 + 5, mm};
    }
    dsv4::q8_rows all() const { return rows(0, m); }
};

/// sum_b |dot_b * d_b * scale_b| for row n of w and activation row m (the scalar-order bound).
double term_abs_sum(const fp4_weights& W, const q8_acts& X, std::size_t mi, std::size_t ni) {
    const std::size_t k = W.k;
    double sum = 0;
    const int8_t* q = X.q.data() + mi * (k + 64);
    for (std::size_t b = 0; b < k / 32; ++b) {
        int64_t dot = 0;
        for (std::size_t i = 0; i < 32; ++i) {
            const std::size_t g0 = (32 * b) / 128 * 128, bb = b % 4;
            const std::size_t pos = g0 + ((i & 1) ? 64 + bb * 16 + i / 2 : bb * 16 + i / 2);
            const uint8_t byte = W.w[ni * (k / 2 + W.pad) + (32 * b + i) / 2];
            dot += int64_t(dsv4::simd::e2m1_x2_table[(i & 1) ? byte >> 4 : byte & 0xF]) * q[pos];
        }
        const double s = double(dsv4::e8m0_to_f32(W.s[ni * (k / 32 + W.pad) + b])) * 0.5;
        sum += std::fabs(double(dot) * double(X.d[mi * (k / 32 + 3) + b]) * s);
    }
    return sum;
}

}  // namespace

TEST_CASE("gemm4: FP4 fast GEMV (w2 shape) = the row path's bits per row, any split; scalar within the bound") {
    const auto& act = active();
    const auto& ref = scalar_table();
    if (act.compiled_for == dsv4::tier::scalar) return;  // no GEMM there (and the row path is tested elsewhere)
    rng r(41);
    const std::size_t n = 4096, k = 2048;
    fp4_weights W(n, k, 3, r);
    W.s[70 * (k / 32 + 3) + 40] = 255;  // E8M0 NaN: the output is non-finite, as in the row path
    for (std::size_t m : {3, 4, 5, 6, 8, 13, 32}) {
        CAPTURE(m);
        const q8_acts X(m, k, r);
        std::vector<float> y(m * n), y1(m * n), y2(m * n);
        act.fp4_gemv_q8_rows(W.view(), X.all(), {y.data(), nullptr, n}, 0, n);
        // row by row (M = 1: the row path on every tier)
        for (std::size_t i = 0; i < m; ++i)
            act.fp4_gemv_q8_rows(W.view(), X.rows(i, 1), {y1.data() + i * n, nullptr, n}, 0, n);
        CHECK(same_floats(y, y1));
        for (std::size_t i = 0; i < m; ++i) CHECK(!std::isfinite(y[i * n + 70]));
        // any row split, ranges not aligned to the column tiles
        in_pieces(n, r, [&](std::size_t a, std::size_t b) {
            act.fp4_gemv_q8_rows(W.view(), X.all(), {y2.data(), nullptr, n}, a, b);
        });
        CHECK(same_floats(y, y2));
        // bf16 output: the rounding of the f32 result
        std::vector<uint16_t> yb(m * n);
        act.fp4_gemv_q8_rows(W.view(), X.all(), {nullptr, yb.data(), n}, 0, n);
        bool bf16_ok = true;
        for (std::size_t i = 0; i < m * n; ++i) bf16_ok = bf16_ok && yb[i] == dsv4::f32_to_bf16(y[i]);
        CHECK(bf16_ok);
        // the scalar tier on an awkward window of rows
        const std::size_t r0 = 37, r1 = 37 + 83;
        std::fill(y2.begin(), y2.end(), 0.0f);
        ref.fp4_gemv_q8_rows(W.view(), X.all(), {y2.data(), nullptr, n}, r0, r1);
        std::size_t bad = 0;
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t c = r0; c < r1; ++c) {
                if (c == 70) {  // NaN scale: non-finite on every tier (NaN in scalar, inf or NaN here)
                    bad += std::isfinite(y2[i * n + c]);
                    continue;
                }
                const double bound = 2.0 * double(k / 32) * 0x1p-24 * term_abs_sum(W, X, i, c);
                bad += !(std::fabs(double(y[i * n + c]) - double(y2[i * n + c])) <= bound);
            }
        CHECK(bad == 0);
    }
}

TEST_CASE("gemm4: fused FP4 gate+up (k = 4096) = the row path's bits per row, any split, NaN scales") {
    const auto& act = active();
    const auto& ref = scalar_table();
    if (act.compiled_for == dsv4::tier::scalar) return;
    rng r(42);
    const std::size_t n = 2048, k = 4096;
    fp4_weights W1(n, k, 0, r), W3(n, k, 7, r);
    // E8M0 255 (NaN) in two blocks: SIMD row paths read it as inf, which the SwiGLU clamp may
    // turn finite; the GEMM must give the same bits (the scalar tier's NaN is not compared)
    W1.s[5 * (k / 32) + 17] = 255;
    W3.s[1000 * (k / 32 + 7) + 127] = 255;
    for (std::size_t m : {3, 4, 5, 6, 8, 13, 32}) {
        CAPTURE(m);
        const q8_acts X(m, k, r);
        std::vector<float> rw(m);
        for (auto& v : rw) v = 0.25f + r.uniform();
        const dsv4::swiglu_epilogue e{rw.data(), 10.0f};
        std::vector<float> h(m * n), h1(m * n), h2(m * n);
        act.fp4_gate_up_q8_rows(W1.view(), W3.view(), X.all(), e, {h.data(), nullptr, n}, 0, n);
        for (std::size_t i = 0; i < m; ++i) {
            const dsv4::swiglu_epilogue ei{rw.data() + i, 10.0f};
            act.fp4_gate_up_q8_rows(W1.view(), W3.view(), X.rows(i, 1), ei, {h1.data() + i * n, nullptr, n}, 0, n);
        }
        CHECK(same_floats(h, h1));
        in_pieces(n, r, [&](std::size_t a, std::size_t b) {
            act.fp4_gate_up_q8_rows(W1.view(), W3.view(), X.all(), e, {h2.data(), nullptr, n}, a, b);
        });
        CHECK(same_floats(h, h2));
        // the scalar tier on a window: the same epilogue on projections within the bound
        const std::size_t r0 = 990, r1 = 990 + 45;
        std::fill(h2.begin(), h2.end(), 0.0f);
        ref.fp4_gate_up_q8_rows(W1.view(), W3.view(), X.all(), e, {h2.data(), nullptr, n}, r0, r1);
        std::size_t bad = 0;
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t c = r0; c < r1; ++c) {
                if (c == 1000) continue;  // the NaN-scale column
                const float a = h[i * n + c], b = h2[i * n + c];
                if (!std::isfinite(a) || !std::isfinite(b)) {
                    bad += std::isfinite(a) != std::isfinite(b);
                    continue;
                }
                // bf16 rounding of the projections inside the epilogue can flip by one bf16 ulp
                bad += !(std::fabs(a - b) <= 0x1p-6 * (std::fabs(b) + 1e-3));
            }
        CHECK(bad == 0);
    }
}
