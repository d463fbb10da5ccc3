// tests/kernels/attention_support.hpp - golden problems and bf16 step statistics shared by the norm, RoPE and attention tests.
#pragma once

#include "test_support.hpp"

#include <dsv4/attention.hpp>
#include <dsv4/norm.hpp>
#include <dsv4/rope.hpp>
#include <oneapi/tbb/global_control.h>
#include <algorithm>
#include <cstdio>
#include <limits>
#include <numeric>

namespace attention_test {
using namespace dsv4_test;


/// Distance in bf16 steps (the bit patterns mapped onto a monotone integer line; +0 = -0).
inline int64_t bf16_steps(uint16_t a, uint16_t b) {
    auto ord = [](uint16_t x) -> int64_t { return (x & 0x8000) ? -int64_t(x & 0x7FFF) : int64_t(x); };
    return std::llabs(ord(a) - ord(b));
}

/// max and histogram of bf16 step distances between two arrays.
struct step_stats {
    int64_t max = 0;
    std::size_t n = 0, differ = 0, over1 = 0;
    void add(uint16_t got, uint16_t want) {
        const int64_t d = bf16_steps(got, want);
        max = std::max(max, d);
        ++n;
        differ += d > 0;
        over1 += d > 1;
    }
    std::string str() const {
        char b[128];
        std::snprintf(b, sizeof b, "max %lld step(s), %zu of %zu differ (%.3f%%)", (long long)max, differ, n,
                      n ? 100.0 * double(differ) / double(n) : 0.0);
        return b;
    }
};

inline step_stats compare(const std::vector<uint16_t>& got, const std::vector<uint16_t>& want) {
    REQUIRE(got.size() == want.size());
    step_stats st;
    for (std::size_t i = 0; i < got.size(); ++i) st.add(got[i], want[i]);
    return st;
}

inline bool any_nan_bf16(const std::vector<uint16_t>& v) {
    return std::any_of(v.begin(), v.end(), [](uint16_t x) { return (x & 0x7FFF) > 0x7F80; });
}

struct aligned_scratch {
    std::vector<unsigned char> mem;
    explicit aligned_scratch(std::size_t bytes) : mem(bytes + 1, 0xFF) {}  // odd-aligned on purpose below
    void* data() { return mem.data() + 1; }
    std::size_t size() const { return mem.size() - 1; }
};

/// One attention problem held in vectors (the golden layout: dense strides).
struct problem {
    std::size_t S = 0, H = 0, D = 0, N = 0, L = 0;
    std::vector<uint16_t> q, kv;
    std::vector<int32_t> idx;
    std::vector<float> sink;
    float scale = 0.0f;
    dsv4::sparse_attention_args args(std::vector<uint16_t>& out,
                                     dsv4::attention_precision p = dsv4::attention_precision::official) const {
        out.assign(S * H * D, 0xFFFF);  // NaN-poisoned: every element must be written
        dsv4::sparse_attention_args a;
        a.q = q.data();
        a.q_stride = H * D;
        a.kv = kv.data();
        a.kv_rows = N;
        a.kv_stride = D;
        a.idx = idx.data();
        a.idx_len = L;
        a.idx_stride = L;
        a.sink = sink.data();
        a.out = out.data();
        a.out_stride = H * D;
        a.tokens = S;
        a.heads = H;
        a.dim = D;
        a.scale = scale;
        a.precision = p;
        return a;
    }
};

inline problem load_problem(const golden& g) {
    problem p;
    const auto qs = g.shape("q"), ks = g.shape("kv"), is = g.shape("idx");
    REQUIRE(qs.size() == 3);
    p.S = qs[0];
    p.H = qs[1];
    p.D = qs[2];
    p.N = ks[0];
    p.L = is[1];
    p.q = g.get<uint16_t>("q");
    p.kv = g.get<uint16_t>("kv");
    p.idx = g.get<int32_t>("idx");
    p.sink = g.get<float>("sink");
    p.scale = g.get<float>("scale").at(0);
    return p;
}

inline std::vector<uint16_t> run(const problem& p, const dsv4::kernel_table& k,
                          dsv4::attention_precision prec = dsv4::attention_precision::official) {
    std::vector<uint16_t> out;
    const auto a = p.args(out, prec);
    aligned_scratch ws(dsv4::sparse_attention_scratch_bytes(p.H, p.D));
    k.sparse_attention_rows(a, 0, p.S, 0, p.H, static_cast<float*>(ws.data()));
    return out;
}

inline std::vector<uint16_t> run_public(const problem& p, dsv4::attention_precision prec = dsv4::attention_precision::official) {
    std::vector<uint16_t> out;
    const auto a = p.args(out, prec);
    aligned_scratch ws(dsv4::sparse_attention_scratch_bytes(p.H, p.D));
    dsv4::sparse_attention(a, ws.data(), ws.size());
    return out;
}

inline uint16_t rand_bf16(rng& r, float sigma) { return dsv4::f32_to_bf16(r.normal() * sigma); }

/// Random problem: distinct indices per row, a fraction masked, rows of junk never indexed.
inline problem random_problem(uint64_t seed, std::size_t S, std::size_t H, std::size_t D, std::size_t N, std::size_t L,
                       float mask_frac, float sigma = 1.0f) {
    rng r(seed);
    problem p;
    p.S = S, p.H = H, p.D = D, p.N = N, p.L = L;
    p.q.resize(S * H * D);
    for (auto& v : p.q) v = rand_bf16(r, sigma);
    p.kv.resize(N * D);
    for (auto& v : p.kv) v = rand_bf16(r, sigma);
    p.idx.resize(S * L);
    std::vector<int32_t> perm(N);
    for (std::size_t s = 0; s < S; ++s) {
        std::iota(perm.begin(), perm.end(), 0);
        for (std::size_t i = 0; i < L; ++i) std::swap(perm[i], perm[i + r.u32() % (N - i)]);
        for (std::size_t i = 0; i < L; ++i) p.idx[s * L + i] = r.uniform() < mask_frac ? -1 : perm[i];
    }
    p.sink.resize(H);
    for (auto& v : p.sink) v = r.normal() * 2.0f;
    p.scale = 1.0f / std::sqrt(float(D));
    return p;
}

}  // namespace attention_test
