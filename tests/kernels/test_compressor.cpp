// tests/test_compressor.cpp - the Compressor, spec §5 (label: compressor).
//
// Against the NumPy goldens (reference/README.md, "Golden families: compressor, indexer"):
// entries element by element within one quantisation step of their element (FP8: one e4m3
// step; FP4: one e2m1 step; rope dims: one bf16 ulp of the row max), at least 99.9 % of
// them bitwise equal; states slot for slot within a relative 2^-16 of the slot row's
// largest value (the f32 GEMV against the reference's correctly rounded dot product).
// Within a tier: prefill N + k decode steps == N + k decode steps, bit for bit (entries,
// states); serial == oneTBB == any executor; the pooling kernel is bit-identical on every
// tier and matches a float64 softmax.
#include "test_support.hpp"

#include <dsv4/compressor.hpp>

#include <oneapi/tbb/global_control.h>

#include <algorithm>
#include <cstdio>
#include <limits>

using namespace dsv4_test;

namespace {

/// One golden kind's weights and inputs, as views for the library.
struct comp_case {
    std::vector<uint16_t> wkv, wgate, norm, x, entries;
    std::vector<float> ape, freqs, kv_state, score_state;
    std::size_t ratio = 0, d = 0, dim = 0, S = 0, start_len = 0;
    bool rotate = false;

    explicit comp_case(const golden& g) {
        wkv = g.get<uint16_t>("wkv");
        wgate = g.get<uint16_t>("wgate");
        norm = g.get<uint16_t>("norm_w");
        ape = g.get<float>("ape");
        freqs = g.get<float>("freqs");
        x = g.get<uint16_t>("x");
        entries = g.get<uint16_t>("entries");
        kv_state = g.get<float>("kv_state");
        score_state = g.get<float>("score_state");
        ratio = std::size_t(g.scalar_i64("ratio"));
        d = std::size_t(g.scalar_i64("head_dim"));
        rotate = g.scalar_i64("rotate") != 0;
        dim = g.shape("wkv")[1];
        S = g.shape("x")[0];
        if (g.has("start_len")) start_len = std::size_t(g.scalar_i64("start_len"));
    }
    std::size_t cd() const { return dsv4::compressor_c(ratio) * d; }
    dsv4::compressor_weights weights() const {
        dsv4::compressor_weights w;
        w.wkv = {wkv.data(), dim, cd(), dim};
        w.wgate = {wgate.data(), dim, cd(), dim};
        w.ape = ape.data();
        w.norm = norm.data();
        return w;
    }
    dsv4::compressor_config config() const {
        dsv4::compressor_config c;
        c.ratio = ratio;
        c.head_dim = d;
        c.rotate = rotate;
        c.rope = {freqs.data(), nullptr, 0};
        return c;
    }
};

/// Output of one run: entries [n, d] and the final state.
struct run_result {
    std::vector<uint16_t> entries;
    dsv4::compressor_state st;
    std::size_t n = 0;
};

struct runner {
    const comp_case& c;
    dsv4::compressor_weights w;
    dsv4::compressor_config cfg;
    std::vector<unsigned char> scratch;
    explicit runner(const comp_case& cc) : c(cc), w(cc.weights()), cfg(cc.config()) {
        scratch.resize(dsv4::compressor_scratch_bytes(cfg, c.dim) + 1);
    }
    /// Prefill of the first n0 tokens (none if n0 == 0), then `rest(state, cache, scratch,
    /// bytes)` up to `total`; the entries NaN-poisoned so that every emitted one must be written.
    template <class Exec, class Rest>
    run_result drive(std::size_t n0, std::size_t total, Exec ex, Rest&& rest) {
        run_result r;
        dsv4::compressor_state_init(r.st, cfg);
        const std::size_t cap = total / c.ratio + 1;
        r.entries.assign(cap * c.d, 0xFFFF);
        const dsv4::compressor_cache cache{r.entries.data(), c.d, cap};
        void* ws = scratch.data() + 1;  // odd alignment on purpose
        const std::size_t wb = scratch.size() - 1;
        if (n0 > 0) {
            const std::size_t n = dsv4::compressor_prefill_on(ex, r.st, w, cfg, c.x.data(), c.dim, n0, cache, ws, wb);
            CHECK(n == n0 / c.ratio);
        }
        rest(r.st, cache, ws, wb);
        r.n = total / c.ratio;
        r.entries.resize(r.n * c.d);
        CHECK(r.st.next_pos == int64_t(total));
        return r;
    }
    /// Prefill of n0 tokens, then decode steps up to `total`.
    template <class Exec = dsv4::serial_executor>
    run_result run(std::size_t n0, std::size_t total, Exec ex = {}) {
        return drive(n0, total, ex, [&](dsv4::compressor_state& st, const dsv4::compressor_cache& cache, void* ws,
                                        std::size_t wb) {
            for (std::size_t p = n0; p < total; ++p) {
                const bool e = dsv4::compressor_decode_on(ex, st, w, cfg, c.x.data() + p * c.dim, int64_t(p), cache, ws, wb);
                CHECK(e == ((p + 1) % c.ratio == 0));
            }
        });
    }
    /// Prefill of n0 tokens, then compressor_append in pieces of `piece` up to `total`.
    run_result append(std::size_t n0, std::size_t piece, std::size_t total) {
        return drive(n0, total, dsv4::serial_executor{}, [&](dsv4::compressor_state& st,
                                                              const dsv4::compressor_cache& cache, void* ws,
                                                              std::size_t wb) {
            for (std::size_t p = n0; p < total; p += piece) {
                const std::size_t len = std::min(piece, total - p);
                const std::size_t n = dsv4::par::compressor_append(st, w, cfg, c.x.data() + p * c.dim, c.dim, len,
                                                                   int64_t(p), cache, ws, wb);
                CHECK(n == (p + len) / c.ratio - p / c.ratio);
            }
        });
    }
};

/// An executor that hands out single items in reverse order.
struct reverse_exec {
    template <class F> void operator()(std::size_t n, std::size_t, const F& f) const {
        for (std::size_t i = n; i-- > 0;) f(i, i + 1);
    }
};

double bf16v(uint16_t b) { return double(dsv4::bf16_to_f32(b)); }

/// Accumulates the entry comparison of a kind.
struct entry_stats {
    std::size_t n = 0, differ = 0, bad = 0;
    double worst = 0;  // max |diff| / tolerance
    void add(double diff, double tol) {
        ++n;
        differ += diff != 0;
        bad += diff > tol;
        if (diff > 0) worst = std::max(worst, diff / tol);
    }
};

int fp8_exp(double amax) { return dsv4::pow2_scale_exponent(float(amax), 448.0f, 1e-4f); }
int fp4_exp(double amax) { return dsv4::pow2_scale_exponent(float(amax), 6.0f, 6.0f * 0x1p-126f); }
double block_amax(const uint16_t* p, std::size_t n) {
    double m = 0;
    for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(bf16v(p[i])));
    return m;
}

/// One quantisation step of each element (see the file comment).
void compare_entries(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want, std::size_t d, bool rotate,
                     entry_stats& st) {
    REQUIRE(got.size() == want.size());
    for (std::size_t e = 0; e < want.size() / d; ++e) {
        const uint16_t* g = got.data() + e * d;
        const uint16_t* w = want.data() + e * d;
        if (rotate) {
            for (std::size_t b = 0; b < d; b += 32) {
                const double s = std::ldexp(1.0, std::max(fp4_exp(block_amax(g + b, 32)), fp4_exp(block_amax(w + b, 32))));
                for (std::size_t i = b; i < b + 32; ++i) {
                    const double v = std::max(std::fabs(bf16v(g[i])), std::fabs(bf16v(w[i]))) / s;
                    const double step = (v > 4 ? 2.0 : v > 2 ? 1.0 : 0.5) * s;
                    st.add(std::fabs(bf16v(g[i]) - bf16v(w[i])), step);
                }
            }
        } else {
            for (std::size_t b = 0; b < d - 64; b += 64) {
                const double s = std::ldexp(1.0, std::max(fp8_exp(block_amax(g + b, 64)), fp8_exp(block_amax(w + b, 64))));
                for (std::size_t i = b; i < b + 64; ++i) {
                    const double v = std::max(std::fabs(bf16v(g[i])), std::fabs(bf16v(w[i])));
                    st.add(std::fabs(bf16v(g[i]) - bf16v(w[i])), std::max(v / 8.0, s * 0x1p-9));
                }
            }
            const double mx = block_amax(w + d - 64, 64);
            const double ulp = mx > 0 ? std::ldexp(1.0, int(std::floor(std::log2(mx))) - 7) : 0x1p-133;
            for (std::size_t i = d - 64; i < d; ++i) st.add(std::fabs(bf16v(g[i]) - bf16v(w[i])), ulp);
        }
    }
}

/// States slot for slot: -inf where the reference has -inf, else within 2^-16 of the row max.
void compare_state(const std::vector<float>& got, const std::vector<float>& want, std::size_t width, double& worst,
                   std::size_t& bad) {
    REQUIRE(got.size() == want.size());
    for (std::size_t r = 0; r < want.size() / width; ++r) {
        double mx = 0;
        for (std::size_t i = 0; i < width; ++i)
            if (std::isfinite(want[r * width + i])) mx = std::max(mx, std::fabs(double(want[r * width + i])));
        for (std::size_t i = 0; i < width; ++i) {
            const float g = got[r * width + i], w = want[r * width + i];
            if (!std::isfinite(w) || !std::isfinite(g)) {
                bad += !(g == w);
                continue;
            }
            const double tol = mx * 0x1p-16, diff = std::fabs(double(g) - double(w));
            if (diff > 0) worst = std::max(worst, diff / tol);
            bad += diff > tol;
        }
    }
}

std::vector<std::string> cases_with(const std::string& what) {
    std::vector<std::string> out;
    for (const auto& c : golden_cases("compressor"))
        if (c.find(what) != std::string::npos) out.push_back(c);
    return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void golden_group(const std::string& kind) {
    entry_stats es;
    double sworst = 0;
    std::size_t sbad = 0, count = 0;
    for (const auto& name : cases_with(kind + "_")) {
        golden g("compressor", name);
        const comp_case c(g);
        runner rn(c);
        const bool prefill = name.find("_prefill_") != std::string::npos;
        const auto r = prefill ? rn.run(c.S, c.S) : rn.run(c.start_len, c.S);
        CAPTURE(name);
        REQUIRE(r.entries.size() == c.entries.size());
        compare_entries(r.entries, c.entries, c.d, c.rotate, es);
        compare_state(r.st.kv, c.kv_state, c.cd(), sworst, sbad);
        compare_state(r.st.score, c.score_state, c.cd(), sworst, sbad);
        ++count;
    }
    CHECK(count >= 8);
    CHECK(es.bad == 0);
    CHECK(double(es.differ) <= 0.001 * double(es.n));
    CHECK(sbad == 0);
    char buf[256];
    std::snprintf(buf, sizeof buf, "%s: %zu cases, %zu of %zu entry elements differ (%.4f%%), worst diff/step %.3f; state worst diff/tol %.3f",
                  kind.c_str(), count, es.differ, es.n, 100.0 * double(es.differ) / double(std::max<std::size_t>(es.n, 1)),
                  es.worst, sworst);
    MESSAGE(buf);
}

}  // namespace

TEST_CASE("compressor: ratio 4 main (overlap, FP8 sim) against the goldens, prefill and decode") { golden_group("c4_main"); }
TEST_CASE("compressor: ratio 4 indexer (overlap, Hadamard + FP4 sim) against the goldens") { golden_group("c4_indexer"); }
TEST_CASE("compressor: ratio 128 main against the goldens, prefill and decode") { golden_group("c128_main"); }

TEST_CASE("compressor: prefill of N tokens + k decode steps == token-by-token decode, bit for bit") {
    for (const char* kind : {"c4_main", "c4_indexer", "c128_main"}) {
        golden g("compressor", std::string(kind) + "_prefill_S1030");
        const comp_case c(g);
        runner rn(c);
        const std::size_t L = c.ratio == 4 ? 140 : 400;
        const auto ref = rn.run(0, L);
        const std::vector<std::size_t> starts =
            c.ratio == 4 ? std::vector<std::size_t>{1, 2, 3, 4, 5, 7, 8, 9, 63, 64, 65, 66, 67, 68, 127, 128, 129}
                         : std::vector<std::size_t>{1, 64, 127, 128, 129, 255, 256, 257, 300};
        for (std::size_t n0 : starts) {
            CAPTURE(kind);
            CAPTURE(n0);
            const auto r = rn.run(n0, L);
            CHECK(r.entries == ref.entries);
            CHECK(same_bits(r.st.kv, ref.st.kv));
            CHECK(same_bits(r.st.score, ref.st.score));
            // and the prefill alone emits the first n0 / r entries of the token-by-token run
            const auto p = rn.run(n0, n0);
            CHECK(std::equal(p.entries.begin(), p.entries.end(), ref.entries.begin()));
        }
    }
}

TEST_CASE("compressor: append in pieces of any size == token-by-token decode, bit for bit") {
    for (const char* kind : {"c4_main", "c4_indexer", "c128_main"}) {
        golden g("compressor", std::string(kind) + "_prefill_S1030");
        const comp_case c(g);
        runner rn(c);
        const std::size_t L = c.ratio == 4 ? 140 : 400;
        const auto ref = rn.run(0, L);
        for (std::size_t n0 : {0, 5, 64, 129})
            for (std::size_t piece : {1, 3, 31, 32, 33, 128, 300}) {
                CAPTURE(kind);
                CAPTURE(n0);
                CAPTURE(piece);
                const auto r = rn.append(n0, piece, L);
                CHECK(r.entries == ref.entries);
                CHECK(same_bits(r.st.kv, ref.st.kv));
                CHECK(same_bits(r.st.score, ref.st.score));
            }
    }
    // positions must continue the state
    golden g("compressor", "c4_main_prefill_S1030");
    const comp_case c(g);
    runner rn(c);
    dsv4::compressor_state st;
    dsv4::compressor_state_init(st, rn.cfg);
    std::vector<uint16_t> ent(64 * c.d);
    const dsv4::compressor_cache cache{ent.data(), c.d, 64};
    dsv4::compressor_append(st, rn.w, rn.cfg, c.x.data(), c.dim, 10, 0, cache, rn.scratch.data(), rn.scratch.size());
    CHECK_THROWS_WITH_AS(dsv4::compressor_append(st, rn.w, rn.cfg, c.x.data(), c.dim, 4, 11, cache, rn.scratch.data(),
                                                 rn.scratch.size()),
                         doctest::Contains("next position"), dsv4::error);
    CHECK_THROWS_WITH_AS(dsv4::compressor_append(st, rn.w, rn.cfg, c.x.data(), c.dim, 300, 10, cache, rn.scratch.data(),
                                                 rn.scratch.size()),
                         doctest::Contains("compressor_append"), dsv4::error);
}

TEST_CASE("compressor: oneTBB and any executor give the serial bits") {
    golden g("compressor", "c4_main_prefill_S1030");
    const comp_case c(g);
    runner rn(c);
    const auto ref = rn.run(300, 330);
    tbb::global_control gc(tbb::global_control::max_allowed_parallelism, 4);
    const auto par = rn.run(300, 330, dsv4::par::tbb_executor{});
    CHECK(par.entries == ref.entries);
    CHECK(same_bits(par.st.kv, ref.st.kv));
    // an executor that hands out single items in reverse order
    const auto rev = rn.run(300, 330, reverse_exec{});
    CHECK(rev.entries == ref.entries);
    CHECK(same_bits(rev.st.score, ref.st.score));
    // the public par:: wrappers
    dsv4::compressor_state st;
    dsv4::compressor_state_init(st, rn.cfg);
    std::vector<uint16_t> ent(300 / 4 * c.d);
    const std::size_t n = dsv4::par::compressor_prefill(st, rn.w, rn.cfg, c.x.data(), c.dim, 300, {ent.data(), c.d, 75},
                                                        rn.scratch.data(), rn.scratch.size());
    CHECK(n == 75);
    CHECK(std::equal(ent.begin(), ent.end(), ref.entries.begin()));
}

TEST_CASE("compressor: a precomputed RoPE table gives the on-the-fly bits") {
    golden g("compressor", "c128_main_prefill_S1030");
    const comp_case c(g);
    runner rn(c);
    const auto ref = rn.run(1030, 1030);
    std::vector<float> rows(512 * dsv4::rope_row_floats);
    dsv4::rope_table_fill(c.freqs.data(), 512, rows.data());  // covers entries at positions < 512 only
    rn.cfg.rope = {c.freqs.data(), rows.data(), 512};
    const auto r = rn.run(1030, 1030);
    CHECK(r.entries == ref.entries);
}

TEST_CASE("compressor: state hygiene - a new sequence never sees the previous one") {
    golden g("compressor", "c4_main_prefill_S1030");
    const comp_case c(g);
    runner rn(c);
    const auto fresh = rn.run(2, 11);  // prefill of 2 tokens (no entry), then decode to 11
    dsv4::compressor_state st;
    dsv4::compressor_state_init(st, rn.cfg);
    std::vector<uint16_t> ent(300 * c.d);
    const dsv4::compressor_cache cache{ent.data(), c.d, 300};
    // a long first sequence fills every slot
    dsv4::compressor_prefill(st, rn.w, rn.cfg, c.x.data() + 500 * c.dim, c.dim, 301, cache, rn.scratch.data(),
                             rn.scratch.size());
    // the second sequence: prefill resets
    dsv4::compressor_prefill(st, rn.w, rn.cfg, c.x.data(), c.dim, 2, cache, rn.scratch.data(), rn.scratch.size());
    for (std::size_t p = 2; p < 11; ++p)
        dsv4::compressor_decode(st, rn.w, rn.cfg, c.x.data() + p * c.dim, int64_t(p), cache, rn.scratch.data(),
                                rn.scratch.size());
    CHECK(std::equal(fresh.entries.begin(), fresh.entries.end(), ent.begin()));
    CHECK(same_bits(st.kv, fresh.st.kv));
    // a decode at p = 0 starts a sequence too
    for (std::size_t p = 0; p < 11; ++p)
        dsv4::compressor_decode(st, rn.w, rn.cfg, c.x.data() + p * c.dim, int64_t(p), cache, rn.scratch.data(),
                                rn.scratch.size());
    CHECK(std::equal(fresh.entries.begin(), fresh.entries.end(), ent.begin()));
    CHECK(same_bits(st.score, fresh.st.score));
    // compressor_reset
    dsv4::compressor_reset(st);
    CHECK(st.next_pos == 0);
    CHECK(std::all_of(st.kv.begin(), st.kv.end(), [](float v) { return v == 0.0f; }));
    CHECK(std::all_of(st.score.begin(), st.score.end(), [](float v) { return v == -std::numeric_limits<float>::infinity(); }));
}

TEST_CASE("compressor: argument errors are dsv4::error naming the function") {
    golden g("compressor", "c4_indexer_prefill_S5");
    const comp_case c(g);
    runner rn(c);
    dsv4::compressor_state st;
    dsv4::compressor_state_init(st, rn.cfg);
    std::vector<uint16_t> ent(8 * c.d);
    const dsv4::compressor_cache cache{ent.data(), c.d, 8};
    void* ws = rn.scratch.data();
    const std::size_t wb = rn.scratch.size();
    auto dec = [&](int64_t p) { return dsv4::compressor_decode(st, rn.w, rn.cfg, c.x.data(), p, cache, ws, wb); };
    CHECK_FALSE(dec(0));
    CHECK_THROWS_WITH_AS(dec(2), doctest::Contains("compressor_decode"), dsv4::error);  // skips position 1
    CHECK_FALSE(dec(1));
    CHECK_THROWS_AS(dsv4::compressor_decode(st, rn.w, rn.cfg, c.x.data(), 2, cache, ws, 10), dsv4::error);
    CHECK_THROWS_AS(dsv4::compressor_prefill(st, rn.w, rn.cfg, c.x.data(), c.dim, 5, {ent.data(), c.d, 0}, ws, wb),
                    dsv4::error);  // one entry, capacity 0
    dsv4::compressor_config bad = rn.cfg;
    bad.head_dim = 96;
    CHECK_THROWS_AS(dsv4::compressor_prefill(st, rn.w, bad, c.x.data(), c.dim, 5, cache, ws, wb), dsv4::error);
    dsv4::compressor_state other;
    CHECK_THROWS_WITH_AS(dsv4::compressor_prefill(other, rn.w, rn.cfg, c.x.data(), c.dim, 5, cache, ws, wb),
                         doctest::Contains("compressor_state_init"), dsv4::error);
}

TEST_CASE("compressor: pooling kernel is bit-identical on every tier and matches a float64 softmax") {
    const auto& act = active();
    const auto& sca = scalar_table();
    rng r(77);
    for (std::size_t d : {16u, 128u, 512u, 37u}) {
        for (std::size_t na : {0u, 4u}) {
            const std::size_t nb = na ? 4 : 128, stride = 2 * d + 3;
            std::vector<float> k((na + nb) * stride), z((na + nb) * stride);
            for (auto& v : k) v = r.normal() * 3.0f;
            for (std::size_t i = 0; i < z.size(); ++i) z[i] = (i % 97 == 5) ? -std::numeric_limits<float>::infinity() : r.normal() * 4.0f;
            const dsv4::compressor_pool_group a{k.data(), z.data(), stride, na};
            const dsv4::compressor_pool_group b{k.data() + na * stride, z.data() + na * stride, stride, nb};
            std::vector<float> y1(d), y2(d);
            act.compressor_pool_row(a, b, d, y1.data());
            sca.compressor_pool_row(a, b, d, y2.data());
            CHECK(same_bits(y1, y2));
            for (std::size_t ch = 0; ch < d; ++ch) {
                double m = -INFINITY, num = 0, den = 0;
                for (std::size_t j = 0; j < na + nb; ++j) m = std::max(m, double(z[j * stride + ch]));
                for (std::size_t j = 0; j < na + nb; ++j) {
                    const double e = std::exp(double(z[j * stride + ch]) - m);
                    num += e * double(k[j * stride + ch]);
                    den += e;
                }
                double sabs = 0;
                for (std::size_t j = 0; j < na + nb; ++j) sabs += std::exp(double(z[j * stride + ch]) - m) / den * std::fabs(double(k[j * stride + ch]));
                // f32: ~3 ulps per slot (exp, rounding of e, the fma) relative to sum |w k|
                CHECK(std::fabs(double(y1[ch]) - num / den) <= double(na + nb + 4) * 4 * 0x1p-24 * sabs + 1e-30);
            }
        }
    }
}
