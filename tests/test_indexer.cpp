// tests/test_indexer.cpp - the indexer (spec §6), its Hadamard rotation (§3.4) and top-k
// (label: indexer).
//
//  * Hadamard: against the matrix definition (float64 sum -> f32 -> * f32(n^-1/2) -> bf16)
//    within one bf16 ulp plus the f32 butterfly's own rounding; every tier == scalar.
//  * top-k: the goldens exactly; a stable full sort exactly (random, tied, all-equal, -0/+0,
//    -inf, NaN rows; the sampled fast path and its fallback); every tier == scalar.
//  * scores: the goldens (64 heads) within one bf16 ulp (reported: how many are exact);
//    every tier == scalar bit for bit.
//  * query / weights / keys: the goldens within one quantisation step (q, keys: one e2m1
//    step; q_proj and w: one bf16 ulp).
//  * selection: golden scores -> golden idx exactly; end to end (prefill and decode) the
//    composite's idx == selection of the library's own scores, == golden idx where those
//    scores equal the golden ones, else every pick scores >= every visible non-pick.
//  * prefill of N + decode steps == token-by-token decode (keys, idx); prefill row t == the
//    decode step at t; serial == oneTBB.
#include "test_support.hpp"

#include <dsv4/indexer.hpp>

#include <oneapi/tbb/global_control.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <numeric>

using namespace dsv4_test;

namespace {

double bf16v(uint16_t b) { return double(dsv4::bf16_to_f32(b)); }
int64_t bf16_steps(uint16_t a, uint16_t b) {
    auto ord = [](uint16_t x) -> int64_t { return (x & 0x8000) ? -int64_t(x & 0x7FFF) : int64_t(x); };
    return std::llabs(ord(a) - ord(b));
}
uint16_t bf16_of(double v) { return dsv4::f32_to_bf16(float(v)); }

std::vector<uint16_t> random_bf16(rng& r, std::size_t n, float scale) {
    std::vector<uint16_t> v(n);
    for (auto& x : v) x = dsv4::f32_to_bf16(r.normal() * scale);
    return v;
}

/// Reference stable top-k: descending, ties (and -0/+0) by lower index, NaN last.
std::vector<int32_t> ref_topk(const float* s, std::size_t n, std::size_t k, dsv4::topk_order order) {
    std::vector<int32_t> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    auto gt = [&](int32_t a, int32_t b) {
        const float x = s[a], y = s[b];
        if (std::isnan(x)) return false;
        if (std::isnan(y)) return true;
        return x > y;
    };
    std::stable_sort(idx.begin(), idx.end(), gt);
    idx.resize(k);
    if (order == dsv4::topk_order::index) std::sort(idx.begin(), idx.end());
    return idx;
}

std::vector<int32_t> lib_topk(const dsv4::kernel_table& t, const std::vector<float>& s, std::size_t k,
                              dsv4::topk_order order) {
    std::vector<uint32_t> ws(dsv4::topk_scratch_words(s.size(), k));
    std::vector<int32_t> out(k, -7);
    t.topk_row(s.data(), s.size(), k, order, out.data(), ws.data());
    return out;
}

/// FP4-step comparison of bf16 rows whose blocks of 32 were FP4-simulated.
struct fp4_stats {
    std::size_t n = 0, differ = 0, bad = 0;
    void add_row(const uint16_t* g, const uint16_t* w, std::size_t len) {
        for (std::size_t b = 0; b < len; b += 32) {
            auto amax = [](const uint16_t* p) {
                double m = 0;
                for (int i = 0; i < 32; ++i) m = std::max(m, std::fabs(bf16v(p[i])));
                return m;
            };
            const int e = std::max(dsv4::pow2_scale_exponent(float(amax(g + b)), 6.0f, 6.0f * 0x1p-126f),
                                   dsv4::pow2_scale_exponent(float(amax(w + b)), 6.0f, 6.0f * 0x1p-126f));
            const double s = std::ldexp(1.0, e);
            for (std::size_t i = b; i < b + 32; ++i) {
                const double v = std::max(std::fabs(bf16v(g[i])), std::fabs(bf16v(w[i]))) / s;
                const double step = (v > 4 ? 2.0 : v > 2 ? 1.0 : 0.5) * s;
                const double diff = std::fabs(bf16v(g[i]) - bf16v(w[i]));
                ++n;
                differ += diff != 0;
                bad += diff > step;
            }
        }
    }
};

/// Every selected entry scores >= every visible unselected one; no duplicates; -1 only at the end.
bool valid_selection(const float* s, std::size_t n_vis, const int32_t* row, std::size_t width, int64_t offset) {
    std::vector<char> taken(n_vis, 0);
    float lo = std::numeric_limits<float>::infinity();
    std::size_t picks = 0;
    for (std::size_t j = 0; j < width; ++j) {
        if (row[j] < 0) {
            for (std::size_t i = j; i < width; ++i)
                if (row[i] != -1) return false;
            break;
        }
        const int64_t u = int64_t(row[j]) - offset;
        if (u < 0 || u >= int64_t(n_vis) || taken[std::size_t(u)]) return false;
        taken[std::size_t(u)] = 1;
        lo = std::min(lo, s[u]);
        ++picks;
    }
    if (picks != std::min(width, n_vis)) return false;
    for (std::size_t u = 0; u < n_vis; ++u)
        if (!taken[u] && s[u] > lo) return false;
    return true;
}

/// Small-config indexer parameters of a select_* golden case, as library views.
struct idx_params {
    std::vector<uint8_t> wq_b, wq_b_scale;
    std::vector<uint16_t> weights_proj, comp_wkv, comp_wgate, comp_norm;
    std::vector<float> comp_ape, freqs;
    std::size_t H = 0, ql = 0, dim = 0, topk = 0;
    explicit idx_params(const golden& g) {
        wq_b = g.get<uint8_t>("wq_b");
        wq_b_scale = g.get<uint8_t>("wq_b_scale");
        weights_proj = g.get<uint16_t>("weights_proj");
        comp_wkv = g.get<uint16_t>("comp_wkv");
        comp_wgate = g.get<uint16_t>("comp_wgate");
        comp_norm = g.get<uint16_t>("comp_norm_w");
        comp_ape = g.get<float>("comp_ape");
        freqs = g.get<float>("freqs");
        H = g.shape("weights_proj")[0];
        dim = g.shape("weights_proj")[1];
        ql = g.shape("wq_b")[1];
        topk = std::size_t(g.scalar_i64("topk"));
    }
    dsv4::indexer_weights weights() const {
        dsv4::indexer_weights w;
        w.wq_b = {wq_b.data(), ql, wq_b_scale.data(), ql / 128, H * 128, ql};
        w.weights_proj = {weights_proj.data(), dim, H, dim};
        w.comp.wkv = {comp_wkv.data(), dim, 256, dim};
        w.comp.wgate = {comp_wgate.data(), dim, 256, dim};
        w.comp.ape = comp_ape.data();
        w.comp.norm = comp_norm.data();
        return w;
    }
    dsv4::indexer_config config() const {
        dsv4::indexer_config c;
        c.heads = H;
        c.topk = topk;
        c.comp.rope = {freqs.data(), nullptr, 0};
        return c;
    }
};

/// One indexer sequence driven through the composites.
struct idx_runner {
    const idx_params& P;
    dsv4::indexer_weights w;
    dsv4::indexer_config cfg;
    std::size_t max_keys;
    std::vector<unsigned char> scratch;
    dsv4::compressor_state st;
    std::vector<uint16_t> keys;
    idx_runner(const idx_params& p, std::size_t max_tokens) : P(p), w(p.weights()), cfg(p.config()), max_keys(max_tokens / 4 + 1) {
        scratch.resize(std::max(dsv4::indexer_prefill_scratch_bytes(cfg, P.dim, P.ql, max_tokens),
                                dsv4::indexer_decode_scratch_bytes(cfg, P.dim, P.ql, max_keys)));
        dsv4::compressor_state_init(st, cfg.comp);
        keys.assign(max_keys * 128, 0xFFFF);
    }
    dsv4::compressor_cache cache() { return {keys.data(), 128, max_keys}; }
    template <class Exec = dsv4::serial_executor>
    std::size_t prefill(const uint16_t* x, const uint16_t* qr, std::size_t S, std::vector<int32_t>& idx, Exec ex = {}) {
        idx.assign(S * std::min(cfg.topk, S / 4), -7);
        return dsv4::indexer_prefill_on(ex, st, w, cfg, x, P.dim, qr, P.ql, S, cache(), int64_t(S), idx.data(),
                                        std::min(cfg.topk, S / 4), scratch.data(), scratch.size());
    }
    template <class Exec = dsv4::serial_executor>
    std::vector<int32_t> decode(const uint16_t* x_row, const uint16_t* qr_row, int64_t p, Exec ex = {}) {
        std::vector<int32_t> idx(cfg.topk, -7);
        const std::size_t k = dsv4::indexer_decode_on(ex, st, w, cfg, x_row, qr_row, p, cache(), 128, idx.data(), max_keys,
                                                      scratch.data(), scratch.size());
        idx.resize(k);
        return idx;
    }
};

}  // namespace

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

// ------------------------------------------------------------------ scores

TEST_CASE("indexer scores: goldens (64 heads) within one bf16 ulp; every tier == scalar") {
    std::size_t n = 0, exact = 0, count = 0;
    for (const auto& name : golden_cases("indexer")) {
        if (name.rfind("scores_", 0) != 0) continue;
        golden g("indexer", name);
        const auto qs = g.shape("q");
        const std::size_t S = qs[0], H = qs[1], T = g.shape("kidx")[0];
        const auto q = g.get<uint16_t>("q");
        const auto w = g.get<uint16_t>("w");
        const auto k = g.get<uint16_t>("kidx");
        const auto want = g.get<uint16_t>("scores");
        std::vector<float> sc(S * T, -1.0f);
        std::vector<unsigned char> ws(dsv4::indexer_scores_scratch_bytes(H, S));
        dsv4::indexer_scores(q.data(), H * 128, w.data(), H, S, H, k.data(), 128, T, false, 0, sc.data(), T, ws.data(),
                             ws.size());
        CAPTURE(name);
        for (std::size_t i = 0; i < S * T; ++i) {
            const uint16_t gb = dsv4::f32_to_bf16(sc[i]);
            CHECK(dsv4::bf16_to_f32(gb) == sc[i]);  // bf16-valued
            CHECK(bf16_steps(gb, want[i]) <= 1);
            exact += gb == want[i];
            ++n;
        }
        ++count;
    }
    CHECK(count == 4);
    MESSAGE("scores: " << exact << " of " << n << " bitwise equal to the reference");

    // tier identity on random FP4-like and plain bf16 operands, odd sizes
    rng r(21);
    for (std::size_t H : {1u, 3u, 8u, 13u, 64u}) {
        const std::size_t M = 3, T = 301;
        auto q = random_bf16(r, M * H * 128, 1.0f);
        auto k = random_bf16(r, T * 130, 2.0f);
        auto w = random_bf16(r, M * H, 0.1f);
        dsv4::hadamard_rotate(q.data(), M * H, 128, 128);
        dsv4::fp4_act_quant_sim(q.data(), M, H * 128, H * 128);
        std::vector<float> qf(q.size()), wf(w.size());
        dsv4::decode_bf16(q.data(), qf.data(), q.size());
        dsv4::decode_bf16(w.data(), wf.data(), w.size());
        std::vector<std::size_t> lim = {T, 100, 7};
        std::vector<float> s1(M * T, -9.0f), s2(M * T, -9.0f);
        dsv4::indexer_score_args a;
        a.q = qf.data();
        a.q_stride = H * 128;
        a.w = wf.data();
        a.w_stride = H;
        a.limit = lim.data();
        a.queries = M;
        a.heads = H;
        a.k = k.data();
        a.k_stride = 130;
        a.keys = T;
        a.scores = s1.data();
        a.scores_stride = T;
        std::vector<float> ws(dsv4::indexer_score_scratch_floats);
        active().indexer_scores_rows(a, 0, 50, ws.data());
        active().indexer_scores_rows(a, 50, T, ws.data());
        a.scores = s2.data();
        scalar_table().indexer_scores_rows(a, 0, T, ws.data());
        CHECK(std::memcmp(s1.data(), s2.data(), s1.size() * sizeof(float)) == 0);
        CHECK(s1[1 * T + 100] == -9.0f);  // past the limit: untouched
        // against a float64 evaluation of the same precision points (exact products)
        for (std::size_t m = 0; m < M; ++m)
            for (std::size_t u = 0; u < lim[m]; u += 37) {
                double acc = 0;
                for (std::size_t h = 0; h < H; ++h) {
                    double dot = 0;
                    for (std::size_t d = 0; d < 128; ++d) dot += double(qf[(m * H + h) * 128 + d]) * bf16v(k[u * 130 + d]);
                    const double rl = std::max(double(dsv4::round_bf16(float(dot))), 0.0);
                    acc += double(dsv4::round_bf16(float(rl * double(wf[m * H + h]))));
                }
                CHECK(bf16_steps(dsv4::f32_to_bf16(s1[m * T + u]), bf16_of(float(acc))) <= 1);
            }
    }
}

// ------------------------------------------------------------------ query and weights

TEST_CASE("indexer query and weights: goldens") {
    fp4_stats qs;
    std::size_t proj_n = 0, proj_exact = 0, count = 0;
    for (const auto& name : golden_cases("indexer")) {
        if (name.rfind("query_", 0) != 0) continue;
        golden g("indexer", name);
        CAPTURE(name);
        const auto qr = g.get<uint16_t>("qr");
        const auto wq = g.get<uint8_t>("wq_b");
        const auto wqs = g.get<uint8_t>("wq_b_scale");
        const auto pos = g.get<int64_t>("positions");
        const auto freqs = g.get<float>("freqs");
        const auto want = g.get<uint16_t>("q");
        const auto want_proj = g.get<uint16_t>("q_proj");
        const std::size_t S = g.shape("qr")[0], ql = g.shape("qr")[1], N = g.shape("wq_b")[0];
        const dsv4::fp8_matrix W{wq.data(), ql, wqs.data(), ql / 128, N, ql};
        // the projection alone: act_quant -> exact f32 activations -> FP8 GEMV, bf16 out
        std::vector<uint8_t> codes(S * ql), scales(S * ql / 128);
        std::vector<float> a(S * ql);
        dsv4::act_quant_fp8(qr.data(), S, ql, ql, 128, codes.data(), ql, scales.data(), ql / 128);
        dsv4::fp8_acts_to_f32(codes.data(), ql, scales.data(), ql / 128, S, ql, a.data(), ql);
        std::vector<uint16_t> proj(S * N);
        dsv4::fp8_gemv(W, {a.data(), ql, S}, {nullptr, proj.data(), N});
        for (std::size_t i = 0; i < S * N; ++i) {
            CHECK(bf16_steps(proj[i], want_proj[i]) <= 1);
            proj_exact += proj[i] == want_proj[i];
            ++proj_n;
        }
        std::vector<uint16_t> q(S * N);
        std::vector<unsigned char> ws(dsv4::indexer_query_scratch_bytes(ql, S));
        dsv4::indexer_query(W, {freqs.data(), nullptr, 0}, qr.data(), ql, S, pos.data(), q.data(), N, ws.data(), ws.size());
        const std::size_t before = qs.bad;
        for (std::size_t t = 0; t < S; ++t) qs.add_row(q.data() + t * N, want.data() + t * N, N);
        CHECK(qs.bad == before);
        ++count;
    }
    CHECK(count == 4);
    CHECK(double(qs.differ) <= 0.002 * double(qs.n));
    MESSAGE("q_proj: " << proj_exact << " of " << proj_n << " bitwise; q: " << qs.differ << " of " << qs.n
                       << " differ (each within one e2m1 step)");

    std::size_t wn = 0, wexact = 0, wcount = 0;
    for (const auto& name : golden_cases("indexer")) {
        if (name.rfind("weights_", 0) != 0) continue;
        golden g("indexer", name);
        const auto x = g.get<uint16_t>("x");
        const auto wp = g.get<uint16_t>("weights_proj");
        const auto want = g.get<uint16_t>("w");
        const std::size_t S = g.shape("x")[0], D = g.shape("x")[1], H = g.shape("weights_proj")[0];
        CHECK(dsv4::indexer_weight_scale(H) == g.get<float>("scale").at(0));
        std::vector<uint16_t> w(S * H);
        std::vector<unsigned char> ws(dsv4::indexer_head_weights_scratch_bytes(D, H, S));
        dsv4::indexer_head_weights({wp.data(), D, H, D}, x.data(), D, S, w.data(), H, ws.data(), ws.size());
        for (std::size_t i = 0; i < S * H; ++i) {
            CHECK(bf16_steps(w[i], want[i]) <= 1);
            wexact += w[i] == want[i];
            ++wn;
        }
        ++wcount;
    }
    CHECK(wcount == 2);
    MESSAGE("weights: " << wexact << " of " << wn << " bitwise");
}

// ------------------------------------------------------------------ selection, end to end

TEST_CASE("indexer selection: goldens end to end (prefill and decode)") {
    std::size_t cases = 0, rows = 0, rows_exact_scores = 0;
    fp4_stats ks, qst;
    std::size_t sn = 0, sexact = 0;
    for (const auto& name : golden_cases("indexer")) {
        const bool prefill = name.rfind("select_prefill_", 0) == 0, decode = name.rfind("select_decode_", 0) == 0;
        if (!prefill && !decode) continue;
        golden g("indexer", name);
        CAPTURE(name);
        const idx_params P(g);
        const auto x = g.get<uint16_t>("x");
        const auto qr = g.get<uint16_t>("qr");
        const auto want_idx = g.get<int32_t>("idx");
        const auto want_scores = g.get<uint16_t>("scores");
        const auto want_q = g.get<uint16_t>("q");
        const auto want_w = g.get<uint16_t>("w");
        const auto want_k = g.get<uint16_t>("kidx");
        const int64_t offset = g.scalar_i64("offset"), p0 = g.scalar_i64("start_pos");
        const std::size_t S = g.shape("qr")[0], T = g.shape("kidx")[0], k = std::min(P.topk, T), H = P.H;
        // golden scores -> golden idx (the selection rule alone)
        {
            std::vector<float> gs(want_scores.size());
            for (std::size_t i = 0; i < gs.size(); ++i) gs[i] = dsv4::bf16_to_f32(want_scores[i]);
            std::vector<int32_t> idx(S * k);
            std::vector<unsigned char> ws(dsv4::indexer_select_scratch_bytes(P.topk, T));
            dsv4::indexer_select(gs.data(), T, S, T, prefill, p0, P.topk, offset, idx.data(), k, ws.data(), ws.size());
            CHECK(idx == want_idx);
        }
        // the composite
        idx_runner run(P, std::max<std::size_t>(x.size() / P.dim, 8));
        std::vector<int32_t> idx;
        if (prefill) {
            CHECK(run.prefill(x.data(), qr.data(), S, idx) == k);
        } else {
            const std::size_t p = std::size_t(p0);
            // the history only feeds the indexer's compressor (qr holds token p alone)
            dsv4::compressor_prefill(run.st, run.w.comp, run.cfg.comp, x.data(), P.dim, p, run.cache(), run.scratch.data(),
                                     run.scratch.size());
            idx = run.decode(x.data() + p * P.dim, qr.data(), p0);
        }
        std::vector<uint16_t> keys(run.keys.begin(), run.keys.begin() + std::ptrdiff_t(T * 128));
        for (std::size_t u = 0; u < T; ++u) ks.add_row(keys.data() + u * 128, want_k.data() + u * 128, 128);
        // the stages on the library's own values: q, w, scores, selection
        std::vector<int64_t> pos(S);
        for (std::size_t t = 0; t < S; ++t) pos[t] = p0 + int64_t(t);
        std::vector<uint16_t> q(S * H * 128), w(S * H);
        std::vector<unsigned char> ws(std::max({dsv4::indexer_query_scratch_bytes(P.ql, S),
                                                dsv4::indexer_head_weights_scratch_bytes(P.dim, H, S),
                                                dsv4::indexer_scores_scratch_bytes(H, S),
                                                dsv4::indexer_select_scratch_bytes(P.topk, T)}));
        const auto W = P.weights();
        dsv4::indexer_query(W.wq_b, {P.freqs.data(), nullptr, 0}, qr.data(), P.ql, S, pos.data(), q.data(), H * 128,
                            ws.data(), ws.size());
        for (std::size_t t = 0; t < S; ++t) qst.add_row(q.data() + t * H * 128, want_q.data() + t * H * 128, H * 128);
        const uint16_t* xq = x.data() + (prefill ? 0 : std::size_t(p0) * P.dim);
        dsv4::indexer_head_weights(W.weights_proj, xq, P.dim, S, w.data(), H, ws.data(), ws.size());
        for (std::size_t i = 0; i < S * H; ++i) CHECK(bf16_steps(w[i], want_w[i]) <= 1);
        std::vector<float> sc(S * T, 0.0f);
        dsv4::indexer_scores(q.data(), H * 128, w.data(), H, S, H, keys.data(), 128, T, prefill, p0, sc.data(), T,
                             ws.data(), ws.size());
        std::vector<int32_t> mine(S * k);
        dsv4::indexer_select(sc.data(), T, S, T, prefill, p0, P.topk, offset, mine.data(), k, ws.data(), ws.size());
        CHECK(mine == idx);  // the composite == its stages
        for (std::size_t t = 0; t < S; ++t) {
            const std::size_t nv = prefill ? std::min(T, (t + 1) / 4) : T;
            bool same = true;
            for (std::size_t u = 0; u < nv; ++u) {
                const uint16_t gb = dsv4::f32_to_bf16(sc[t * T + u]);
                same = same && gb == want_scores[t * T + u];
                sexact += gb == want_scores[t * T + u];
                ++sn;
            }
            if (same) {
                CHECK(std::equal(idx.begin() + std::ptrdiff_t(t * k), idx.begin() + std::ptrdiff_t((t + 1) * k),
                                 want_idx.begin() + std::ptrdiff_t(t * k)));
                ++rows_exact_scores;
            }
            CHECK(valid_selection(sc.data() + t * T, nv, idx.data() + t * k, k, offset));
            ++rows;
        }
        ++cases;
    }
    CHECK(cases == 12);
    CHECK(ks.bad == 0);
    CHECK(qst.bad == 0);
    MESSAGE("select: " << rows << " rows, " << rows_exact_scores << " with bitwise golden scores (idx == golden there); "
                       << sexact << " of " << sn << " visible scores bitwise; keys " << ks.differ << " of " << ks.n
                       << " differ, q " << qst.differ << " of " << qst.n << " differ (each within one e2m1 step)");
}

TEST_CASE("indexer: prefill of N + decode steps == token-by-token decode; prefill row t == decode step t; par == serial") {
    golden g("indexer", "select_prefill_S129");
    const idx_params P(g);
    rng r(31);
    const std::size_t L = 180;
    const auto X = random_bf16(r, L * P.dim, 1.0f);
    const auto QR = random_bf16(r, L * P.ql, 1.0f);
    // token by token
    idx_runner tok(P, L);
    std::vector<std::vector<int32_t>> dec(L);
    for (std::size_t p = 0; p < L; ++p) dec[p] = tok.decode(X.data() + p * P.dim, QR.data() + p * P.ql, int64_t(p));
    const std::size_t T = L / 4;
    for (std::size_t n0 : {1u, 3u, 4u, 5u, 36u, 64u, 65u, 130u}) {
        CAPTURE(n0);
        idx_runner a(P, L);
        std::vector<int32_t> pre;
        const std::size_t k = a.prefill(X.data(), QR.data(), n0, pre);
        // prefill rows == the decode steps (u + S vs u + 128; -1 where the prefill pads)
        for (std::size_t t = 0; t < n0; ++t)
            for (std::size_t j = 0; j < k; ++j) {
                const int32_t v = pre[t * k + j];
                if (j < dec[t].size()) CHECK(v - int32_t(n0) == dec[t][j] - 128);
                else CHECK(v == -1);
            }
        for (std::size_t p = n0; p < L; ++p) CHECK(a.decode(X.data() + p * P.dim, QR.data() + p * P.ql, int64_t(p)) == dec[p]);
        CHECK(std::equal(a.keys.begin(), a.keys.begin() + std::ptrdiff_t(T * 128), tok.keys.begin()));
        CHECK(a.st.kv == tok.st.kv);
    }
    // par == serial
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, 4);
    idx_runner s1(P, L), s2(P, L);
    std::vector<int32_t> i1, i2;
    s1.prefill(X.data(), QR.data(), 150, i1);
    s2.prefill(X.data(), QR.data(), 150, i2, dsv4::par::tbb_executor{});
    CHECK(i1 == i2);
    CHECK(s1.keys == s2.keys);
    for (std::size_t p = 150; p < L; ++p)
        CHECK(s1.decode(X.data() + p * P.dim, QR.data() + p * P.ql, int64_t(p)) ==
              s2.decode(X.data() + p * P.dim, QR.data() + p * P.ql, int64_t(p), dsv4::par::tbb_executor{}));
}

TEST_CASE("indexer: argument errors are dsv4::error naming the function") {
    golden g("indexer", "select_prefill_S8");
    const idx_params P(g);
    idx_runner run(P, 64);
    const auto x = g.get<uint16_t>("x");
    const auto qr = g.get<uint16_t>("qr");
    std::vector<int32_t> idx(8);
    CHECK_THROWS_WITH_AS(dsv4::indexer_decode(run.st, run.w, run.cfg, x.data(), qr.data(), 5, run.cache(), 128, idx.data(),
                                              run.max_keys, run.scratch.data(), run.scratch.size()),
                         doctest::Contains("compressor_decode"), dsv4::error);  // not the next position
    CHECK_THROWS_WITH_AS(dsv4::indexer_decode(run.st, run.w, run.cfg, x.data(), qr.data(), 0, run.cache(), 128, idx.data(),
                                              run.max_keys, run.scratch.data(), 16),
                         doctest::Contains("indexer_decode"), dsv4::error);
    auto bad = run.cfg;
    bad.comp.head_dim = 64;
    CHECK_THROWS_AS(dsv4::indexer_decode(run.st, run.w, bad, x.data(), qr.data(), 0, run.cache(), 128, idx.data(),
                                         run.max_keys, run.scratch.data(), run.scratch.size()),
                    dsv4::error);
    std::vector<float> sc(10);
    std::vector<unsigned char> ws(dsv4::indexer_select_scratch_bytes(8, 10));
    CHECK_THROWS_AS(dsv4::indexer_select(sc.data(), 10, 1, 10, false, 0, 8, int64_t(INT32_MAX), idx.data(), 8, ws.data(),
                                         ws.size()),
                    dsv4::error);
}
