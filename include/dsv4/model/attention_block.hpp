// dsv4/model/attention_block.hpp - one layer's attention (spec §4): q and kv projections,
// the index list (window ring + compressed entries: dense for ratio 128, the indexer's top-k
// for ratio 4), the caches and compressors of the sequence, sparse attention with sink,
// inverse RoPE and the grouped output projection.
#pragma once

#include "../compressor.hpp"
#include "../indexer.hpp"
#include "../norm.hpp"
#include "context.hpp"
#include "sequence.hpp"
#include "workspace.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace dsv4 {
inline namespace DSV4_ISA_NS {

/// Sizes of everything one attention call takes from the workspace (S tokens of a layer of
/// ratio r at position start): the block and model::workspace_bytes read the same plan.
struct attention_plan {
    std::size_t S = 0, width = 0, kv_buf_rows = 0;  ///< list width; rows of the KV copy (0: the cache itself)
    std::size_t index_scratch = 0, comp_scratch = 0, attn_scratch = 0;  ///< bytes
    std::size_t wo_rows = 0;  ///< tokens per wo_a call (<= 128: its f32 and bf16 copies of o, 25 MiB)

    /// Workspace bytes, every buffer counted (an upper bound of the stack's peak).
    std::size_t bytes(const model_context& m) const {
        const std::size_t qw = m.H * m.hd, GR = std::size_t(m.cfg.o_groups) * m.cfg.o_lora_rank;
        const std::size_t K = std::max({m.D, m.ql, GR});
        auto b = [](std::size_t n, std::size_t size) { return forward_workspace::round_up(n * size); };
        return b(S, 8) + b(S * m.ql, 2) + b(S * qw, 2) + b(S * m.hd, 2)                   // pos, qr, q, kv
               + b(S * width, 4) + b(kv_buf_rows * m.hd, 2) + b(index_scratch, 1) + b(comp_scratch, 1)
               + b(S * qw, 2) + b(attn_scratch, 1)                                          // o, attention
               + b(wo_rows * qw, 4) + b(wo_rows * qw, 2) + b(wo_rows * qw / 128, 4) + b(S * GR, 2)  // wo_a
               + fp8_linear_bytes(m, K, S);
    }
};

inline attention_plan plan_attention(const model_context& m, uint32_t r, std::size_t S, int64_t start) {
    attention_plan P;
    P.S = S;
    const std::size_t W = m.window;
    const indexer_config icfg = m.index_cfg();
    if (start == 0) {  // fresh prefill: [S local rows ; S/r entries], list min(S, W) + compressed
        const std::size_t cw = r == 4 ? indexer_select_width(m.cfg.index_topk, S / 4) : (r ? S / r : 0);
        P.width = std::min(S, W) + cw;
        P.kv_buf_rows = S + (r ? S / r : 0);
        if (r == 4) P.index_scratch = indexer_prefill_scratch_bytes(icfg, m.D, m.ql, S);
    } else {  // append / decode: decode lists; a KV copy [ring ; entries ; new rows] when S > 1
        const std::size_t n_after = r ? std::size_t(start + int64_t(S)) / r : 0;
        P.width = W + (r == 4 ? indexer_select_width(m.cfg.index_topk, n_after) : n_after);
        P.kv_buf_rows = S > 1 ? W + n_after + S : 0;
        if (r == 4)
            P.index_scratch = S == 1 ? indexer_decode_scratch_bytes(icfg, m.D, m.ql, m.max_ctx / 4)
                                     : indexer_append_scratch_bytes(icfg, m.D, m.ql, S, std::size_t(start));
    }
    if (r) P.comp_scratch = compressor_scratch_bytes(m.comp_cfg(r), m.D);
    P.attn_scratch = sparse_attention_parallel_scratch_bytes(m.H, m.hd);
    P.wo_rows = std::min<std::size_t>(S, 128);
    return P;
}

namespace detail {

/// Index list and KV rows of one attention call (spec §4 steps 4-7).
struct attention_kv {
    const uint16_t* kv = nullptr;  ///< rows the index list addresses
    const int32_t* idx = nullptr;  ///< [S, width]
    std::size_t rows = 0;
    std::size_t width = 0;         ///< columns of each query's list
    int32_t picks_offset = 0;      ///< row of compressed entry 0 (to report the indexer's picks)
};

/// Fresh prefill (start_pos 0), the official layout: KV = [S local rows ; S/r compressed
/// rows]; query t's list = [window: min(S, W) columns | compressed part right after].
inline attention_kv prefill_lists(const model_context& m, const layer_weights& w, layer_state& st, const uint16_t* x,
                                  const uint16_t* qr, const uint16_t* kv, const attention_plan& P, forward_workspace& ws) {
    const uint32_t r = w.ratio;
    const std::size_t S = P.S, W = m.window, hd = m.hd, wcols = std::min(S, W), cap = st.cache.size() / hd - W;
    uint16_t* cache = st.cache.data();
    const std::size_t width = P.width;
    int32_t* idx = ws.take<int32_t>(S * width);
    std::fill(idx, idx + S * width, -1);
    window_indices_prefill(S, idx, width, W);
    uint16_t* kv_buf = ws.take<uint16_t>(P.kv_buf_rows * hd);
    const std::size_t mk = ws.mark();
    if (r == 4) {
        unsigned char* sc = ws.take<unsigned char>(P.index_scratch);
        par::indexer_prefill(st.index_comp, w.index, m.index_cfg(), x, m.D, qr, m.ql, S,
                             compressor_cache{st.keys.data(), m.cfg.index_head_dim, st.keys.size() / m.cfg.index_head_dim},
                             int64_t(S), idx + wcols, width, sc, P.index_scratch);
    } else if (r) {
        compressed_indices_prefill(S, r, S, idx + wcols, width);
    }
    std::fill(st.cache.begin(), st.cache.begin() + std::ptrdiff_t(W * hd), uint16_t(0));
    window_cache_write_prefill(cache, hd, kv, hd, S, hd, W);
    const std::size_t n = r ? S / r : 0;
    std::memcpy(kv_buf, kv, S * hd * sizeof(uint16_t));
    if (r) {
        unsigned char* sc = ws.take<unsigned char>(P.comp_scratch);
        const std::size_t got = par::compressor_prefill(st.comp, w.comp, m.comp_cfg(r), x, m.D, S,
                                                        compressor_cache{cache + W * hd, hd, cap}, sc, P.comp_scratch);
        detail::require(got == n, "model::prefill", "compressor emitted an unexpected number of entries");
        std::memcpy(kv_buf + S * hd, cache + W * hd, n * hd * sizeof(uint16_t));
    }
    ws.release(mk);
    return attention_kv{kv_buf, idx, S + n, width, int32_t(S)};
}

/// Tokens at positions start.. (start > 0) continuing the sequence, each exactly as its own
/// decode step would see it (spec §4 decode lists, §10.3 item 12): the indexer and the
/// compressors append the tokens in order (indexer_append, compressor_append: batched
/// projections, per-token state machines, causal top-k); the list of query t is the decode
/// list at p = start + t, its window over the ring as it was before the call plus the call's
/// own rows. KV = [W ring rows | compressed entries | S new rows]; one token is the plain
/// decode step over the cache itself.
inline attention_kv append_lists(const model_context& m, const layer_weights& w, layer_state& st, const uint16_t* x,
                                 const uint16_t* qr, const uint16_t* kv, const attention_plan& P, int64_t start,
                                 forward_workspace& ws) {
    const uint32_t r = w.ratio;
    const std::size_t S = P.S, W = m.window, hd = m.hd, cap = st.cache.size() / hd - W;
    const std::size_t n_after = r ? std::size_t(start + int64_t(S)) / r : 0;  // entries complete after the call
    const std::size_t width = P.width;
    int32_t* idx = ws.take<int32_t>(S * width);
    std::fill(idx, idx + S * width, -1);
    uint16_t* kv_buf = ws.take<uint16_t>(P.kv_buf_rows * hd);
    uint16_t* cache = st.cache.data();
    const indexer_config icfg = m.index_cfg();
    const compressor_config ccfg = r ? m.comp_cfg(r) : compressor_config{};
    const std::size_t max_keys = r == 4 ? st.keys.size() / m.cfg.index_head_dim : 0;
    const compressor_cache keys{st.keys.data(), m.cfg.index_head_dim, max_keys}, entries{cache + W * hd, hd, cap};
    const std::size_t mk = ws.mark();
    unsigned char* iws = ws.take<unsigned char>(P.index_scratch);
    unsigned char* cws = ws.take<unsigned char>(P.comp_scratch);
    // decode lists per query; the indexer (its compressor first) before the main compressor
    for (std::size_t t = 0; t < S; ++t) {
        const int64_t p = start + int64_t(t);
        window_indices_decode(p, idx + t * width, W);
        if (r && r != 4) compressed_indices_decode(p, r, W, idx + t * width + W);
    }
    if (S == 1) {
        if (r == 4) {
            const std::size_t k = par::indexer_decode(st.index_comp, w.index, icfg, x, qr, start, keys, int64_t(W),
                                                      idx + W, max_keys, iws, P.index_scratch);
            detail::require(k == width - W, "model::decode", "indexer returned an unexpected width");
        }
        window_cache_write_decode(cache, hd, kv, start, hd, W);
        if (r) par::compressor_decode(st.comp, w.comp, ccfg, x, start, entries, cws, P.comp_scratch);
    } else {
        if (r == 4) {
            const std::size_t k = par::indexer_append(st.index_comp, w.index, icfg, x, m.D, qr, m.ql, S, start, keys,
                                                      int64_t(W), idx + W, width, iws, P.index_scratch);
            detail::require(k == width - W, "model::extend", "indexer returned an unexpected width");
        }
        if (r) par::compressor_append(st.comp, w.comp, ccfg, x, m.D, S, start, entries, cws, P.comp_scratch);
    }
    ws.release(mk);
    if (S == 1) return attention_kv{cache, idx, W + n_after, width, int32_t(W)};

    // Window columns of positions >= start address the new rows, after the cache's rows.
    const std::size_t base = W + n_after;
    for (std::size_t t = 0; t < S; ++t) {
        int32_t* row = idx + t * width;
        const int64_t p = start + int64_t(t), lo = std::max<int64_t>(0, p - int64_t(W) + 1);
        for (int64_t x_pos = std::max(lo, start); x_pos <= p; ++x_pos) {
            row[x_pos - lo] = int32_t(base + std::size_t(x_pos - start));  // decode lists are oldest first
        }
    }
    std::memcpy(kv_buf, cache, base * hd * sizeof(uint16_t));
    std::memcpy(kv_buf + base * hd, kv, S * hd * sizeof(uint16_t));
    for (std::size_t t = S > W ? S - W : 0; t < S; ++t) window_cache_write_decode(cache, hd, kv + t * hd, start + int64_t(t), hd, W);
    return attention_kv{kv_buf, idx, base + S, width, int32_t(W)};
}

}  // namespace detail

/// Attention of one layer on x = attn_norm output [S, D] (bf16) at positions start..start+S-1:
/// a fresh prefill (start 0, the official layout), one decode step, or S tokens appended to
/// the sequence (each as its decode step would see it); writes out [S, D] (bf16). For ratio-4
/// layers, index_picks (may be null) receives the last query's indexer picks as ascending
/// entry numbers (the caller -1 fills it). Buffers come from ws (released on return).
inline void attention_block(const model_context& m, const layer_weights& w, layer_state& st, const uint16_t* x,
                            std::size_t S, int64_t start, uint16_t* out, int32_t* index_picks, forward_workspace& ws) {
    const std::size_t mk = ws.mark();
    const uint32_t r = w.ratio;
    const std::size_t H = m.H, hd = m.hd, nope = hd - rope_dim, qw = H * hd;
    const rope_table& rope = m.rope_for(r);
    const float eps = m.eps();
    const attention_plan P = plan_attention(m, r, S, start);
    int64_t* pos = ws.take<int64_t>(S);
    for (std::size_t t = 0; t < S; ++t) pos[t] = start + int64_t(t);

    // q path: qr = q_norm(wq_a x); q = rope(head_norm(wq_b qr))
    uint16_t *qr = ws.take<uint16_t>(S * m.ql), *q = ws.take<uint16_t>(S * qw), *kv = ws.take<uint16_t>(S * hd);
    // wq_a and wkv read the same x: one quantisation, one parallel region
    fp8_linear_pair(m, w.wq_a, qr, m.ql, w.wkv, kv, hd, x, m.D, S, ws);
    rmsnorm(qr, S, m.ql, m.ql, w.q_norm, eps, qr, m.ql);
    fp8_linear(m, w.wq_b, qr, m.ql, S, q, qw, ws);
    q_head_norm(q, S, H, hd, qw, eps, q, qw);
    rope_apply(q, S, H, hd, qw, pos, rope, false);
    // kv path: rope(kv_norm(wkv x)) (wkv x above), FP8 simulation of the nope dims in blocks of 64
    rmsnorm(kv, S, hd, hd, w.kv_norm, eps, kv, hd);
    rope_apply(kv, S, 1, hd, hd, pos, rope, false);
    act_quant_fp8_sim(kv, S, nope, hd, 64, m.opt.kv_fp8);

    const detail::attention_kv L = start == 0 ? detail::prefill_lists(m, w, st, x, qr, kv, P, ws)
                                              : detail::append_lists(m, w, st, x, qr, kv, P, start, ws);
    const std::size_t width = L.width, wcols = start == 0 ? std::min(S, m.window) : m.window;

    if (index_picks && r == 4) {  // the last query's indexer picks as ascending entry numbers
        const int32_t* row = L.idx + (S - 1) * width + wcols;
        std::size_t n = 0;
        for (std::size_t j = 0; j < width - wcols; ++j)
            if (row[j] >= 0) index_picks[n++] = row[j] - L.picks_offset;
        std::sort(index_picks, index_picks + n);
    }

    // sparse attention (sink in the denominator), inverse RoPE with the query positions
    uint16_t* o = ws.take<uint16_t>(S * qw);
    sparse_attention_args a;
    a.q = q;
    a.q_stride = qw;
    a.kv = L.kv;
    a.kv_rows = L.rows;
    a.kv_stride = hd;
    a.idx = L.idx;
    a.idx_len = width;
    a.idx_stride = width;
    a.sink = w.sink;
    a.out = o;
    a.out_stride = qw;
    a.tokens = S;
    a.heads = H;
    a.dim = hd;
    a.scale = float(1.0 / std::sqrt(double(hd)));
    sparse_attention_parallel(a, ws.take<unsigned char>(P.attn_scratch), P.attn_scratch);
    output_derope(o, S, H, hd, qw, pos, rope);

    // wo_a: grouped, bf16 activations as f32 rows; wo_b: FP8 linear
    const std::size_t G = m.cfg.o_groups, GR = G * m.cfg.o_lora_rank;
    float* of = ws.take<float>(P.wo_rows * qw);
    uint16_t* ob = ws.take<uint16_t>(P.wo_rows * qw);
    int32_t* osh = ws.take<int32_t>(P.wo_rows * qw / 128);
    uint16_t* u = ws.take<uint16_t>(S * GR);
    for (std::size_t t0 = 0; t0 < S; t0 += P.wo_rows) {
        const std::size_t rows = std::min<std::size_t>(P.wo_rows, S - t0);
        par::for_rows(rows, act_prep_grain, [&](std::size_t r0, std::size_t r1) {
            decode_bf16(o + (t0 + r0) * qw, of + r0 * qw, (r1 - r0) * qw);
        });
        fp8_project(m, w.wo_a, G, of, rows, ob, osh, gemv_out{nullptr, u + t0 * GR, GR});
    }
    fp8_linear(m, w.wo_b, u, GR, S, out, m.D, ws);
    ws.release(mk);
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
