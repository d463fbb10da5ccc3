// dsv4/model/mtp.hpp - the checkpoint's multi-token-prediction block (spec §9; official
// MTPBlock, inference/model.py M 739-767), the drafter of speculative decoding.
//
//   dsv4::mtp_block d(m);                        // binds mtp.0.* of m's checkpoint
//   dsv4::sequence_state ds = d.new_sequence();  // its own window state
//   d.run(ds, H, next_ids, n, logits);           // n positions at ds.pos (0: start over)
//
// H [n, 4, dim] are the main model's residual streams after its last layer (before hc_head:
// forward_outputs::streams) at positions ds.pos.., next_ids[t] the token that follows
// position ds.pos + t. The block: e = enorm(embed(next_ids)), h = hnorm(H) per stream,
// X = e_proj(e) (broadcast over the streams) + h_proj(h) (bf16 add), then a block of
// ratio compress_ratios[n_layers] (0: window only) with score routing over X at the same
// positions, then its own hc_head and norm and the shared head: logits of the last
// position, predicting the token two after it. Its output streams (streams_out) are the H
// of a chained draft step (the standard scheme for drafting more than one token with one
// block). Follows reference/dsv4_ref/mtp.py operation by operation.
#pragma once

#include "forward.hpp"

#include <string>

namespace dsv4 {

/// Weight views of one MTP block.
struct mtp_weights {
    layer_weights block;       ///< the block itself (attention, gate with bias, experts)
    fp8_matrix e_proj, h_proj; ///< [dim, dim]
    const uint16_t *enorm = nullptr, *hnorm = nullptr, *norm = nullptr;  ///< [dim] bf16
    hc_head_weights hc_head;
};

inline namespace DSV4_ISA_NS {

/// Whether the checkpoint holds MTP block j (the config counts it and its tensors exist).
inline bool has_mtp_block(const model_config& c, const checkpoint& ck, uint32_t j = 0) {
    return j < c.num_nextn_predict_layers && ck.has_prefix("mtp." + std::to_string(j) + ".");
}

inline mtp_weights bind_mtp_weights(const model_config& c, const checkpoint& ck, uint32_t j) {
    const std::size_t D = c.hidden_size;
    const detail::weight_binder b{ck, D};
    const uint32_t blk = c.num_hidden_layers + j;
    const std::string P = block_prefix(c, blk);
    mtp_weights w;
    w.block = bind_block_weights(c, ck, blk);
    w.e_proj = b.fp8(P + "e_proj", D, D);
    w.h_proj = b.fp8(P + "h_proj", D, D);
    w.enorm = b.data<uint16_t>(P + "enorm.weight");
    w.hnorm = b.data<uint16_t>(P + "hnorm.weight");
    w.norm = b.data<uint16_t>(P + "norm.weight");
    w.hc_head = hc_head_weights{b.data<float>(P + "hc_head_fn"), b.data<float>(P + "hc_head_scale"),
                                b.data<float>(P + "hc_head_base")};
    return w;
}

/// MTP block j of an opened model; read-only after construction (like the model), so
/// sequences of it may run concurrently. The model must outlive it.
class mtp_block {
public:
    explicit mtp_block(const model& m, uint32_t j = 0) : m_(&m) {
        const model_context& c = m.context();
        if (!has_mtp_block(c.cfg, *c.ck, j))
            throw error("dsv4::mtp_block: " + c.cfg.source + " has no MTP block " + std::to_string(j) +
                        " (num_nextn_predict_layers " + std::to_string(c.cfg.num_nextn_predict_layers) +
                        ", mtp." + std::to_string(j) + ".* tensors " +
                        (c.ck->has_prefix("mtp." + std::to_string(j) + ".") ? "present" : "absent") + ")");
        w_ = bind_mtp_weights(c.cfg, *c.ck, j);
    }

    const model& main_model() const noexcept { return *m_; }

    /// A fresh state of the block for one sequence (one layer: its window ring); its
    /// workspace grows to the largest call once.
    sequence_state new_sequence() const {
        return make_sequence_state(m_->context(), owner_tag(), std::span<const layer_weights>(&w_.block, 1));
    }

    /// The block over n positions at s.pos (s.pos == 0: starts the sequence over, the
    /// official prefill path; else appended, each as its decode step): H [n, 4, dim] bf16,
    /// next_ids [n]. Writes the f32 logits [vocab] of the last position and, if streams_out
    /// is given, the block's output streams [n, 4, dim].
    void run(sequence_state& s, const uint16_t* H, const int64_t* next_ids, std::size_t n, float* logits,
             uint16_t* streams_out = nullptr) const {
        const model_context& m = m_->context();
        const char* fn = "mtp_block::run";
        detail::require(s.owner == owner_tag() && s.layers.size() == 1, fn,
                        "sequence state was not made by this block's new_sequence()");
        detail::require(n >= 1, fn, "no positions");
        detail::require(H && next_ids && logits, fn, "null pointer");
        check_token_ids(std::span<const int64_t>(next_ids, n), m.cfg.vocab_size);
        const int64_t start = s.pos;
        if (std::size_t(start) + n > s.max_context)
            throw error("dsv4::mtp_block::run: positions beyond the sequence capacity " + std::to_string(s.max_context));
        s.pos = 0;
        try {
            forward(m, s, H, next_ids, n, start, logits, streams_out);
        } catch (...) {
            s.ws.end_call();
            throw;
        }
        s.ws.end_call();
        s.pos = start + int64_t(n);
    }

private:
    const model* m_;
    mtp_weights w_;

    /// Distinct from every model id (those count up from 1), so a main-model state is refused.
    uint64_t owner_tag() const noexcept { return ~m_->id(); }

    void forward(const model_context& m, sequence_state& s, const uint16_t* H, const int64_t* ids, std::size_t S,
                 int64_t start, float* logits, uint16_t* streams_out) const {
        forward_workspace& ws = s.ws;
        const std::size_t D = m.D, W = hc_mult * D;
        const float eps = m.eps();
        // X = e_proj(enorm(embed(ids))) broadcast + h_proj(hnorm(H)) per stream
        uint16_t* X = ws.take<uint16_t>(S * W);
        uint16_t* e = ws.take<uint16_t>(S * D);
        uint16_t* ep = ws.take<uint16_t>(S * D);
        embed_rows(m, ids, S, e, D);
        rmsnorm(e, S, D, D, w_.enorm, eps, e, D);
        fp8_linear(m, w_.e_proj, e, D, S, ep, D, ws);
        uint16_t* h = ws.take<uint16_t>(S * W);
        rmsnorm(H, S * hc_mult, D, D, w_.hnorm, eps, h, D);
        fp8_linear(m, w_.h_proj, h, D, S * hc_mult, X, D, ws);
        float* a = ws.take<float>(D);
        float* b = ws.take<float>(D);
        for (std::size_t t = 0; t < S; ++t) {
            decode_bf16(ep + t * D, a, D);
            for (std::size_t k = 0; k < hc_mult; ++k) {
                uint16_t* x = X + (t * hc_mult + k) * D;
                decode_bf16(x, b, D);
                for (std::size_t i = 0; i < D; ++i) b[i] += a[i];
                encode_bf16(b, x, D);
            }
        }

        const block_buffers bb = take_block_buffers(m, ws, S);
        attention_sub_block(m, w_.block, s.layers[0], X, S, start, bb, nullptr, ws);
        moe_sub_block(m, w_.block, X, ids, S, bb, nullptr);
        if (streams_out) std::memcpy(streams_out, X, S * W * sizeof(uint16_t));

        // its own hc_head and norm, the shared head; last position
        uint16_t* z = bb.y;
        hc_head(m.hc, w_.hc_head, X + (S - 1) * W, 1, hc_head_out{z, nullptr, nullptr}, bb.hc);
        rmsnorm(z, 1, D, D, w_.norm, eps, z, D);
        par::bf16_gemv_bf16(m.w.head, bf16_rows{z, D, 1}, gemv_out{logits, nullptr, m.cfg.vocab_size});
        if (m.opt.check_finite)
            for (std::size_t i = 0; i < m.cfg.vocab_size; ++i)
                if (!std::isfinite(logits[i]))
                    throw error("dsv4::mtp_block::run: non-finite logit " + std::to_string(i) + " at position " +
                                std::to_string(start + int64_t(S) - 1));
    }
};

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
