// dsv4/indexer.hpp - the Lightning indexer of the ratio-4 layers (spec §6): which 512
// compressed entries each query attends to, for prefill and incremental decode.
//
// Steps (each a public entry point; the composites run them in order):
//  1-2 indexer_query:   q = wq_b(qr) (FP8: act_quant(qr, 128) -> exact f32 activations ->
//                       dsv4::fp8_gemv, bf16 out) viewed [S, H, 128]; RoPE on dims 64..127 at
//                       each token's position (the layer's table); Hadamard (128); FP4
//                       simulation (blocks of 32, per head).
//  3   the indexer's own compressor (compressor.hpp: r = 4, d = 128, rotate) fills the key
//      cache [T = (start_pos + S) / 4, 128] bf16.
//  4   indexer_head_weights: w = bf16( bf16(x · weights_proj^T) * f32(128^-1/2 · H^-1/2) ) (BF16
//                       GEMV, f32 math).
//  5   indexer_scores:  score[t][u] = bf16(sum_h bf16(relu(bf16(q_h · k_u)) * w_h))
//                       (kernels/indexer.hpp; bit-identical on every tier).
//  6   indexer_select:  causal mask at prefill (entry u visible to the query at position t iff
//                       u < (t+1) / 4), k = min(topk, T) largest by dsv4::topk (descending,
//                       ties by lower index), masked picks -> -1, others u + offset (prefill:
//                       offset = S, after the S local KV rows; decode: 128, after the window).
// Layouts: qr [S, q_lora], x [S, dim] bf16; q [S, H, 128] bf16; w [S, H] bf16; keys
// [T, 128] bf16; scores [S, T] f32 (bf16 values); idx [S, k] int32 (may point into the
// attention index list at column 128, after the window part).
//
// Threads: the *_on functions take an executor (executor.hpp); dsv4::par::* run on oneTBB.
// Results never depend on the executor. Scratch: *_scratch_bytes, any alignment.
#pragma once

#include "compressor.hpp"
#include "topk.hpp"

#include <cmath>
#include <vector>

namespace dsv4 {

/// The indexer's weights, read in place.
struct indexer_weights {
    fp8_matrix wq_b;           ///< [H·128, q_lora] e4m3 with 128x128 E8M0 block scales
    bf16_matrix weights_proj;  ///< [H, dim] bf16
    compressor_weights comp;   ///< the indexer's compressor: wkv / wgate [256, dim], ape [4, 256], norm [128]
};

/// V4-Flash: 64 heads, top 512; comp = {ratio 4, head_dim 128, rotate, the layer's table}.
struct indexer_config {
    std::size_t heads = 64;
    std::size_t topk = 512;
    compressor_config comp{4, 128, true, {}, 1e-6f, fp8_sim_revision::current};
};

/// Queries per scoring pass of a prefill (the transposed key block is reused by all).
inline constexpr std::size_t indexer_prefill_queries = 8;
/// Slots of score-kernel scratch: the key range of one pass is split into at most this
/// many pieces (the work items of the executor).
inline constexpr std::size_t indexer_score_pieces = 32;

inline namespace DSV4_ISA_NS {

/// f32(head_dim^-1/2 · heads^-1/2) (double product rounded once): 1/sqrt(8192) for V4-Flash.
inline float indexer_weight_scale(std::size_t heads) noexcept {
    return float(1.0 / std::sqrt(double(index_head_dim)) / std::sqrt(double(heads)));
}

namespace detail {

inline std::size_t up16(std::size_t n) noexcept { return (n + 15) / 16 * 16; }

/// A bump allocator over the caller's scratch (64-byte aligned pieces).
struct arena {
    unsigned char* p;
    explicit arena(void* base) noexcept : p(reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(base) + 63) & ~std::uintptr_t(63))) {}
    template <class T> T* take(std::size_t n) noexcept {
        T* r = reinterpret_cast<T*>(p);
        p += (n * sizeof(T) + 63) / 64 * 64;
        return r;
    }
};
inline std::size_t bytes64(std::size_t n, std::size_t size) noexcept { return (n * size + 63) / 64 * 64; }

inline void check_indexer(const indexer_weights& w, const indexer_config& cfg, const char* fn) {
    require(cfg.heads > 0, fn, "heads must be positive");
    require(w.wq_b.n == cfg.heads * index_head_dim, fn, "wq_b must have heads*128 rows");
    require(w.wq_b.k % 128 == 0 && w.wq_b.k > 0, fn, "wq_b k (q_lora) must be a positive multiple of 128");
    require(w.wq_b.w && w.wq_b.scale && w.wq_b.w_stride >= w.wq_b.k && w.wq_b.scale_stride >= w.wq_b.k / 128, fn,
            "wq_b pointers or strides invalid");
    require(w.weights_proj.n == cfg.heads && w.weights_proj.k > 0, fn, "weights_proj must have `heads` rows");
    require(w.weights_proj.w && w.weights_proj.w_stride >= w.weights_proj.k, fn, "weights_proj pointer or stride invalid");
    require(cfg.comp.rope.freqs && (cfg.comp.rope.n_rows == 0 || cfg.comp.rope.rows), fn, "rope table invalid");
}

}  // namespace detail

// ------------------------------------------------------------------ steps 1-2: queries

/// Scratch bytes of indexer_query for m tokens.
inline std::size_t indexer_query_scratch_bytes(std::size_t q_lora, std::size_t m) noexcept {
    return detail::bytes64(m * q_lora, 1) + detail::bytes64(m * (q_lora / 128 + 1), 1) +
           detail::bytes64(m * q_lora, sizeof(float)) + 64;
}

/// q [m, H, 128] bf16 (token rows q_stride apart) from qr [m, q_lora] bf16 at positions[m].
template <class Exec>
void indexer_query_on(Exec&& ex, const fp8_matrix& wq_b, const rope_table& rope, const uint16_t* qr,
                      std::size_t qr_stride, std::size_t m, const int64_t* positions, uint16_t* q, std::size_t q_stride,
                      void* scratch, std::size_t scratch_bytes) {
    const char* fn = "indexer_query";
    detail::check_fp8(wq_b, fn);
    const std::size_t ql = wq_b.k, hd = wq_b.n;
    detail::require(hd > 0 && hd % index_head_dim == 0, fn, "wq_b rows must be a multiple of 128");
    detail::require(m == 0 || (qr && q && positions), fn, "null pointer");
    detail::require(m <= 1 || (qr_stride >= ql && q_stride >= hd), fn, "stride smaller than the row");
    detail::require(rope.freqs && (rope.n_rows == 0 || rope.rows), fn, "rope table invalid");
    detail::require(scratch && scratch_bytes >= indexer_query_scratch_bytes(ql, m), fn,
                    "scratch smaller than indexer_query_scratch_bytes(q_lora, m)");
    if (m == 0) return;
    detail::arena ar(scratch);
    uint8_t* codes = ar.take<uint8_t>(m * ql);
    uint8_t* scales = ar.take<uint8_t>(m * (ql / 128 + 1));
    float* a = ar.take<float>(m * ql);
    act_quant_fp8(qr, m, ql, qr_stride, 128, codes, ql, scales, ql / 128);
    fp8_acts_to_f32(codes, ql, scales, ql / 128, m, ql, a, ql);
    const auto gemv = DSV4_KERNEL(fp8_gemv_rows);
    const f32_rows xr{a, ql, m};
    ex(hd, exec_row_grain, [&](std::size_t r0, std::size_t r1) { gemv(wq_b, xr, gemv_out{nullptr, q, q_stride}, r0, r1); });
    const std::size_t heads = hd / index_head_dim;
    rope_apply(q, m, heads, index_head_dim, q_stride, positions, rope, false);
    const auto had = DSV4_KERNEL(hadamard_row);
    const auto fp4 = DSV4_KERNEL(fp4_act_quant_sim_row);
    for (std::size_t t = 0; t < m; ++t) {
        for (std::size_t h = 0; h < heads; ++h) had(q + t * q_stride + h * index_head_dim, index_head_dim);
        fp4(q + t * q_stride, hd);
    }
}

inline void indexer_query(const fp8_matrix& wq_b, const rope_table& rope, const uint16_t* qr, std::size_t qr_stride,
                          std::size_t m, const int64_t* positions, uint16_t* q, std::size_t q_stride, void* scratch,
                          std::size_t scratch_bytes) {
    indexer_query_on(serial_executor{}, wq_b, rope, qr, qr_stride, m, positions, q, q_stride, scratch, scratch_bytes);
}

// ------------------------------------------------------------------ step 4: head weights

inline std::size_t indexer_head_weights_scratch_bytes(std::size_t dim, std::size_t heads, std::size_t m) noexcept {
    (void)dim;  // x is read in place (bf16_gemv_bf16)
    return detail::bytes64(m * heads, sizeof(float)) + 64;
}

/// w [m, H] bf16 (rows w_stride apart) from x [m, dim] bf16.
template <class Exec>
void indexer_head_weights_on(Exec&& ex, const bf16_matrix& weights_proj, const uint16_t* x, std::size_t x_stride,
                        std::size_t m, uint16_t* w, std::size_t w_stride, void* scratch, std::size_t scratch_bytes) {
    const char* fn = "indexer_head_weights";
    const std::size_t dim = weights_proj.k, H = weights_proj.n;
    detail::require(H > 0 && dim > 0 && weights_proj.w && weights_proj.w_stride >= dim, fn, "weights_proj invalid");
    detail::require(m == 0 || (x && w), fn, "null pointer");
    detail::require(m <= 1 || (x_stride >= dim && w_stride >= H), fn, "stride smaller than the row");
    detail::require(scratch && scratch_bytes >= indexer_head_weights_scratch_bytes(dim, H, m), fn,
                    "scratch smaller than indexer_head_weights_scratch_bytes(dim, heads, m)");
    if (m == 0) return;
    detail::arena ar(scratch);
    float* y = ar.take<float>(m * H);
    const auto gemv = DSV4_KERNEL(bf16_gemv_bf16_rows);  // exact products from the bf16 x
    const bf16_rows xr{x, x_stride, m};
    ex(H, 8, [&](std::size_t r0, std::size_t r1) { gemv(weights_proj, xr, gemv_out{y, nullptr, H}, r0, r1); });
    const float scale = indexer_weight_scale(H);
    for (std::size_t t = 0; t < m; ++t)
        for (std::size_t h = 0; h < H; ++h) w[t * w_stride + h] = f32_to_bf16(round_bf16(y[t * H + h]) * scale);
}

inline void indexer_head_weights(const bf16_matrix& weights_proj, const uint16_t* x, std::size_t x_stride, std::size_t m,
                            uint16_t* w, std::size_t w_stride, void* scratch, std::size_t scratch_bytes) {
    indexer_head_weights_on(serial_executor{}, weights_proj, x, x_stride, m, w, w_stride, scratch, scratch_bytes);
}

// ------------------------------------------------------------------ step 5: scores

/// Scratch bytes of indexer_scores for m queries of `heads` heads.
inline std::size_t indexer_scores_scratch_bytes(std::size_t heads, std::size_t m) noexcept {
    return detail::bytes64(m * heads * index_head_dim, sizeof(float)) + detail::bytes64(m * heads, sizeof(float)) +
           detail::bytes64(m, sizeof(std::size_t)) +
           indexer_score_pieces * detail::bytes64(indexer_score_scratch_floats, sizeof(float)) + 64;
}

/// scores[t][u] (f32 rows scores_stride apart) of m queries q [m, H, 128] / w [m, H] (bf16)
/// against keys [T, 128] bf16. causal: query t (position first_pos + t) scores only
/// u < min(T, (first_pos + t + 1) / 4); the rest of its row is left untouched.
template <class Exec>
void indexer_scores_on(Exec&& ex, const uint16_t* q, std::size_t q_stride, const uint16_t* w, std::size_t w_stride,
                       std::size_t m, std::size_t heads, const uint16_t* keys, std::size_t keys_stride, std::size_t T,
                       bool causal, int64_t first_pos, float* scores, std::size_t scores_stride, void* scratch,
                       std::size_t scratch_bytes) {
    const char* fn = "indexer_scores";
    detail::require(heads > 0, fn, "heads must be positive");
    detail::require(m == 0 || (q && w && scores), fn, "null pointer");
    detail::require(T == 0 || keys, fn, "keys is null");
    detail::require(m <= 1 || (q_stride >= heads * index_head_dim && w_stride >= heads && scores_stride >= T), fn,
                    "stride smaller than the row");
    detail::require(T <= 1 || keys_stride >= index_head_dim, fn, "keys_stride smaller than 128");
    detail::require(!causal || first_pos >= 0, fn, "negative first_pos");
    detail::require(scratch && scratch_bytes >= indexer_scores_scratch_bytes(heads, m), fn,
                    "scratch smaller than indexer_scores_scratch_bytes(heads, m)");
    if (m == 0 || T == 0) return;
    detail::arena ar(scratch);
    const std::size_t hd = heads * index_head_dim;
    float* qf = ar.take<float>(m * hd);
    float* wf = ar.take<float>(m * heads);
    std::size_t* lim = ar.take<std::size_t>(m);
    float* ws = ar.take<float>(indexer_score_pieces * detail::up16(indexer_score_scratch_floats));
    const auto dec = DSV4_KERNEL(decode_bf16);
    for (std::size_t t = 0; t < m; ++t) {
        dec(q + t * q_stride, qf + t * hd, hd);
        dec(w + t * w_stride, wf + t * heads, heads);
        lim[t] = causal ? std::min<std::size_t>(T, std::size_t(first_pos + int64_t(t) + 1) / 4) : T;
    }
    indexer_score_args a;
    a.q = qf;
    a.q_stride = hd;
    a.w = wf;
    a.w_stride = heads;
    a.limit = lim;
    a.queries = m;
    a.heads = heads;
    a.k = keys;
    a.k_stride = keys_stride;
    a.keys = T;
    a.scores = scores;
    a.scores_stride = scores_stride;
    const std::size_t reach = *std::max_element(lim, lim + m);
    // pieces of whole 48-key blocks (every tier's block divides 48)
    const std::size_t blocks = (reach + 47) / 48;
    const std::size_t pieces = std::min(indexer_score_pieces, blocks);
    const auto kern = DSV4_KERNEL(indexer_scores_rows);
    ex(pieces, 1, [&](std::size_t p0, std::size_t p1) {
        float* slot = ws + p0 * detail::up16(indexer_score_scratch_floats);  // p0 is unique per call
        const std::size_t u0 = blocks * p0 / pieces * 48, u1 = std::min(reach, blocks * p1 / pieces * 48);
        kern(a, u0, u1, slot);
    });
}

inline void indexer_scores(const uint16_t* q, std::size_t q_stride, const uint16_t* w, std::size_t w_stride,
                           std::size_t m, std::size_t heads, const uint16_t* keys, std::size_t keys_stride, std::size_t T,
                           bool causal, int64_t first_pos, float* scores, std::size_t scores_stride, void* scratch,
                           std::size_t scratch_bytes) {
    indexer_scores_on(serial_executor{}, q, q_stride, w, w_stride, m, heads, keys, keys_stride, T, causal, first_pos,
                      scores, scores_stride, scratch, scratch_bytes);
}

// ------------------------------------------------------------------ step 6: selection

/// Width of the selection: min(topk, T).
inline std::size_t indexer_select_width(std::size_t topk, std::size_t T) noexcept { return std::min(topk, T); }

/// Scratch bytes of indexer_select over T keys.
inline std::size_t indexer_select_scratch_bytes(std::size_t topk, std::size_t T) noexcept {
    return topk_scratch_bytes(T, indexer_select_width(topk, T));
}

/// idx [m, min(topk, T)] int32 (rows idx_stride apart) from scores [m, T]: query t (position
/// first_pos + t) sees n = causal ? min(T, (first_pos+t+1)/4) : T keys; its row holds the top
/// min(k, n) of them in topk_order::score as u + offset, then -1 up to the width.
inline void indexer_select(const float* scores, std::size_t scores_stride, std::size_t m, std::size_t T, bool causal,
                           int64_t first_pos, std::size_t topk, int64_t offset, int32_t* idx, std::size_t idx_stride,
                           void* scratch, std::size_t scratch_bytes) {
    const char* fn = "indexer_select";
    const std::size_t k = indexer_select_width(topk, T);
    detail::require(m == 0 || k == 0 || (scores && idx), fn, "null pointer");
    detail::require(m <= 1 || (scores_stride >= T && idx_stride >= k), fn, "stride smaller than the row");
    detail::require(!causal || first_pos >= 0, fn, "negative first_pos");
    detail::require(offset >= 0 && offset + int64_t(T) <= int64_t(INT32_MAX), fn, "offset + T outside int32");
    detail::require(T < (std::size_t(1) << 31), fn, "T must be below 2^31");
    detail::require(scratch && scratch_bytes >= indexer_select_scratch_bytes(topk, T), fn,
                    "scratch smaller than indexer_select_scratch_bytes(topk, T)");
    if (k == 0) return;
    const auto fnk = DSV4_KERNEL(topk_row);
    uint32_t* ws = detail::align64_u32(scratch);
    for (std::size_t t = 0; t < m; ++t) {
        const std::size_t n = causal ? std::min<std::size_t>(T, std::size_t(first_pos + int64_t(t) + 1) / 4) : T;
        const std::size_t kk = std::min(k, n);
        int32_t* row = idx + t * idx_stride;
        fnk(scores + t * scores_stride, n, kk, topk_order::score, row, ws);
        for (std::size_t j = 0; j < kk; ++j) row[j] = int32_t(row[j] + offset);
        for (std::size_t j = kk; j < k; ++j) row[j] = -1;
    }
}

// ------------------------------------------------------------------ composites

/// Scratch bytes of indexer_append for S tokens at positions p0.. of `dim` (x) and `q_lora`
/// (qr); indexer_prefill is p0 = 0.
inline std::size_t indexer_append_scratch_bytes(const indexer_config& cfg, std::size_t dim, std::size_t q_lora,
                                                std::size_t S, std::size_t p0 = 0) noexcept {
    const std::size_t Q = indexer_prefill_queries, H = cfg.heads, T = (p0 + S) / 4, k = indexer_select_width(cfg.topk, T);
    const std::size_t step = std::max({compressor_scratch_bytes(cfg.comp, dim), indexer_query_scratch_bytes(q_lora, Q),
                                       indexer_head_weights_scratch_bytes(dim, H, Q), indexer_scores_scratch_bytes(H, Q)});
    return step + detail::bytes64(Q * H * index_head_dim, 2) + detail::bytes64(Q * H, 2) + detail::bytes64(Q, 8) +
           detail::bytes64(Q * T, sizeof(float)) + Q * topk_scratch_bytes(T, k) + 128;
}
/// Scratch bytes of indexer_prefill for S tokens.
inline std::size_t indexer_prefill_scratch_bytes(const indexer_config& cfg, std::size_t dim, std::size_t q_lora,
                                                 std::size_t S) noexcept {
    return indexer_append_scratch_bytes(cfg, dim, q_lora, S, 0);
}

namespace detail {

/// Steps 1-6 for S tokens at positions p0 .. p0+S-1; the compressor step runs first (every
/// key the tokens complete), then each query scores the keys visible at its position
/// ((p+1)/4, causal) and takes its top min(topk, (p+1)/4); rows are -1 padded to the
/// call's width min(topk, (p0+S)/4), which is returned. `fresh`: a prefill (the
/// compressor's batched prefill from position 0); else an append at st.next_pos, each token
/// exactly as its decode step (compressor_append).
template <class Exec>
std::size_t indexer_run(Exec&& ex, compressor_state& st, const indexer_weights& w, const indexer_config& cfg,
                        const uint16_t* x, std::size_t x_stride, const uint16_t* qr, std::size_t qr_stride,
                        std::size_t S, int64_t p0, bool fresh, const compressor_cache& keys, int64_t offset,
                        int32_t* idx, std::size_t idx_stride, void* scratch, std::size_t scratch_bytes,
                        const char* fn) {
    check_indexer(w, cfg, fn);
    const std::size_t dim = w.weights_proj.k, ql = w.wq_b.k, H = cfg.heads, T = (std::size_t(p0) + S) / 4;
    const std::size_t k = indexer_select_width(cfg.topk, T), Q = indexer_prefill_queries;
    require(cfg.comp.ratio == 4 && cfg.comp.head_dim == index_head_dim && cfg.comp.rotate, fn,
            "the indexer's compressor is ratio 4, head_dim 128, rotate");
    require(w.comp.wkv.k == dim, fn, "compressor and weights_proj disagree on the model dim");
    require(S == 0 || (x && qr && (idx || k == 0)), fn, "null pointer");
    require(S <= 1 || (x_stride >= dim && qr_stride >= ql && idx_stride >= k), fn, "stride smaller than the row");
    require(scratch && scratch_bytes >= indexer_append_scratch_bytes(cfg, dim, ql, S, std::size_t(p0)), fn,
            "scratch smaller than indexer_append_scratch_bytes(cfg, dim, q_lora, S, p0)");
    require(offset >= 0 && offset + int64_t(T) <= int64_t(INT32_MAX), fn, "offset + T outside int32");
    arena ar(scratch);
    const std::size_t step_bytes =
        std::max({compressor_scratch_bytes(cfg.comp, dim), indexer_query_scratch_bytes(ql, Q),
                  indexer_head_weights_scratch_bytes(dim, H, Q), indexer_scores_scratch_bytes(H, Q)});
    unsigned char* step = ar.take<unsigned char>(step_bytes);
    uint16_t* q = ar.take<uint16_t>(Q * H * index_head_dim);
    uint16_t* wt = ar.take<uint16_t>(Q * H);
    int64_t* pos = ar.take<int64_t>(Q);
    float* sc = ar.take<float>(Q * T);
    const std::size_t tks = topk_scratch_bytes(T, k);
    unsigned char* tkw = ar.take<unsigned char>(Q * tks);

    if (fresh) compressor_prefill_on(ex, st, w.comp, cfg.comp, x, x_stride, S, keys, step, step_bytes);
    else compressor_append_on(ex, st, w.comp, cfg.comp, x, x_stride, S, p0, keys, step, step_bytes);
    if (k == 0) return 0;
    const auto fnk = DSV4_KERNEL(topk_row);
    for (std::size_t t0 = 0; t0 < S; t0 += Q) {
        const std::size_t m = std::min(Q, S - t0);
        const int64_t first = p0 + int64_t(t0);
        for (std::size_t j = 0; j < m; ++j) pos[j] = first + int64_t(j);
        indexer_query_on(ex, w.wq_b, cfg.comp.rope, qr + t0 * qr_stride, qr_stride, m, pos, q, H * index_head_dim, step,
                         step_bytes);
        indexer_head_weights_on(ex, w.weights_proj, x + t0 * x_stride, x_stride, m, wt, H, step, step_bytes);
        indexer_scores_on(ex, q, H * index_head_dim, wt, H, m, H, keys.data, keys.stride, T, true, first, sc, T, step,
                          step_bytes);
        ex(m, 1, [&](std::size_t j0, std::size_t j1) {
            uint32_t* ws = align64_u32(tkw + j0 * tks);  // j0 is unique per call
            for (std::size_t j = j0; j < j1; ++j) {
                const std::size_t n = std::min(T, std::size_t(first + int64_t(j) + 1) / 4), kk = std::min(k, n);
                int32_t* row = idx + (t0 + j) * idx_stride;
                if (kk) fnk(sc + j * T, n, kk, topk_order::score, row, ws);
                for (std::size_t i = 0; i < kk; ++i) row[i] = int32_t(row[i] + offset);
                for (std::size_t i = kk; i < k; ++i) row[i] = -1;
            }
        });
    }
    return k;
}

}  // namespace detail

/// Steps 1-6 for a prefill of S tokens (positions 0..S-1): x [S, dim] (attn_norm output) and
/// qr [S, q_lora] (q_norm output) bf16. Resets `st` (the indexer compressor's state), writes
/// the T = S/4 keys to `keys` and idx [S, min(topk, T)]. offset: S (the local KV rows come
/// first). Returns the width min(topk, T).
template <class Exec>
std::size_t indexer_prefill_on(Exec&& ex, compressor_state& st, const indexer_weights& w, const indexer_config& cfg,
                               const uint16_t* x, std::size_t x_stride, const uint16_t* qr, std::size_t qr_stride,
                               std::size_t S, const compressor_cache& keys, int64_t offset, int32_t* idx,
                               std::size_t idx_stride, void* scratch, std::size_t scratch_bytes) {
    detail::require(S < (std::size_t(1) << 31), "indexer_prefill", "S too large");
    return detail::indexer_run(ex, st, w, cfg, x, x_stride, qr, qr_stride, S, 0, true, keys, offset, idx, idx_stride,
                               scratch, scratch_bytes, "indexer_prefill");
}

/// S tokens continuing the sequence at position p0 = st.next_pos (after a prefill, appends
/// or decode steps): row t of idx is exactly indexer_decode's list at position p0 + t (its
/// top min(topk, (p+1)/4) among the keys visible then, + offset), -1 padded to the returned
/// width min(topk, (p0+S)/4). The keys completed by the tokens go to `keys`.
template <class Exec>
std::size_t indexer_append_on(Exec&& ex, compressor_state& st, const indexer_weights& w, const indexer_config& cfg,
                              const uint16_t* x, std::size_t x_stride, const uint16_t* qr, std::size_t qr_stride,
                              std::size_t S, int64_t p0, const compressor_cache& keys, int64_t offset, int32_t* idx,
                              std::size_t idx_stride, void* scratch, std::size_t scratch_bytes) {
    detail::require(p0 >= 0 && p0 + int64_t(S) < (int64_t(1) << 31), "indexer_append", "positions outside [0, 2^31)");
    return detail::indexer_run(ex, st, w, cfg, x, x_stride, qr, qr_stride, S, p0, false, keys, offset, idx, idx_stride,
                               scratch, scratch_bytes, "indexer_append");
}

/// Scratch bytes of indexer_decode with up to max_keys keys (context / 4).
inline std::size_t indexer_decode_scratch_bytes(const indexer_config& cfg, std::size_t dim, std::size_t q_lora,
                                                std::size_t max_keys) noexcept {
    const std::size_t H = cfg.heads, k = indexer_select_width(cfg.topk, max_keys);
    const std::size_t step = std::max({compressor_scratch_bytes(cfg.comp, dim), indexer_query_scratch_bytes(q_lora, 1),
                                       indexer_head_weights_scratch_bytes(dim, H, 1), indexer_scores_scratch_bytes(H, 1),
                                       topk_scratch_bytes(max_keys, k)});
    return step + detail::bytes64(H * index_head_dim, 2) + detail::bytes64(H, 2) + detail::bytes64(max_keys, sizeof(float)) +
           128;
}

/// Steps 1-6 for one decode token at position p (p == st.next_pos, or 0): x_row [dim], qr_row
/// [q_lora] bf16. The compressor step runs first (an entry completed by this token is
/// visible to it); T = (p+1)/4 keys are scored; idx[0 .. min(topk, T)) = u + offset
/// (offset 128: the window slots come first). max_keys bounds T (as sized for the scratch).
/// Returns the width.
template <class Exec>
std::size_t indexer_decode_on(Exec&& ex, compressor_state& st, const indexer_weights& w, const indexer_config& cfg,
                              const uint16_t* x_row, const uint16_t* qr_row, int64_t p, const compressor_cache& keys,
                              int64_t offset, int32_t* idx, std::size_t max_keys, void* scratch,
                              std::size_t scratch_bytes) {
    const char* fn = "indexer_decode";
    detail::check_indexer(w, cfg, fn);
    const std::size_t dim = w.weights_proj.k, ql = w.wq_b.k, H = cfg.heads;
    detail::require(cfg.comp.ratio == 4 && cfg.comp.head_dim == index_head_dim && cfg.comp.rotate, fn,
                    "the indexer's compressor is ratio 4, head_dim 128, rotate");
    detail::require(p >= 0, fn, "negative position");
    const std::size_t T = std::size_t(p + 1) / 4, k = indexer_select_width(cfg.topk, T);
    detail::require(T <= max_keys, fn, "(p+1)/4 keys exceed max_keys");
    detail::require(x_row && qr_row && (idx || k == 0), fn, "null pointer");
    detail::require(T <= keys.capacity, fn, "key cache capacity below (p+1)/4");
    detail::require(scratch && scratch_bytes >= indexer_decode_scratch_bytes(cfg, dim, ql, max_keys), fn,
                    "scratch smaller than indexer_decode_scratch_bytes(cfg, dim, q_lora, max_keys)");
    detail::require(offset >= 0 && offset + int64_t(T) <= int64_t(INT32_MAX), fn, "offset + T outside int32");
    detail::arena ar(scratch);
    const std::size_t step_bytes =
        std::max({compressor_scratch_bytes(cfg.comp, dim), indexer_query_scratch_bytes(ql, 1),
                  indexer_head_weights_scratch_bytes(dim, H, 1), indexer_scores_scratch_bytes(H, 1), topk_scratch_bytes(max_keys, indexer_select_width(cfg.topk, max_keys))});
    unsigned char* step = ar.take<unsigned char>(step_bytes);
    uint16_t* q = ar.take<uint16_t>(H * index_head_dim);
    uint16_t* wt = ar.take<uint16_t>(H);
    float* sc = ar.take<float>(std::max<std::size_t>(max_keys, 1));

    indexer_query_on(ex, w.wq_b, cfg.comp.rope, qr_row, ql, 1, &p, q, H * index_head_dim, step, step_bytes);
    compressor_decode_on(ex, st, w.comp, cfg.comp, x_row, p, keys, step, step_bytes);
    if (k == 0) return 0;
    indexer_head_weights_on(ex, w.weights_proj, x_row, dim, 1, wt, H, step, step_bytes);
    indexer_scores_on(ex, q, H * index_head_dim, wt, H, 1, H, keys.data, keys.stride, T, false, p, sc, T, step,
                      step_bytes);
    DSV4_KERNEL(topk_row)(sc, T, k, topk_order::score, idx, detail::align64_u32(step));
    for (std::size_t i = 0; i < k; ++i) idx[i] = int32_t(idx[i] + offset);
    return k;
}

inline std::size_t indexer_prefill(compressor_state& st, const indexer_weights& w, const indexer_config& cfg,
                                   const uint16_t* x, std::size_t x_stride, const uint16_t* qr, std::size_t qr_stride,
                                   std::size_t S, const compressor_cache& keys, int64_t offset, int32_t* idx,
                                   std::size_t idx_stride, void* scratch, std::size_t scratch_bytes) {
    return indexer_prefill_on(serial_executor{}, st, w, cfg, x, x_stride, qr, qr_stride, S, keys, offset, idx,
                              idx_stride, scratch, scratch_bytes);
}
inline std::size_t indexer_append(compressor_state& st, const indexer_weights& w, const indexer_config& cfg,
                                  const uint16_t* x, std::size_t x_stride, const uint16_t* qr, std::size_t qr_stride,
                                  std::size_t S, int64_t p0, const compressor_cache& keys, int64_t offset, int32_t* idx,
                                  std::size_t idx_stride, void* scratch, std::size_t scratch_bytes) {
    return indexer_append_on(serial_executor{}, st, w, cfg, x, x_stride, qr, qr_stride, S, p0, keys, offset, idx,
                             idx_stride, scratch, scratch_bytes);
}
inline std::size_t indexer_decode(compressor_state& st, const indexer_weights& w, const indexer_config& cfg,
                                  const uint16_t* x_row, const uint16_t* qr_row, int64_t p, const compressor_cache& keys,
                                  int64_t offset, int32_t* idx, std::size_t max_keys, void* scratch,
                                  std::size_t scratch_bytes) {
    return indexer_decode_on(serial_executor{}, st, w, cfg, x_row, qr_row, p, keys, offset, idx, max_keys, scratch,
                             scratch_bytes);
}

namespace par {
inline std::size_t indexer_prefill(compressor_state& st, const indexer_weights& w, const indexer_config& cfg,
                                   const uint16_t* x, std::size_t x_stride, const uint16_t* qr, std::size_t qr_stride,
                                   std::size_t S, const compressor_cache& keys, int64_t offset, int32_t* idx,
                                   std::size_t idx_stride, void* scratch, std::size_t scratch_bytes) {
    return indexer_prefill_on(tbb_executor{}, st, w, cfg, x, x_stride, qr, qr_stride, S, keys, offset, idx, idx_stride,
                              scratch, scratch_bytes);
}
inline std::size_t indexer_append(compressor_state& st, const indexer_weights& w, const indexer_config& cfg,
                                  const uint16_t* x, std::size_t x_stride, const uint16_t* qr, std::size_t qr_stride,
                                  std::size_t S, int64_t p0, const compressor_cache& keys, int64_t offset, int32_t* idx,
                                  std::size_t idx_stride, void* scratch, std::size_t scratch_bytes) {
    return indexer_append_on(tbb_executor{}, st, w, cfg, x, x_stride, qr, qr_stride, S, p0, keys, offset, idx,
                             idx_stride, scratch, scratch_bytes);
}
inline std::size_t indexer_decode(compressor_state& st, const indexer_weights& w, const indexer_config& cfg,
                                  const uint16_t* x_row, const uint16_t* qr_row, int64_t p, const compressor_cache& keys,
                                  int64_t offset, int32_t* idx, std::size_t max_keys, void* scratch,
                                  std::size_t scratch_bytes) {
    return indexer_decode_on(tbb_executor{}, st, w, cfg, x_row, qr_row, p, keys, offset, idx, max_keys, scratch,
                             scratch_bytes);
}
inline void indexer_scores(const uint16_t* q, std::size_t q_stride, const uint16_t* w, std::size_t w_stride,
                           std::size_t m, std::size_t heads, const uint16_t* keys, std::size_t keys_stride, std::size_t T,
                           bool causal, int64_t first_pos, float* scores, std::size_t scores_stride, void* scratch,
                           std::size_t scratch_bytes) {
    indexer_scores_on(tbb_executor{}, q, q_stride, w, w_stride, m, heads, keys, keys_stride, T, causal, first_pos, scores,
                      scores_stride, scratch, scratch_bytes);
}
}  // namespace par

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
