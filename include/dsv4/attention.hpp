// dsv4/attention.hpp - V4 sparse MQA attention (spec §4): index lists, the window ring
// buffer, and sparse attention with a per-head sink, single-threaded, by row range, or
// on oneTBB.
//
// Layouts (bf16 = uint16 bit patterns, strides in elements):
//   q   [tokens, heads, dim]   heads `dim` apart, tokens q_stride apart
//   kv  [kv_rows, dim]         the single KV head shared by every query head (K = V)
//   idx [tokens, idx_len]      int32 rows of kv, -1 = masked; [window | compressed]
//   out [tokens, heads, dim]   like q
// out[s,h] = sum_j e^(s_j - M) kv[idx_j] / (sum_j e^(s_j - M) + e^(sink_h - M)),
// s_j = scale * q[s,h]·kv[idx_j], M = max over the valid j (the sink is not in the max);
// online softmax over blocks of 64 index columns with the official precision points (f32
// dot products, weights rounded to bf16 before P·V, f32 accumulation, f32 divide, bf16
// out). A row with no valid index gives zeros. Every tier gives the scalar tier's bits,
// and every partition of rows and heads gives the same bits.
#pragma once

#include "codec.hpp"
#include "regions.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <cstring>

namespace dsv4 {

inline constexpr std::size_t attention_window = 128;  ///< V4 sliding window (includes the current token); the default of every `window` argument

inline namespace DSV4_ISA_NS {

// ------------------------------------------------------------------ index lists (spec §4 steps 4-5)

/// Prefill window list (start_pos 0; official get_window_topk_idxs): query t gets kv rows
/// lo_t + j, lo_t = max(0, t - window + 1), j in [0, min(S, window)), entries > t masked (-1).
/// Exactly min(S, window) columns: the compressed part of the list starts right after them
/// (padding would move the 64-column softmax blocks and change the bits). idx: [S, idx_stride].
inline void window_indices_prefill(std::size_t S, int32_t* idx, std::size_t idx_stride,
                                   std::size_t window = attention_window) {
    detail::require(window > 0, "window_indices_prefill", "window must be positive");
    const std::size_t w = std::min(S, window);
    detail::require(S == 0 || idx, "window_indices_prefill", "null pointer");
    detail::require(S <= 1 || idx_stride >= w, "window_indices_prefill", "idx_stride < min(S, window)");
    detail::require(S <= std::size_t(INT32_MAX), "window_indices_prefill", "indices overflow int32");
    for (std::size_t t = 0; t < S; ++t) {
        int32_t* row = idx + t * idx_stride;
        const std::size_t lo = t >= window - 1 ? t - (window - 1) : 0;
        for (std::size_t j = 0; j < w; ++j) row[j] = lo + j <= t ? int32_t(lo + j) : -1;
    }
}

/// Decode window list at position p: `window` ring slots oldest -> newest (slot of position x
/// is x mod window). p >= window-1: (p'+1 .. window-1) ++ (0 .. p'), p' = p mod window; else
/// 0..p then -1.
inline void window_indices_decode(int64_t p, int32_t* idx, std::size_t window = attention_window) {
    detail::require(p >= 0, "window_indices_decode", "negative position");
    detail::require(idx != nullptr, "window_indices_decode", "null pointer");
    detail::require(window > 0 && window <= std::size_t(INT32_MAX), "window_indices_decode", "window must be positive");
    const int64_t W = int64_t(window);
    if (p >= W - 1) {
        const int64_t pp = p % W;
        for (int64_t j = 0; j < W; ++j) idx[j] = int32_t((pp + 1 + j) % W);
    } else {
        for (int64_t j = 0; j < W; ++j) idx[j] = j <= p ? int32_t(j) : -1;
    }
}

/// Prefill compressed list (ratio r, no top-k): [S, S/r]; entry i -> i + offset if
/// i < (t+1)/r (its window has ended by t), else -1. Offset = S (compressed rows follow the
/// S local rows).
inline void compressed_indices_prefill(std::size_t S, std::size_t ratio, std::size_t offset, int32_t* idx,
                                       std::size_t idx_stride) {
    detail::require(ratio > 0, "compressed_indices_prefill", "ratio must be positive");
    const std::size_t n = S / ratio;
    detail::require(n == 0 || idx, "compressed_indices_prefill", "null pointer");
    detail::require(idx_stride >= n, "compressed_indices_prefill", "idx_stride < S/ratio");
    detail::require(offset + n <= std::size_t(INT32_MAX), "compressed_indices_prefill", "indices overflow int32");
    for (std::size_t t = 0; t < S; ++t)
        for (std::size_t i = 0; i < n; ++i) idx[t * idx_stride + i] = i < (t + 1) / ratio ? int32_t(i + offset) : -1;
}

/// Decode compressed list at position p: offset + i for i in [0, (p+1)/ratio) (offset = the
/// window, the cache slot of entry 0). Writes and returns the count.
inline std::size_t compressed_indices_decode(int64_t p, std::size_t ratio, std::size_t offset, int32_t* idx) {
    detail::require(p >= 0 && ratio > 0, "compressed_indices_decode", "negative position or zero ratio");
    const std::size_t n = std::size_t(p + 1) / ratio;
    detail::require(n == 0 || idx, "compressed_indices_decode", "null pointer");
    detail::require(offset + n <= std::size_t(INT32_MAX), "compressed_indices_decode", "indices overflow int32");
    for (std::size_t i = 0; i < n; ++i) idx[i] = int32_t(offset + i);
    return n;
}

/// Width of the full prefill list of a ratio-0 or ratio-128 layer: min(S, window) + S/ratio.
inline std::size_t attention_indices_prefill_width(std::size_t S, std::size_t ratio,
                                                   std::size_t window = attention_window) noexcept {
    return std::min(S, window) + (ratio ? S / ratio : 0);
}

/// The whole prefill list [window (min(S, window) columns) | compressed (offset S)] of a
/// ratio-0 or ratio-128 layer (ratio-4 layers take the indexer's top-k instead of the dense
/// compressed part), into idx [S, idx_stride >= attention_indices_prefill_width(S, ratio)].
/// Attend over kv = [S local rows ; S/ratio compressed rows].
inline void attention_indices_prefill(std::size_t S, std::size_t ratio, int32_t* idx, std::size_t idx_stride,
                                      std::size_t window = attention_window) {
    detail::require(ratio == 0 || ratio == 128, "attention_indices_prefill", "ratio must be 0 or 128");
    detail::require(idx_stride >= attention_indices_prefill_width(S, ratio, window), "attention_indices_prefill",
                    "idx_stride smaller than the list");
    window_indices_prefill(S, idx, idx_stride, window);
    if (ratio) compressed_indices_prefill(S, ratio, S, idx + std::min(S, window), idx_stride);
}

/// The whole decode list at position p of a ratio-0 or ratio-128 layer over the layer's
/// cache [window slots | compressed entries]: window ++ (window + i, i < (p+1)/ratio).
/// Writes and returns the width; idx must hold window + (p+1)/ratio entries.
inline std::size_t attention_indices_decode(int64_t p, std::size_t ratio, int32_t* idx,
                                            std::size_t window = attention_window) {
    detail::require(ratio == 0 || ratio == 128, "attention_indices_decode", "ratio must be 0 or 128");
    window_indices_decode(p, idx, window);
    return window + (ratio ? compressed_indices_decode(p, ratio, window, idx + window) : 0);
}

// ------------------------------------------------------------------ window ring buffer (spec §4 step 6)

/// Prefill (start_pos 0): writes the last min(S, window) rows of kv [S, dim] to their ring
/// slots t mod window of cache [>= window, dim]; other slots are untouched.
inline void window_cache_write_prefill(uint16_t* cache, std::size_t cache_stride, const uint16_t* kv,
                                       std::size_t kv_stride, std::size_t S, std::size_t dim,
                                       std::size_t window = attention_window) {
    detail::require(S == 0 || (cache && kv), "window_cache_write_prefill", "null pointer");
    detail::require(cache_stride >= dim && (kv_stride >= dim || S <= 1), "window_cache_write_prefill", "stride smaller than dim");
    detail::require(window > 0, "window_cache_write_prefill", "window must be positive");
    for (std::size_t t = S > window ? S - window : 0; t < S; ++t)
        std::memcpy(cache + (t % window) * cache_stride, kv + t * kv_stride, dim * sizeof(uint16_t));
}

/// Decode at position p: writes kv_row [dim] into ring slot p mod window.
inline void window_cache_write_decode(uint16_t* cache, std::size_t cache_stride, const uint16_t* kv_row, int64_t p,
                                      std::size_t dim, std::size_t window = attention_window) {
    detail::require(cache && kv_row, "window_cache_write_decode", "null pointer");
    detail::require(p >= 0 && cache_stride >= dim, "window_cache_write_decode", "negative position or stride < dim");
    detail::require(window > 0, "window_cache_write_decode", "window must be positive");
    std::memcpy(cache + std::size_t(p % int64_t(window)) * cache_stride, kv_row, dim * sizeof(uint16_t));
}

// ------------------------------------------------------------------ sparse attention (spec §4 step 8)

/// Scratch bytes one worker needs for head groups of up to `heads` heads of width `dim`.
inline std::size_t sparse_attention_scratch_bytes(std::size_t heads, std::size_t dim) noexcept {
    return kernels::attn::layout(heads, dim).total * sizeof(float);
}

namespace detail {
inline void check_attention(const sparse_attention_args& a, std::size_t s0, std::size_t s1, std::size_t h0,
                            std::size_t h1, const char* fn) {
    require(a.dim > 0 && a.dim % 64 == 0, fn, "dim must be a positive multiple of 64");
    require(a.heads > 0, fn, "heads must be positive");
    require(s0 <= s1 && s1 <= a.tokens, fn, "row range outside [0, tokens)");
    require(h0 < h1 && h1 <= a.heads, fn, "head range empty or outside [0, heads)");
    if (s0 == s1) return;
    require(a.q && a.out && a.sink && (a.idx || a.idx_len == 0) && (a.kv || a.kv_rows == 0), fn, "null pointer");
    require(a.q_stride >= a.heads * a.dim || a.tokens == 1, fn, "q_stride smaller than heads*dim");
    require(a.out_stride >= a.heads * a.dim || a.tokens == 1, fn, "out_stride smaller than heads*dim");
    require(a.kv_stride >= a.dim || a.kv_rows <= 1, fn, "kv_stride smaller than dim");
    require(a.idx_stride >= a.idx_len || a.tokens == 1, fn, "idx_stride smaller than idx_len");
    require(a.kv_rows <= std::size_t(INT32_MAX), fn, "kv_rows exceeds int32 indices");
    require(std::isfinite(a.scale), fn, "scale must be finite");
    const int32_t nrows = int32_t(a.kv_rows);
    for (std::size_t s = s0; s < s1; ++s) {
        const int32_t* r = a.idx + s * a.idx_stride;
        for (std::size_t j = 0; j < a.idx_len; ++j)
            if (r[j] < -1 || r[j] >= nrows) require(false, fn, "index outside [-1, kv_rows)");
    }
}
}  // namespace detail

/// Sparse attention for query rows [s0, s1) and heads [h0, h1) only (a caller's own
/// threading splits by rows and heads; the results do not depend on the split).
/// scratch: sparse_attention_scratch_bytes(h1 - h0, dim) bytes, any alignment.
inline void sparse_attention_rows(const sparse_attention_args& a, std::size_t s0, std::size_t s1, std::size_t h0,
                                  std::size_t h1, void* scratch, std::size_t scratch_bytes) {
    detail::check_attention(a, s0, s1, h0, h1, "sparse_attention_rows");
    detail::require(scratch && scratch_bytes >= sparse_attention_scratch_bytes(h1 - h0, a.dim), "sparse_attention_rows",
                    "scratch smaller than sparse_attention_scratch_bytes(h1 - h0, dim)");
    DSV4_KERNEL(sparse_attention_rows)(a, s0, s1, h0, h1, static_cast<float*>(scratch));
}

/// All rows and heads on the calling thread. scratch: sparse_attention_scratch_bytes(heads, dim).
inline void sparse_attention(const sparse_attention_args& a, void* scratch, std::size_t scratch_bytes) {
    sparse_attention_rows(a, 0, a.tokens, 0, a.heads, scratch, scratch_bytes);
}

/// Heads per work item of sparse_attention_parallel: all of them when there are enough
/// rows to go round, else groups of 32 (16 with many threads and few rows) so that a
/// decode step (one row) still spreads over threads. Each group keeps every gathered KV
/// row for >= 16 heads.
inline std::size_t sparse_attention_head_group(std::size_t tokens, std::size_t heads, std::size_t threads) noexcept {
    if (threads <= 1 || tokens >= 2 * threads || heads <= 16) return heads;
    const std::size_t g = tokens * ((heads + 31) / 32) >= threads ? 32 : 16;
    return std::min(heads, g);
}

/// Scratch bytes for sparse_attention_parallel in the current task arena: one worker's
/// share per thread the arena may run.
inline std::size_t sparse_attention_parallel_scratch_bytes(std::size_t heads, std::size_t dim) {
    return sparse_attention_scratch_bytes(heads, dim) * std::size_t(tbb::this_task_arena::max_concurrency());
}

/// The kernel type of sparse_attention_rows (kernel_table::sparse_attention_rows).
using sparse_attention_kernel = void (*)(const sparse_attention_args&, std::size_t, std::size_t, std::size_t,
                                         std::size_t, float*) noexcept;

/// All rows and heads on oneTBB: dynamic chunks over rows x head groups, as many threads
/// as the arena and tbb::global_control allow (one thread: a plain loop, all heads per
/// row). Identical bits to sparse_attention for any thread count. scratch:
/// sparse_attention_parallel_scratch_bytes(heads, dim), sized in the arena this runs in.
/// `kernel` picks a tier's kernel (kernels_for(t)->sparse_attention_rows); default: the
/// dispatched one.
inline void sparse_attention_parallel(const sparse_attention_args& a, void* scratch, std::size_t scratch_bytes,
                                      sparse_attention_kernel kernel = nullptr) {
    const char* fn = "sparse_attention_parallel";
    detail::check_attention(a, 0, a.tokens, 0, a.heads, fn);
    const std::size_t slots = std::size_t(tbb::this_task_arena::max_concurrency());
    const std::size_t per = sparse_attention_scratch_bytes(a.heads, a.dim);
    detail::require(scratch && scratch_bytes >= per * slots, fn,
                    "scratch smaller than sparse_attention_parallel_scratch_bytes(heads, dim)");
    if (a.tokens == 0) return;
    const auto kern = kernel ? kernel : DSV4_KERNEL(sparse_attention_rows);
    const std::size_t threads =
        std::min(slots, tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism));
    unsigned char* base = static_cast<unsigned char*>(scratch);
    if (threads <= 1) {
        kern(a, 0, a.tokens, 0, a.heads, reinterpret_cast<float*>(base));
        return;
    }
    const std::size_t hgs = sparse_attention_head_group(a.tokens, a.heads, threads);
    const std::size_t groups = (a.heads + hgs - 1) / hgs;
    if (a.tokens * groups == 1) {  // one item: no fork-join
        kern(a, 0, 1, 0, a.heads, reinterpret_cast<float*>(base));
        return;
    }
    parallel_region([&] {
        tbb::parallel_for(tbb::blocked_range<std::size_t>(0, a.tokens * groups, 1),
                          [&](const tbb::blocked_range<std::size_t>& r) {
                              // a body never spawns, so no two running bodies share a thread index
                              const std::size_t slot = std::size_t(tbb::this_task_arena::current_thread_index());
                              float* ws = reinterpret_cast<float*>(base + slot * per);
                              for (std::size_t it = r.begin(); it != r.end(); ++it) {
                                  const std::size_t s = it / groups, g = it % groups;
                                  kern(a, s, s + 1, g * hgs, std::min(a.heads, (g + 1) * hgs), ws);
                              }
                          });
    });
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
