// tests/kernels/indexer_support.hpp - helpers shared by the Hadamard, top-k and indexer tests.
#pragma once

#include "test_support.hpp"

#include <dsv4/indexer.hpp>
#include <oneapi/tbb/global_control.h>
#include <algorithm>
#include <cstdio>
#include <limits>
#include <numeric>

namespace indexer_test {
using namespace dsv4_test;


inline double bf16v(uint16_t b) { return double(dsv4::bf16_to_f32(b)); }
inline int64_t bf16_steps(uint16_t a, uint16_t b) {
    auto ord = [](uint16_t x) -> int64_t { return (x & 0x8000) ? -int64_t(x & 0x7FFF) : int64_t(x); };
    return std::llabs(ord(a) - ord(b));
}
inline uint16_t bf16_of(double v) { return dsv4::f32_to_bf16(float(v)); }

inline std::vector<uint16_t> random_bf16(rng& r, std::size_t n, float scale) {
    std::vector<uint16_t> v(n);
    for (auto& x : v) x = dsv4::f32_to_bf16(r.normal() * scale);
    return v;
}

/// Reference stable top-k: descending, ties (and -0/+0) by lower index, NaN last.
inline std::vector<int32_t> ref_topk(const float* s, std::size_t n, std::size_t k, dsv4::topk_order order) {
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

inline std::vector<int32_t> lib_topk(const dsv4::kernel_table& t, const std::vector<float>& s, std::size_t k,
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
inline bool valid_selection(const float* s, std::size_t n_vis, const int32_t* row, std::size_t width, int64_t offset) {
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

}  // namespace indexer_test
