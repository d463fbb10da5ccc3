// tests/kernels/test_indexer.cpp - the indexer (spec §6; label: indexer). Hadamard: test_hadamard.cpp;
// top-k: test_topk.cpp (same binary and goldens).
//
//  * scores: the goldens (64 heads) within one bf16 ulp (reported: how many are exact);
//    every tier == scalar bit for bit.
//  * query / weights / keys: the goldens within one quantisation step (q, keys: one e2m1
//    step; q_proj and w: one bf16 ulp).
//  * selection: golden scores -> golden idx exactly; end to end (prefill and decode) the
//    composite's idx == selection of the library's own scores, == golden idx where those
//    scores equal the golden ones, else every pick scores >= every visible non-pick.
//  * prefill of N + decode steps == token-by-token decode (keys, idx); prefill row t == the
//    decode step at t; serial == oneTBB.
#include "indexer_support.hpp"

#include <dsv4/indexer.hpp>
#include <oneapi/tbb/global_control.h>
#include <algorithm>
#include <cstdio>
#include <limits>
#include <numeric>

using namespace dsv4_test;
using namespace indexer_test;

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

TEST_CASE("indexer: append in pieces == token-by-token decode (keys, every row), bit for bit") {
    golden g("indexer", "select_prefill_S129");
    const idx_params P(g);
    rng r(37);
    const std::size_t L = 180, T = L / 4;
    const auto X = random_bf16(r, L * P.dim, 1.0f);
    const auto QR = random_bf16(r, L * P.ql, 1.0f);
    idx_runner tok(P, L);
    std::vector<std::vector<int32_t>> dec(L);
    for (std::size_t p = 0; p < L; ++p) dec[p] = tok.decode(X.data() + p * P.dim, QR.data() + p * P.ql, int64_t(p));
    for (std::size_t n0 : {5u, 64u, 130u})
        for (std::size_t piece : {1u, 2u, 7u, 8u, 9u, 64u, 200u}) {
            CAPTURE(n0);
            CAPTURE(piece);
            idx_runner a(P, L);
            std::vector<int32_t> pre;
            a.prefill(X.data(), QR.data(), n0, pre);
            std::vector<unsigned char> ws(dsv4::indexer_append_scratch_bytes(a.cfg, P.dim, P.ql, piece, L));
            for (std::size_t p0 = n0; p0 < L; p0 += piece) {
                const std::size_t len = std::min(piece, L - p0), width = std::min(a.cfg.topk, (p0 + len) / 4);
                std::vector<int32_t> idx(len * width, -7);
                const std::size_t k = dsv4::par::indexer_append(a.st, a.w, a.cfg, X.data() + p0 * P.dim, P.dim,
                                                                QR.data() + p0 * P.ql, P.ql, len, int64_t(p0), a.cache(),
                                                                128, idx.data(), width, ws.data(), ws.size());
                REQUIRE(k == width);
                for (std::size_t t = 0; t < len; ++t) {
                    const auto& want = dec[p0 + t];
                    for (std::size_t j = 0; j < width; ++j)
                        CHECK(idx[t * width + j] == (j < want.size() ? want[j] : -1));
                }
            }
            CHECK(std::equal(a.keys.begin(), a.keys.begin() + std::ptrdiff_t(T * 128), tok.keys.begin()));
            CHECK(a.st.kv == tok.st.kv);
        }
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
