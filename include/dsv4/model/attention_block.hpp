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

/// Attention of one layer on x = attn_norm output [S, D] (bf16), positions start..start+S-1
/// (a prefill from position 0, or one decoded token); writes out [S, D] (bf16). For ratio-4
/// layers, index_picks (may be null) receives the last query's indexer picks as ascending
/// entry numbers, -1 padded to index_topk.
inline void attention_block(const model_context& m, const layer_weights& w, layer_state& st, const uint16_t* x,
                            std::size_t S, int64_t start, uint16_t* out, int32_t* index_picks) {
    const uint32_t r = w.ratio;
    const std::size_t H = m.H, hd = m.hd, nope = hd - rope_dim, qw = H * hd;
    const rope_table& rope = m.rope_for(r);
    const float eps = m.eps();
    const bool decode = start > 0;
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

    const std::size_t cap = st.cache.size() / hd - attention_window;  // compressed entries
    uint16_t* cache = st.cache.data();
    std::vector<int32_t> idx;
    std::vector<uint16_t> kv_all_buf;
    const uint16_t* kv_all = nullptr;
    std::size_t kv_rows = 0, width = 0;
    if (!decode) {
        std::size_t cw = 0;
        if (r == 4) cw = indexer_select_width(m.cfg.index_topk, S / 4);
        else if (r) cw = S / r;
        width = attention_window + cw;
        idx.assign(S * width, -1);
        window_indices_prefill(S, idx.data(), width);
        if (r == 4) {
            const indexer_config icfg = m.index_cfg();
            std::vector<unsigned char> ws(indexer_prefill_scratch_bytes(icfg, m.D, m.ql, S));
            par::indexer_prefill(st.index_comp, w.index, icfg, x, m.D, qr.data(), m.ql, S,
                                 compressor_cache{st.keys.data(), index_head_dim, st.keys.size() / index_head_dim},
                                 int64_t(S), idx.data() + attention_window, width, ws.data(), ws.size());
        } else if (r) {
            compressed_indices_prefill(S, r, S, idx.data() + attention_window, width);
        }
        std::fill(st.cache.begin(), st.cache.begin() + std::ptrdiff_t(attention_window * hd), uint16_t(0));
        window_cache_write_prefill(cache, hd, kv.data(), hd, S, hd);
        const std::size_t n = r ? S / r : 0;
        kv_all_buf.resize((S + n) * hd);
        std::memcpy(kv_all_buf.data(), kv.data(), S * hd * sizeof(uint16_t));
        if (r) {
            const compressor_config ccfg = m.comp_cfg(r);
            std::vector<unsigned char> ws(compressor_scratch_bytes(ccfg, m.D));
            const std::size_t got = par::compressor_prefill(st.comp, w.comp, ccfg, x, m.D, S,
                                                            compressor_cache{cache + attention_window * hd, hd, cap},
                                                            ws.data(), ws.size());
            detail::require(got == n, "model::prefill", "compressor emitted an unexpected number of entries");
            std::memcpy(kv_all_buf.data() + S * hd, cache + attention_window * hd, n * hd * sizeof(uint16_t));
        }
        kv_all = kv_all_buf.data();
        kv_rows = S + n;
    } else {
        const int64_t p = start;
        const std::size_t n_after = r ? std::size_t(p + 1) / r : 0;
        std::size_t cw = 0;
        if (r == 4) cw = indexer_select_width(m.cfg.index_topk, n_after);
        else if (r) cw = n_after;
        width = attention_window + cw;
        idx.assign(width, -1);
        window_indices_decode(p, idx.data());
        if (r == 4) {
            const indexer_config icfg = m.index_cfg();
            const std::size_t max_keys = st.keys.size() / index_head_dim;
            std::vector<unsigned char> ws(indexer_decode_scratch_bytes(icfg, m.D, m.ql, max_keys));
            const std::size_t k = par::indexer_decode(
                st.index_comp, w.index, icfg, x, qr.data(), p,
                compressor_cache{st.keys.data(), index_head_dim, max_keys}, int64_t(attention_window),
                idx.data() + attention_window, max_keys, ws.data(), ws.size());
            detail::require(k == cw, "model::decode", "indexer returned an unexpected width");
        } else if (r) {
            compressed_indices_decode(p, r, attention_window, idx.data() + attention_window);
        }
        window_cache_write_decode(cache, hd, kv.data(), p, hd);
        if (r) {
            const compressor_config ccfg = m.comp_cfg(r);
            std::vector<unsigned char> ws(compressor_scratch_bytes(ccfg, m.D));
            par::compressor_decode(st.comp, w.comp, ccfg, x, p, compressor_cache{cache + attention_window * hd, hd, cap},
                                   ws.data(), ws.size());
        }
        kv_all = cache;
        kv_rows = attention_window + n_after;
    }

    if (index_picks && r == 4) {  // the last query's indexer picks as ascending entry numbers
        const int32_t* row = idx.data() + (S - 1) * width + attention_window;
        const int32_t off = decode ? int32_t(attention_window) : int32_t(S);
        std::vector<int32_t> sel;
        for (std::size_t j = 0; j < width - attention_window; ++j)
            if (row[j] >= 0) sel.push_back(row[j] - off);
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
