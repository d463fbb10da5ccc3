// dsv4/model/moe_block.hpp - the two residual sub-blocks of a layer around the mHC streams
// (spec §7): hc_pre -> norm -> {attention | MoE} -> hc_post. The attention itself is in
// attention_block.hpp; the MoE layer (gate, routed + shared experts, combine) in moe.hpp.
#pragma once

#include "../mhc.hpp"
#include "../moe.hpp"
#include "../norm.hpp"
#include "attention_block.hpp"

#include <functional>

namespace dsv4 {
inline namespace DSV4_ISA_NS {

/// Buffers of one forward call shared by the sub-blocks of every layer.
struct block_buffers {
    uint16_t* y;  ///< [S, D] the sub-block's normalised input
    uint16_t* a;  ///< [S, D] the sub-block's output
    float* post;  ///< [S, 4]
    float* comb;  ///< [S, 16]
    hc_scratch hc;
    moe_scratch moe;
    float* route_weights;  ///< [topk] (diagnostics only)
};

/// Tokens per MoE pass of a prefill / extend call: at 512 (the default prefill chunk) each
/// routed expert sees ~12 of a prompt's rows on V4-Flash (6 of 256 experts per token), enough
/// for the small-M FP4 GEMM (kernels/gemm_fp4.hpp, from 8 rows); at 64 it saw ~1.5 and ran the
/// row kernels (measured on the real-dims checkpoint: 512-token prefill 22 -> 29 tok/s at 1
/// thread). Results do not depend on it (every (token, output) is computed the same way).
inline constexpr std::size_t moe_chunk_tokens = 512;

/// The block buffers of a call of S tokens, carved from the sequence's workspace.
inline block_buffers take_block_buffers(const model_context& m, forward_workspace& ws, std::size_t S) {
    const std::size_t hc_bytes = bytes_needed(m.hc, S), mt = std::min(S, moe_chunk_tokens);
    const std::size_t moe_bytes = bytes_needed(m.moe, mt);
    return block_buffers{ws.take<uint16_t>(S * m.D),
                         ws.take<uint16_t>(S * m.D),
                         ws.take<float>(S * 4),
                         ws.take<float>(S * 16),
                         hc_scratch{ws.take<unsigned char>(hc_bytes), hc_bytes},
                         moe_scratch{ws.take<unsigned char>(moe_bytes), moe_bytes, mt},
                         ws.take<float>(m.moe.topk)};
}

/// H [S, 4, D] += attention sub-block of layer w (in place through hc_post).
inline void attention_sub_block(const model_context& m, const layer_weights& w, layer_state& st, uint16_t* Hs,
                                std::size_t S, int64_t start, const block_buffers& b, int32_t* index_picks,
                                forward_workspace& ws) {
    par::hc_pre(m.hc, w.hc_attn, Hs, S, hc_pre_out{b.y, b.post, b.comb, nullptr, nullptr}, b.hc);
    rmsnorm(b.y, S, m.D, m.D, w.attn_norm, m.eps(), b.y, m.D);
    attention_block(m, w, st, b.y, S, start, b.a, index_picks, ws);
    par::hc_post(m.hc, b.a, Hs, b.post, b.comb, S, Hs);
}

/// H [S, 4, D] += MoE sub-block of layer w; `ids` route the hash layers. moe_picks (may be
/// null) receives the last token's routed experts (ascending).
inline void moe_sub_block(const model_context& m, const layer_weights& w, uint16_t* Hs, const int64_t* ids,
                          std::size_t S, const block_buffers& b, int32_t* moe_picks) {
    const std::size_t D = m.D;
    par::hc_pre(m.hc, w.hc_ffn, Hs, S, hc_pre_out{b.y, b.post, b.comb, nullptr, nullptr}, b.hc);
    rmsnorm(b.y, S, D, D, w.ffn_norm, m.eps(), b.y, D);
    if (moe_picks) {  // routing of the last token (the same gate and routing code as the layer)
        moe_route_tokens(m.moe, w.moe.gate, b.y + (S - 1) * D, D, ids + (S - 1), 1,
                         moe_routing_out{moe_picks, b.route_weights, nullptr}, b.moe);
    }
    // routed experts streamed from disk (expert_streaming.hpp) for the main layers; the MTP
    // block's (mtp.hpp, not in m.w.layers) stay mapped
    const std::less<const layer_weights*> before;
    const layer_weights* first = m.w.layers.data();
    if (m.stream && !before(&w, first) && before(&w, first + m.w.layers.size()))
        streamed_moe_forward(*m.stream, std::size_t(&w - first), m.moe, w.moe, b.y, D, ids, S, b.a, D, b.moe,
                             &w + 1 < first + m.w.layers.size() ? &(&w + 1)->moe : nullptr);
    else
        par::moe_forward(m.moe, w.moe, b.y, D, ids, S, b.a, D, b.moe);
    par::hc_post(m.hc, b.a, Hs, b.post, b.comb, S, Hs);
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
