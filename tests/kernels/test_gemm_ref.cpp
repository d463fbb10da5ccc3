// tests/kernels/test_gemm_ref.cpp - the small-M GEMMs that claim their row kernels' bits: the
// reference numerics' (kernels/gemm_ref.hpp) behind fp8_gemv_rows / fp4_gemv_rows /
// fp4_gate_up_rows, and the BF16 one (kernels/gemm_bf16.hpp) behind bf16_gemv_bf16_rows
// (label: gemv).
//
// The GEMM claims the row kernels' bits: every (m, n) equals what the row kernel gives for
// that activation row alone (M = 1 never takes the GEMM), whatever M (full tiles, a padded
// last tile, a remainder left to the row kernel), the row split (row blocks and panels not
// aligned), the weight row strides, and FP8 blocks outside the fold range (their row block
// takes the row kernel). Against the exact sum both stay within the header's f32 bound,
// which test_gemv.cpp checks against the goldens.
#include "test_support.hpp"

#include <dsv4/gemv.hpp>

#include <algorithm>

using namespace dsv4_test;

namespace {

constexpr std::size_t ms[] = {4, 5, 6, 7, 8, 9, 12, 13, 17, 31, 64, 70};

/// M activation rows of k bf16-valued floats, row stride k + 3, NaN in the padding.
struct f32_acts {
    std::size_t m, k;
    std::vector<float> x;
    f32_acts(std::size_t m_, std::size_t k_, rng& r)
        : m(m_), k(k_), x(m * (k + 3), std::numeric_limits<float>::quiet_NaN()) {
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < k; ++j) x[i * (k + 3) + j] = dsv4::round_bf16(r.normal());
    }
    dsv4::f32_rows rows(std::size_t m0, std::size_t mm) const { return {x.data() + m0 * (k + 3), k + 3, mm}; }
    dsv4::f32_rows all() const { return rows(0, m); }
};

/// The three ways of running one projection that must agree bit for bit: all M rows over
/// all N, each row alone, all rows over random row ranges; plus bf16 output = bf16(f32).
template <class Run> void check_same_bits(std::size_t m, std::size_t n, rng& r, Run&& run) {
    std::vector<float> y(m * n), y1(m * n), y2(m * n);
    run(0, m, dsv4::gemv_out{y.data(), nullptr, n}, 0, n);
    for (std::size_t i = 0; i < m; ++i) run(i, 1, dsv4::gemv_out{y1.data() + i * n, nullptr, n}, 0, n);
    CHECK(same_floats(y, y1));
    in_pieces(n, r, [&](std::size_t a, std::size_t b) { run(0, m, dsv4::gemv_out{y2.data(), nullptr, n}, a, b); });
    CHECK(same_floats(y, y2));
    std::vector<uint16_t> yb(m * n);
    run(0, m, dsv4::gemv_out{nullptr, yb.data(), n}, 0, n);
    std::size_t diff = 0;
    for (std::size_t i = 0; i < m * n; ++i) diff += yb[i] != dsv4::f32_to_bf16(y[i]);
    CHECK(diff == 0);
}

}  // namespace

TEST_CASE("gemm_ref: reference FP8 GEMM = the row kernel's bits per row, any split, any block scale") {
    const auto& act = active();
    rng r(51);
    // n = 300: three 128-row scale groups (the last partial); k = 1152: nine 128-blocks
    const std::size_t n = 300, k = 1152, ws = k + 5, nsb = k / 128, ss = nsb + 2;
    std::vector<uint8_t> w(n * ws, 0x7F), s(3 * ss, 255);  // NaN codes / scales in the padding
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < k; ++j) {
            uint8_t c = uint8_t(r.u32());
            if ((c & 0x7F) == 0x7F) c = 0x42;
            w[i * ws + j] = c;
        }
    for (std::size_t g = 0; g < 3; ++g)
        for (std::size_t b = 0; b < nsb; ++b) s[g * ss + b] = uint8_t(112 + r.u32() % 11);
    s[1 * ss + 4] = 5;  // rows 128..255, block 4: outside the fold range (the row kernel's two-step path)
    const dsv4::fp8_matrix W{w.data(), ws, s.data(), ss, n, k};
    for (std::size_t m : ms) {
        CAPTURE(m);
        const f32_acts X(m, k, r);
        check_same_bits(m, n, r, [&](std::size_t m0, std::size_t mm, const dsv4::gemv_out& o, std::size_t a, std::size_t b) {
            act.fp8_gemv_rows(W, X.rows(m0, mm), o, a, b);
        });
    }
}

TEST_CASE("gemm_ref: reference FP4 GEMM = the row kernel's bits per row, any split, a NaN scale") {
    const auto& act = active();
    rng r(52);
    for (std::size_t k : {std::size_t(1120), std::size_t(2048)}) {  // 1120: 35 blocks, a partial last group
        CAPTURE(k);
        const std::size_t n = 100;
        fp4_weights W(n, k, 3, r);
        W.s[70 * (k / 32 + 3) + 9] = 255;  // E8M0 NaN: row 70 non-finite, the same bits all the same
        for (std::size_t m : ms) {
            CAPTURE(m);
            const f32_acts X(m, k, r);
            check_same_bits(m, n, r, [&](std::size_t m0, std::size_t mm, const dsv4::gemv_out& o, std::size_t a, std::size_t b) {
                act.fp4_gemv_rows(W.view(), X.rows(m0, mm), o, a, b);
            });
        }
    }
}

TEST_CASE("gemm_ref: reference fused gate+up GEMM = the row kernel's bits per row, any split") {
    const auto& act = active();
    rng r(53);
    const std::size_t n = 70, k = 1536;
    const fp4_weights W1(n, k, 5, r), W3(n, k, 5, r);
    for (std::size_t m : ms) {
        CAPTURE(m);
        const f32_acts X(m, k, r);
        std::vector<float> rw(m);
        for (auto& v : rw) v = 0.25f + r.uniform();
        for (float limit : {10.0f, 0.0f}) {  // the routed experts' clamp, and none (shared expert, initial revision)
            CAPTURE(limit);
            check_same_bits(m, n, r, [&](std::size_t m0, std::size_t mm, const dsv4::gemv_out& o, std::size_t a, std::size_t b) {
                act.fp4_gate_up_rows(W1.view(), W3.view(), X.rows(m0, mm), {rw.data() + m0, limit}, o, a, b);
            });
        }
    }
}

TEST_CASE("gemm_bf16: BF16 x bf16 GEMM = the row kernel's bits per row, any split, any K remainder") {
    const auto& act = active();
    rng r(53);
    // 4096: whole 128-blocks; 4000: three 32-steps after the last 128-block and no tail;
    // 4011: the same plus 11 scalar products; 200: one 128-block; 96: none (chain 0 alone)
    for (std::size_t k : {std::size_t(4096), std::size_t(4000), std::size_t(4011), std::size_t(200), std::size_t(96)}) {
        CAPTURE(k);
        const std::size_t n = 70, ws = k + 7, xs = k + 5;
        std::vector<uint16_t> w(n * ws, 0x7FC0);  // NaN in the padding: never read
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < k; ++j) w[i * ws + j] = dsv4::f32_to_bf16(r.normal());
        const dsv4::bf16_matrix W{w.data(), ws, n, k};
        for (std::size_t m : ms) {
            CAPTURE(m);
            std::vector<uint16_t> x(m * xs, 0x7FC0);
            for (std::size_t i = 0; i < m; ++i)
                for (std::size_t j = 0; j < k; ++j) x[i * xs + j] = dsv4::f32_to_bf16(r.normal());
            check_same_bits(m, n, r, [&](std::size_t m0, std::size_t mm, const dsv4::gemv_out& o, std::size_t a, std::size_t b) {
                act.bf16_gemv_bf16_rows(W, dsv4::bf16_rows{x.data() + m0 * xs, xs, mm}, o, a, b);
            });
        }
    }
}
