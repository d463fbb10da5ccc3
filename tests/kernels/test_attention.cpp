// tests/kernels/test_attention.cpp - index lists, ring buffer and sparse attention (label: attention).
// Every tier against the NumPy goldens, and bit for bit against the scalar tier and across
// row/head partitions. (Norms: test_norm.cpp; RoPE: test_rope.cpp; same binary and goldens.)
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


// ---------------------------------------------------------------------------------- index lists, ring buffer

TEST_CASE("index lists: window and compressed lists equal the goldens exactly") {
    for (std::size_t S : {1, 5, 128, 129, 300}) {
        // official layout: exactly min(S, 128) columns (no padding to 128)
        golden g("attention", "window_prefill_S" + std::to_string(S));
        const auto want = g.get<int32_t>("idx");
        const std::size_t w = std::min<std::size_t>(S, 128);
        REQUIRE(g.shape("idx")[1] == w);
        std::vector<int32_t> got(S * w, 7);
        dsv4::window_indices_prefill(S, got.data(), w);
        CAPTURE(S);
        CHECK(got == want);
    }
    for (int64_t p : {0, 1, 126, 127, 128, 129, 1000}) {
        const auto want = golden("attention", "window_decode_p" + std::to_string(p)).get<int32_t>("idx");
        std::vector<int32_t> got(128, 7);
        dsv4::window_indices_decode(p, got.data());
        CAPTURE(p);
        CHECK(got == want);
    }
    for (std::size_t S : {128, 129, 300, 1000}) {
        const auto want = golden("attention", "compressed_prefill_S" + std::to_string(S)).get<int32_t>("idx");
        std::vector<int32_t> got(S * (S / 128), 7);
        dsv4::compressed_indices_prefill(S, 128, S, got.data(), S / 128);
        CAPTURE(S);
        CHECK(got == want);
    }
    for (int64_t p : {127, 128, 300, 1000}) {
        const auto want = golden("attention", "compressed_decode_p" + std::to_string(p)).get<int32_t>("idx");
        std::vector<int32_t> got(want.size() + 1, 7);
        CHECK(dsv4::compressed_indices_decode(p, 128, 128, got.data()) == want.size());
        got.pop_back();
        CAPTURE(p);
        CHECK(got == want);
    }
    // combined lists: [window | compressed] as the golden attention cases use them
    for (const char* name : {"sparse_attn_prefill_S129", "sparse_attn_prefill_S300", "sparse_attn_prefill_S5"}) {
        golden g("attention", name);
        const auto want = g.get<int32_t>("idx");
        const std::size_t S = g.shape("idx")[0], L = g.shape("idx")[1];
        REQUIRE(L == dsv4::attention_indices_prefill_width(S, 128));
        std::vector<int32_t> got(S * L, 7);
        dsv4::attention_indices_prefill(S, 128, got.data(), L);
        CAPTURE(name);
        CHECK(got == want);
    }
    // the official prefill layout pinned: S < 128 with compressed entries (ratio-128 lists need
    // S >= 128, so a window of 64): row t = [window (min(S, W) columns) | compressed], no gap
    for (std::size_t S : {20, 130}) {
        const std::size_t W = 64, w = std::min(S, W), n = S / 128, L = dsv4::attention_indices_prefill_width(S, 128, W);
        REQUIRE(L == w + n);
        std::vector<int32_t> got(S * L, 7);
        dsv4::attention_indices_prefill(S, 128, got.data(), L, W);
        for (std::size_t t = 0; t < S; ++t) {
            const std::size_t lo = t + 1 > W ? t + 1 - W : 0;
            for (std::size_t j = 0; j < w; ++j)
                CHECK(got[t * L + j] == (lo + j <= t ? int32_t(lo + j) : -1));
            for (std::size_t i = 0; i < n; ++i)
                CHECK(got[t * L + w + i] == (i < (t + 1) / 128 ? int32_t(S + i) : -1));
        }
    }
    int32_t buf[128 + 8];
    CHECK(dsv4::attention_indices_decode(1000, 128, buf) == 128 + 7);
    CHECK(buf[128] == 128);
    CHECK(buf[134] == 134);
    CHECK(dsv4::attention_indices_decode(1000, 0, buf) == 128);
    CHECK_THROWS_AS(dsv4::attention_indices_decode(10, 4, buf), dsv4::error);
    CHECK_THROWS_AS(dsv4::window_indices_decode(-1, buf), dsv4::error);
}

TEST_CASE("ring buffer: prefill and decode writes land in slot p mod 128") {
    const std::size_t D = 8;
    auto row = [](std::size_t t, std::size_t d) { return uint16_t(1 + t * 16 + d); };
    for (std::size_t S : {1, 5, 128, 129, 300}) {
        std::vector<uint16_t> kv(S * D), cache(130 * D, 0);
        for (std::size_t t = 0; t < S; ++t)
            for (std::size_t d = 0; d < D; ++d) kv[t * D + d] = row(t, d);
        dsv4::window_cache_write_prefill(cache.data(), D, kv.data(), D, S, D);
        for (std::size_t slot = 0; slot < 130; ++slot) {
            // the newest token t < S with t mod 128 == slot, if among the last 128
            std::size_t want_t = SIZE_MAX;
            for (std::size_t t = S > 128 ? S - 128 : 0; t < S; ++t)
                if (t % 128 == slot) want_t = t;
            for (std::size_t d = 0; d < D; ++d)
                CHECK(cache[slot * D + d] == (want_t == SIZE_MAX ? 0 : row(want_t, d)));
        }
    }
    std::vector<uint16_t> cache(128 * D, 0), r(D, 0x3F80);
    dsv4::window_cache_write_decode(cache.data(), D, r.data(), 1000, D);
    CHECK(cache[(1000 % 128) * D] == 0x3F80);
    CHECK(std::count(cache.begin(), cache.end(), 0x3F80) == long(D));
}

// ---------------------------------------------------------------------------------- attention

TEST_CASE("attention: exp_f32 is within 1 ulp of the correctly rounded e^x") {
    // Every tier computes the same bits (checked below through the kernels), so checking
    // this translation unit's copy checks them all.
    int64_t worst = 0;
    for (float x = -103.0f; x <= 88.7f; x += 0.0021f) {
        const float got = dsv4::simd::exp_f32(x), want = float(std::exp(double(x)));
        if (want < std::numeric_limits<float>::min()) {
            CHECK(std::fabs(got - want) <= std::numeric_limits<float>::denorm_min() * 2);  // subnormal: absolute
            continue;
        }
        int32_t a, b;
        std::memcpy(&a, &got, 4);
        std::memcpy(&b, &want, 4);
        worst = std::max<int64_t>(worst, std::llabs(int64_t(a) - int64_t(b)));
    }
    MESSAGE("exp_f32: worst error " << worst << " ulp over [-103, 88.7]");
    CHECK(worst <= 1);
    CHECK(dsv4::simd::exp_f32(0.0f) == 1.0f);
    CHECK(dsv4::simd::exp_f32(-std::numeric_limits<float>::infinity()) == 0.0f);
    CHECK(dsv4::simd::exp_f32(-200.0f) == 0.0f);
    CHECK(std::isinf(dsv4::simd::exp_f32(89.0f)));
    CHECK(std::isinf(dsv4::simd::exp_f32(1e4f)));
}

namespace {
/// Per-element error model of the official precision, from the inputs in double:
/// A[s,h,d] = sum_j w_j |kv[j,d]| / den (exact weights w_j = e^(s_j - M)), the magnitude
/// the output is made of, and eps[s,h] = dim * 2^-24 * scale * max_j sum_d |q_d kv_jd|, a
/// bound on an f32 score's error (scores differ between f32 summation orders). Two
/// correct implementations differ by at most a bf16 step of the output plus
/// (2^-8 + 2 eps) * A: one bf16 step of a weight e^(s-m) flipping (the weights are rounded
/// to bf16), and the score error moving every weight. Near-cancelling outputs (|out| << A)
/// may therefore differ by many bf16 steps of their own, and only there.
struct error_model {
    std::vector<double> A, eps;
    error_model(const problem& p) : A(p.S * p.H * p.D, 0.0), eps(p.S * p.H, 0.0) {
        std::vector<double> sc(p.L), mag(p.L);
        for (std::size_t s = 0; s < p.S; ++s)
            for (std::size_t h = 0; h < p.H; ++h) {
                const uint16_t* q = &p.q[(s * p.H + h) * p.D];
                double M = -INFINITY, magmax = 0;
                for (std::size_t j = 0; j < p.L; ++j) {
                    const int32_t r = p.idx[s * p.L + j];
                    if (r < 0) continue;
                    double dot = 0, ab = 0;
                    for (std::size_t d = 0; d < p.D; ++d) {
                        const double t = double(dsv4::bf16_to_f32(q[d])) * dsv4::bf16_to_f32(p.kv[std::size_t(r) * p.D + d]);
                        dot += t;
                        ab += std::fabs(t);
                    }
                    sc[j] = double(p.scale) * dot;
                    M = std::max(M, sc[j]);
                    magmax = std::max(magmax, double(p.scale) * ab);
                }
                if (M == -INFINITY) continue;
                eps[s * p.H + h] = double(p.D) * 0x1p-24 * magmax;
                double den = std::exp(double(p.sink[h]) - M);
                for (std::size_t j = 0; j < p.L; ++j)
                    if (p.idx[s * p.L + j] >= 0) den += std::exp(sc[j] - M);
                double* a = &A[(s * p.H + h) * p.D];
                for (std::size_t j = 0; j < p.L; ++j) {
                    const int32_t r = p.idx[s * p.L + j];
                    if (r < 0) continue;
                    const double w = std::exp(sc[j] - M) / den;
                    for (std::size_t d = 0; d < p.D; ++d) a[d] += w * std::fabs(dsv4::bf16_to_f32(p.kv[std::size_t(r) * p.D + d]));
                }
            }
    }
    /// |got - ref| in units of the allowed error (<= 1 passes).
    double ratio(std::size_t i, std::size_t D, double got, double ref) const {
        const double step = ref == 0 ? 0x1p-133 : std::ldexp(1.0, std::ilogb(ref) - 7);
        const double tol = step + (0x1p-8 + 2 * eps[i / D]) * A[i] + 1e-30;
        return std::fabs(got - ref) / tol;
    }
};

struct golden_result {
    step_stats vs_out;
    double worst_official = 0, worst_exact = 0;  // max error_model ratio
    double max_err_rel = 0;  // max |out - out_exact| / max |out_exact|
};

golden_result check_attention_golden(const std::string& name) {
    golden g("attention", name);
    const problem p = load_problem(g);
    const auto want = g.get<uint16_t>("out");
    const auto exact = g.get<double>("out_exact");
    const auto got = run_public(p);
    const error_model em(p);
    golden_result r;
    r.vs_out = compare(got, want);
    double mx = 0, err = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double gv = dsv4::bf16_to_f32(got[i]);
        mx = std::max(mx, std::fabs(exact[i]));
        err = std::max(err, std::fabs(gv - exact[i]));
        r.worst_official = std::max(r.worst_official, em.ratio(i, p.D, gv, dsv4::bf16_to_f32(want[i])));
        r.worst_exact = std::max(r.worst_exact, em.ratio(i, p.D, gv, exact[i]));
    }
    r.max_err_rel = mx > 0 ? err / mx : err;
    CAPTURE(name);
    CHECK_FALSE(any_nan_bf16(got));
    // rows with no valid index are exact zeros
    for (std::size_t s = 0; s < p.S; ++s) {
        bool any = false;
        for (std::size_t j = 0; j < p.L; ++j) any |= p.idx[s * p.L + j] >= 0;
        if (!any)
            for (std::size_t i = 0; i < p.H * p.D; ++i) CHECK(got[s * p.H * p.D + i] == 0);
    }
    MESSAGE(name << " (S " << p.S << ", H " << p.H << ", D " << p.D << ", L " << p.L << "): vs official "
                 << r.vs_out.str() << ", error-model ratio " << r.worst_official << "; vs exact: ratio "
                 << r.worst_exact << ", max |out - exact| = " << r.max_err_rel << " x max|exact|");
    CHECK(r.worst_official <= 1.0);
    CHECK(r.worst_exact <= 1.0);
    // well-conditioned scores (f32 score error << a bf16 step of a weight): more than one
    // step apart only where outputs cancel, < 1 % of them
    if (*std::max_element(em.eps.begin(), em.eps.end()) < 0x1p-10) CHECK(r.vs_out.over1 * 100 <= r.vs_out.n);
    return r;
}
}  // namespace

TEST_CASE("attention: decode at positions 0..1000 over the ratio-128 cache (H 64, D 512)") {
    for (int p : {0, 1, 126, 127, 128, 129, 1000}) check_attention_golden("sparse_attn_decode_p" + std::to_string(p));
}

TEST_CASE("attention: prefill S = 1, 5, 128, 129, 300 (D 512) and 1000 (D 64)") {
    for (const char* name : {"sparse_attn_prefill_S1", "sparse_attn_prefill_S5", "sparse_attn_prefill_S128",
                             "sparse_attn_prefill_S129", "sparse_attn_prefill_S300", "sparse_attn_prefill_S1000_small"})
        check_attention_golden(name);
}

TEST_CASE("attention: small config, all-masked rows and blocks, large logits, large offset, extreme sinks") {
    for (const char* name : {"sparse_attn_small", "sparse_attn_all_masked", "sparse_attn_large_logits",
                             "sparse_attn_large_offset", "sparse_attn_sink_high", "sparse_attn_sink_low"})
        check_attention_golden(name);
    // the fully masked rows of all_masked carry sink 50 on head 3 and still give zeros
    golden g("attention", "sparse_attn_all_masked");
    const auto got = run_public(load_problem(g));
    CHECK(std::all_of(got.begin(), got.begin() + 4 * 64, [](uint16_t v) { return v == 0; }));
}

TEST_CASE("attention: decode through the ring buffer equals attention over the positions directly") {
    // Token-by-token decode writes into [128 window slots | compressed entries], the decode
    // index list over the cache, against kv rows addressed by position: same rows in the
    // same order, so the same bits.
    const std::size_t H = 16, D = 64, ncomp = 16;
    rng r(5);
    for (int64_t p : {int64_t(0), int64_t(126), int64_t(127), int64_t(128), int64_t(300), int64_t(1000)}) {
        std::vector<uint16_t> tok(std::size_t(p + 1) * D), comp(ncomp * D), cache((128 + ncomp) * D);
        for (auto& v : tok) v = rand_bf16(r, 1.0f);
        for (auto& v : comp) v = rand_bf16(r, 1.0f);
        for (auto& v : cache) v = 0x7FC0;  // NaN junk: never-written slots must not be read
        for (int64_t x = 0; x <= p; ++x) dsv4::window_cache_write_decode(cache.data(), D, &tok[std::size_t(x) * D], x, D);
        const std::size_t nc = std::size_t(p + 1) / 128;
        std::copy(comp.begin(), comp.begin() + long(nc * D), cache.begin() + 128 * long(D));
        problem a;
        a.S = 1, a.H = H, a.D = D, a.N = 128 + ncomp;
        a.q.resize(H * D);
        for (auto& v : a.q) v = rand_bf16(r, 2.0f);
        a.sink.assign(H, 0.5f);
        a.scale = 0.125f;
        a.kv = cache;
        a.idx.resize(128 + nc);
        a.L = dsv4::attention_indices_decode(p, 128, a.idx.data());
        REQUIRE(a.L == a.idx.size());
        problem b = a;  // direct: rows tok[max(0, p-127) .. p], then the compressed entries
        b.kv.clear();
        for (int64_t x = std::max<int64_t>(0, p - 127); x <= p; ++x)
            b.kv.insert(b.kv.end(), tok.begin() + x * long(D), tok.begin() + (x + 1) * long(D));
        b.kv.insert(b.kv.end(), comp.begin(), comp.begin() + long(nc * D));
        b.N = b.kv.size() / D;
        b.idx.assign(128 + nc, -1);
        const std::size_t nw = std::size_t(std::min<int64_t>(p + 1, 128));
        for (std::size_t j = 0; j < nw; ++j) b.idx[j] = int32_t(j);
        for (std::size_t i = 0; i < nc; ++i) b.idx[128 + i] = int32_t(nw + i);
        CAPTURE(p);
        const auto oa = run_public(a), ob = run_public(b);
        CHECK(oa == ob);
        CHECK_FALSE(any_nan_bf16(oa));
    }
}

TEST_CASE("attention: every tier equals scalar bit for bit") {
    struct shape {
        std::size_t S, H, D, N, L;
        float mask;
        float sigma;
    };
    const shape shapes[] = {
        {1, 64, 512, 1200, 640, 0.0f, 1.0f},   // V4 decode: 128 + 512 entries
        {3, 64, 512, 300, 200, 0.3f, 1.0f},    // partial last block, masked entries
        {2, 5, 64, 100, 70, 0.2f, 1.0f},       // odd head count: padded lanes
        {4, 20, 128, 90, 64, 0.5f, 3.0f},      // exactly one block
        {2, 17, 64, 400, 300, 0.9f, 1.0f},     // mostly masked: empty blocks
        {2, 8, 64, 200, 129, 0.0f, 30.0f},     // large logits
    };
    for (std::size_t i = 0; i < std::size(shapes); ++i) {
        const auto& sh = shapes[i];
        const problem p = random_problem(100 + i, sh.S, sh.H, sh.D, sh.N, sh.L, sh.mask, sh.sigma);
        CAPTURE(i);
        for (auto prec : {dsv4::attention_precision::official, dsv4::attention_precision::f32_weights}) {
            const auto a = run(p, active(), prec), b = run(p, scalar_table(), prec);
            CHECK(a == b);
            CHECK_FALSE(any_nan_bf16(a));
        }
    }
}

TEST_CASE("attention: row and head partitions and the oneTBB wrapper give identical bits") {
    const problem p = random_problem(42, 6, 64, 512, 500, 192, 0.25f);
    const auto whole = run_public(p);
    // rows one by one, heads in uneven groups (1, 15, 16, 32 heads)
    std::vector<uint16_t> out;
    const auto a = p.args(out);
    aligned_scratch ws(dsv4::sparse_attention_scratch_bytes(p.H, p.D));
    for (std::size_t s = 0; s < p.S; ++s)
        for (auto [h0, h1] : {std::pair<std::size_t, std::size_t>{0, 1}, {1, 16}, {16, 32}, {32, 64}})
            dsv4::sparse_attention_rows(a, s, s + 1, h0, h1, ws.data(), ws.size());
    CHECK(out == whole);
    for (int threads : {1, 2, 3}) {
        tbb::global_control gc(tbb::global_control::max_allowed_parallelism, std::size_t(threads));
        std::vector<uint16_t> o2;
        const auto a2 = p.args(o2);
        aligned_scratch big(dsv4::sparse_attention_parallel_scratch_bytes(p.H, p.D));
        dsv4::sparse_attention_parallel(a2, big.data(), big.size());
        CAPTURE(threads);
        CHECK(o2 == whole);
        // one decode row (head groups across threads)
        problem d = p;
        d.S = 1;
        std::vector<uint16_t> o3;
        const auto a3 = d.args(o3);
        dsv4::sparse_attention_parallel(a3, big.data(), big.size());
        CHECK(std::equal(o3.begin(), o3.end(), whole.begin()));
    }
    CHECK(dsv4::sparse_attention_head_group(1, 64, 2) == 32);
    CHECK(dsv4::sparse_attention_head_group(1000, 64, 2) == 64);
}

TEST_CASE("attention: f32 weights are closer to the exact softmax than the official bf16 weights") {
    golden g("attention", "sparse_attn_decode_p1000");
    const problem p = load_problem(g);
    const auto exact = g.get<double>("out_exact");
    auto err = [&](const std::vector<uint16_t>& o) {
        double e = 0;
        for (std::size_t i = 0; i < o.size(); ++i) e += std::fabs(double(dsv4::bf16_to_f32(o[i])) - exact[i]);
        return e / double(o.size());
    };
    const double e_off = err(run_public(p)), e_f32 = err(run_public(p, dsv4::attention_precision::f32_weights));
    MESSAGE("mean |out - exact|: official " << e_off << ", f32 weights " << e_f32);
    CHECK(e_f32 < e_off);
}

TEST_CASE("attention: preconditions are checked at the public entry points") {
    problem p = random_problem(1, 2, 4, 64, 50, 10, 0.0f);
    std::vector<uint16_t> out;
    aligned_scratch ws(dsv4::sparse_attention_scratch_bytes(p.H, p.D));
    auto a = p.args(out);
    CHECK_NOTHROW(dsv4::sparse_attention(a, ws.data(), ws.size()));
    CHECK_THROWS_AS(dsv4::sparse_attention(a, ws.data(), ws.size() - 64), dsv4::error);
    auto b = a;
    b.dim = 48;
    CHECK_THROWS_AS(dsv4::sparse_attention(b, ws.data(), ws.size()), dsv4::error);
    p.idx[3] = 50;  // == kv_rows
    a = p.args(out);
    CHECK_THROWS_AS(dsv4::sparse_attention(a, ws.data(), ws.size()), dsv4::error);
    p.idx[3] = -2;
    a = p.args(out);
    CHECK_THROWS_AS(dsv4::sparse_attention(a, ws.data(), ws.size()), dsv4::error);
    p.idx[3] = -1;
    a = p.args(out);
    CHECK_THROWS_AS(dsv4::sparse_attention_rows(a, 0, 3, 0, 4, ws.data(), ws.size()), dsv4::error);
    CHECK_THROWS_AS(dsv4::sparse_attention_rows(a, 0, 1, 2, 2, ws.data(), ws.size()), dsv4::error);
    a.sink = nullptr;
    CHECK_THROWS_AS(dsv4::sparse_attention(a, ws.data(), ws.size()), dsv4::error);
    std::vector<uint16_t> x(8);
    CHECK_THROWS_AS(dsv4::rmsnorm(x.data(), 1, 8, 4, nullptr, 1e-6f, x.data(), 8), dsv4::error);
    float f[32];
    dsv4::rope_freqs(dsv4::rope_config_ratio0, f);
    const int64_t neg = -1;
    CHECK_THROWS_AS(dsv4::rope_apply(x.data(), 1, 1, 8, 8, &neg, dsv4::rope_table{f}, false), dsv4::error);
}

TEST_CASE("peak: the FMA-peak kernel runs and counts its flops") {
    float out = 0;
    const uint64_t flops = active().fma_peak(1000, &out);
    CHECK(flops >= 1000u * 2u * 8u);
    CHECK(std::isfinite(out));
    CHECK(out > 0.0f);
}
