// dsv4/model/weights.hpp - weight binding: every tensor the main model reads, as typed views
// into the mapped checkpoint (spec §1.3), bound once by name when the model is opened.
// Nothing is copied or converted; the views live as long as the checkpoint.
#pragma once

#include "../compressor.hpp"
#include "../gemv.hpp"
#include "../indexer.hpp"
#include "../io/model_config.hpp"
#include "../mhc.hpp"
#include "../moe.hpp"

#include <string>
#include <vector>

namespace dsv4 {

/// Weight views of one main layer (pointers into the mapped checkpoint).
struct layer_weights {
    uint32_t ratio = 0;
    bool hash = false;
    hc_pre_weights hc_attn, hc_ffn;
    const uint16_t *attn_norm = nullptr, *ffn_norm = nullptr, *q_norm = nullptr, *kv_norm = nullptr;
    fp8_matrix wq_a, wq_b, wkv, wo_a, wo_b;
    const float* sink = nullptr;
    compressor_weights comp;
    indexer_weights index;
    std::vector<moe_expert_weights> experts;
    moe_weights moe;
};

/// Weight views of the whole main model (no MTP block).
struct model_weights {
    std::vector<layer_weights> layers;
    const uint16_t *embed = nullptr, *norm = nullptr;  ///< [vocab, dim], [dim] bf16
    bf16_matrix head;                                  ///< [vocab, dim] bf16
    hc_head_weights hc_head;
};

inline namespace DSV4_ISA_NS {
namespace detail {

/// Typed views by tensor name; tensor_data checks dtype and alignment, at() the name.
struct weight_binder {
    const checkpoint& ck;
    std::size_t dim;  ///< hidden size: the k of every projection of the residual stream

    template <class T> const T* data(const std::string& name) const { return tensor_data<T>(ck.at(name)); }
    fp8_matrix fp8(const std::string& base, std::size_t n, std::size_t k) const {
        return fp8_matrix{data<uint8_t>(base + ".weight"), k, data<uint8_t>(base + ".scale"), (k + 127) / 128, n, k};
    }
    fp4_matrix fp4(const std::string& base, std::size_t n, std::size_t k) const {
        return fp4_matrix{data<uint8_t>(base + ".weight"), k / 2, data<uint8_t>(base + ".scale"), k / 32, n, k};
    }
    bf16_matrix bf16(const std::string& name, std::size_t n, std::size_t k) const {
        return bf16_matrix{data<uint16_t>(name), k, n, k};
    }
    compressor_weights compressor(const std::string& P, std::size_t cd) const {
        compressor_weights w;
        w.wkv = bf16(P + "wkv.weight", cd, dim);
        w.wgate = bf16(P + "wgate.weight", cd, dim);
        w.ape = data<float>(P + "ape");
        w.norm = data<uint16_t>(P + "norm.weight");
        return w;
    }
    hc_pre_weights hc_pre(const std::string& P) const {
        return hc_pre_weights{data<float>(P + "_fn"), data<float>(P + "_scale"), data<float>(P + "_base")};
    }
};

}  // namespace detail

/// Binds block `blk` (official numbering: main layers, then the MTP blocks) of `ck` as `cfg`
/// describes it: attention, compressors, indexer, experts and gate (names and shapes of
/// spec §1.3). The MTP block is a block like the others (ratio compress_ratios[blk], score
/// routing); its own extra tensors are bound by bind_mtp_weights (mtp.hpp).
inline layer_weights bind_block_weights(const model_config& c, const checkpoint& ck, uint32_t blk) {
    const std::size_t D = c.hidden_size, H = c.num_attention_heads, hd = c.head_dim, ql = c.q_lora_rank;
    const std::size_t I = c.moe_intermediate_size, E = c.n_routed_experts;
    const detail::weight_binder b{ck, D};
    layer_weights w;
    const std::string P = block_prefix(c, blk), A = P + "attn.", F = P + "ffn.";
    w.ratio = block_ratio(c, blk);
    w.hash = is_hash_block(c, blk);
    w.hc_attn = b.hc_pre(P + "hc_attn");
    w.hc_ffn = b.hc_pre(P + "hc_ffn");
    w.attn_norm = b.data<uint16_t>(P + "attn_norm.weight");
    w.ffn_norm = b.data<uint16_t>(P + "ffn_norm.weight");
    w.q_norm = b.data<uint16_t>(A + "q_norm.weight");
    w.kv_norm = b.data<uint16_t>(A + "kv_norm.weight");
    w.wq_a = b.fp8(A + "wq_a", ql, D);
    w.wq_b = b.fp8(A + "wq_b", H * hd, ql);
    w.wkv = b.fp8(A + "wkv", hd, D);
    w.wo_a = b.fp8(A + "wo_a", std::size_t(c.o_groups) * c.o_lora_rank, H * hd / c.o_groups);
    w.wo_b = b.fp8(A + "wo_b", D, std::size_t(c.o_groups) * c.o_lora_rank);
    w.sink = b.data<float>(A + "attn_sink");
    if (w.ratio) w.comp = b.compressor(A + "compressor.", compressor_c(w.ratio) * hd);
    if (w.ratio == 4) {
        w.index.wq_b = b.fp8(A + "indexer.wq_b", std::size_t(c.index_n_heads) * c.index_head_dim, ql);
        w.index.weights_proj = b.bf16(A + "indexer.weights_proj.weight", c.index_n_heads, D);
        w.index.comp = b.compressor(A + "indexer.compressor.", 2 * std::size_t(c.index_head_dim));
    }
    w.experts.resize(E);
    for (std::size_t e = 0; e < E; ++e) {
        const std::string X = F + "experts." + std::to_string(e) + ".";
        w.experts[e] = moe_expert_weights{b.fp4(X + "w1", I, D), b.fp4(X + "w3", I, D), b.fp4(X + "w2", D, I)};
    }
    w.moe.gate.gate = b.bf16(F + "gate.weight", E, D);
    if (w.hash) {
        w.moe.gate.tid2eid = b.data<int64_t>(F + "gate.tid2eid");
        w.moe.gate.vocab = c.vocab_size;
    } else {
        w.moe.gate.bias = b.data<float>(F + "gate.bias");
    }
    const std::string S = F + "shared_experts.";
    w.moe.shared = moe_shared_weights{b.fp8(S + "w1", I, D), b.fp8(S + "w3", I, D), b.fp8(S + "w2", D, I)};
    w.moe.experts = w.experts.data();  // moving a vector keeps its buffer: valid wherever w goes
    return w;
}

/// Binds every main-model tensor of `ck` as `cfg` describes it (validate_checkpoint has
/// checked names and shapes when the caller asked for it).
inline model_weights bind_model_weights(const model_config& c, const checkpoint& ck) {
    const detail::weight_binder b{ck, c.hidden_size};
    model_weights m;
    m.embed = b.data<uint16_t>("embed.weight");
    m.norm = b.data<uint16_t>("norm.weight");
    m.head = b.bf16("head.weight", c.vocab_size, c.hidden_size);
    m.hc_head = hc_head_weights{b.data<float>("hc_head_fn"), b.data<float>("hc_head_scale"), b.data<float>("hc_head_base")};
    m.layers.reserve(c.num_hidden_layers);
    for (uint32_t l = 0; l < c.num_hidden_layers; ++l) m.layers.push_back(bind_block_weights(c, ck, l));
    return m;
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
