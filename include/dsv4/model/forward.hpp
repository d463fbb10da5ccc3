// dsv4/model/forward.hpp - the whole DeepSeek-V4-Flash main model (spec §4-§9, no MTP), batch 1,
// composed from the tested kernels of this library; weights read in place from the
// memory-mapped official checkpoint (sharded safetensors + index + config.json).
//
//   dsv4::model m = dsv4::model::open("DIR");           // maps, validates against config.json
//   dsv4::sequence_state s = m.new_sequence();          // per-sequence state (caches, compressors)
//   std::vector<float> logits(m.vocab());
//   m.prefill(s, ids.data(), ids.size(), logits.data());  // start_pos 0, any length >= 1
//   m.decode(s, next_id, logits.data());                 // position s.pos, one token
//   m.extend(s, more.data(), more.size(), logits.data()); // append any number at s.pos
//   m.prefill_chunked(s, ids.data(), ids.size(), 512, logits.data());  // bounded memory
//
// Composition (reference/dsv4_ref/forward.py, which this follows operation by operation):
// H = repeat4(embed(ids)); per layer: hc_pre -> attn_norm -> attention -> hc_post, hc_pre ->
// ffn_norm -> MoE -> hc_post; then hc_head, the final norm and the f32 head for the last
// position only. Activations are bf16 between kernels at exactly the reference's rounding
// points (forward.py "Precision" and choice 4). FP8 linears: act_quant (block 128) ->
// exact f32 -> fp8_gemv (reference mode); wo_a: bf16 activations as f32 rows through
// fp8_grouped_gemv; head: bf16_gemv_bf16 (the bf16 final norm times the BF16 head) with f32
// logits. With forward_options::numerics fast, where fp8_bf16_preferred (avx512_bf16; the
// other SIMD tiers from 5 or 12 rows, the small-M GEMM, and the AVX2 tiers for one token), the FP8
// linears and wo_a take the same activations as bf16 blocks (to_bf16_blocks, exact) through
// fp8_gemv_bf16: the same products (on avx512_bf16 less the subnormal weight codes), summed
// in another order; the routed experts go int8 (moe.hpp).
//
// Files: weights.hpp binds the tensors, sequence.hpp holds a sequence's state (spec §5.5),
// context.hpp what every block reads, attention_block.hpp and moe_block.hpp the two
// sub-blocks of a layer; this file the model object and the layer loop.
//
// Nothing per sequence lives in the model, which is read-only after open: any number of
// sequences may be kept, and calls on different sequence_states may run concurrently on
// different threads (same bits as alone: test_forward.cpp's two-threads case, also run
// under ThreadSanitizer); one sequence_state takes one call at a time. prefill starts the
// sequence over (REF semantics, start_pos 0, the official prefill index layout); decode and
// extend continue it, extend with each token exactly as its decode step would compute it
// (spec §10.3 item 12), so prefill_chunked(N) equals prefill(c) + decode of the rest.
//
// Threads: every stage runs on oneTBB (par:: entry points) in the current task arena; the
// results do not depend on the thread count. sequence_state::profile (regions.hpp) counts a
// call's parallel regions and the time inside and outside them (dsv4-generate --profile). Errors: dsv4::error naming the file, tensor or
// argument. The forward allocates its working buffers per call (never inside a kernel).
//
// Non-finite values (forward_options::check_finite, on by default): the residual streams
// are checked after every layer and the logits at the end; a NaN or Inf (a corrupt weight,
// an overflow) is a dsv4::error naming the call, the layer, the position and the token
// instead of a garbage token. The check reads S x 4 x dim bf16 values per layer (0.1 % of a
// decode step's bytes). After any error from prefill or decode the sequence must be started
// over with prefill (decode refuses it: its position is reset to 0).
#pragma once

#include "moe_block.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace dsv4 {
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
        m.ctx_ = std::make_unique<model_context>();
        model_context& c = *m.ctx_;
        c.opt = opt;
        c.cfg = load_model_config(dir);
        c.ck = std::make_unique<checkpoint>(checkpoint::open(dir));
        if (opt.validate) validate_checkpoint(c.cfg, *c.ck);
        init_model_context(c);
        c.w = bind_model_weights(c.cfg, *c.ck);
        m.fingerprint_ = checkpoint_fingerprint(*c.ck);
        if (opt.ram_budget && opt.ram_budget < routed_expert_bytes(*c.ck)) c.stream = make_expert_streamer(c.cfg, *c.ck, opt);
        return m;
    }

    /// FNV-1a over every tensor's name, dtype and shape and the bytes of every norm weight:
    /// what a saved session must match (another checkpoint or other weights do not).
    static uint64_t checkpoint_fingerprint(const checkpoint& ck) {
        uint64_t h = 1469598103934665603ull;
        auto mix = [&](const void* p, std::size_t n) {
            const auto* b = static_cast<const unsigned char*>(p);
            for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
        };
        for (const tensor_view& t : ck.tensors()) {
            mix(t.name.data(), t.name.size());
            mix(&t.type, sizeof t.type);
            mix(t.shape.dims.data(), t.shape.rank * sizeof(uint64_t));
            if (t.name.ends_with("norm.weight")) mix(t.data, t.bytes);
        }
        return h;
    }
    uint64_t fingerprint() const noexcept { return fingerprint_; }

    const model_config& config() const noexcept { return ctx_->cfg; }
    const checkpoint& weights() const noexcept { return *ctx_->ck; }
    const forward_options& options() const noexcept { return ctx_->opt; }
    /// The routed-expert cache when streaming (forward_options::ram_budget), else null.
    const expert_streamer* streamer() const noexcept { return ctx_->stream.get(); }
    std::size_t vocab() const noexcept { return ctx_->cfg.vocab_size; }
    std::size_t max_context() const noexcept { return ctx_->max_ctx; }
    /// What every block reads (config, options, RoPE tables, weight views): for blocks run
    /// outside the layer loop, such as the MTP block (mtp.hpp).
    const model_context& context() const noexcept { return *ctx_; }
    /// Unique per opened model (the owner of its sequence states).
    uint64_t id() const noexcept { return id_; }

    /// A fresh per-sequence state sized for max_context() positions, its workspace for calls
    /// of up to options().chunk tokens.
    sequence_state new_sequence() const {
        sequence_state s = make_sequence_state(*ctx_, id_);
        s.ws.reserve(workspace_bytes(std::max<std::size_t>(ctx_->opt.chunk, 1)));
        return s;
    }

    /// Starts the sequence over with ids[0..n) at positions 0..n-1 in one pass (the official
    /// prefill, index layout of spec §4 step 4) and writes the f32 logits [vocab] of the last
    /// position. Beyond options().chunk tokens the workspace grows once to fit (prefill_chunked
    /// keeps it bounded instead).
    void prefill(sequence_state& s, const int64_t* ids, std::size_t n, float* logits,
                 forward_diagnostics* diag = nullptr) const {
        run(s, ids, n, forward_outputs{logits}, diag, true, "model::prefill");
    }

    /// Appends ids[0..n) at positions s.pos.. to a started sequence (after a prefill, an
    /// extend or a decode): every token is attended, compressed and indexed exactly as its own
    /// decode step would do it, so extend(k tokens) gives the logits of k decode steps' last
    /// one (bit for bit where the GEMMs' per-row arithmetic is M-independent, as on every
    /// tier here). On a fresh sequence (s.pos == 0) it is prefill.
    void extend(sequence_state& s, const int64_t* ids, std::size_t n, float* logits,
                forward_diagnostics* diag = nullptr) const {
        run(s, ids, n, forward_outputs{logits}, diag, s.pos == 0, "model::extend");
    }
    /// extend with the outputs chosen (logits of every position, the final streams).
    void extend(sequence_state& s, const int64_t* ids, std::size_t n, const forward_outputs& out,
                forward_diagnostics* diag = nullptr) const {
        run(s, ids, n, out, diag, s.pos == 0, "model::extend");
    }

    /// A prompt in pieces of at most `chunk` tokens: prefill of the first, extend of the rest,
    /// so working memory is bounded by the chunk, not the prompt. chunk >= n is prefill.
    void prefill_chunked(sequence_state& s, const int64_t* ids, std::size_t n, std::size_t chunk, float* logits,
                         forward_diagnostics* diag = nullptr) const {
        detail::require(chunk >= 1, "model::prefill_chunked", "chunk must be at least 1");
        detail::require(n >= 1, "model::prefill_chunked", "empty prompt");
        for (std::size_t a = 0; a < n; a += chunk) {
            const std::size_t len = std::min(chunk, n - a);
            run(s, ids + a, len, forward_outputs{logits}, a + len == n ? diag : nullptr, a == 0,
                "model::prefill_chunked");
        }
    }

    /// Appends one token at position s.pos (after a prefill) and writes its f32 logits.
    void decode(sequence_state& s, int64_t id, float* logits, forward_diagnostics* diag = nullptr) const {
        check_seq(s, "model::decode");
        detail::require(s.pos > 0, "model::decode", "decode needs a prefix: call prefill first");
        run(s, &id, 1, forward_outputs{logits}, diag, false, "model::decode");
    }

    /// Workspace bytes of a call of up to S tokens at any position (every output included).
    std::size_t workspace_bytes(std::size_t S) const {
        const model_context& m = *ctx_;
        const std::size_t D = m.D, W = hc_mult * D, mt = std::min(S, moe_chunk_tokens);
        auto b = [](std::size_t n, std::size_t size) { return forward_workspace::round_up(n * size); };
        const std::size_t top = b(S * W, 2) + 2 * b(S * D, 2) + b(S * 4, 4) + b(S * 16, 4) + b(bytes_needed(m.hc, S), 1) +
                                b(bytes_needed(m.moe, mt), 1) + b(m.moe.topk, 4) + b(S * D, 4);
        std::size_t block = 0;
        for (const layer_weights& w : m.w.layers) {
            const int64_t far = int64_t(m.max_ctx - std::min(S, m.max_ctx));
            for (const attention_plan& P : {plan_attention(m, w.ratio, S, 0), plan_attention(m, w.ratio, S, far),
                                            plan_attention(m, w.ratio, 1, int64_t(m.max_ctx) - 1)})
                block = std::max(block, P.bytes(m));
        }
        return top + block;
    }

private:
    std::unique_ptr<model_context> ctx_;  ///< behind a pointer: the rope tables and weight views stay put
    uint64_t id_ = 0;                     ///< unique per opened model
    uint64_t fingerprint_ = 0;            ///< checkpoint_fingerprint of the weights

    void check_seq(const sequence_state& s, const char* fn) const {
        detail::require(id_ != 0 && s.owner == id_ && s.layers.size() == ctx_->w.layers.size(), fn,
                        "sequence state was not made by this model's new_sequence()");
    }

    /// prefill (restart: from position 0) or append at s.pos; after a failure the caches are
    /// partly written, so the sequence must start over (its position is reset to 0).
    void run(sequence_state& s, const int64_t* ids, std::size_t n, const forward_outputs& out,
             forward_diagnostics* diag, bool restart, const char* fn) const {
        check_seq(s, fn);
        detail::require(n >= 1, fn, "no tokens");
        detail::require(ids && out.logits, fn, "null pointer");
        check_token_ids(std::span<const int64_t>(ids, n), ctx_->cfg.vocab_size);
        const int64_t start = restart ? 0 : s.pos;
        if (std::size_t(start) + n > s.max_context)
            throw error(std::string("dsv4::") + fn + ": positions " + std::to_string(start) + ".." +
                        std::to_string(start + int64_t(n) - 1) + " exceed the sequence capacity " +
                        std::to_string(s.max_context));
        s.pos = 0;
        try {
            if (region_stats* st = s.profile) {
                const auto t0 = std::chrono::steady_clock::now();
                {
                    region_count_scope scope(*st);
                    forward(s, ids, n, start, out, diag, fn);
                }
                st->forward_ns += uint64_t(
                    std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
                ++st->calls;
                st->tokens += n;
            } else {
                forward(s, ids, n, start, out, diag, fn);
            }
        } catch (...) {
            s.ws.end_call();
            s.pos = 0;
            throw;
        }
        s.ws.end_call();
        s.pos = start + int64_t(n);
    }

    /// Throws if the residual streams Hs [S, 4, D] hold a NaN/Inf after layer l.
    void check_finite_streams(const uint16_t* Hs, std::size_t S, std::size_t l, int64_t start, const int64_t* ids,
                              const char* fn) const {
        const std::size_t D = ctx_->D, W = hc_mult * D;
        for (std::size_t t = 0; t < S; ++t) {
            const uint16_t* h = Hs + t * W;
            unsigned bad = 0;
            for (std::size_t i = 0; i < W; ++i) bad |= (h[i] & 0x7F80u) == 0x7F80u;  // vectorizes
            if (!bad) continue;
            std::size_t i = 0;
            while ((h[i] & 0x7F80u) != 0x7F80u) ++i;
            throw error(std::string("dsv4::") + fn + ": non-finite hidden state (" +
                        ((h[i] & 0x7Fu) ? "NaN" : "Inf") + " in stream " + std::to_string(i / D) + ", element " +
                        std::to_string(i % D) + ") after layer " + std::to_string(l) + " at position " +
                        std::to_string(start + int64_t(t)) + " (token id " + std::to_string(ids[t]) +
                        "): a corrupt weight or an overflow (dsv4-generate --verify checks the weights)");
        }
    }

    /// The layer loop over tokens ids[0..S) at positions start.., then the head of the last
    /// one (or of every one). Every buffer comes from the sequence's workspace.
    void forward(sequence_state& s, const int64_t* ids, std::size_t S, int64_t start, const forward_outputs& out,
                 forward_diagnostics* diag, const char* fn) const {
        const model_context& m = *ctx_;
        forward_workspace& ws = s.ws;
        const std::size_t D = m.D, W = hc_mult * D, L = m.w.layers.size();
        uint16_t* Hs = ws.take<uint16_t>(S * W);
        embed_rows(m, ids, S, Hs, W);  // stream 0 of each token, copied to the others
        for (std::size_t t = 0; t < S; ++t)
            for (std::size_t k = 1; k < hc_mult; ++k) std::memcpy(Hs + t * W + k * D, Hs + t * W, D * sizeof(uint16_t));
        const block_buffers b = take_block_buffers(m, ws, S);
        if (diag) {
            diag->layer_out.assign(L * W, 0);
            diag->moe_idx.assign(L * m.moe.topk, -1);
            diag->index_idx.assign(L * m.cfg.index_topk, -1);
        }

        for (std::size_t l = 0; l < L; ++l) {
            const layer_weights& w = m.w.layers[l];
            attention_sub_block(m, w, s.layers[l], Hs, S, start, b,
                                diag ? diag->index_idx.data() + l * m.cfg.index_topk : nullptr, ws);
            moe_sub_block(m, w, Hs, ids, S, b, diag ? diag->moe_idx.data() + l * m.moe.topk : nullptr);
            if (diag) std::memcpy(diag->layer_out.data() + l * W, Hs + (S - 1) * W, W * sizeof(uint16_t));
            if (m.opt.check_finite) check_finite_streams(Hs, S, l, start, ids, fn);
        }
        if (out.streams) std::memcpy(out.streams, Hs, S * W * sizeof(uint16_t));

        // hc_head -> final norm -> head, for the last position (or every position)
        const std::size_t n = out.every_position ? S : 1, first = S - n;
        uint16_t* z = b.y;  // [n, D]: the MoE input is free now
        hc_head(m.hc, m.w.hc_head, Hs + first * W, n, hc_head_out{z, nullptr, nullptr}, b.hc);
        rmsnorm(z, n, D, D, m.w.norm, m.eps(), z, D);
        if (diag) diag->final_norm.assign(z + (n - 1) * D, z + n * D);
        const std::size_t V = vocab();
        par::bf16_gemv_bf16(m.w.head, bf16_rows{z, D, n}, gemv_out{out.logits, nullptr, V});
        if (m.opt.check_finite)
            for (std::size_t i = 0; i < n * V; ++i)
                if (!std::isfinite(out.logits[i]))
                    throw error(std::string("dsv4::") + fn + ": non-finite logit " + std::to_string(i % V) + " (" +
                                (std::isnan(out.logits[i]) ? "NaN" : "Inf") + ") at position " +
                                std::to_string(start + int64_t(first + i / V)) + " (token id " +
                                std::to_string(ids[first + i / V]) + ")");
    }
};

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
