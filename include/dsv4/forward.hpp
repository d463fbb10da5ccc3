// dsv4/forward.hpp - the whole DeepSeek-V4-Flash main model (spec §4-§9, no MTP), batch 1,
// composed from the tested kernels of this library; weights read in place from the
// memory-mapped official checkpoint (sharded safetensors + index + config.json).
//
//   dsv4::model m = dsv4::model::open("DIR");           // maps, validates against config.json
//   dsv4::sequence_state s = m.new_sequence();          // per-sequence state (caches, compressors)
//   std::vector<float> logits(m.vocab());
//   m.prefill(s, ids.data(), ids.size(), logits.data());  // start_pos 0, any length >= 1
//   m.decode(s, next_id, logits.data());                 // position s.pos, one token
//
// Composition (reference/dsv4_ref/forward.py, which this follows operation by operation):
// H = repeat4(embed(ids)); per layer: hc_pre -> attn_norm -> attention -> hc_post, hc_pre ->
// ffn_norm -> MoE -> hc_post; then hc_head, the final norm and the f32 head for the last
// position only. Activations are bf16 between kernels at exactly the reference's rounding
// points (forward.py "Precision" and choice 4). FP8 linears: act_quant (block 128) ->
// exact f32 -> fp8_gemv (reference mode); wo_a: bf16 activations as f32 rows through
// fp8_grouped_gemv; head: bf16_gemv with f32 logits. With forward_options::numerics fast on
// avx512_bf16, the FP8 linears and wo_a take the same activations as bf16 blocks
// (to_bf16_blocks, exact) through fp8_gemv_bf16: the same products (on avx512_bf16 less the
// subnormal weight codes), summed in another order; the routed experts go int8 (moe.hpp).
//
// Per-sequence state (sequence_state, spec §5.5): per layer the attention cache
// [128 window slots | compressed entries] (bf16, head_dim wide), the main compressor's state,
// and for ratio-4 layers the indexer's key cache and compressor state; plus the position.
// Nothing per sequence lives in the model, which is read-only after open: any number of
// sequences may be kept, and calls on different sequence_states may run concurrently on
// different threads (same bits as alone: test_forward.cpp's two-threads case, also run
// under ThreadSanitizer); one sequence_state takes one call at a time. prefill always
// starts the sequence over (REF semantics, start_pos 0; no chunked prefill); decode
// continues it.
//
// Threads: every stage runs on oneTBB (par:: entry points) in the current task arena; the
// results do not depend on the thread count. Errors: dsv4::error naming the file, tensor or
// argument. The forward allocates its working buffers per call (never inside a kernel).
//
// Non-finite values (forward_options::check_finite, on by default): the residual streams
// are checked after every layer and the logits at the end; a NaN or Inf (a corrupt weight,
// an overflow) is a dsv4::error naming the call, the layer, the position and the token
// instead of a garbage token. The check reads S x 4 x dim bf16 values per layer (0.1 % of a
// decode step's bytes). After any error from prefill or decode the sequence must be started
// over with prefill (decode refuses it: its position is reset to 0).
#pragma once

#include "attention.hpp"
#include "codec.hpp"
#include "compressor.hpp"
#include "gemv.hpp"
#include "indexer.hpp"
#include "mhc.hpp"
#include "model_config.hpp"
#include "moe.hpp"
#include "norm.hpp"
#include "parallel.hpp"
#include "rope.hpp"
#include "safetensors.hpp"

#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>
#include <vector>

namespace dsv4 {

/// The two official revisions of the numerics switches (spec §10.1).
enum class model_revision : int {
    current = 0,  ///< KV FP8 simulation = e4m3 round trip; shared expert clamped
    initial = 1,  ///< KV FP8 simulation = identity; shared expert unclamped
};

/// Options of model::open. The two numerics switches default to the current revision.
struct forward_options {
    fp8_sim_revision kv_fp8 = fp8_sim_revision::current;  ///< window KV + main compressor FP8 simulation
    bool shared_clamp = true;                             ///< clamp the shared expert's SwiGLU
    moe_numerics numerics = moe_numerics::reference;      ///< reference, or fast: int8 routed experts, bf16-block FP8 (avx512_bf16)
    std::size_t max_context = 0;  ///< positions a sequence may reach; 0: min(max_position_embeddings, 65536)
    std::size_t rope_table_rows = 8192;  ///< precomputed cos/sin rows per table (beyond: on the fly)
    bool validate = true;         ///< check every tensor against the config (validate_checkpoint)
    bool check_finite = true;     ///< NaN/Inf in a layer's residual streams or the logits is a dsv4::error

    static forward_options for_revision(model_revision r) {
        forward_options o;
        o.kv_fp8 = r == model_revision::current ? fp8_sim_revision::current : fp8_sim_revision::initial;
        o.shared_clamp = r == model_revision::current;
        return o;
    }
};

/// Optional per-call diagnostics of the last position (as forward.py's diagnostics).
struct forward_diagnostics {
    std::vector<uint16_t> layer_out;   ///< [L, 4, dim] bf16 residual streams after each block
    std::vector<uint16_t> final_norm;  ///< [dim] bf16 final-norm output
    std::vector<int32_t> moe_idx;      ///< [L, topk] routed experts of the last token (ascending)
    std::vector<int32_t> index_idx;    ///< [L, index_topk] indexer picks (entry numbers ascending, -1 padded)
};

/// One layer's state of one sequence (spec §5.5).
struct layer_state {
    uint32_t ratio = 0;
    std::vector<uint16_t> cache;  ///< [128 + max_context/ratio, head_dim]: window ring, then entries
    compressor_state comp;        ///< main compressor (ratio != 0)
    std::vector<uint16_t> keys;   ///< [max_context/4, index_head_dim] indexer keys (ratio 4)
    compressor_state index_comp;  ///< indexer compressor (ratio 4)
};

/// Everything one sequence keeps between calls. Make it with model::new_sequence().
struct sequence_state {
    std::vector<layer_state> layers;
    int64_t pos = 0;              ///< tokens in the sequence so far (the next position)
    std::size_t max_context = 0;  ///< capacity in positions
    uint64_t owner = 0;           ///< id of the model that made it (survives moving the model)
};

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

inline namespace DSV4_ISA_NS {

class model {
public:
    model() = default;
    model(model&&) noexcept = default;
    model& operator=(model&&) noexcept = default;
    model(const model&) = delete;
    model& operator=(const model&) = delete;

    /// Opens a checkpoint directory (config.json + model.safetensors.index.json and shards,
    /// or one model.safetensors) by mmap; nothing is converted or read in full.
    static model open(const std::string& dir, const forward_options& opt = {}) {
        static std::atomic<uint64_t> next_id{1};
        model m;
        m.id_ = next_id.fetch_add(1);
        m.opt_ = opt;
        m.cfg_ = load_model_config(dir);
        m.ck_ = std::make_unique<checkpoint>(checkpoint::open(dir));
        if (opt.validate) validate_checkpoint(m.cfg_, *m.ck_);
        m.build();
        return m;
    }

    const model_config& config() const noexcept { return cfg_; }
    const checkpoint& weights() const noexcept { return *ck_; }
    const forward_options& options() const noexcept { return opt_; }
    std::size_t vocab() const noexcept { return cfg_.vocab_size; }
    std::size_t max_context() const noexcept { return max_ctx_; }

    /// A fresh per-sequence state sized for max_context() positions.
    sequence_state new_sequence() const {
        sequence_state s;
        s.max_context = max_ctx_;
        s.owner = id_;
        s.layers.resize(layers_.size());
        for (std::size_t l = 0; l < layers_.size(); ++l) {
            layer_state& ls = s.layers[l];
            const uint32_t r = layers_[l].ratio;
            ls.ratio = r;
            ls.cache.assign((attention_window + (r ? max_ctx_ / r : 0)) * hd_, 0);
            if (r) compressor_state_init(ls.comp, comp_cfg(r));
            if (r == 4) {
                ls.keys.assign(max_ctx_ / 4 * cfg_.index_head_dim, 0);
                compressor_state_init(ls.index_comp, index_cfg().comp);
            }
        }
        return s;
    }

    /// Starts the sequence over with ids[0..n) at positions 0..n-1 and writes the f32 logits
    /// [vocab] of the last position.
    void prefill(sequence_state& s, const int64_t* ids, std::size_t n, float* logits,
                 forward_diagnostics* diag = nullptr) const {
        check_seq(s, "model::prefill");
        detail::require(n >= 1, "model::prefill", "empty prompt");
        detail::require(ids && logits, "model::prefill", "null pointer");
        check_token_ids(std::span<const int64_t>(ids, n), cfg_.vocab_size);
        if (n > s.max_context)
            throw error("dsv4::model::prefill: " + std::to_string(n) + " tokens exceed the sequence capacity " +
                        std::to_string(s.max_context));
        s.pos = 0;
        forward(s, ids, n, 0, logits, diag, "model::prefill");
        s.pos = int64_t(n);
    }

    /// Appends one token at position s.pos (after a prefill) and writes its f32 logits.
    void decode(sequence_state& s, int64_t id, float* logits, forward_diagnostics* diag = nullptr) const {
        check_seq(s, "model::decode");
        detail::require(logits != nullptr, "model::decode", "null pointer");
        detail::require(s.pos > 0, "model::decode", "decode needs a prefix: call prefill first");
        check_token_ids(std::span<const int64_t>(&id, 1), cfg_.vocab_size);
        if (std::size_t(s.pos) >= s.max_context)
            throw error("dsv4::model::decode: position " + std::to_string(s.pos) + " reaches the sequence capacity " +
                        std::to_string(s.max_context));
        try {
            forward(s, &id, 1, s.pos, logits, diag, "model::decode");
        } catch (...) {
            s.pos = 0;  // caches partly written: the sequence must start over
            throw;
        }
        s.pos += 1;
    }

private:
    model_config cfg_;
    std::unique_ptr<checkpoint> ck_;
    forward_options opt_;
    uint64_t id_ = 0;  ///< unique per opened model
    std::size_t D_ = 0, H_ = 0, hd_ = 0, ql_ = 0, max_ctx_ = 0;
    std::vector<layer_weights> layers_;
    const uint16_t *embed_ = nullptr, *norm_ = nullptr;
    bf16_matrix head_;
    hc_head_weights hc_head_;
    // rope: index 0 = ratio-0 layers, 1 = compressed layers
    std::vector<float> freqs_[2], rows_[2];
    std::unique_ptr<rope_table[]> rope_;
    hc_config hc_;
    moe_config moe_cfg_;

    // ------------------------------------------------------------------ set-up
    const tensor_view& t(const std::string& name) const { return ck_->at(name); }
    template <class T> const T* data(const std::string& name) const { return tensor_data<T>(t(name)); }
    fp8_matrix fp8(const std::string& base, std::size_t n, std::size_t k) const {
        fp8_matrix w;
        w.w = data<uint8_t>(base + ".weight");
        w.w_stride = k;
        w.scale = data<uint8_t>(base + ".scale");
        w.scale_stride = (k + 127) / 128;
        w.n = n;
        w.k = k;
        return w;
    }
    fp4_matrix fp4(const std::string& base, std::size_t n, std::size_t k) const {
        fp4_matrix w;
        w.w = data<uint8_t>(base + ".weight");
        w.w_stride = k / 2;
        w.scale = data<uint8_t>(base + ".scale");
        w.scale_stride = k / 32;
        w.n = n;
        w.k = k;
        return w;
    }
    bf16_matrix bf16m(const std::string& name, std::size_t n, std::size_t k) const {
        return bf16_matrix{data<uint16_t>(name), k, n, k};
    }
    compressor_weights comp_w(const std::string& P, std::size_t cd) const {
        compressor_weights w;
        w.wkv = bf16m(P + "wkv.weight", cd, D_);
        w.wgate = bf16m(P + "wgate.weight", cd, D_);
        w.ape = data<float>(P + "ape");
        w.norm = data<uint16_t>(P + "norm.weight");
        return w;
    }
    const rope_table& rope_for(uint32_t ratio) const { return rope_[ratio ? 1 : 0]; }
    compressor_config comp_cfg(uint32_t r) const {
        return compressor_config{r, hd_, false, rope_for(r), float(cfg_.rms_norm_eps), opt_.kv_fp8};
    }
    indexer_config index_cfg() const {
        indexer_config c;
        c.heads = cfg_.index_n_heads;
        c.topk = cfg_.index_topk;
        c.comp = compressor_config{4, cfg_.index_head_dim, true, rope_for(4), float(cfg_.rms_norm_eps),
                                   fp8_sim_revision::current};
        return c;
    }

    void build() {
        const model_config& c = cfg_;
        const std::string src = c.source;
        auto unsupported = [&](const std::string& what) {
            throw error("dsv4::model::open: " + src + ": " + what + " is not supported by the forward");
        };
        if (c.hc_mult != hc_mult) unsupported("hc_mult " + std::to_string(c.hc_mult));
        if (c.qk_rope_head_dim != rope_dim) unsupported("qk_rope_head_dim " + std::to_string(c.qk_rope_head_dim));
        if (c.sliding_window != attention_window) unsupported("sliding_window " + std::to_string(c.sliding_window));
        if (c.scoring_func != "sqrtsoftplus") unsupported("scoring_func " + c.scoring_func);
        if (c.expert_dtype != expert_format::fp4) unsupported("expert_dtype fp8");
        if (c.n_shared_experts != 1) unsupported("n_shared_experts " + std::to_string(c.n_shared_experts));
        if (c.head_dim % 64) unsupported("head_dim " + std::to_string(c.head_dim));
        if (c.index_head_dim != index_head_dim) unsupported("index_head_dim " + std::to_string(c.index_head_dim));
        if (c.hidden_size % 128 || c.moe_intermediate_size % 128) unsupported("hidden/moe sizes not multiples of 128");
        D_ = c.hidden_size;
        H_ = c.num_attention_heads;
        hd_ = c.head_dim;
        ql_ = c.q_lora_rank;
        max_ctx_ = opt_.max_context ? opt_.max_context
                                    : std::size_t(std::min<uint64_t>(c.max_position_embeddings, 65536));
        if (max_ctx_ == 0) throw error("dsv4::model::open: max_context is 0");

        // rope tables: ratio-0 layers rope_theta without YaRN; compressed layers
        // compress_rope_theta with YaRN when the config has rope_scaling (forward.py choice 3).
        rope_config rc[2];
        rc[0] = rope_config{c.rope_theta, 1.0, 0, 32.0, 1.0};
        rc[1] = rope_config{c.compress_rope_theta, 1.0, 0, 32.0, 1.0};
        if (c.rope_scaling.yarn) {
            rc[1].factor = c.rope_scaling.factor;
            rc[1].original_seq_len = int64_t(c.rope_scaling.original_max_position_embeddings);
            rc[1].beta_fast = c.rope_scaling.beta_fast;
            rc[1].beta_slow = c.rope_scaling.beta_slow;
        }
        rope_ = std::make_unique<rope_table[]>(2);
        const std::size_t nrows = std::min(opt_.rope_table_rows, max_ctx_);
        for (int i = 0; i < 2; ++i) {
            freqs_[i].assign(rope_pairs, 0.0f);
            rope_freqs(rc[i], freqs_[i].data());
            rows_[i].assign(nrows * rope_row_floats, 0.0f);
            rope_table_fill(freqs_[i].data(), nrows, rows_[i].data());
            rope_[i] = rope_table{freqs_[i].data(), rows_[i].data(), nrows};
        }

        hc_ = hc_config{D_, int(c.hc_sinkhorn_iters), float(c.hc_eps), float(c.rms_norm_eps)};
        moe_cfg_.dim = D_;
        moe_cfg_.inter = c.moe_intermediate_size;
        moe_cfg_.n_experts = c.n_routed_experts;
        moe_cfg_.topk = c.num_experts_per_tok;
        moe_cfg_.route_scale = float(c.routed_scaling_factor);
        moe_cfg_.swiglu_limit = float(c.swiglu_limit);
        moe_cfg_.shared_clamp = opt_.shared_clamp;
        moe_cfg_.numerics = opt_.numerics;

        embed_ = data<uint16_t>("embed.weight");
        norm_ = data<uint16_t>("norm.weight");
        head_ = bf16m("head.weight", c.vocab_size, D_);
        hc_head_ = hc_head_weights{data<float>("hc_head_fn"), data<float>("hc_head_scale"), data<float>("hc_head_base")};

        const std::size_t I = c.moe_intermediate_size, E = c.n_routed_experts;
        layers_.resize(c.num_hidden_layers);
        for (uint32_t l = 0; l < c.num_hidden_layers; ++l) {
            layer_weights& w = layers_[l];
            const std::string P = "layers." + std::to_string(l) + ".";
            const std::string A = P + "attn.";
            w.ratio = c.compress_ratios.at(l);
            w.hash = is_hash_block(c, l);
            w.hc_attn = hc_pre_weights{data<float>(P + "hc_attn_fn"), data<float>(P + "hc_attn_scale"),
                                       data<float>(P + "hc_attn_base")};
            w.hc_ffn = hc_pre_weights{data<float>(P + "hc_ffn_fn"), data<float>(P + "hc_ffn_scale"),
                                      data<float>(P + "hc_ffn_base")};
            w.attn_norm = data<uint16_t>(P + "attn_norm.weight");
            w.ffn_norm = data<uint16_t>(P + "ffn_norm.weight");
            w.q_norm = data<uint16_t>(A + "q_norm.weight");
            w.kv_norm = data<uint16_t>(A + "kv_norm.weight");
            w.wq_a = fp8(A + "wq_a", ql_, D_);
            w.wq_b = fp8(A + "wq_b", H_ * hd_, ql_);
            w.wkv = fp8(A + "wkv", hd_, D_);
            w.wo_a = fp8(A + "wo_a", std::size_t(c.o_groups) * c.o_lora_rank, H_ * hd_ / c.o_groups);
            w.wo_b = fp8(A + "wo_b", D_, std::size_t(c.o_groups) * c.o_lora_rank);
            w.sink = data<float>(A + "attn_sink");
            if (w.ratio) w.comp = comp_w(A + "compressor.", compressor_c(w.ratio) * hd_);
            if (w.ratio == 4) {
                w.index.wq_b = fp8(A + "indexer.wq_b", std::size_t(c.index_n_heads) * c.index_head_dim, ql_);
                w.index.weights_proj = bf16m(A + "indexer.weights_proj.weight", c.index_n_heads, D_);
                w.index.comp = comp_w(A + "indexer.compressor.", 2 * std::size_t(c.index_head_dim));
            }
            const std::string F = P + "ffn.";
            w.experts.resize(E);
            for (std::size_t e = 0; e < E; ++e) {
                const std::string X = F + "experts." + std::to_string(e) + ".";
                w.experts[e] = moe_expert_weights{fp4(X + "w1", I, D_), fp4(X + "w3", I, D_), fp4(X + "w2", D_, I)};
            }
            w.moe.gate.gate = bf16m(F + "gate.weight", E, D_);
            if (w.hash) {
                w.moe.gate.tid2eid = data<int64_t>(F + "gate.tid2eid");
                w.moe.gate.vocab = c.vocab_size;
            } else {
                w.moe.gate.bias = data<float>(F + "gate.bias");
            }
            const std::string S = F + "shared_experts.";
            w.moe.shared = moe_shared_weights{fp8(S + "w1", I, D_), fp8(S + "w3", I, D_), fp8(S + "w2", D_, I)};
        }
        for (auto& w : layers_) w.moe.experts = w.experts.data();
    }

    void check_seq(const sequence_state& s, const char* fn) const {
        detail::require(id_ != 0 && s.owner == id_ && s.layers.size() == layers_.size(), fn,
                        "sequence state was not made by this model's new_sequence()");
    }

    // ------------------------------------------------------------------ pieces
    /// Fast numerics where fp8_bf16_preferred(m) (avx512_bf16; the AVX2 tiers for one token):
    /// FP8 projections of m rows take their (exact) activations as bf16 blocks
    /// (fp8_gemv_bf16), the faster path there; elsewhere the reference path. m = 1 asks
    /// whether any chunk may take it (buffers).
    bool fp8_bf16(std::size_t m = 1) const { return opt_.numerics == moe_numerics::fast && fp8_bf16_preferred(m); }

    /// out = xf [m, groups * w.k] (exact f32 activations) . w^T through the path fp8_bf16(m)
    /// picks; xb / sh: room for the bf16 blocks of xf when it picks fp8_gemv_bf16.
    void fp8_project(const fp8_matrix& w, std::size_t groups, const float* xf, std::size_t m, uint16_t* xb,
                     int32_t* sh, const gemv_out& out) const {
        const std::size_t kx = groups * w.k;
        if (fp8_bf16(m)) {
            to_bf16_blocks(xf, kx, m, kx, xb, kx, sh, kx / 128);
            const bf16_block_rows x{xb, kx, sh, kx / 128, m};
            if (groups == 1) par::fp8_gemv_bf16(w, x, out);
            else par::fp8_grouped_gemv_bf16(w, groups, x, out);
        } else {
            const f32_rows x{xf, kx, m};
            if (groups == 1) par::fp8_gemv(w, x, out);
            else par::fp8_grouped_gemv(w, groups, x, out);
        }
    }

    /// y = bf16(act_quant(x, 128) . w^T) for m rows (chunks of 32 tokens).
    void fp8_linear(const fp8_matrix& w, const uint16_t* x, std::size_t x_stride, std::size_t m, uint16_t* y,
                    std::size_t y_stride) const {
        constexpr std::size_t C = 32;
        const std::size_t K = w.k, mc = std::min(m, C);
        const bool bf = fp8_bf16();
        std::vector<uint8_t> codes(mc * K), scales(mc * (K / 128));
        std::vector<float> xf(mc * K);
        std::vector<uint16_t> xb(bf ? mc * K : 0);
        std::vector<int32_t> sh(bf ? mc * (K / 128) : 0);
        for (std::size_t a = 0; a < m; a += C) {
            const std::size_t n = std::min(C, m - a);
            act_quant_fp8(x + a * x_stride, n, K, x_stride, 128, codes.data(), K, scales.data(), K / 128);
            fp8_acts_to_f32(codes.data(), K, scales.data(), K / 128, n, K, xf.data(), K);
            fp8_project(w, 1, xf.data(), n, xb.data(), sh.data(), gemv_out{nullptr, y + a * y_stride, y_stride});
        }
    }

    /// Attention of layer l on x = attn_norm output [S, D] (bf16), positions start..start+S-1;
    /// writes out [S, D] (bf16).
    void attention(std::size_t l, layer_state& st, const uint16_t* x, std::size_t S, int64_t start,
                   uint16_t* out, forward_diagnostics* diag) const {
        const layer_weights& w = layers_[l];
        const uint32_t r = w.ratio;
        const std::size_t H = H_, hd = hd_, nope = hd - rope_dim, qw = H * hd;
        const rope_table& rope = rope_for(r);
        const float eps = float(cfg_.rms_norm_eps);
        const bool decode = start > 0;
        std::vector<int64_t> pos(S);
        for (std::size_t t = 0; t < S; ++t) pos[t] = start + int64_t(t);

        // q path: qr = q_norm(wq_a x); q = rope(head_norm(wq_b qr))
        std::vector<uint16_t> qr(S * ql_), q(S * qw), kv(S * hd);
        fp8_linear(w.wq_a, x, D_, S, qr.data(), ql_);
        rmsnorm(qr.data(), S, ql_, ql_, w.q_norm, eps, qr.data(), ql_);
        fp8_linear(w.wq_b, qr.data(), ql_, S, q.data(), qw);
        q_head_norm(q.data(), S, H, hd, qw, eps, q.data(), qw);
        rope_apply(q.data(), S, H, hd, qw, pos.data(), rope, false);
        // kv path: rope(kv_norm(wkv x)), FP8 simulation of the nope dims in blocks of 64
        fp8_linear(w.wkv, x, D_, S, kv.data(), hd);
        rmsnorm(kv.data(), S, hd, hd, w.kv_norm, eps, kv.data(), hd);
        rope_apply(kv.data(), S, 1, hd, hd, pos.data(), rope, false);
        act_quant_fp8_sim(kv.data(), S, nope, hd, 64, opt_.kv_fp8);

        const std::size_t cap = st.cache.size() / hd - attention_window;  // compressed entries
        uint16_t* cache = st.cache.data();
        std::vector<int32_t> idx;
        std::vector<uint16_t> kv_all_buf;
        const uint16_t* kv_all = nullptr;
        std::size_t kv_rows = 0, width = 0;
        if (!decode) {
            std::size_t cw = 0;
            if (r == 4) cw = indexer_select_width(cfg_.index_topk, S / 4);
            else if (r) cw = S / r;
            width = attention_window + cw;
            idx.assign(S * width, -1);
            window_indices_prefill(S, idx.data(), width);
            if (r == 4) {
                const indexer_config icfg = index_cfg();
                std::vector<unsigned char> ws(indexer_prefill_scratch_bytes(icfg, D_, ql_, S));
                par::indexer_prefill(st.index_comp, w.index, icfg, x, D_, qr.data(), ql_, S,
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
                const compressor_config ccfg = comp_cfg(r);
                std::vector<unsigned char> ws(compressor_scratch_bytes(ccfg, D_));
                const std::size_t got = par::compressor_prefill(st.comp, w.comp, ccfg, x, D_, S,
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
            if (r == 4) cw = indexer_select_width(cfg_.index_topk, n_after);
            else if (r) cw = n_after;
            width = attention_window + cw;
            idx.assign(width, -1);
            window_indices_decode(p, idx.data());
            if (r == 4) {
                const indexer_config icfg = index_cfg();
                const std::size_t max_keys = st.keys.size() / index_head_dim;
                std::vector<unsigned char> ws(indexer_decode_scratch_bytes(icfg, D_, ql_, max_keys));
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
                const compressor_config ccfg = comp_cfg(r);
                std::vector<unsigned char> ws(compressor_scratch_bytes(ccfg, D_));
                par::compressor_decode(st.comp, w.comp, ccfg, x, p, compressor_cache{cache + attention_window * hd, hd, cap},
                                       ws.data(), ws.size());
            }
            kv_all = cache;
            kv_rows = attention_window + n_after;
        }

        if (diag && r == 4) {  // the last query's indexer picks as ascending entry numbers
            const int32_t* row = idx.data() + (S - 1) * width + attention_window;
            const int32_t off = decode ? int32_t(attention_window) : int32_t(S);
            std::vector<int32_t> sel;
            for (std::size_t j = 0; j < width - attention_window; ++j)
                if (row[j] >= 0) sel.push_back(row[j] - off);
            std::sort(sel.begin(), sel.end());
            std::copy(sel.begin(), sel.end(), diag->index_idx.begin() + std::ptrdiff_t(l * cfg_.index_topk));
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
        const std::size_t G = cfg_.o_groups, GR = G * cfg_.o_lora_rank;
        const bool bf = fp8_bf16();
        std::vector<float> of(std::min<std::size_t>(S, 32) * qw);
        std::vector<uint16_t> ob(bf ? of.size() : 0);
        std::vector<int32_t> osh(bf ? of.size() / 128 : 0);
        std::vector<uint16_t> u(S * GR);
        for (std::size_t t0 = 0; t0 < S; t0 += 32) {
            const std::size_t m = std::min<std::size_t>(32, S - t0);
            decode_bf16(o.data() + t0 * qw, of.data(), m * qw);
            fp8_project(w.wo_a, G, of.data(), m, ob.data(), osh.data(), gemv_out{nullptr, u.data() + t0 * GR, GR});
        }
        fp8_linear(w.wo_b, u.data(), GR, S, out, D_);
    }

    // ------------------------------------------------------------------ the whole forward
    /// Throws if the residual streams Hs [S, 4, D] hold a NaN/Inf after layer l.
    void check_finite_streams(const uint16_t* Hs, std::size_t S, std::size_t l, int64_t start, const int64_t* ids,
                              const char* fn) const {
        const std::size_t W = hc_mult * D_;
        for (std::size_t t = 0; t < S; ++t) {
            const uint16_t* h = Hs + t * W;
            unsigned bad = 0;
            for (std::size_t i = 0; i < W; ++i) bad |= (h[i] & 0x7F80u) == 0x7F80u;  // vectorizes
            if (!bad) continue;
            std::size_t i = 0;
            while ((h[i] & 0x7F80u) != 0x7F80u) ++i;
            throw error(std::string("dsv4::") + fn + ": non-finite hidden state (" +
                        ((h[i] & 0x7Fu) ? "NaN" : "Inf") + " in stream " + std::to_string(i / D_) + ", element " +
                        std::to_string(i % D_) + ") after layer " + std::to_string(l) + " at position " +
                        std::to_string(start + int64_t(t)) + " (token id " + std::to_string(ids[t]) +
                        "): a corrupt weight or an overflow (dsv4-generate --verify checks the weights)");
        }
    }

    void forward(sequence_state& s, const int64_t* ids, std::size_t S, int64_t start, float* logits,
                 forward_diagnostics* diag, const char* fn) const {
        const std::size_t D = D_, W = hc_mult * D, L = layers_.size();
        std::vector<uint16_t> Hs(S * W), y(S * D), a(S * D);
        for (std::size_t t = 0; t < S; ++t)
            for (std::size_t k = 0; k < hc_mult; ++k)
                std::memcpy(Hs.data() + t * W + k * D, embed_ + std::size_t(ids[t]) * D, D * sizeof(uint16_t));
        std::vector<float> post(S * 4), comb(S * 16);
        std::vector<unsigned char> hcs(bytes_needed(hc_, S));
        const hc_scratch hs{hcs.data(), hcs.size()};
        const std::size_t mt = std::min<std::size_t>(S, 64);
        std::vector<unsigned char> ms(bytes_needed(moe_cfg_, mt));
        const moe_scratch msc{ms.data(), ms.size(), mt};
        const float eps = float(cfg_.rms_norm_eps);
        if (diag) {
            diag->layer_out.assign(L * W, 0);
            diag->moe_idx.assign(L * moe_cfg_.topk, -1);
            diag->index_idx.assign(L * cfg_.index_topk, -1);
        }

        for (std::size_t l = 0; l < L; ++l) {
            const layer_weights& w = layers_[l];
            // attention sub-block
            par::hc_pre(hc_, w.hc_attn, Hs.data(), S, hc_pre_out{y.data(), post.data(), comb.data(), nullptr, nullptr}, hs);
            rmsnorm(y.data(), S, D, D, w.attn_norm, eps, y.data(), D);
            attention(l, s.layers[l], y.data(), S, start, a.data(), diag);
            par::hc_post(hc_, a.data(), Hs.data(), post.data(), comb.data(), S, Hs.data());
            // MoE sub-block
            par::hc_pre(hc_, w.hc_ffn, Hs.data(), S, hc_pre_out{y.data(), post.data(), comb.data(), nullptr, nullptr}, hs);
            rmsnorm(y.data(), S, D, D, w.ffn_norm, eps, y.data(), D);
            if (diag) {  // routing of the last token (the same gate and routing code as the layer)
                std::vector<float> rw(moe_cfg_.topk);
                moe_route_tokens(moe_cfg_, w.moe.gate, y.data() + (S - 1) * D, D, ids + (S - 1), 1,
                                 moe_routing_out{diag->moe_idx.data() + l * moe_cfg_.topk, rw.data(), nullptr}, msc);
            }
            par::moe_forward(moe_cfg_, w.moe, y.data(), D, ids, S, a.data(), D, msc);
            par::hc_post(hc_, a.data(), Hs.data(), post.data(), comb.data(), S, Hs.data());
            if (diag) std::memcpy(diag->layer_out.data() + l * W, Hs.data() + (S - 1) * W, W * sizeof(uint16_t));
            if (opt_.check_finite) check_finite_streams(Hs.data(), S, l, start, ids, fn);
        }

        // hc_head -> final norm -> head, last position only
        std::vector<unsigned char> hh(bytes_needed(hc_, 1));
        uint16_t* z = y.data();
        hc_head(hc_, hc_head_, Hs.data() + (S - 1) * W, 1, hc_head_out{z, nullptr, nullptr}, hc_scratch{hh.data(), hh.size()});
        rmsnorm(z, 1, D, D, norm_, eps, z, D);
        if (diag) diag->final_norm.assign(z, z + D);
        std::vector<float> zf(D);
        decode_bf16(z, zf.data(), D);
        par::bf16_gemv(head_, f32_rows{zf.data(), D, 1}, gemv_out{logits, nullptr, vocab()});
        if (opt_.check_finite && S > 0) {
            const std::size_t V = vocab();
            for (std::size_t i = 0; i < V; ++i)
                if (!std::isfinite(logits[i]))
                    throw error(std::string("dsv4::") + fn + ": non-finite logit " + std::to_string(i) + " (" +
                                (std::isnan(logits[i]) ? "NaN" : "Inf") + ") at position " +
                                std::to_string(start + int64_t(S) - 1) + " (token id " + std::to_string(ids[S - 1]) +
                                ")");
        }
    }
};

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
