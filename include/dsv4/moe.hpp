// dsv4/moe.hpp - the MoE layer of DeepSeek-V4-Flash (spec §8): gate (sqrt-softplus scores,
// top-k with a selection-only bias, or hash routing by token id), routed FP4 experts, the FP8
// shared expert and the combine. Kernels: the GEMV family for every projection,
// kernels/moe.hpp for the combine and the shared SwiGLU.
//
// Weights are views straight into the checkpoint bytes (spec §1.3, nothing is converted or
// copied):
//   gate      bf16_matrix [n_experts, dim]          ffn.gate.weight
//   bias      f32 [n_experts]                        ffn.gate.bias      (score layers)
//   tid2eid   int64 [vocab, topk]                    ffn.gate.tid2eid   (hash layers 0..2)
//   experts   moe_expert_weights[n_experts]: w1, w3 fp4_matrix [inter, dim], w2 [dim, inter]
//             (ffn.experts.{j}.w{1,3,2}.weight I8 + .scale E8M0)
//   shared    fp8_matrix w1, w3 [inter, dim], w2 [dim, inter] (ffn.shared_experts.*)
// Activations: x [T, dim] bf16 (the ffn_norm output), token ids [T] (hash layers only),
// output y [T, dim] bf16 (may be x itself).
//
// Numerics (moe_config::numerics):
//   reference  the official precision: every expert input act_quant'ed to FP8 (block 128),
//              GEMV sums in f32, each projection output rounded to bf16 (spec §2.5, §8).
//   fast       routed experts take int8 activations per 32 (quantize_q8; maddubs/VNNI dot
//              products) for x and for the down-projection input; on avx512_bf16 (and on
//              the AVX2 tiers for one token) the shared FP8 expert takes the same FP8
//              activations as bf16 blocks (fp8_gemv_bf16, see fp8_bf16_preferred; subnormal
//              weight codes count as zero on avx512_bf16); the gate is unchanged.
// shared_clamp: true = current official revision (shared expert clamped like the routed
// ones), false = initial revision (no clamp), spec §8.3 / §10.1.
//
// Work is done in chunks of at most scratch.max_tokens tokens. Per chunk, five phases; within
// a phase the work items are independent, between phases there is a barrier:
//   1 moe_gate_rows(run, r0, r1)   gate logits and scores for experts [r0, r1), all tokens
//   2 moe_route(run)               top-k / hash, weights, tokens grouped per expert (serial)
//   3 moe_prepare(run, t0, t1)     act_quant (or int8) of x for tokens [t0, t1), gathered per
//                                  expert so that each expert sees its tokens contiguously
//   4 moe_up(run, u0, u1)          units of moe_up_units(run): (expert, 128 rows of inter),
//                                  fused gate+up + SwiGLU + routing weight, then act_quant of
//                                  those 128 columns of h; the shared expert is the last unit
//                                  group (two FP8 GEMVs + SwiGLU)
//   5 moe_down(run, r0, r1)        rows [r0, r1) of dim: every active expert's w2 (ascending
//                                  id), the shared w2, and the combine of those columns
//   (prefill) when moe_down_by_expert(run), phase 5 comes in two: first
//     moe_down_experts(run, u0, u1) over units (active expert, moe_down_rows rows of dim),
//     then moe_down(run, r0, r1, false) (shared w2 and combine only). A unit runs one
//     expert's w2 over 1024 rows in one call, where phase 5 alone calls it once per 64-row
//     item for every expert (re-reading the expert's activations and restarting the GEMM's
//     weight stream each time: 0.6-0.8x the rate at ~12 rows per expert, Zen 4). Same bits.
// Decode (T = 1) is the same path with the 6 selected experts + the shared one and no gather.
// In prefill each expert's weights stream from memory once per chunk (its tokens form one
// GEMM of M = n_e rows, tiled by gemv_m_tile in L1). moe_forward_on(ex, ...) runs the phases
// through an executor (executor.hpp); moe_forward is the serial one, dsv4::par::moe_forward
// the oneTBB one; a pool can also call the phases itself.
// Results are bit-identical whatever the chunking, the threads or the split of work items.
#pragma once

#include "executor.hpp"
#include "kernels/moe.hpp"
#include "parallel.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

namespace dsv4 {

enum class moe_numerics : int { reference = 0, fast = 1 };

struct moe_config {
    std::size_t dim = 4096;        ///< model dim (multiple of 128)
    std::size_t inter = 2048;      ///< moe_inter_dim, routed and shared (multiple of 128)
    std::size_t n_experts = 256;   ///< routed experts
    std::size_t topk = 6;          ///< experts per token (1..16)
    float route_scale = 1.5f;
    float swiglu_limit = 10.0f;    ///< <= 0 disables the clamp everywhere
    bool shared_clamp = true;      ///< current revision clamps the shared expert too
    moe_numerics numerics = moe_numerics::reference;
};

/// One routed expert (FP4, checkpoint views).
struct moe_expert_weights {
    fp4_matrix w1, w3;  ///< gate and up projections [inter, dim]
    fp4_matrix w2;      ///< down projection [dim, inter]
};
/// The shared expert (FP8 with 128x128 block scales).
struct moe_shared_weights {
    fp8_matrix w1, w3;  ///< [inter, dim]
    fp8_matrix w2;      ///< [dim, inter]
};
struct moe_gate_weights {
    bf16_matrix gate;                  ///< [n_experts, dim]
    const float* bias = nullptr;       ///< [n_experts], selection only; null = no bias
    const int64_t* tid2eid = nullptr;  ///< [vocab, topk]: set for hash layers (then bias must be null)
    std::size_t vocab = 0;             ///< rows of tid2eid
};
struct moe_weights {
    moe_gate_weights gate;
    const moe_expert_weights* experts = nullptr;  ///< [n_experts]
    moe_shared_weights shared;
};

/// Routing results of moe_route_tokens: idx ascending per token, weights in the same order.
struct moe_routing_out {
    int32_t* idx = nullptr;    ///< [T, topk]
    float* weights = nullptr;  ///< [T, topk] (route_scale applied)
    float* scores = nullptr;   ///< [T, n_experts] sqrt(softplus(logits)), optional
};

/// Caller-provided working memory of the MoE layer (no allocation inside). Size it with
/// dsv4::bytes_needed(cfg, max_tokens) (a free function: function bodies live in the ISA
/// namespace, plain data outside). At V4-Flash shapes: 18.5 MiB for chunks of 64 tokens in
/// reference mode (13.5 MiB fast), 4.6 MiB for 16, 0.29 MiB for decode (max_tokens 1).
struct moe_scratch {
    void* data = nullptr;
    std::size_t bytes = 0;
    std::size_t max_tokens = 1;  ///< chunk size: longer inputs are processed in chunks of this many
};

/// One chunk in flight: inputs and the scratch carved into buffers (plain pointers; the
/// phases read it, moe_route fills the routing part). Produced by moe_begin.
struct moe_run {
    const moe_config* cfg = nullptr;
    const moe_weights* w = nullptr;
    const uint16_t* x = nullptr;
    std::size_t x_stride = 0;
    const int64_t* token_ids = nullptr;
    std::size_t tokens = 0;
    uint16_t* y = nullptr;
    std::size_t y_stride = 0;
    // routing (valid after moe_route)
    float* scores = nullptr;    ///< [T, E]
    int32_t* idx = nullptr;     ///< [T, k] ascending expert ids
    float* weights = nullptr;   ///< [T, k]
    uint32_t* count = nullptr;  ///< [E] tokens per expert
    uint32_t* offset = nullptr; ///< [E + 1] first assignment slot of each expert
    uint32_t* active = nullptr; ///< [n_active] experts with tokens, ascending
    std::size_t n_active = 0;
    uint32_t* a_token = nullptr;  ///< [T k] token of each assignment slot (grouped by expert)
    float* a_weight = nullptr;    ///< [T k] its routing weight
    uint32_t* slot_of = nullptr;  ///< [T, k] slot of the token's j-th expert
    uint32_t* fill = nullptr;
    // activations and intermediates (see detail::moe_scratch_layout)
    uint8_t *xcodes = nullptr, *xscales = nullptr;
    float* xs = nullptr;
    float* xg = nullptr;
    int8_t* xq = nullptr;
    float* xd = nullptr;
    int32_t* xc = nullptr;
    int8_t* xgq = nullptr;
    float* xgd = nullptr;
    int32_t* xgc = nullptr;
    uint16_t* h = nullptr;
    uint8_t *hcodes = nullptr, *hscales = nullptr;
    float* hf = nullptr;
    int8_t* hq = nullptr;
    float* hd = nullptr;
    int32_t* hc = nullptr;
    uint16_t *sa = nullptr, *sb = nullptr, *sh = nullptr;
    uint8_t *shcodes = nullptr, *shscales = nullptr;
    float* shf = nullptr;
    uint16_t *ro = nullptr, *so = nullptr;
    bool shared_bf16 = false;                 ///< shared expert through fp8_gemv_bf16 (fast mode, where preferred)
    uint16_t *xsb = nullptr, *shb = nullptr;  ///< its inputs as bf16 blocks then
    int32_t *xss = nullptr, *shs = nullptr;   ///< (to_bf16_blocks of xs and shf)
};

inline namespace DSV4_ISA_NS {

namespace detail {
enum moe_buf : int {
    mb_scores, mb_idx, mb_weights, mb_count, mb_offset, mb_fill, mb_active, mb_a_token, mb_a_weight, mb_slot_of,
    mb_xcodes, mb_xscales, mb_xs, mb_xg, mb_xq, mb_xd, mb_xc, mb_xgq, mb_xgd, mb_xgc, mb_h, mb_hcodes, mb_hscales,
    mb_hf, mb_hq, mb_hd, mb_hc, mb_sa, mb_sb, mb_sh, mb_shcodes, mb_shscales, mb_shf, mb_ro, mb_so, mb_xsb, mb_xss, mb_shb, mb_shs, mb_count_
};
struct moe_layout {
    std::size_t off[mb_count_] = {};
    std::size_t total = 0;
};
/// Scratch layout for chunks of up to tm tokens; every buffer 64-byte aligned.
constexpr moe_layout moe_scratch_layout(const moe_config& c, std::size_t tm) noexcept {
    const std::size_t D = c.dim, I = c.inter, E = c.n_experts, A = tm * c.topk;
    const bool ref = c.numerics == moe_numerics::reference;
    std::size_t sz[mb_count_] = {};
    sz[mb_scores] = tm * E * 4;
    sz[mb_idx] = A * 4;
    sz[mb_weights] = A * 4;
    sz[mb_count] = E * 4;
    sz[mb_offset] = (E + 1) * 4;
    sz[mb_fill] = E * 4;
    sz[mb_active] = E * 4;
    sz[mb_a_token] = A * 4;
    sz[mb_a_weight] = A * 4;
    sz[mb_slot_of] = A * 4;
    sz[mb_xcodes] = tm * D;
    sz[mb_xscales] = tm * (D / 128);
    sz[mb_xs] = tm * D * 4;
    sz[mb_xg] = ref ? A * D * 4 : 0;
    sz[mb_xq] = ref ? 0 : tm * D;
    sz[mb_xd] = ref ? 0 : tm * (D / 32) * 4;
    sz[mb_xc] = ref ? 0 : tm * (D / 32) * 4;
    sz[mb_xgq] = ref ? 0 : A * D;
    sz[mb_xgd] = ref ? 0 : A * (D / 32) * 4;
    sz[mb_xgc] = ref ? 0 : A * (D / 32) * 4;
    sz[mb_h] = A * I * 2;
    sz[mb_hcodes] = ref ? A * I : 0;
    sz[mb_hscales] = ref ? A * (I / 128) : 0;
    sz[mb_hf] = ref ? A * I * 4 : 0;
    sz[mb_hq] = ref ? 0 : A * I;
    sz[mb_hd] = ref ? 0 : A * (I / 32) * 4;
    sz[mb_hc] = ref ? 0 : A * (I / 32) * 4;
    sz[mb_sa] = sz[mb_sb] = sz[mb_sh] = tm * I * 2;
    sz[mb_shcodes] = tm * I;
    sz[mb_shscales] = tm * (I / 128);
    sz[mb_shf] = tm * I * 4;
    sz[mb_ro] = A * D * 2;
    sz[mb_so] = tm * D * 2;
    sz[mb_xsb] = ref ? 0 : tm * D * 2;  // fast mode: the shared expert's bf16 block activations
    sz[mb_xss] = ref ? 0 : tm * (D / 128) * 4;
    sz[mb_shb] = ref ? 0 : tm * I * 2;
    sz[mb_shs] = ref ? 0 : tm * (I / 128) * 4;
    moe_layout l;
    std::size_t o = 0;
    for (int i = 0; i < mb_count_; ++i) {
        l.off[i] = o;
        o += (sz[i] + 63) / 64 * 64;
    }
    l.total = o + 64;  // + alignment slack of the caller's pointer
    return l;
}
}  // namespace detail

/// Bytes of scratch the MoE layer needs for chunks of up to max_tokens tokens.
constexpr std::size_t bytes_needed(const moe_config& c, std::size_t max_tokens) noexcept {
    return detail::moe_scratch_layout(c, max_tokens).total;
}

namespace detail {

inline constexpr std::size_t moe_max_topk = 16;
inline constexpr std::size_t moe_up_rows = 128;  ///< rows of inter per up unit (act_quant block)

/// sqrt(softplus(l)) with torch's threshold: l if l > 20, else log1p(exp(l)) (evaluated in
/// double and rounded once, as the reference does), then an f32 sqrt.
inline float sqrt_softplus(float l) noexcept {
    const float sp = l > 20.0f ? l : float(std::log1p(std::exp(double(l))));
    return std::sqrt(sp);
}

/// Indices of the k largest val(e), e in [0, n) (ties: lower id first; NaN ranks below
/// every number), in rank order.
template <class Val> void topk_lower_id(Val&& val, std::size_t n, std::size_t k, int32_t* out) noexcept {
    float bv[moe_max_topk];
    int32_t bi[moe_max_topk];
    std::size_t cnt = 0;
    auto better = [](float a, float b) {  // a strictly ranks above b
        if (std::isnan(a)) return false;
        return std::isnan(b) || a > b;
    };
    for (std::size_t e = 0; e < n; ++e) {
        const float v = val(e);
        if (cnt == k && !better(v, bv[k - 1])) continue;
        std::size_t p = cnt < k ? cnt : k - 1;  // appended, or replaces the last
        while (p > 0 && better(v, bv[p - 1])) {
            bv[p] = bv[p - 1];
            bi[p] = bi[p - 1];
            --p;
        }
        bv[p] = v;
        bi[p] = int32_t(e);
        if (cnt < k) ++cnt;
    }
    for (std::size_t j = 0; j < k; ++j) out[j] = bi[j];
}

inline void check_moe_config(const moe_config& c, const char* fn) {
    require(c.dim > 0 && c.dim % 128 == 0, fn, "dim must be a positive multiple of 128");
    require(c.inter > 0 && c.inter % 128 == 0, fn, "inter must be a positive multiple of 128");
    require(c.n_experts > 0 && c.n_experts <= (std::size_t(1) << 30), fn, "n_experts out of range");
    require(c.topk >= 1 && c.topk <= moe_max_topk && c.topk <= c.n_experts, fn,
            "topk must be in [1, min(16, n_experts)]");
    require(c.numerics == moe_numerics::reference || c.numerics == moe_numerics::fast, fn, "unknown numerics");
}

inline void check_gate(const moe_config& c, const moe_gate_weights& g, const int64_t* token_ids, std::size_t tokens,
                       const char* fn) {
    require(g.gate.w != nullptr, fn, "gate weight is null");
    require(g.gate.n == c.n_experts && g.gate.k == c.dim, fn, "gate weight must be [n_experts, dim]");
    require(g.gate.n <= 1 || g.gate.w_stride >= g.gate.k, fn, "gate w_stride smaller than dim");
    if (!g.tid2eid) return;
    require(g.bias == nullptr, fn, "hash routing (tid2eid) uses no bias: set exactly one of bias / tid2eid");
    require(g.vocab > 0, fn, "tid2eid set but vocab is 0");
    require(tokens == 0 || token_ids != nullptr, fn, "hash routing needs token ids");
    for (std::size_t t = 0; t < tokens; ++t) {
        const int64_t id = token_ids[t];
        if (id < 0 || uint64_t(id) >= g.vocab)
            throw error(std::string("dsv4::") + fn + ": token id " + std::to_string(id) + " (token " +
                        std::to_string(t) + ") outside the vocabulary [0, " + std::to_string(g.vocab) + ")");
        const int64_t* row = g.tid2eid + std::size_t(id) * c.topk;
        for (std::size_t j = 0; j < c.topk; ++j) {
            if (row[j] < 0 || uint64_t(row[j]) >= c.n_experts)
                throw error(std::string("dsv4::") + fn + ": tid2eid[" + std::to_string(id) + "] names expert " +
                            std::to_string(row[j]) + ", outside [0, n_experts)");
            for (std::size_t i = 0; i < j; ++i)
                require(row[i] != row[j], fn, "a tid2eid row names an expert twice");
        }
    }
}

inline void check_experts(const moe_config& c, const moe_weights& w, const char* fn) {
    require(w.experts != nullptr, fn, "experts is null");
    for (std::size_t e = 0; e < c.n_experts; ++e) {
        const moe_expert_weights& x = w.experts[e];
        check_gate_up(x.w1, x.w3, fn);
        check_fp4(x.w2, fn);
        if (x.w1.n != c.inter || x.w1.k != c.dim || x.w2.n != c.dim || x.w2.k != c.inter)
            throw error(std::string("dsv4::") + fn + ": expert " + std::to_string(e) +
                        " has the wrong shape (w1/w3 [inter, dim], w2 [dim, inter])");
    }
    const moe_shared_weights& s = w.shared;
    check_fp8(s.w1, fn);
    check_fp8(s.w3, fn);
    check_fp8(s.w2, fn);
    require(s.w1.n == c.inter && s.w1.k == c.dim && s.w3.n == c.inter && s.w3.k == c.dim && s.w2.n == c.dim &&
                s.w2.k == c.inter,
            fn, "shared expert has the wrong shape (w1/w3 [inter, dim], w2 [dim, inter])");
}

/// A run must come from moe_begin (a default-constructed one has no config or weights).
inline void check_run(const moe_run& r, const char* fn) {
    require(r.cfg && r.w && r.scores && r.idx, fn, "run was not started by moe_begin");
}

inline moe_run moe_carve(const moe_config& c, const moe_scratch& s, std::size_t tokens, const char* fn) {
    require(s.max_tokens >= 1, fn, "scratch.max_tokens must be >= 1");
    require(tokens <= s.max_tokens, fn, "more tokens than scratch.max_tokens");
    require(s.data != nullptr, fn, "scratch.data is null");
    require(s.bytes >= bytes_needed(c, s.max_tokens), fn,
            "scratch smaller than bytes_needed(cfg, max_tokens)");
    const moe_layout l = moe_scratch_layout(c, s.max_tokens);
    auto base = reinterpret_cast<std::uintptr_t>(s.data);
    unsigned char* p = reinterpret_cast<unsigned char*>((base + 63) & ~std::uintptr_t(63));
    auto at = [&](int b) { return static_cast<void*>(p + l.off[b]); };
    moe_run r;
    r.cfg = &c;
    r.scores = static_cast<float*>(at(mb_scores));
    r.idx = static_cast<int32_t*>(at(mb_idx));
    r.weights = static_cast<float*>(at(mb_weights));
    r.count = static_cast<uint32_t*>(at(mb_count));
    r.offset = static_cast<uint32_t*>(at(mb_offset));
    r.fill = static_cast<uint32_t*>(at(mb_fill));
    r.active = static_cast<uint32_t*>(at(mb_active));
    r.a_token = static_cast<uint32_t*>(at(mb_a_token));
    r.a_weight = static_cast<float*>(at(mb_a_weight));
    r.slot_of = static_cast<uint32_t*>(at(mb_slot_of));
    r.xcodes = static_cast<uint8_t*>(at(mb_xcodes));
    r.xscales = static_cast<uint8_t*>(at(mb_xscales));
    r.xs = static_cast<float*>(at(mb_xs));
    r.xg = static_cast<float*>(at(mb_xg));
    r.xq = static_cast<int8_t*>(at(mb_xq));
    r.xd = static_cast<float*>(at(mb_xd));
    r.xc = static_cast<int32_t*>(at(mb_xc));
    r.xgq = static_cast<int8_t*>(at(mb_xgq));
    r.xgd = static_cast<float*>(at(mb_xgd));
    r.xgc = static_cast<int32_t*>(at(mb_xgc));
    r.h = static_cast<uint16_t*>(at(mb_h));
    r.hcodes = static_cast<uint8_t*>(at(mb_hcodes));
    r.hscales = static_cast<uint8_t*>(at(mb_hscales));
    r.hf = static_cast<float*>(at(mb_hf));
    r.hq = static_cast<int8_t*>(at(mb_hq));
    r.hd = static_cast<float*>(at(mb_hd));
    r.hc = static_cast<int32_t*>(at(mb_hc));
    r.sa = static_cast<uint16_t*>(at(mb_sa));
    r.sb = static_cast<uint16_t*>(at(mb_sb));
    r.sh = static_cast<uint16_t*>(at(mb_sh));
    r.shcodes = static_cast<uint8_t*>(at(mb_shcodes));
    r.shscales = static_cast<uint8_t*>(at(mb_shscales));
    r.shf = static_cast<float*>(at(mb_shf));
    r.ro = static_cast<uint16_t*>(at(mb_ro));
    r.so = static_cast<uint16_t*>(at(mb_so));
    r.xsb = static_cast<uint16_t*>(at(mb_xsb));
    r.xss = static_cast<int32_t*>(at(mb_xss));
    r.shb = static_cast<uint16_t*>(at(mb_shb));
    r.shs = static_cast<int32_t*>(at(mb_shs));
    r.shared_bf16 = c.numerics == moe_numerics::fast && fp8_bf16_preferred(tokens);
    return r;
}

inline moe_run moe_begin_impl(const moe_config& c, const moe_weights& w, const uint16_t* x, std::size_t x_stride,
                              const int64_t* token_ids, std::size_t tokens, uint16_t* y, std::size_t y_stride,
                              const moe_scratch& s, bool need_experts, const char* fn) {
    check_moe_config(c, fn);
    check_gate(c, w.gate, token_ids, tokens, fn);
    if (need_experts) {
        check_experts(c, w, fn);
        require(tokens == 0 || y != nullptr, fn, "y is null");
        require(tokens <= 1 || y_stride >= c.dim, fn, "y_stride smaller than dim");
    }
    require(tokens == 0 || x != nullptr, fn, "x is null");
    require(tokens <= 1 || x_stride >= c.dim, fn, "x_stride smaller than dim");
    moe_run r = moe_carve(c, s, tokens, fn);
    r.w = &w;
    r.x = x;
    r.x_stride = x_stride;
    r.token_ids = token_ids;
    r.tokens = tokens;
    r.y = y;
    r.y_stride = y_stride;
    return r;
}

/// Input rows of routed expert e (its tokens, contiguous).
inline f32_rows expert_x(const moe_run& r, uint32_t e) noexcept {
    const std::size_t D = r.cfg->dim;
    if (r.tokens == 1) return {r.xs, D, 1};
    return {r.xg + std::size_t(r.offset[e]) * D, D, r.count[e]};
}
inline q8_rows expert_xq(const moe_run& r, uint32_t e) noexcept {
    const std::size_t D = r.cfg->dim;
    if (r.tokens == 1) return {r.xq, D, r.xd, D / 32, r.xc, D / 32, 1};
    const std::size_t o = r.offset[e];
    return {r.xgq + o * D, D, r.xgd + o * (D / 32), D / 32, r.xgc + o * (D / 32), D / 32, r.count[e]};
}

}  // namespace detail

/// Starts one chunk (tokens <= scratch.max_tokens): checks every argument (throws
/// dsv4::error naming the problem; a token id outside the vocabulary of a hash layer
/// included) and carves the scratch. The returned run refers to cfg, w and the scratch:
/// keep them alive until moe_down has finished.
inline moe_run moe_begin(const moe_config& c, const moe_weights& w, const uint16_t* x, std::size_t x_stride,
                         const int64_t* token_ids, std::size_t tokens, uint16_t* y, std::size_t y_stride,
                         const moe_scratch& s) {
    return detail::moe_begin_impl(c, w, x, x_stride, token_ids, tokens, y, y_stride, s, true, "moe_begin");
}

/// Phase 1: gate logits l = f32(x) . f32(gate)^T (bf16_gemv_bf16 on the bf16 x: exact
/// products, f32 sums) and scores sqrt(softplus(l))
/// for experts [r0, r1), every token of the chunk.
inline void moe_gate_rows(const moe_run& r, std::size_t r0 = 0, std::size_t r1 = all_rows) {
    detail::check_run(r, "moe_gate_rows");
    const moe_config& c = *r.cfg;
    detail::check_rows(r0, r1, c.n_experts, "moe_gate_rows");
    if (r.tokens == 0 || r0 == r1) return;
    bf16_gemv_bf16(r.w->gate.gate, bf16_rows{r.x, r.x_stride, r.tokens}, gemv_out{r.scores, nullptr, c.n_experts}, r0,
                   r1);
    for (std::size_t t = 0; t < r.tokens; ++t)
        for (std::size_t e = r0; e < r1; ++e) {
            float& v = r.scores[t * c.n_experts + e];
            v = detail::sqrt_softplus(v);
        }
}

/// Phase 2 (serial): expert selection (hash: tid2eid[token id]; else top-k of f32(s + bias),
/// ties to the lower id), weights g = s[idx] / sum(s[idx]) * route_scale from the UNBIASED
/// scores, and the grouping of tokens per expert.
/// NaN scores (a NaN in x or in a gate / bias row): a NaN selection value ranks below every
/// number (ties to the lower id, so the choice stays defined and in range), and a score-
/// routed token with any NaN score or selection value gets NaN weights, so that the NaN
/// reaches the layer output instead of silently dropping an expert. Hash-routed tokens use
/// only the scores of their tid2eid experts (a NaN there propagates the same way).
inline void moe_route(moe_run& r) {
    detail::check_run(r, "moe_route");
    const moe_config& c = *r.cfg;
    const moe_gate_weights& g = r.w->gate;
    const std::size_t E = c.n_experts, K = c.topk, T = r.tokens;
    for (std::size_t t = 0; t < T; ++t) {
        const float* s = r.scores + t * E;
        int32_t* idx = r.idx + t * K;
        if (g.tid2eid) {
            const int64_t* row = g.tid2eid + std::size_t(r.token_ids[t]) * K;
            for (std::size_t j = 0; j < K; ++j) idx[j] = int32_t(row[j]);
        } else if (!g.bias) {
            detail::topk_lower_id([s](std::size_t e) { return s[e]; }, E, K, idx);
        } else {
            const float* bias = g.bias;  // f32(s + bias), for the selection only
            detail::topk_lower_id([s, bias](std::size_t e) { return s[e] + bias[e]; }, E, K, idx);
        }
        bool nan = false;  // see above: a NaN the selection skipped must still show
        if (!g.tid2eid)
            for (std::size_t e = 0; e < E; ++e) nan |= std::isnan(g.bias ? s[e] + g.bias[e] : s[e]);
        std::sort(idx, idx + K);
        double sum = 0.0;  // <= 16 f32 terms: exact in double, rounded once like the reference
        for (std::size_t j = 0; j < K; ++j) sum += double(s[idx[j]]);
        const float den = float(sum);
        for (std::size_t j = 0; j < K; ++j)
            r.weights[t * K + j] = nan ? std::numeric_limits<float>::quiet_NaN() : (s[idx[j]] / den) * c.route_scale;
    }
    // group per expert: tokens ascending inside each expert, experts ascending
    std::fill(r.count, r.count + E, 0u);
    for (std::size_t i = 0; i < T * K; ++i) ++r.count[r.idx[i]];
    r.offset[0] = 0;
    r.n_active = 0;
    for (std::size_t e = 0; e < E; ++e) {
        r.offset[e + 1] = r.offset[e] + r.count[e];
        r.fill[e] = r.offset[e];
        if (r.count[e]) r.active[r.n_active++] = uint32_t(e);
    }
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t j = 0; j < K; ++j) {
            const uint32_t e = uint32_t(r.idx[t * K + j]);
            const uint32_t slot = r.fill[e]++;
            r.a_token[slot] = uint32_t(t);
            r.a_weight[slot] = r.weights[t * K + j];
            r.slot_of[t * K + j] = slot;
        }
}

/// Phase 3: activations of tokens [t0, t1): act_quant (FP8, block 128) of x, dequantised to
/// f32 (the shared expert's input, and the routed one's in reference mode) or int8 per 32
/// (fast mode), then copied to the token's slot of each of its experts (T > 1).
inline void moe_prepare(const moe_run& r, std::size_t t0 = 0, std::size_t t1 = all_rows) {
    detail::check_run(r, "moe_prepare");
    const moe_config& c = *r.cfg;
    detail::check_rows(t0, t1, r.tokens, "moe_prepare");
    const std::size_t D = c.dim, K = c.topk;
    const bool fast = c.numerics == moe_numerics::fast;
    for (std::size_t t = t0; t < t1; ++t) {
        const uint16_t* x = r.x + t * r.x_stride;
        act_quant_fp8(x, 1, D, D, 128, r.xcodes + t * D, D, r.xscales + t * (D / 128), D / 128);
        fp8_acts_to_f32(r.xcodes + t * D, D, r.xscales + t * (D / 128), D / 128, 1, D, r.xs + t * D, D);
        if (fast) quantize_q8(x, D, 1, D, r.xq + t * D, D, r.xd + t * (D / 32), D / 32, r.xc + t * (D / 32), D / 32);
        if (r.shared_bf16) to_bf16_blocks(r.xs + t * D, D, 1, D, r.xsb + t * D, D, r.xss + t * (D / 128), D / 128);
        if (r.tokens == 1) continue;
        for (std::size_t j = 0; j < K; ++j) {
            const std::size_t slot = r.slot_of[t * K + j];
            if (fast) {
                std::memcpy(r.xgq + slot * D, r.xq + t * D, D);
                std::memcpy(r.xgd + slot * (D / 32), r.xd + t * (D / 32), (D / 32) * sizeof(float));
                std::memcpy(r.xgc + slot * (D / 32), r.xc + t * (D / 32), (D / 32) * sizeof(int32_t));
            } else {
                std::memcpy(r.xg + slot * D, r.xs + t * D, D * sizeof(float));
            }
        }
    }
}

/// Work units of phase 4: (n_active + 1) x inter/128 (the +1 is the shared expert).
inline std::size_t moe_up_units(const moe_run& r) noexcept {
    return (r.n_active + 1) * (r.cfg->inter / detail::moe_up_rows);
}

/// Phase 4: units [u0, u1). Unit u = (active expert u / (inter/128), rows [128 c, 128 c + 128)
/// of inter with c = u % (inter/128)): h = bf16(g * silu(min(w1 x, L)) * clamp(w3 x, -L, L))
/// for the expert's tokens (fused FP4 gate+up), then those 128 columns of h quantised for
/// the down projection. The last inter/128 units are the shared expert's (FP8 w1 and w3,
/// SwiGLU with the shared clamp, no routing weight).
inline void moe_up(const moe_run& r, std::size_t u0 = 0, std::size_t u1 = all_rows) {
    detail::check_run(r, "moe_up");
    const moe_config& c = *r.cfg;
    detail::check_rows(u0, u1, moe_up_units(r), "moe_up");
    const std::size_t I = c.inter, D = c.dim, nch = I / detail::moe_up_rows, T = r.tokens;
    const bool fast = c.numerics == moe_numerics::fast;
    for (std::size_t u = u0; u < u1; ++u) {
        const std::size_t a = u / nch, rr0 = (u % nch) * detail::moe_up_rows, rr1 = rr0 + detail::moe_up_rows;
        if (a < r.n_active) {
            const uint32_t e = r.active[a];
            const moe_expert_weights& W = r.w->experts[e];
            const std::size_t off = r.offset[e], n = r.count[e];
            const swiglu_epilogue epi{r.a_weight + off, c.swiglu_limit};
            uint16_t* h = r.h + off * I;
            if (fast) {
                fp4_gate_up_q8(W.w1, W.w3, detail::expert_xq(r, e), epi, gemv_out{nullptr, h, I}, rr0, rr1);
                quantize_q8(h + rr0, I, n, rr1 - rr0, r.hq + off * I + rr0, I, r.hd + off * (I / 32) + rr0 / 32, I / 32,
                            r.hc + off * (I / 32) + rr0 / 32, I / 32);
            } else {
                fp4_gate_up(W.w1, W.w3, detail::expert_x(r, e), epi, gemv_out{nullptr, h, I}, rr0, rr1);
                uint8_t* codes = r.hcodes + off * I + rr0;
                uint8_t* scales = r.hscales + off * (I / 128) + rr0 / 128;
                act_quant_fp8(h + rr0, n, rr1 - rr0, I, 128, codes, I, scales, I / 128);
                fp8_acts_to_f32(codes, I, scales, I / 128, n, rr1 - rr0, r.hf + off * I + rr0, I);
            }
        } else if (T > 0) {
            const moe_shared_weights& S = r.w->shared;
            if (r.shared_bf16) {
                const bf16_block_rows xb{r.xsb, D, r.xss, D / 128, T};
                fp8_gemv_bf16(S.w1, xb, gemv_out{nullptr, r.sa, I}, rr0, rr1);
                fp8_gemv_bf16(S.w3, xb, gemv_out{nullptr, r.sb, I}, rr0, rr1);
            } else {
                const f32_rows xs{r.xs, D, T};
                fp8_gemv(S.w1, xs, gemv_out{nullptr, r.sa, I}, rr0, rr1);
                fp8_gemv(S.w3, xs, gemv_out{nullptr, r.sb, I}, rr0, rr1);
            }
            const float lim = c.shared_clamp ? c.swiglu_limit : 0.0f;
            const auto swiglu = DSV4_KERNEL(swiglu_bf16_row);
            for (std::size_t t = 0; t < T; ++t)
                swiglu(r.sa + t * I + rr0, r.sb + t * I + rr0, rr1 - rr0, lim, r.sh + t * I + rr0);
            act_quant_fp8(r.sh + rr0, T, rr1 - rr0, I, 128, r.shcodes + rr0, I, r.shscales + rr0 / 128, I / 128);
            fp8_acts_to_f32(r.shcodes + rr0, I, r.shscales + rr0 / 128, I / 128, T, rr1 - rr0, r.shf + rr0, I);
            if (r.shared_bf16) to_bf16_blocks(r.shf + rr0, I, T, rr1 - rr0, r.shb + rr0, I, r.shs + rr0 / 128, I / 128);
        }
    }
}

namespace detail {
/// Routed expert a's (the a-th active one) w2 for output rows [r0, r1): bf16 into r.ro.
inline void moe_expert_down(const moe_run& r, std::size_t a, std::size_t r0, std::size_t r1) {
    const moe_config& c = *r.cfg;
    const std::size_t I = c.inter, D = c.dim;
    const uint32_t e = r.active[a];
    const std::size_t off = r.offset[e], n = r.count[e];
    const gemv_out out{nullptr, r.ro + off * D, D};
    if (c.numerics == moe_numerics::fast)
        fp4_gemv_q8(r.w->experts[e].w2,
                    q8_rows{r.hq + off * I, I, r.hd + off * (I / 32), I / 32, r.hc + off * (I / 32), I / 32, n}, out, r0, r1);
    else
        fp4_gemv(r.w->experts[e].w2, f32_rows{r.hf + off * I, I, n}, out, r0, r1);
}
}  // namespace detail

/// Rows of dim per unit of moe_down_experts.
inline constexpr std::size_t moe_down_rows = 1024;

/// Whether a driver runs phase 5 as moe_down_experts + moe_down(.., false) (prefill: at least
/// 4 tokens per active expert on average, where the routed w2 GEMMs profit from whole-expert
/// calls) or as moe_down alone (decode, short extends: one parallel region). Same bits.
inline bool moe_down_by_expert(const moe_run& r) noexcept {
    return r.cfg && r.n_active > 0 && r.tokens * r.cfg->topk >= 4 * r.n_active;
}

/// Work units of moe_down_experts: n_active x ceil(dim / moe_down_rows).
inline std::size_t moe_down_units(const moe_run& r) noexcept {
    return r.cfg ? r.n_active * ((r.cfg->dim + moe_down_rows - 1) / moe_down_rows) : 0;
}

/// Phase 5a (when moe_down_by_expert): units [u0, u1). Unit u = (active expert u / nch, rows
/// [moe_down_rows c, moe_down_rows (c + 1)) of dim, c = u % nch): bf16(w2 h) of that expert
/// for its tokens. moe_down(run, r0, r1, false) then adds the shared expert and combines.
inline void moe_down_experts(const moe_run& r, std::size_t u0 = 0, std::size_t u1 = all_rows) {
    detail::check_run(r, "moe_down_experts");
    detail::check_rows(u0, u1, moe_down_units(r), "moe_down_experts");
    const std::size_t D = r.cfg->dim, nch = (D + moe_down_rows - 1) / moe_down_rows;
    if (r.tokens == 0) return;
    for (std::size_t u = u0; u < u1; ++u) {
        const std::size_t c0 = (u % nch) * moe_down_rows;
        detail::moe_expert_down(r, u / nch, c0, std::min(D, c0 + moe_down_rows));
    }
}

/// Phase 5: output rows [r0, r1) of dim: bf16(w2 h) of every active expert in ascending id
/// (unless `routed` is false: moe_down_experts has computed them) and of the shared expert,
/// then y[t, r0:r1] = bf16(f32 sum of the token's expert outputs in ascending expert id, then
/// the shared output), spec §8.4.
inline void moe_down(const moe_run& r, std::size_t r0 = 0, std::size_t r1 = all_rows, bool routed = true) {
    detail::check_run(r, "moe_down");
    const moe_config& c = *r.cfg;
    detail::check_rows(r0, r1, c.dim, "moe_down");
    const std::size_t I = c.inter, D = c.dim, K = c.topk, T = r.tokens;
    if (T == 0 || r0 == r1) return;
    if (routed)
        for (std::size_t a = 0; a < r.n_active; ++a) detail::moe_expert_down(r, a, r0, r1);
    if (r.shared_bf16)
        fp8_gemv_bf16(r.w->shared.w2, bf16_block_rows{r.shb, I, r.shs, I / 128, T}, gemv_out{nullptr, r.so, D}, r0, r1);
    else
        fp8_gemv(r.w->shared.w2, f32_rows{r.shf, I, T}, gemv_out{nullptr, r.so, D}, r0, r1);
    const auto combine = DSV4_KERNEL(moe_combine_rows);
    const uint16_t* parts[detail::moe_max_topk + 1];
    for (std::size_t t = 0; t < T; ++t) {
        for (std::size_t j = 0; j < K; ++j) parts[j] = r.ro + std::size_t(r.slot_of[t * K + j]) * D + r0;
        parts[K] = r.so + t * D + r0;
        combine(parts, K + 1, r1 - r0, r.y + t * r.y_stride + r0);
    }
}

/// Work items per call of phase 1 (experts) and phase 5 (rows of dim).
inline constexpr std::size_t moe_gate_grain = 16;
inline constexpr std::size_t moe_down_grain = 64;

/// Phase 5 through an executor: by expert then shared + combine (moe_down_by_expert), else
/// one region of moe_down items.
template <class Exec> void moe_down_on(Exec&& ex, const moe_run& r) {
    const bool by_expert = moe_down_by_expert(r);
    if (by_expert) ex(moe_down_units(r), 1, [&](std::size_t a, std::size_t b) { moe_down_experts(r, a, b); });
    ex(r.cfg->dim, moe_down_grain, [&](std::size_t a, std::size_t b) { moe_down(r, a, b, !by_expert); });
}

/// The MoE layer (spec §8) for T tokens, in chunks of scratch.max_tokens, with the phases'
/// work items run through an executor (executor.hpp: serial_executor, par::tbb_executor or a
/// foreign pool's). Same bits whatever the executor.
template <class Exec>
void moe_forward_on(Exec&& ex, const moe_config& c, const moe_weights& w, const uint16_t* x, std::size_t x_stride,
                    const int64_t* token_ids, std::size_t tokens, uint16_t* y, std::size_t y_stride,
                    const moe_scratch& s) {
    detail::require(s.max_tokens >= 1, "moe_forward", "scratch.max_tokens must be >= 1");
    for (std::size_t t0 = 0; t0 < tokens; t0 += s.max_tokens) {
        const std::size_t n = std::min(tokens - t0, s.max_tokens);
        moe_run r = moe_begin(c, w, x + t0 * x_stride, x_stride, token_ids ? token_ids + t0 : nullptr, n,
                              y + t0 * y_stride, y_stride, s);
        ex(c.n_experts, moe_gate_grain, [&](std::size_t a, std::size_t b) { moe_gate_rows(r, a, b); });
        moe_route(r);
        ex(n, 1, [&](std::size_t a, std::size_t b) { moe_prepare(r, a, b); });
        ex(moe_up_units(r), 1, [&](std::size_t a, std::size_t b) { moe_up(r, a, b); });
        moe_down_on(ex, r);
    }
}

/// The MoE layer (spec §8) for T tokens on the calling thread.
inline void moe_forward(const moe_config& c, const moe_weights& w, const uint16_t* x, std::size_t x_stride,
                        const int64_t* token_ids, std::size_t tokens, uint16_t* y, std::size_t y_stride,
                        const moe_scratch& s) {
    moe_forward_on(serial_executor{}, c, w, x, x_stride, token_ids, tokens, y, y_stride, s);
}

/// Gate and routing only (spec §8.1) for T tokens: idx (ascending), weights, optional scores.
/// Uses the same scratch as the layer (experts in w are not needed).
inline void moe_route_tokens(const moe_config& c, const moe_gate_weights& g, const uint16_t* x, std::size_t x_stride,
                             const int64_t* token_ids, std::size_t tokens, const moe_routing_out& out,
                             const moe_scratch& s) {
    detail::require(tokens == 0 || (out.idx && out.weights), "moe_route_tokens", "idx or weights is null");
    detail::require(s.max_tokens >= 1, "moe_route_tokens", "scratch.max_tokens must be >= 1");
    const moe_weights w{g, nullptr, {}};
    for (std::size_t t0 = 0; t0 < tokens; t0 += s.max_tokens) {
        const std::size_t n = std::min(tokens - t0, s.max_tokens);
        moe_run r = detail::moe_begin_impl(c, w, x + t0 * x_stride, x_stride, token_ids ? token_ids + t0 : nullptr, n,
                                           nullptr, 0, s, false, "moe_route_tokens");
        moe_gate_rows(r);
        moe_route(r);
        std::memcpy(out.idx + t0 * c.topk, r.idx, n * c.topk * sizeof(int32_t));
        std::memcpy(out.weights + t0 * c.topk, r.weights, n * c.topk * sizeof(float));
        if (out.scores) std::memcpy(out.scores + t0 * c.n_experts, r.scores, n * c.n_experts * sizeof(float));
    }
}

namespace par {

/// moe_forward with oneTBB: phases 1, 3, 4 and 5 in parallel (phase 2 is serial). Same bits
/// as dsv4::moe_forward.
inline void moe_forward(const moe_config& c, const moe_weights& w, const uint16_t* x, std::size_t x_stride,
                        const int64_t* token_ids, std::size_t tokens, uint16_t* y, std::size_t y_stride,
                        const moe_scratch& s) {
    moe_forward_on(tbb_executor{}, c, w, x, x_stride, token_ids, tokens, y, y_stride, s);
}

}  // namespace par

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
