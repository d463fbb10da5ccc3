// dsv4/compressor.hpp - the Compressor (spec §5): gated KV pooling of every r tokens into
// one KV entry, for prefill (start_pos 0, any S) and one-token decode steps.
//
// Per token at position p (x = the attn_norm output, bf16 [dim]):
//   K = f32(x) · wkv^T,  Z = f32(x) · wgate^T + ape[p mod r]        (f32, [c·d] each)
// Entry i pools, per channel, a softmax over its slots (kernels/compressor.hpp):
//   r = 4 ("overlap", c = 2, halves A = [0, d), B = [d, 2d)): the A halves of tokens
//     4i-4 .. 4i-1 (none for i = 0), then the B halves of tokens 4i .. 4i+3 (8 slots);
//   other r (c = 1): the r tokens ri .. ri+r-1.
// Post-processing (spec §5.4): e = rmsnorm(bf16(pooled)) (weighted, f32, one rounding);
// RoPE on the last 64 dims at position i·r (the entry's first token); then either the FP8
// simulation of dims [0, d-64) in blocks of 64 (main compressor) or, with `rotate` (the
// indexer's compressor), the Hadamard rotation of all d dims and the FP4 simulation in
// blocks of 32. Entry i is written as bf16 to row i of the caller's cache.
//
// State (compressor_state, per sequence; spec §5.5): kv / score f32 [c·r, c·d]. Overlap:
// slots 0..r-1 hold the previous complete window (full 2d rows), slots r..2r-1 the current
// one (token p in slot r + p mod r); otherwise token p sits in slot p mod r. compressor_reset
// sets kv = 0, score = -inf and the next position to 0. A prefill always starts a sequence
// and resets first; a decode step at p = 0 resets too (the official code never resets, so a
// new prompt shorter than r would pool stale slots of the previous sequence). Slots are
// only overwritten, never cleared, so the state matches the reference slot for slot.
//
// Prefill: entries 0 .. S/r - 1; then (overlap, S >= r) slots 0..r-1 <- the last complete
// window's rows and the remainder tokens into slots o + p mod r (o = r with overlap, else 0).
// Decode at p: the token goes to slot o + p mod r; when (p+1) mod r == 0, entry (p+1)/r - 1
// is pooled (RoPE position p+1-r) and, with overlap, slots r..2r-1 are copied to 0..r-1.
// A prefill of N tokens followed by decode steps gives the same bits as decoding all N+k
// tokens one by one (the projection of a token does not depend on the tokens beside it,
// and both paths pool the same slots in the same order).
//
// Threads: compressor_prefill_on / compressor_decode_on take an executor (executor.hpp):
// the projections split over output features, the pooling and post-processing over
// entries; dsv4::par::compressor_* run on oneTBB. Results do not depend on the split.
// Projections are dsv4's BF16 GEMV (f32 math, spec §1.4); every other step is bit-identical
// on every tier, so tiers differ only where the GEMV's f32 summation order does.
#pragma once

#include "executor.hpp"
#include "gemv.hpp"
#include "hadamard.hpp"
#include "norm.hpp"
#include "rope.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

namespace dsv4 {

/// One compressor's weights, read in place (checkpoint layout).
struct compressor_weights {
    bf16_matrix wkv;                 ///< [c·d, dim] bf16 (n = c·d, k = dim)
    bf16_matrix wgate;               ///< [c·d, dim] bf16
    const float* ape = nullptr;      ///< [ratio, c·d] f32, added to the gate logits by position mod ratio
    const uint16_t* norm = nullptr;  ///< [d] bf16 RMSNorm weight
};

/// Shape and post-processing of one compressor. V4-Flash: main r = 4 or 128 with d = 512,
/// indexer r = 4, d = 128, rotate = true; rope = the layer's table (compress theta + YaRN).
struct compressor_config {
    std::size_t ratio = 4;      ///< r >= 1; r == 4 means overlapping windows (c = 2), else c = 1
    std::size_t head_dim = 512; ///< d: a multiple of 64 (rotate: a power of two, 64..1024)
    bool rotate = false;        ///< Hadamard + FP4 simulation (indexer) instead of FP8 of [0, d-64)
    rope_table rope;            ///< frequencies (+ optional cos/sin rows) of the layer
    float norm_eps = 1e-6f;
    fp8_sim_revision fp8_revision = fp8_sim_revision::current;
};

/// Emitted entries: entry i is written to data + i*stride (d bf16 values). For the main
/// compressor this is the attention cache from slot 128 on; for the indexer its key cache.
struct compressor_cache {
    uint16_t* data = nullptr;
    std::size_t stride = 0;    ///< elements between rows (>= d)
    std::size_t capacity = 0;  ///< rows available (entries 0 .. capacity-1)
};

/// Per-sequence compressor state (see the file comment). Make one per sequence (and per
/// compressor) with compressor_state_init; reset it with compressor_reset or by a prefill.
struct compressor_state {
    std::size_t ratio = 0, head_dim = 0;
    std::vector<float> kv;     ///< [c·r, c·d] K values of the slots
    std::vector<float> score;  ///< [c·r, c·d] gate logits + ape of the slots (-inf: empty)
    int64_t next_pos = 0;      ///< position of the next token (tokens seen since the reset)
};

/// Tokens projected per GEMV call in a prefill: their bf16 rows (32 x dim, 256 KiB at dim
/// 4096) stay in L2 while every weight row meets all of them (bf16_gemv at M = 32 ran ~20 %
/// faster per token than at M = 16 on Zen 5).
inline constexpr std::size_t compressor_proj_tokens = 32;

inline namespace DSV4_ISA_NS {

inline bool compressor_overlap(std::size_t ratio) noexcept { return ratio == 4; }
inline std::size_t compressor_c(std::size_t ratio) noexcept { return compressor_overlap(ratio) ? 2 : 1; }
/// Tokens a prefill keeps projected at once: whole windows, at least 64 tokens.
inline std::size_t compressor_chunk_tokens(std::size_t ratio) noexcept {
    return ratio * ((64 + ratio - 1) / ratio);
}

/// kv = 0, score = -inf, next position 0: a new sequence.
inline void compressor_reset(compressor_state& s) {
    std::fill(s.kv.begin(), s.kv.end(), 0.0f);
    std::fill(s.score.begin(), s.score.end(), -std::numeric_limits<float>::infinity());
    s.next_pos = 0;
}

/// Sizes `s` for `cfg` (allocates) and resets it.
inline void compressor_state_init(compressor_state& s, const compressor_config& cfg) {
    detail::require(cfg.ratio >= 1 && cfg.head_dim >= 1, "compressor_state_init", "ratio and head_dim must be positive");
    const std::size_t c = compressor_c(cfg.ratio);
    s.ratio = cfg.ratio;
    s.head_dim = cfg.head_dim;
    s.kv.assign(c * cfg.ratio * c * cfg.head_dim, 0.0f);
    s.score.assign(s.kv.size(), 0.0f);
    compressor_reset(s);
}

/// Scratch bytes of compressor_prefill / compressor_decode (any S) for inputs of `dim`.
inline std::size_t compressor_scratch_bytes(const compressor_config& cfg, std::size_t dim) noexcept {
    const std::size_t r = cfg.ratio ? cfg.ratio : 1, cd = compressor_c(r) * cfg.head_dim, ch = compressor_chunk_tokens(r);
    auto up = [](std::size_t n) { return (n + 15) / 16 * 16; };
    (void)dim;  // the projections read the bf16 rows in place
    return (up(ch * 2 * cd) + up(ch / r * cfg.head_dim)) * sizeof(float) + 64;
}

namespace detail {

inline void check_compressor(const compressor_state& s, const compressor_weights& w, const compressor_config& cfg,
                             const char* fn) {
    const std::size_t d = cfg.head_dim, r = cfg.ratio;
    require(r >= 1, fn, "ratio must be >= 1");
    require(d >= 64 && d % 64 == 0, fn, "head_dim must be a positive multiple of 64");
    if (cfg.rotate) require((d & (d - 1)) == 0 && d <= hadamard_max_n, fn, "rotate needs a power-of-two head_dim <= 1024");
    require(cfg.rope.freqs != nullptr, fn, "rope.freqs is null");
    require(cfg.rope.n_rows == 0 || cfg.rope.rows, fn, "rope table has rows but no data");
    require(cfg.norm_eps >= 0.0f, fn, "norm_eps must be >= 0");
    const std::size_t cd = compressor_c(r) * d;
    require(w.wkv.n == cd && w.wgate.n == cd, fn, "wkv / wgate must have c*head_dim rows");
    require(w.wkv.k > 0 && w.wkv.k == w.wgate.k, fn, "wkv and wgate must have the same positive k (the model dim)");
    require(w.wkv.w && w.wgate.w && w.ape && w.norm, fn, "weight pointer is null");
    require(w.wkv.w_stride >= w.wkv.k && w.wgate.w_stride >= w.wgate.k, fn, "weight stride smaller than k");
    require(s.ratio == r && s.head_dim == d && s.kv.size() == compressor_c(r) * r * cd && s.score.size() == s.kv.size(),
            fn, "state not initialised for this config (compressor_state_init)");
}

inline void check_cache(const compressor_cache& c, std::size_t rows, std::size_t d, const char* fn) {
    if (rows == 0) return;
    require(c.data != nullptr, fn, "cache.data is null");
    require(c.stride >= d || rows <= 1, fn, "cache.stride smaller than head_dim");
    require(c.capacity >= rows, fn, "cache capacity too small for the emitted entries");
}

/// The dispatched kernels one compressor call uses, fetched once.
struct compressor_fns {
    decltype(DSV4_KERNEL(decode_bf16)) decode = DSV4_KERNEL(decode_bf16);
    decltype(DSV4_KERNEL(encode_bf16)) encode = DSV4_KERNEL(encode_bf16);
    decltype(DSV4_KERNEL(bf16_gemv_bf16_rows)) gemv = DSV4_KERNEL(bf16_gemv_bf16_rows);
    decltype(DSV4_KERNEL(compressor_pool_row)) pool = DSV4_KERNEL(compressor_pool_row);
    decltype(DSV4_KERNEL(rmsnorm_row)) norm = DSV4_KERNEL(rmsnorm_row);
    decltype(DSV4_KERNEL(rope_rows)) rope = DSV4_KERNEL(rope_rows);
    decltype(DSV4_KERNEL(hadamard_row)) hadamard = DSV4_KERNEL(hadamard_row);
    decltype(DSV4_KERNEL(fp4_act_quant_sim_row)) fp4_sim = DSV4_KERNEL(fp4_act_quant_sim_row);
    decltype(DSV4_KERNEL(act_quant_fp8_sim_row)) fp8_sim = DSV4_KERNEL(act_quant_fp8_sim_row);
};

inline float* align64(void* p) noexcept {
    return reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(p) + 63) & ~std::uintptr_t(63));
}

/// K | Z of m tokens at positions p0.. (x: bf16 rows, exact products with the BF16 weights)
/// for output features [f0, f1) of [0, 2cd): features < cd are K (wkv), the others Z
/// (wgate, + ape[p mod r]).
inline void compressor_project_range(const compressor_fns& k, const compressor_weights& w, const compressor_config& cfg,
                                     const bf16_rows& x, int64_t p0, float* kout, float* zout, std::size_t out_stride,
                                     std::size_t f0, std::size_t f1) {
    const std::size_t cd = w.wkv.n;
    if (f0 < cd) k.gemv(w.wkv, x, gemv_out{kout, nullptr, out_stride}, f0, std::min(f1, cd));
    if (f1 > cd) {
        const std::size_t z0 = std::max(f0, cd) - cd, z1 = f1 - cd;
        k.gemv(w.wgate, x, gemv_out{zout, nullptr, out_stride}, z0, z1);
        for (std::size_t t = 0; t < x.m; ++t) {
            const float* ape = w.ape + std::size_t((p0 + int64_t(t)) % int64_t(cfg.ratio)) * cd;
            float* z = zout + t * out_stride;
            for (std::size_t f = z0; f < z1; ++f) z[f] = z[f] + ape[f];
        }
    }
}

/// §5.4 on one pooled entry: bf16 cast, RMSNorm, RoPE at `pos`, FP8 or Hadamard+FP4 sim.
inline void compressor_finish_entry(const compressor_fns& k, const compressor_weights& w, const compressor_config& cfg,
                                    const float* pooled, int64_t pos, uint16_t* out) {
    const std::size_t d = cfg.head_dim;
    k.encode(pooled, out, d);
    k.norm(out, w.norm, d, cfg.norm_eps, out);
    alignas(64) float row[rope_row_floats];
    const float* cs = row;
    if (uint64_t(pos) < cfg.rope.n_rows) cs = cfg.rope.rows + std::size_t(pos) * rope_row_floats;
    else rope_cos_sin(cfg.rope.freqs, pos, row);
    k.rope(out + (d - rope_dim), 1, d, cs, false);
    if (cfg.rotate) {
        k.hadamard(out, d);
        k.fp4_sim(out, d);
    } else {
        k.fp8_sim(out, d - rope_dim, 64, cfg.fp8_revision);
    }
}


/// The state machine after token p's K|Z are in its slot: when p completes a window, pool
/// entry (p+1)/r - 1 (RoPE position p+1-r) into `cache`, shift the overlap slots, return true.
inline bool compressor_close_window(const compressor_fns& k, compressor_state& s, const compressor_weights& w,
                                    const compressor_config& cfg, int64_t p, const compressor_cache& cache,
                                    float* pooled) {
    const std::size_t r = cfg.ratio, d = cfg.head_dim, cd = compressor_c(r) * d;
    if ((std::size_t(p) + 1) % r != 0) return false;
    compressor_pool_group a, b;
    if (compressor_overlap(r)) {
        a = {s.kv.data(), s.score.data(), cd, r};                           // A halves of slots 0..r-1
        b = {s.kv.data() + r * cd + d, s.score.data() + r * cd + d, cd, r};  // B halves of slots r..2r-1
    } else {
        b = {s.kv.data(), s.score.data(), cd, r};
    }
    k.pool(a, b, d, pooled);
    if (compressor_overlap(r)) {
        std::memcpy(s.kv.data(), s.kv.data() + r * cd, r * cd * sizeof(float));
        std::memcpy(s.score.data(), s.score.data() + r * cd, r * cd * sizeof(float));
    }
    const std::size_t i = (std::size_t(p) + 1) / r - 1;
    compressor_finish_entry(k, w, cfg, pooled, p + 1 - int64_t(r), cache.data + i * cache.stride);
    return true;
}

}  // namespace detail

/// Prefill (start_pos 0) of S tokens x [S, dim] bf16 (rows x_stride apart): resets `s`,
/// writes entries 0 .. S/r - 1 to `cache`, leaves the state for decoding from position S.
/// Returns S / r. scratch: compressor_scratch_bytes(cfg, dim) bytes, any alignment.
template <class Exec>
std::size_t compressor_prefill_on(Exec&& ex, compressor_state& s, const compressor_weights& w,
                                  const compressor_config& cfg, const uint16_t* x, std::size_t x_stride, std::size_t S,
                                  const compressor_cache& cache, void* scratch, std::size_t scratch_bytes) {
    const char* fn = "compressor_prefill";
    detail::check_compressor(s, w, cfg, fn);
    const std::size_t r = cfg.ratio, d = cfg.head_dim, dim = w.wkv.k, c = compressor_c(r), cd = c * d;
    const bool overlap = compressor_overlap(r);
    detail::require(S == 0 || x, fn, "x is null");
    detail::require(S <= 1 || x_stride >= dim, fn, "x_stride smaller than the model dim");
    detail::require(S < (std::size_t(1) << 31), fn, "S too large");
    detail::check_cache(cache, S / r, d, fn);
    detail::require(scratch && scratch_bytes >= compressor_scratch_bytes(cfg, dim), fn,
                    "scratch smaller than compressor_scratch_bytes(cfg, dim)");
    compressor_reset(s);

    const detail::compressor_fns k;
    const std::size_t ch = compressor_chunk_tokens(r), pt = compressor_proj_tokens;
    float* kz = detail::align64(scratch);  // [ch][2cd]: K | Z per token
    float* pooled = kz + (ch * 2 * cd + 15) / 16 * 16;
    const std::size_t kzs = 2 * cd;
    for (std::size_t t0 = 0; t0 < S; t0 += ch) {
        const std::size_t ct = std::min(ch, S - t0), nw = ct / r;
        for (std::size_t q0 = 0; q0 < ct; q0 += pt) {
            const std::size_t m = std::min(pt, ct - q0);
            const bf16_rows xr{x + (t0 + q0) * x_stride, x_stride, m};
            float* ko = kz + q0 * kzs;
            ex(2 * cd, exec_row_grain, [&](std::size_t f0, std::size_t f1) {
                detail::compressor_project_range(k, w, cfg, xr, int64_t(t0 + q0), ko, ko + cd, kzs, f0, f1);
            });
        }
        // entries of the complete windows of this chunk
        ex(nw, 1, [&](std::size_t e0, std::size_t e1) {
            for (std::size_t wi = e0; wi < e1; ++wi) {
                const std::size_t i = t0 / r + wi;
                const float* own = kz + wi * r * kzs;
                compressor_pool_group a, b;
                if (overlap) {
                    if (wi > 0) a = {own - r * kzs, own - r * kzs + cd, kzs, r};       // A half of the previous window
                    else if (i > 0) a = {s.kv.data(), s.score.data(), cd, r};           // carried from the last chunk
                    b = {own + d, own + cd + d, kzs, r};                                // B half of the own window
                } else {
                    b = {own, own + cd, kzs, r};
                }
                float* pr = pooled + wi * d;
                k.pool(a, b, d, pr);
                detail::compressor_finish_entry(k, w, cfg, pr, int64_t(i * r), cache.data + i * cache.stride);
            }
        });
        if (overlap && nw > 0)  // slots 0..r-1 <- the last complete window (full rows)
            for (std::size_t j = 0; j < r; ++j) {
                const float* src = kz + ((nw - 1) * r + j) * kzs;
                std::memcpy(s.kv.data() + j * cd, src, cd * sizeof(float));
                std::memcpy(s.score.data() + j * cd, src + cd, cd * sizeof(float));
            }
        for (std::size_t t = nw * r; t < ct; ++t) {  // remainder (last chunk only)
            const std::size_t p = t0 + t, slot = (overlap ? r : 0) + p % r;
            std::memcpy(s.kv.data() + slot * cd, kz + t * kzs, cd * sizeof(float));
            std::memcpy(s.score.data() + slot * cd, kz + t * kzs + cd, cd * sizeof(float));
        }
    }
    s.next_pos = int64_t(S);
    return S / r;
}

/// One decode step: token x_row [dim] bf16 at position p (p == s.next_pos, or 0 to start a
/// new sequence, which resets). When it completes a window, entry (p+1)/r - 1 is written to
/// `cache` (RoPE position p+1-r) and true returned. scratch as for compressor_prefill.
template <class Exec>
bool compressor_decode_on(Exec&& ex, compressor_state& s, const compressor_weights& w, const compressor_config& cfg,
                          const uint16_t* x_row, int64_t p, const compressor_cache& cache, void* scratch,
                          std::size_t scratch_bytes) {
    const char* fn = "compressor_decode";
    detail::check_compressor(s, w, cfg, fn);
    const std::size_t r = cfg.ratio, d = cfg.head_dim, dim = w.wkv.k, c = compressor_c(r), cd = c * d;
    const bool overlap = compressor_overlap(r);
    detail::require(x_row != nullptr, fn, "x_row is null");
    detail::require(p >= 0 && p < (int64_t(1) << 31), fn, "position outside [0, 2^31)");
    detail::require(p == 0 || p == s.next_pos, fn, "position is not the state's next position (decode is sequential)");
    const bool emits = (std::size_t(p) + 1) % r == 0;
    if (emits) detail::check_cache(cache, (std::size_t(p) + 1) / r, d, fn);
    detail::require(scratch && scratch_bytes >= compressor_scratch_bytes(cfg, dim), fn,
                    "scratch smaller than compressor_scratch_bytes(cfg, dim)");
    if (p == 0) compressor_reset(s);

    const detail::compressor_fns k;
    float* pooled = detail::align64(scratch);
    const std::size_t slot = (overlap ? r : 0) + std::size_t(p) % r;
    float* kslot = s.kv.data() + slot * cd;
    float* zslot = s.score.data() + slot * cd;
    const bf16_rows xr{x_row, dim, 1};
    ex(2 * cd, exec_row_grain, [&](std::size_t f0, std::size_t f1) {
        detail::compressor_project_range(k, w, cfg, xr, p, kslot, zslot, cd, f0, f1);
    });
    s.next_pos = p + 1;
    return detail::compressor_close_window(k, s, w, cfg, p, cache, pooled);
}

/// S tokens x [S, dim] continuing the sequence at position p0 (p0 == s.next_pos, or 0 to
/// start over), each exactly as its decode step would process it: the projections of up to
/// compressor_proj_tokens tokens at once (the same per-row arithmetic as one token), then
/// the state machine token by token. Returns the entries written (those completed by
/// positions p0 .. p0+S-1). scratch as for compressor_prefill.
template <class Exec>
std::size_t compressor_append_on(Exec&& ex, compressor_state& s, const compressor_weights& w,
                                 const compressor_config& cfg, const uint16_t* x, std::size_t x_stride, std::size_t S,
                                 int64_t p0, const compressor_cache& cache, void* scratch, std::size_t scratch_bytes) {
    const char* fn = "compressor_append";
    detail::check_compressor(s, w, cfg, fn);
    const std::size_t r = cfg.ratio, d = cfg.head_dim, dim = w.wkv.k, c = compressor_c(r), cd = c * d;
    detail::require(S == 0 || x, fn, "x is null");
    detail::require(S <= 1 || x_stride >= dim, fn, "x_stride smaller than the model dim");
    detail::require(p0 >= 0 && p0 + int64_t(S) < (int64_t(1) << 31), fn, "positions outside [0, 2^31)");
    detail::require(p0 == 0 || p0 == s.next_pos, fn, "p0 is not the state's next position (tokens are sequential)");
    const std::size_t end = std::size_t(p0) + S;
    if (end / r > std::size_t(p0) / r) detail::check_cache(cache, end / r, d, fn);
    detail::require(scratch && scratch_bytes >= compressor_scratch_bytes(cfg, dim), fn,
                    "scratch smaller than compressor_scratch_bytes(cfg, dim)");
    if (p0 == 0) compressor_reset(s);

    const detail::compressor_fns k;
    const std::size_t pt = compressor_proj_tokens, kzs = 2 * cd;
    float* kz = detail::align64(scratch);  // [pt][2cd]: K | Z per token
    float* pooled = kz + (compressor_chunk_tokens(r) * kzs + 15) / 16 * 16;
    std::size_t emitted = 0;
    for (std::size_t t0 = 0; t0 < S; t0 += pt) {
        const std::size_t m = std::min(pt, S - t0);
        const bf16_rows xr{x + t0 * x_stride, x_stride, m};
        ex(2 * cd, exec_row_grain, [&](std::size_t f0, std::size_t f1) {
            detail::compressor_project_range(k, w, cfg, xr, p0 + int64_t(t0), kz, kz + cd, kzs, f0, f1);
        });
        for (std::size_t t = 0; t < m; ++t) {
            const int64_t p = p0 + int64_t(t0 + t);
            const std::size_t slot = (compressor_overlap(r) ? r : 0) + std::size_t(p) % r;
            std::memcpy(s.kv.data() + slot * cd, kz + t * kzs, cd * sizeof(float));
            std::memcpy(s.score.data() + slot * cd, kz + t * kzs + cd, cd * sizeof(float));
            s.next_pos = p + 1;
            emitted += detail::compressor_close_window(k, s, w, cfg, p, cache, pooled);
        }
    }
    return emitted;
}

/// compressor_prefill_on on the calling thread.
inline std::size_t compressor_prefill(compressor_state& s, const compressor_weights& w, const compressor_config& cfg,
                                      const uint16_t* x, std::size_t x_stride, std::size_t S,
                                      const compressor_cache& cache, void* scratch, std::size_t scratch_bytes) {
    return compressor_prefill_on(serial_executor{}, s, w, cfg, x, x_stride, S, cache, scratch, scratch_bytes);
}
/// compressor_append_on on the calling thread.
inline std::size_t compressor_append(compressor_state& s, const compressor_weights& w, const compressor_config& cfg,
                                     const uint16_t* x, std::size_t x_stride, std::size_t S, int64_t p0,
                                     const compressor_cache& cache, void* scratch, std::size_t scratch_bytes) {
    return compressor_append_on(serial_executor{}, s, w, cfg, x, x_stride, S, p0, cache, scratch, scratch_bytes);
}

/// compressor_decode_on on the calling thread.
inline bool compressor_decode(compressor_state& s, const compressor_weights& w, const compressor_config& cfg,
                              const uint16_t* x_row, int64_t p, const compressor_cache& cache, void* scratch,
                              std::size_t scratch_bytes) {
    return compressor_decode_on(serial_executor{}, s, w, cfg, x_row, p, cache, scratch, scratch_bytes);
}

namespace par {
/// compressor_prefill on oneTBB (same bits).
inline std::size_t compressor_prefill(compressor_state& s, const compressor_weights& w, const compressor_config& cfg,
                                      const uint16_t* x, std::size_t x_stride, std::size_t S,
                                      const compressor_cache& cache, void* scratch, std::size_t scratch_bytes) {
    return compressor_prefill_on(tbb_executor{}, s, w, cfg, x, x_stride, S, cache, scratch, scratch_bytes);
}
/// compressor_append on oneTBB (same bits).
inline std::size_t compressor_append(compressor_state& s, const compressor_weights& w, const compressor_config& cfg,
                                     const uint16_t* x, std::size_t x_stride, std::size_t S, int64_t p0,
                                     const compressor_cache& cache, void* scratch, std::size_t scratch_bytes) {
    return compressor_append_on(tbb_executor{}, s, w, cfg, x, x_stride, S, p0, cache, scratch, scratch_bytes);
}
/// compressor_decode on oneTBB (same bits).
inline bool compressor_decode(compressor_state& s, const compressor_weights& w, const compressor_config& cfg,
                              const uint16_t* x_row, int64_t p, const compressor_cache& cache, void* scratch,
                              std::size_t scratch_bytes) {
    return compressor_decode_on(tbb_executor{}, s, w, cfg, x_row, p, cache, scratch, scratch_bytes);
}
}  // namespace par

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
