// dsv4/model/context.hpp - what every block of the forward reads besides its own weights:
// the config, the caller's options, the RoPE tables and the derived kernel configs; plus
// the FP8 projection helpers the attention and the compressors share. Read-only after
// model::open, so any number of sequences may use it at once.
#pragma once

#include "../attention.hpp"
#include "../codec.hpp"
#include "../parallel.hpp"
#include "../rope.hpp"
#include "expert_streaming.hpp"
#include "options.hpp"
#include "weights.hpp"
#include "workspace.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

namespace dsv4 {
inline namespace DSV4_ISA_NS {

struct model_context {
    model_config cfg;
    forward_options opt;
    std::unique_ptr<checkpoint> ck;  ///< the mapped shards every weight view points into
    model_weights w;
    std::unique_ptr<expert_streamer> stream;   ///< routed experts from disk (forward_options::ram_budget)
    std::size_t D = 0, H = 0, hd = 0, ql = 0;  ///< hidden, heads, head_dim, q_lora_rank
    std::size_t max_ctx = 0;                   ///< positions a sequence may reach
    std::size_t window = 0;                    ///< sliding window (config sliding_window): ring slots per layer
    hc_config hc;
    moe_config moe;
    // RoPE: index 0 = ratio-0 layers (rope_theta), 1 = compressed layers (compress theta + YaRN)
    std::vector<float> freqs[2], rows[2];
    rope_table rope[2];

    const rope_table& rope_for(uint32_t ratio) const { return rope[ratio ? 1 : 0]; }
    float eps() const { return float(cfg.rms_norm_eps); }
    compressor_config comp_cfg(uint32_t r) const { return compressor_config{r, hd, false, rope_for(r), eps(), opt.kv_fp8}; }
    indexer_config index_cfg() const {
        indexer_config c;
        c.heads = cfg.index_n_heads;
        c.topk = cfg.index_topk;
        c.comp = compressor_config{4, cfg.index_head_dim, true, rope_for(4), eps(), fp8_sim_revision::current};
        return c;
    }
    /// Fast numerics where fp8_bf16_preferred(m) (avx512_bf16; the other SIMD tiers from 5
    /// (AVX-512) or 12 (AVX2) rows, the small-M GEMM; the AVX2 tiers for one token): FP8
    /// projections of m rows take their (exact) activations as bf16 blocks through fp8_gemv_bf16.
    bool fp8_bf16(std::size_t m) const { return opt.numerics == moe_numerics::fast && fp8_bf16_preferred(m); }
    /// Whether any call may take fp8_bf16 (buffers sized once for every row count).
    bool fp8_bf16_any() const { return opt.numerics == moe_numerics::fast && fp8_bf16_possible(); }
};

/// Rows ids[0..n) of the embedding table into dst + t * stride (bf16): from the mapping, or
/// read from the file when streaming (the table is not resident then: expert_streaming.hpp).
inline void embed_rows(const model_context& m, const int64_t* ids, std::size_t n, uint16_t* dst, std::size_t stride) {
    if (m.stream) return m.stream->read_embedding(ids, n, dst, stride);
    for (std::size_t t = 0; t < n; ++t)
        std::memcpy(dst + t * stride, m.w.embed + std::size_t(ids[t]) * m.D, m.D * sizeof(uint16_t));
}

/// Checks that the forward can compute `c` (beyond what the loader already validated) and
/// sets up the context: dims, RoPE tables, hc and MoE configs.
inline void init_model_context(model_context& m) {
    const model_config& c = m.cfg;
    auto unsupported = [&](const std::string& what) {
        throw error("dsv4::model::open: " + c.source + ": " + what + " is not supported by the forward");
    };
    if (c.hc_mult != hc_mult) unsupported("hc_mult " + std::to_string(c.hc_mult));
    if (c.qk_rope_head_dim != rope_dim) unsupported("qk_rope_head_dim " + std::to_string(c.qk_rope_head_dim));
    if (c.sliding_window < 1 || c.sliding_window > (1u << 20)) unsupported("sliding_window " + std::to_string(c.sliding_window));
    if (c.scoring_func != "sqrtsoftplus") unsupported("scoring_func " + c.scoring_func);
    if (c.expert_dtype != expert_format::fp4) unsupported("expert_dtype fp8");
    if (c.n_shared_experts != 1) unsupported("n_shared_experts " + std::to_string(c.n_shared_experts));
    if (c.head_dim % 64) unsupported("head_dim " + std::to_string(c.head_dim));
    if (c.index_head_dim != index_head_dim) unsupported("index_head_dim " + std::to_string(c.index_head_dim));
    if (c.hidden_size % 128 || c.moe_intermediate_size % 128) unsupported("hidden/moe sizes not multiples of 128");
    if (c.o_groups > 1 && c.o_lora_rank % 128)  // grouped wo_a: each group's rows whole 128-row scale blocks
        unsupported("o_lora_rank " + std::to_string(c.o_lora_rank) + " with " + std::to_string(c.o_groups) +
                    " output groups (a group's wo_a rows must be a multiple of 128)");
    m.D = c.hidden_size;
    m.H = c.num_attention_heads;
    m.hd = c.head_dim;
    m.ql = c.q_lora_rank;
    m.window = c.sliding_window;
    m.max_ctx = m.opt.max_context ? m.opt.max_context
                                  : std::size_t(std::min<uint64_t>(c.max_position_embeddings, 65536));
    if (m.max_ctx == 0) throw error("dsv4::model::open: max_context is 0");

    // ratio-0 layers: rope_theta without YaRN; compressed layers: compress_rope_theta with
    // YaRN when the config has rope_scaling (forward.py choice 3).
    rope_config rc[2];
    rc[0] = rope_config{c.rope_theta, 1.0, 0, 32.0, 1.0};
    rc[1] = rope_config{c.compress_rope_theta, 1.0, 0, 32.0, 1.0};
    if (c.rope_scaling.yarn) {
        rc[1].factor = c.rope_scaling.factor;
        rc[1].original_seq_len = int64_t(c.rope_scaling.original_max_position_embeddings);
        rc[1].beta_fast = c.rope_scaling.beta_fast;
        rc[1].beta_slow = c.rope_scaling.beta_slow;
    }
    const std::size_t nrows = std::min(m.opt.rope_table_rows, m.max_ctx);
    for (int i = 0; i < 2; ++i) {
        m.freqs[i].assign(rope_pairs, 0.0f);
        rope_freqs(rc[i], m.freqs[i].data());
        m.rows[i].assign(nrows * rope_row_floats, 0.0f);
        rope_table_fill(m.freqs[i].data(), nrows, m.rows[i].data());
        m.rope[i] = rope_table{m.freqs[i].data(), m.rows[i].data(), nrows};
    }

    m.hc = hc_config{m.D, int(c.hc_sinkhorn_iters), float(c.hc_eps), float(c.rms_norm_eps)};
    m.moe.dim = m.D;
    m.moe.inter = c.moe_intermediate_size;
    m.moe.n_experts = c.n_routed_experts;
    m.moe.topk = c.num_experts_per_tok;
    m.moe.route_scale = float(c.routed_scaling_factor);
    m.moe.swiglu_limit = float(c.swiglu_limit);
    m.moe.shared_clamp = m.opt.shared_clamp;
    m.moe.numerics = m.opt.numerics;
}

/// Rows per work item when a chunk's activations are prepared (quantised, widened) in parallel.
inline constexpr std::size_t act_prep_grain = 16;

/// to_bf16_blocks of m rows of k (contiguous) in parallel over rows.
inline void par_to_bf16_blocks(const float* xf, std::size_t k, std::size_t m, uint16_t* xb, int32_t* sh) {
    par::for_rows(m, act_prep_grain, [&](std::size_t r0, std::size_t r1) {
        to_bf16_blocks(xf + r0 * k, k, r1 - r0, k, xb + r0 * k, k, sh + r0 * (k / 128), k / 128);
    });
}

/// out = xf [m, groups * w.k] (exact f32 activations) . w^T through the path fp8_bf16(m)
/// picks; xb / sh: room for the bf16 blocks of xf when it picks fp8_gemv_bf16.
inline void fp8_project(const model_context& c, const fp8_matrix& w, std::size_t groups, const float* xf,
                        std::size_t m, uint16_t* xb, int32_t* sh, const gemv_out& out) {
    const std::size_t kx = groups * w.k;
    if (c.fp8_bf16(m)) {
        par_to_bf16_blocks(xf, kx, m, xb, sh);
        const bf16_block_rows x{xb, kx, sh, kx / 128, m};
        if (groups == 1) par::fp8_gemv_bf16(w, x, out);
        else par::fp8_grouped_gemv_bf16(w, groups, x, out);
    } else {
        const f32_rows x{xf, kx, m};
        if (groups == 1) par::fp8_gemv(w, x, out);
        else par::fp8_grouped_gemv(w, groups, x, out);
    }
}

/// Tokens per fp8_linear chunk: each chunk streams the whole weight matrix and runs the FP8
/// GEMM (kernels/gemm_fp8.hpp) once, which is faster at 256 rows than at 64 (bench_gemm m512
/// vs m64: 1.0-1.2x) and pays the per-chunk activation preparation a quarter as often
/// (real-dims prefill 512, fast: 64 -> 256 rows, with wo_a's 32 -> 128, 1.03x at 1 thread,
/// 1.10x at 2; docs/benchmarks.md). Workspace: K x 7 bytes per row (7 MiB at K = 4096).
inline constexpr std::size_t fp8_linear_chunk = 256;


/// Workspace bytes fp8_linear takes for K inputs and m rows (chunks of fp8_linear_chunk tokens).
inline std::size_t fp8_linear_bytes(const model_context& c, std::size_t K, std::size_t m) {
    const std::size_t mc = std::min(m, fp8_linear_chunk);
    const bool bf = c.fp8_bf16_any();
    auto b = [](std::size_t n, std::size_t size) { return forward_workspace::round_up(n * size); };
    return b(mc * K, 1) + b(mc * (K / 128), 1) + b(mc * K, 4) + (bf ? b(mc * K, 2) + b(mc * (K / 128), 4) : 0);
}

/// The activation side of fp8_linear: x [m, K] bf16 in chunks of fp8_linear_chunk rows, each
/// act_quant'ed (blocks of 128) and dequantised to f32; fn(a, n, xf, xb, sh) gets chunk rows
/// [a, a + n) as xf [n, K] plus room xb / sh for their bf16 blocks (null unless fp8_bf16_any()).
/// Buffers from ws (fp8_linear_bytes), released on return.
template <class Fn>
inline void for_fp8_act_chunks(const model_context& c, std::size_t K, const uint16_t* x, std::size_t x_stride,
                               std::size_t m, forward_workspace& ws, Fn&& fn) {
    constexpr std::size_t C = fp8_linear_chunk;
    const std::size_t mc = std::min(m, C), mk = ws.mark();
    const bool bf = c.fp8_bf16_any();
    uint8_t* codes = ws.take<uint8_t>(mc * K);
    uint8_t* scales = ws.take<uint8_t>(mc * (K / 128));
    float* xf = ws.take<float>(mc * K);
    uint16_t* xb = bf ? ws.take<uint16_t>(mc * K) : nullptr;
    int32_t* sh = bf ? ws.take<int32_t>(mc * (K / 128)) : nullptr;
    for (std::size_t a = 0; a < m; a += C) {
        const std::size_t n = std::min(C, m - a);
        par::for_rows(n, act_prep_grain, [&](std::size_t r0, std::size_t r1) {  // rows are independent
            act_quant_fp8(x + (a + r0) * x_stride, r1 - r0, K, x_stride, 128, codes + r0 * K, K, scales + r0 * (K / 128),
                          K / 128);
            fp8_acts_to_f32(codes + r0 * K, K, scales + r0 * (K / 128), K / 128, r1 - r0, K, xf + r0 * K, K);
        });
        fn(a, n, xf, xb, sh);
    }
    ws.release(mk);
}

/// y = bf16(act_quant(x, 128) . w^T) for m rows (chunks of fp8_linear_chunk tokens); buffers from ws.
inline void fp8_linear(const model_context& c, const fp8_matrix& w, const uint16_t* x, std::size_t x_stride,
                       std::size_t m, uint16_t* y, std::size_t y_stride, forward_workspace& ws) {
    for_fp8_act_chunks(c, w.k, x, x_stride, m, ws,
                       [&](std::size_t a, std::size_t n, const float* xf, uint16_t* xb, int32_t* sh) {
                           fp8_project(c, w, 1, xf, n, xb, sh, gemv_out{nullptr, y + a * y_stride, y_stride});
                       });
}

/// fp8_linear of two weights over the same x (a layer's wq_a and wkv): x quantised once per
/// chunk and the rows of both in one parallel region. Same bits as two fp8_linear calls (the
/// same activations; every output row computed alone); buffers as one fp8_linear.
inline void fp8_linear_pair(const model_context& c, const fp8_matrix& wa, uint16_t* ya, std::size_t ya_stride,
                            const fp8_matrix& wb, uint16_t* yb, std::size_t yb_stride, const uint16_t* x,
                            std::size_t x_stride, std::size_t m, forward_workspace& ws) {
    detail::require(wa.k == wb.k, "fp8_linear_pair", "the two weights take inputs of different widths");
    const std::size_t K = wa.k, na = wa.n;
    for_fp8_act_chunks(c, K, x, x_stride, m, ws, [&](std::size_t a, std::size_t n, const float* xf, uint16_t* xb,
                                                     int32_t* sh) {
        const gemv_out oa{nullptr, ya + a * ya_stride, ya_stride}, ob{nullptr, yb + a * yb_stride, yb_stride};
        // rows [0, na) of the joint range are wa's, [na, na + wb.n) wb's
        auto project = [&](auto&& gemv, const auto& xr) {
            gemv(wa, xr, oa, 0, 0);  // validates once
            gemv(wb, xr, ob, 0, 0);
            par::for_rows(na + wb.n, par::gemv_grain, [&](std::size_t r0, std::size_t r1) {
                if (r0 < na) gemv(wa, xr, oa, r0, std::min(r1, na));
                if (r1 > na) gemv(wb, xr, ob, std::max(r0, na) - na, r1 - na);
            });
        };
        if (c.fp8_bf16(n)) {
            par_to_bf16_blocks(xf, K, n, xb, sh);
            project([](const fp8_matrix& w, const bf16_block_rows& xr, const gemv_out& o, std::size_t r0,
                       std::size_t r1) { dsv4::fp8_gemv_bf16(w, xr, o, r0, r1); },
                    bf16_block_rows{xb, K, sh, K / 128, n});
        } else {
            project([](const fp8_matrix& w, const f32_rows& xr, const gemv_out& o, std::size_t r0, std::size_t r1) {
                dsv4::fp8_gemv(w, xr, o, r0, r1);
            }, f32_rows{xf, K, n});
        }
    });
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
