// dsv4/mhc.hpp - mHC hyper-connections (spec §7): hc_pre with the Sinkhorn split, hc_post,
// hc_head. Kernels: kernels/mhc.hpp; the 24 mixes use dsv4::f32_gemv.
//
// Layouts (contiguous, row-major; bf16 as uint16 bit patterns, tokens t = 0..T-1):
//   H     [T, 4, dim]  bf16   residual streams of one token, stream-major (4 x dim)
//   fn    [24, 4*dim]  f32    hc_{attn,ffn}_fn (checkpoint layout); scale [3], base [24]
//   y     [T, dim]     bf16   hc_pre / hc_head output
//   post  [T, 4]       f32
//   comb  [T, 4, 4]    f32    comb[t][j][k] = C[j][k]: row j is the softmax row (last index
//                             normalised first), hc_post sums over j (the FIRST index)
//   pre   [T, 4], mix [T, 24] f32 (optional diagnostics)
//   head: fn [4, 4*dim], scale [1], base [4]
//
// Scratch: the caller's, dsv4::bytes_needed(cfg, T) bytes (no allocation inside).
// Row t of the scratch belongs to token t, so threads working on disjoint token ranges
// may share one scratch. Every entry point takes a token range [t0, t1) (default all):
// any thread pool can split by tokens. The stages of hc_pre (hc_pre_norm, hc_pre_mix,
// hc_pre_split) are public too, so a pool can also split the 24 mix rows of one token
// (decode); hc_pre_on(ex, ...) does exactly that through an executor (executor.hpp), and
// dsv4::par::hc_pre with oneTBB.
//
// Numerics (tests/kernels/test_mhc.cpp, docs/kernels/mhc.md): f32 throughout; exp is dsv4's own (<= 2 ulp, the
// same bits on every tier); the mix dot products are f32 GEMV sums (error <= K 2^-24
// sum|v fn|, K = 4 dim); Sinkhorn sums in a fixed pairing (identical on every tier).
#pragma once

#include "executor.hpp"
#include "kernels/mhc.hpp"
#include "parallel.hpp"

namespace dsv4 {

inline constexpr std::size_t hc_mult = 4;   ///< residual streams
inline constexpr std::size_t hc_mixes = 24;  ///< (2 + hc) * hc: 4 pre, 4 post, 16 comb

struct hc_config {
    std::size_t dim = 4096;  ///< model dim d (streams are 4 x d)
    int sinkhorn_iters = 20;  ///< hc_sinkhorn_iters (>= 1)
    float hc_eps = 1e-6f;
    float norm_eps = 1e-6f;
};
/// Views of hc_attn_* / hc_ffn_* (checkpoint F32 tensors, used in place).
struct hc_pre_weights {
    const float* fn = nullptr;     ///< [24, 4*dim]
    const float* scale = nullptr;  ///< [3]
    const float* base = nullptr;   ///< [24]
};
/// Views of hc_head_* (final head and MTP).
struct hc_head_weights {
    const float* fn = nullptr;     ///< [4, 4*dim]
    const float* scale = nullptr;  ///< [1]
    const float* base = nullptr;   ///< [4]
};
struct hc_pre_out {
    uint16_t* y = nullptr;  ///< [T, dim] bf16
    float* post = nullptr;  ///< [T, 4]
    float* comb = nullptr;  ///< [T, 4, 4]
    float* pre = nullptr;   ///< [T, 4], optional
    float* mix = nullptr;   ///< [T, 24], optional (the f32 mixes before scale/base)
};
struct hc_head_out {
    uint16_t* y = nullptr;  ///< [T, dim] bf16
    float* pre = nullptr;   ///< [T, 4], optional
    float* mix = nullptr;   ///< [T, 4], optional
};
/// Caller-provided working memory: v [T, 4*dim] f32, dot [T, 24] f32, rms [T] f32; size it
/// with dsv4::bytes_needed(cfg, tokens) (64 KiB per token at dim 4096).
struct hc_scratch {
    void* data = nullptr;
    std::size_t bytes = 0;
};

inline namespace DSV4_ISA_NS {

/// Bytes of scratch hc_pre / hc_head need for T tokens.
constexpr std::size_t bytes_needed(const hc_config& c, std::size_t tokens) noexcept {
    return tokens ? tokens * (hc_mult * c.dim + hc_mixes + 1) * sizeof(float) + 64 : 0;  // + alignment slack
}

namespace detail {
struct hc_buffers {
    float* v;
    float* dot;
    float* rms;
};
inline hc_buffers hc_carve(const hc_config& c, std::size_t tokens, const hc_scratch& s, const char* fn) {
    require(s.bytes >= bytes_needed(c, tokens), fn, "scratch smaller than bytes_needed(cfg, tokens)");
    require(tokens == 0 || s.data, fn, "scratch.data is null");
    auto p = reinterpret_cast<std::uintptr_t>(s.data);
    p = (p + 63) & ~std::uintptr_t(63);
    float* base = reinterpret_cast<float*>(p);
    return {base, base + tokens * hc_mult * c.dim, base + tokens * (hc_mult * c.dim + hc_mixes)};
}
inline void hc_check(const hc_config& c, std::size_t tokens, std::size_t& t0, std::size_t& t1, const char* fn) {
    require(c.dim > 0, fn, "dim must be positive");
    require(c.sinkhorn_iters >= 1, fn, "sinkhorn_iters must be >= 1");
    if (t1 == all_rows) t1 = tokens;
    require(t0 <= t1 && t1 <= tokens, fn, "token range [t0, t1) outside [0, tokens)");
}
}  // namespace detail

/// Stage 1 of hc_pre for tokens [t0, t1): f32 copy of the streams and the RMS factor.
inline void hc_pre_norm(const hc_config& c, const uint16_t* H, std::size_t tokens, const hc_scratch& s,
                        std::size_t t0 = 0, std::size_t t1 = all_rows) {
    detail::hc_check(c, tokens, t0, t1, "hc_pre_norm");
    detail::require(tokens == 0 || H, "hc_pre_norm", "H is null");
    const auto b = detail::hc_carve(c, tokens, s, "hc_pre_norm");
    const std::size_t w = hc_mult * c.dim;
    DSV4_KERNEL(hc_norm_rows)(H + t0 * w, w, w, t1 - t0, c.norm_eps, b.v + t0 * w, w, b.rms + t0);
}

/// Stage 2 of hc_pre: mix rows [r0, r1) of the 24 (fn . v) for tokens [t0, t1), through
/// f32_gemv four tokens at a time (its M tile; the same bits as one call over all tokens).
/// Prefill is bound by the GEMV's arithmetic here (~25 GFLOP/s per core measured on Zen 5),
/// not by re-reading fn: the token blocking changed nothing measurable.
inline void hc_pre_mix(const hc_config& c, const hc_pre_weights& w, std::size_t tokens, const hc_scratch& s,
                       std::size_t r0 = 0, std::size_t r1 = all_rows, std::size_t t0 = 0, std::size_t t1 = all_rows) {
    detail::hc_check(c, tokens, t0, t1, "hc_pre_mix");
    detail::require(w.fn != nullptr, "hc_pre_mix", "fn is null");
    const auto b = detail::hc_carve(c, tokens, s, "hc_pre_mix");
    const std::size_t k = hc_mult * c.dim;
    if (r1 == all_rows) r1 = hc_mixes;
    const f32_matrix fn{w.fn, k, hc_mixes, k};
    for (std::size_t a = t0; a < t1; a += kernels::gemv_m_tile) {
        const std::size_t m = std::min(kernels::gemv_m_tile, t1 - a);
        f32_gemv(fn, f32_rows{b.v + a * k, k, m}, gemv_out{b.dot + a * hc_mixes, nullptr, hc_mixes}, r0, r1);
    }
}

/// Stage 3 of hc_pre: split + Sinkhorn + the weighted sum of the streams, tokens [t0, t1).
inline void hc_pre_split(const hc_config& c, const hc_pre_weights& w, const uint16_t* H, std::size_t tokens,
                         const hc_pre_out& out, const hc_scratch& s, std::size_t t0 = 0, std::size_t t1 = all_rows) {
    detail::hc_check(c, tokens, t0, t1, "hc_pre_split");
    detail::require(w.scale && w.base, "hc_pre_split", "scale or base is null");
    detail::require(tokens == 0 || (H && out.y && out.post && out.comb), "hc_pre_split", "H, y, post or comb is null");
    const auto b = detail::hc_carve(c, tokens, s, "hc_pre_split");
    float pre_local[4 * 16];
    for (std::size_t a = t0; a < t1; a += 16) {  // pre is optional: a small local buffer then
        const std::size_t m = std::min<std::size_t>(16, t1 - a);
        float* pre = out.pre ? out.pre + 4 * a : pre_local;
        DSV4_KERNEL(hc_split_rows)(b.dot + a * hc_mixes, b.rms + a, m, w.scale, w.base, c.sinkhorn_iters, c.hc_eps,
                                   out.mix ? out.mix + a * hc_mixes : nullptr, pre, out.post + 4 * a,
                                   out.comb + 16 * a);
        DSV4_KERNEL(hc_combine_rows)(H + a * hc_mult * c.dim, hc_mult * c.dim, c.dim, m, pre, out.y + a * c.dim, c.dim);
    }
}

/// hc_pre (spec §7) for tokens [t0, t1): y = bf16(sum_j pre_j H_j), post, comb (Sinkhorn).
inline void hc_pre(const hc_config& c, const hc_pre_weights& w, const uint16_t* H, std::size_t tokens,
                   const hc_pre_out& out, const hc_scratch& s, std::size_t t0 = 0, std::size_t t1 = all_rows) {
    detail::hc_check(c, tokens, t0, t1, "hc_pre");
    hc_pre_norm(c, H, tokens, s, t0, t1);
    hc_pre_mix(c, w, tokens, s, 0, hc_mixes, t0, t1);
    hc_pre_split(c, w, H, tokens, out, s, t0, t1);
}

/// hc_post (spec §7) for tokens [t0, t1): out[t][k] = bf16(post_k y + sum_j C[j][k] H_j).
/// y [T, dim], H and out [T, 4, dim] (out may be H itself: updated in place).
inline void hc_post(const hc_config& c, const uint16_t* y, const uint16_t* H, const float* post, const float* comb,
                    std::size_t tokens, uint16_t* out, std::size_t t0 = 0, std::size_t t1 = all_rows) {
    detail::hc_check(c, tokens, t0, t1, "hc_post");
    detail::require(tokens == 0 || (y && H && post && comb && out), "hc_post", "null pointer");
    const std::size_t w = hc_mult * c.dim;
    DSV4_KERNEL(hc_post_rows)(y + t0 * c.dim, c.dim, H + t0 * w, w, post + 4 * t0, comb + 16 * t0, c.dim, t1 - t0,
                              out + t0 * w, w);
}

/// hc_head (spec §7: sigmoid pre only, no post, no Sinkhorn) for tokens [t0, t1).
/// Uses the scratch like hc_pre (its dot rows hold the 4 head mixes).
inline void hc_head(const hc_config& c, const hc_head_weights& w, const uint16_t* H, std::size_t tokens,
                    const hc_head_out& out, const hc_scratch& s, std::size_t t0 = 0, std::size_t t1 = all_rows) {
    detail::hc_check(c, tokens, t0, t1, "hc_head");
    detail::require(w.fn && w.scale && w.base, "hc_head", "fn, scale or base is null");
    detail::require(tokens == 0 || (H && out.y), "hc_head", "H or y is null");
    hc_pre_norm(c, H, tokens, s, t0, t1);
    const auto b = detail::hc_carve(c, tokens, s, "hc_head");
    const std::size_t k = hc_mult * c.dim;
    // head mixes of token t at dot + 4 t (rows 4 apart inside the 24-wide area)
    f32_gemv(f32_matrix{w.fn, k, hc_mult, k}, f32_rows{b.v + t0 * k, k, t1 - t0},
             gemv_out{b.dot + 4 * t0, nullptr, hc_mult});
    float pre_local[4 * 16];
    for (std::size_t a = t0; a < t1; a += 16) {
        const std::size_t m = std::min<std::size_t>(16, t1 - a);
        float* pre = out.pre ? out.pre + 4 * a : pre_local;
        DSV4_KERNEL(hc_head_pre_rows)(b.dot + 4 * a, b.rms + a, m, w.scale[0], w.base, c.hc_eps,
                                      out.mix ? out.mix + 4 * a : nullptr, pre);
        DSV4_KERNEL(hc_combine_rows)(H + a * k, k, c.dim, m, pre, out.y + a * c.dim, c.dim);
    }
}

/// hc_pre with its work run through an executor (executor.hpp). Up to 7 tokens (decode):
/// norm per token, the mix dot products split by mix rows (so one token uses every thread),
/// split + combine per token. From 8 tokens on: whole hc_pre per block of 4 tokens. Same bits
/// as hc_pre whatever the executor.
template <class Exec>
void hc_pre_on(Exec&& ex, const hc_config& c, const hc_pre_weights& w, const uint16_t* H, std::size_t tokens,
               const hc_pre_out& out, const hc_scratch& s) {
    if (tokens == 0) return;
    if (tokens >= 8) {
        ex(tokens, kernels::gemv_m_tile, [&](std::size_t a, std::size_t b) { hc_pre(c, w, H, tokens, out, s, a, b); });
        return;
    }
    ex(tokens, 1, [&](std::size_t a, std::size_t b) { hc_pre_norm(c, H, tokens, s, a, b); });
    ex(hc_mixes, 6, [&](std::size_t a, std::size_t b) { hc_pre_mix(c, w, tokens, s, a, b); });
    ex(tokens, 1, [&](std::size_t a, std::size_t b) { hc_pre_split(c, w, H, tokens, out, s, a, b); });
}
template <class Exec>
void hc_post_on(Exec&& ex, const hc_config& c, const uint16_t* y, const uint16_t* H, const float* post,
                const float* comb, std::size_t tokens, uint16_t* out) {
    ex(tokens, 1, [&](std::size_t a, std::size_t b) { hc_post(c, y, H, post, comb, tokens, out, a, b); });
}
template <class Exec>
void hc_head_on(Exec&& ex, const hc_config& c, const hc_head_weights& w, const uint16_t* H, std::size_t tokens,
                const hc_head_out& out, const hc_scratch& s) {
    ex(tokens, 1, [&](std::size_t a, std::size_t b) { hc_head(c, w, H, tokens, out, s, a, b); });
}

namespace par {

inline void hc_pre(const hc_config& c, const hc_pre_weights& w, const uint16_t* H, std::size_t tokens,
                   const hc_pre_out& out, const hc_scratch& s) {
    hc_pre_on(tbb_executor{}, c, w, H, tokens, out, s);
}
inline void hc_post(const hc_config& c, const uint16_t* y, const uint16_t* H, const float* post, const float* comb,
                    std::size_t tokens, uint16_t* out) {
    hc_post_on(tbb_executor{}, c, y, H, post, comb, tokens, out);
}
inline void hc_head(const hc_config& c, const hc_head_weights& w, const uint16_t* H, std::size_t tokens,
                    const hc_head_out& out, const hc_scratch& s) {
    hc_head_on(tbb_executor{}, c, w, H, tokens, out, s);
}

}  // namespace par

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
