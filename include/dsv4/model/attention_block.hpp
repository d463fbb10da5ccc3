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

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace dsv4 {
inline namespace DSV4_ISA_NS {

namespace detail {

/// Index list and KV rows of one attention call (spec §4 steps 4-7).
struct attention_kv {
    const uint16_t* kv = nullptr;  ///< rows the index list addresses
    std::size_t rows = 0;
    std::size_t width = 0;         ///< columns of each query's list
    int32_t picks_offset = 0;      ///< row of compressed entry 0 (to report the indexer's picks)
};

/// Fresh prefill (start_pos 0), the official layout: KV = [S local rows ; S/r compressed
/// rows]; query t's list = [window: min(S, W) columns | compressed part right after].
inline attention_kv prefill_lists(const model_context& m, const layer_weights& w, layer_state& st, const uint16_t* x,
                                  const uint16_t* qr, const uint16_t* kv, std::size_t S, std::vector<int32_t>& idx,
                                  std::vector<uint16_t>& kv_buf) {
    const uint32_t r = w.ratio;
    const std::size_t W = m.window, hd = m.hd, wcols = std::min(S, W), cap = st.cache.size() / hd - W;
    uint16_t* cache = st.cache.data();
    std::size_t cw = 0;
    if (r == 4) cw = indexer_select_width(m.cfg.index_topk, S / 4);
    else if (r) cw = S / r;
    const std::size_t width = wcols + cw;
    idx.assign(S * width, -1);
    window_indices_prefill(S, idx.data(), width, W);
    if (r == 4) {
        const indexer_config icfg = m.index_cfg();
        std::vector<unsigned char> ws(indexer_prefill_scratch_bytes(icfg, m.D, m.ql, S));
        par::indexer_prefill(st.index_comp, w.index, icfg, x, m.D, qr, m.ql, S,
                             compressor_cache{st.keys.data(), m.cfg.index_head_dim, st.keys.size() / m.cfg.index_head_dim},
                             int64_t(S), idx.data() + wcols, width, ws.data(), ws.size());
    } else if (r) {
        compressed_indices_prefill(S, r, S, idx.data() + wcols, width);
    }
    std::fill(st.cache.begin(), st.cache.begin() + std::ptrdiff_t(W * hd), uint16_t(0));
    window_cache_write_prefill(cache, hd, kv, hd, S, hd, W);
    const std::size_t n = r ? S / r : 0;
    kv_buf.resize((S + n) * hd);
    std::memcpy(kv_buf.data(), kv, S * hd * sizeof(uint16_t));
    if (r) {
        const compressor_config ccfg = m.comp_cfg(r);
        std::vector<unsigned char> ws(compressor_scratch_bytes(ccfg, m.D));
        const std::size_t got = par::compressor_prefill(st.comp, w.comp, ccfg, x, m.D, S,
                                                        compressor_cache{cache + W * hd, hd, cap}, ws.data(), ws.size());
        detail::require(got == n, "model::prefill", "compressor emitted an unexpected number of entries");
        std::memcpy(kv_buf.data() + S * hd, cache + W * hd, n * hd * sizeof(uint16_t));
    }
    return attention_kv{kv_buf.data(), S + n, width, int32_t(S)};
}

/// Tokens at positions start.. (start > 0) continuing the sequence, each exactly as its own
/// decode step would see it (spec §4 decode lists, §10.3 item 12): per token in order, the
/// indexer (its compressor, then scoring and top-k) and the main compressor; the list of
/// query t is the decode list at p = start + t, its window over the ring as it was before
/// the call plus the call's own rows. KV = [W ring rows | compressed entries | S new rows];
/// one token is the plain decode step over the cache itself.
inline attention_kv append_lists(const model_context& m, const layer_weights& w, layer_state& st, const uint16_t* x,
                                 const uint16_t* qr, const uint16_t* kv, std::size_t S, int64_t start,
                                 std::vector<int32_t>& idx, std::vector<uint16_t>& kv_buf) {
    const uint32_t r = w.ratio;
    const std::size_t W = m.window, hd = m.hd, cap = st.cache.size() / hd - W;
    const int64_t last = start + int64_t(S) - 1;
    const std::size_t n_after = r ? std::size_t(last + 1) / r : 0;  // entries complete after the call
    std::size_t cw = 0;
    if (r == 4) cw = indexer_select_width(m.cfg.index_topk, n_after);
    else if (r) cw = n_after;
    const std::size_t width = W + cw;
    idx.assign(S * width, -1);
    uint16_t* cache = st.cache.data();
    const indexer_config icfg = m.index_cfg();
    const compressor_config ccfg = r ? m.comp_cfg(r) : compressor_config{};
    const std::size_t max_keys = r == 4 ? st.keys.size() / m.cfg.index_head_dim : 0;
    std::vector<unsigned char> iws(r == 4 ? indexer_decode_scratch_bytes(icfg, m.D, m.ql, max_keys) : 0);
    std::vector<unsigned char> cws(r ? compressor_scratch_bytes(ccfg, m.D) : 0);
    for (std::size_t t = 0; t < S; ++t) {
        const int64_t p = start + int64_t(t);
        int32_t* row = idx.data() + t * width;
        window_indices_decode(p, row, W);
        if (r == 4) {
            const std::size_t k = par::indexer_decode(
                st.index_comp, w.index, icfg, x + t * m.D, qr + t * m.ql, p,
                compressor_cache{st.keys.data(), m.cfg.index_head_dim, max_keys}, int64_t(W), row + W, max_keys,
                iws.data(), iws.size());
            detail::require(k == indexer_select_width(m.cfg.index_topk, std::size_t(p + 1) / 4), "model::decode",
                            "indexer returned an unexpected width");
        } else if (r) {
            compressed_indices_decode(p, r, W, row + W);
        }
        if (S == 1) window_cache_write_decode(cache, hd, kv, p, hd, W);
        if (r) par::compressor_decode(st.comp, w.comp, ccfg, x + t * m.D, p, compressor_cache{cache + W * hd, hd, cap},
                                      cws.data(), cws.size());
    }
    if (S == 1) return attention_kv{cache, W + n_after, width, int32_t(W)};

    // Window columns of positions >= start address the new rows, after the cache's rows.
    const std::size_t base = W + n_after;
    for (std::size_t t = 0; t < S; ++t) {
        int32_t* row = idx.data() + t * width;
        const int64_t p = start + int64_t(t), lo = std::max<int64_t>(0, p - int64_t(W) + 1);
        for (int64_t x_pos = std::max(lo, start); x_pos <= p; ++x_pos) {
            row[x_pos - lo] = int32_t(base + std::size_t(x_pos - start));  // decode lists are oldest first
        }
    }
    kv_buf.resize((base + S) * hd);
    std::memcpy(kv_buf.data(), cache, base * hd * sizeof(uint16_t));
    std::memcpy(kv_buf.data() + base * hd, kv, S * hd * sizeof(uint16_t));
    for (std::size_t t = S > W ? S - W : 0; t < S; ++t) window_cache_write_decode(cache, hd, kv + t * hd, start + int64_t(t), hd, W);
    return attention_kv{kv_buf.data(), base + S, width, int32_t(W)};
}

}  // namespace detail

/// Attention of one layer on x = attn_norm output [S, D] (bf16) at positions start..start+S-1:
/// a fresh prefill (start 0, the official layout), one decode step, or S tokens appended to
/// the sequence (each as its decode step would see it); writes out [S, D] (bf16). For ratio-4
/// layers, index_picks (may be null) receives the last query's indexer picks as ascending
/// entry numbers, -1 padded to index_topk.
inline void attention_block(const model_context& m, const layer_weights& w, layer_state& st, const uint16_t* x,
                            std::size_t S, int64_t start, uint16_t* out, int32_t* index_picks) {
    const uint32_t r = w.ratio;
    const std::size_t H = m.H, hd = m.hd, nope = hd - rope_dim, qw = H * hd;
    const rope_table& rope = m.rope_for(r);
    const float eps = m.eps();
    std::vector<int64_t> pos(S);
    for (std::size_t t = 0; t < S; ++t) pos[t] = start + int64_t(t);

    // q path: qr = q_norm(wq_a x); q = rope(head_norm(wq_b qr))
    std::vector<uint16_t> qr(S * m.ql), q(S * qw), kv(S * hd);
    fp8_linear(m, w.wq_a, x, m.D, S, qr.data(), m.ql);
    rmsnorm(qr.data(), S, m.ql, m.ql, w.q_norm, eps, qr.data(), m.ql);
    fp8_linear(m, w.wq_b, qr.data(), m.ql, S, q.data(), qw);
    q_head_norm(q.data(), S, H, hd, qw, eps, q.data(), qw);
    rope_apply(q.data(), S, H, hd, qw, pos.data(), rope, false);
    // kv path: rope(kv_norm(wkv x)), FP8 simulation of the nope dims in blocks of 64
    fp8_linear(m, w.wkv, x, m.D, S, kv.data(), hd);
    rmsnorm(kv.data(), S, hd, hd, w.kv_norm, eps, kv.data(), hd);
    rope_apply(kv.data(), S, 1, hd, hd, pos.data(), rope, false);
    act_quant_fp8_sim(kv.data(), S, nope, hd, 64, m.opt.kv_fp8);

    std::vector<int32_t> idx;
    std::vector<uint16_t> kv_buf;
    const detail::attention_kv L = start == 0
                                       ? detail::prefill_lists(m, w, st, x, qr.data(), kv.data(), S, idx, kv_buf)
                                       : detail::append_lists(m, w, st, x, qr.data(), kv.data(), S, start, idx, kv_buf);
    const uint16_t* kv_all = L.kv;
    const std::size_t kv_rows = L.rows, width = L.width;
    const std::size_t wcols = start == 0 ? std::min(S, m.window) : m.window;

    if (index_picks && r == 4) {  // the last query's indexer picks as ascending entry numbers
        const int32_t* row = idx.data() + (S - 1) * width + wcols;
        std::vector<int32_t> sel;
        for (std::size_t j = 0; j < width - wcols; ++j)
            if (row[j] >= 0) sel.push_back(row[j] - L.picks_offset);
        std::sort(sel.begin(), sel.end());
        std::copy(sel.begin(), sel.end(), index_picks);
    }

    // sparse attention (sink in the denominator), inverse RoPE with the query positions
    std::vector<uint16_t> o(S * qw);
    sparse_attention_args a;
    a.q = q.data();
    a.q_stride = qw;
    a.kv = kv_all;
    a.kv_rows = kv_rows;
    a.kv_stride = hd;
    a.idx = idx.data();
    a.idx_len = width;
    a.idx_stride = width;
    a.sink = w.sink;
    a.out = o.data();
    a.out_stride = qw;
    a.tokens = S;
    a.heads = H;
    a.dim = hd;
    a.scale = float(1.0 / std::sqrt(double(hd)));
    std::vector<unsigned char> ws(sparse_attention_parallel_scratch_bytes(H, hd));
    sparse_attention_parallel(a, ws.data(), ws.size());
    output_derope(o.data(), S, H, hd, qw, pos.data(), rope);

    // wo_a: grouped, bf16 activations as f32 rows; wo_b: FP8 linear
    const std::size_t G = m.cfg.o_groups, GR = G * m.cfg.o_lora_rank;
    const bool bf = m.fp8_bf16();
    std::vector<float> of(std::min<std::size_t>(S, 32) * qw);
    std::vector<uint16_t> ob(bf ? of.size() : 0);
    std::vector<int32_t> osh(bf ? of.size() / 128 : 0);
    std::vector<uint16_t> u(S * GR);
    for (std::size_t t0 = 0; t0 < S; t0 += 32) {
        const std::size_t rows = std::min<std::size_t>(32, S - t0);
        decode_bf16(o.data() + t0 * qw, of.data(), rows * qw);
        fp8_project(m, w.wo_a, G, of.data(), rows, ob.data(), osh.data(), gemv_out{nullptr, u.data() + t0 * GR, GR});
    }
    fp8_linear(m, w.wo_b, u.data(), GR, S, out, m.D);
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
