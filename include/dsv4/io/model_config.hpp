// dsv4/io/model_config.hpp - the HF config.json of a DeepSeek-V4 checkpoint, the tensor
// schema it implies (spec §0, §1.3) and the check that a checkpoint matches it.
//
//   model_config cfg = dsv4::load_model_config("/models/DeepSeek-V4-Flash");
//   dsv4::checkpoint ck = dsv4::checkpoint::open("/models/DeepSeek-V4-Flash");
//   dsv4::checkpoint_report r = dsv4::validate_checkpoint(cfg, ck);   // throws on mismatch
//
// Field names are the HF ones of the official root config.json (the inference/ config
// spells some differently: dim, n_layers, n_heads, window_size, ...; that file is not read).
// Every problem is a dsv4::error naming the file and the field or tensor.
#pragma once

#include "safetensors.hpp"

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace dsv4 {

/// YaRN parameters ("rope_scaling"); yarn == false when the config has none (no scaling).
struct rope_scaling_params {
    bool yarn = false;
    double factor = 1.0;
    uint64_t original_max_position_embeddings = 0;
    double beta_fast = 32.0;
    double beta_slow = 1.0;
};

/// Storage of the routed experts ("expert_dtype"): fp4 = I8-packed e2m1 + E8M0 per 32
/// (the official checkpoint); fp8 = e4m3 + E8M0 per 128x128 (official convert.py output).
enum class expert_format : uint8_t { fp4, fp8 };

/// The parsed, validated config.json. Integer fields are bounded so that every product
/// the schema forms fits comfortably in 64 bits.
struct model_config {
    std::string source;  ///< file it came from (for messages)

    uint32_t vocab_size = 0;
    uint32_t hidden_size = 0;
    uint32_t num_hidden_layers = 0;
    uint32_t num_nextn_predict_layers = 0;  ///< MTP blocks after the main layers (absent: 0)
    uint32_t num_attention_heads = 0;
    uint32_t num_key_value_heads = 1;       ///< must be 1 (one shared KV head, MQA)
    uint32_t head_dim = 0;
    uint32_t qk_rope_head_dim = 0;          ///< last dims of a head; nope = head_dim - this
    uint32_t q_lora_rank = 0;
    uint32_t o_groups = 0;
    uint32_t o_lora_rank = 0;
    uint32_t sliding_window = 0;            ///< window of every layer (official window_size); any >= 1
    /// Per block: main layers then MTP blocks (length num_hidden_layers + num_nextn_predict_layers);
    /// each 0 (window only), 4 (overlapping compressor + indexer) or 128. Entries of the file's
    /// list beyond these blocks are ignored (the official code reads compress_ratios[layer_id] only).
    std::vector<uint32_t> compress_ratios;
    uint32_t compress_ratios_ignored = 0;   ///< trailing entries of the file's list no block uses
    uint32_t index_n_heads = 0;
    uint32_t index_head_dim = 0;
    uint32_t index_topk = 0;
    uint32_t moe_intermediate_size = 0;
    uint32_t n_routed_experts = 0;
    uint32_t num_experts_per_tok = 0;
    uint32_t n_shared_experts = 0;          ///< shared MLP width = n_shared_experts * moe_intermediate_size
    uint32_t num_hash_layers = 0;           ///< main layers 0..num_hash_layers-1 route by tid2eid
    std::string scoring_func;               ///< "sqrtsoftplus"
    bool norm_topk_prob = true;
    double routed_scaling_factor = 0;
    double swiglu_limit = 0;
    double rope_theta = 0;
    double compress_rope_theta = 0;
    rope_scaling_params rope_scaling;
    uint32_t hc_mult = 0;
    uint32_t hc_sinkhorn_iters = 0;
    double hc_eps = 0;
    double rms_norm_eps = 0;
    uint64_t max_position_embeddings = 0;
    expert_format expert_dtype = expert_format::fp4;
    int64_t bos_token_id = -1;  ///< -1: not given
    int64_t eos_token_id = -1;  ///< -1: not given
};

/// One tensor a config expects.
struct tensor_spec {
    std::string name;
    dtype type = dtype::u8;
    tensor_shape shape;
    int block = -1;         ///< -1 top level; 0..L-1 main layer; L+j MTP block j
    bool mtp = false;       ///< belongs to an MTP block (optional in a checkpoint)
};

/// What validate_checkpoint() found.
struct checkpoint_report {
    std::size_t expected = 0;         ///< tensors checked (main model + present MTP blocks)
    uint64_t expected_bytes = 0;      ///< their data bytes
    std::vector<uint32_t> mtp_blocks; ///< MTP blocks present (and complete)
    std::vector<std::string> extras;  ///< checkpoint tensors the config does not account for
};

inline namespace DSV4_ISA_NS {

// ------------------------------------------------------------------------------ config

namespace detail {
class config_reader {
public:
    config_reader(const nlohmann::json& j, std::string source) : j_(j), src_(std::move(source)) {}

    [[noreturn]] void fail(const std::string& field, const std::string& why) const {
        throw error(src_ + ": field " + quote(field) + " " + why);
    }
    const nlohmann::json* get(const nlohmann::json& obj, const std::string& key, const std::string& full,
                              bool required) const {
        const auto it = obj.find(key);
        if (it == obj.end() || it->is_null()) {
            if (required) fail(full, "is missing");
            return nullptr;
        }
        return &*it;
    }
    uint64_t u64(const nlohmann::json& v, const std::string& field, uint64_t lo, uint64_t hi) const {
        uint64_t x = 0;
        if (!v.is_number_integer() || !json_u64(v, x))
            fail(field, std::string("is ") + json_type_name(v) + (v.is_number_integer() ? " < 0" : "") +
                            ", expected a non-negative integer");
        if (x < lo || x > hi)
            fail(field, "= " + std::to_string(x) + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
        return x;
    }
    uint32_t u32(const std::string& key, uint64_t lo, uint64_t hi) const {
        return uint32_t(u64(*get(j_, key, key, true), key, lo, hi));
    }
    double num(const nlohmann::json& v, const std::string& field, double lo, double hi) const {
        if (!v.is_number()) fail(field, std::string("is ") + json_type_name(v) + ", expected a number");
        const double x = v.get<double>();
        if (!std::isfinite(x) || x < lo || x > hi)
            fail(field, "= " + v.dump() + " is outside [" + nlohmann::json(lo).dump() + ", " + nlohmann::json(hi).dump() + "]");
        return x;
    }
    double f64(const std::string& key, double lo, double hi) const { return num(*get(j_, key, key, true), key, lo, hi); }
    std::string str(const nlohmann::json& v, const std::string& field) const {
        if (!v.is_string()) fail(field, std::string("is ") + json_type_name(v) + ", expected a string");
        return v.get<std::string>();
    }
    bool boolean(const nlohmann::json& v, const std::string& field) const {
        if (!v.is_boolean()) fail(field, std::string("is ") + json_type_name(v) + ", expected true or false");
        return v.get<bool>();
    }
    const nlohmann::json& root() const { return j_; }

private:
    const nlohmann::json& j_;
    std::string src_;
};
}  // namespace detail

/// Parses and validates the text of a config.json; `source` names it in errors.
/// Accepts what the official inference code (inference/model.py ModelArgs, kernel.py,
/// convert.py) accepts, within the limits of this library's formats; every refusal names
/// the field and the reason.
/// Required: every field of model_config except those documented as optional below.
/// Optional: num_nextn_predict_layers (default 0: no MTP block; the official code never
/// reads it, and mtp.* tensors are then extras), num_key_value_heads (must be 1),
/// qk_nope_head_dim (must equal head_dim - qk_rope_head_dim), rope_scaling (null/absent: no
/// YaRN; else type "yarn" with factor, original_max_position_embeddings, beta_fast,
/// beta_slow), expert_dtype ("fp4" default, "fp8"), norm_topk_prob, topk_method
/// ("noaux_tc"), tie_word_embeddings (must be false), model_type ("deepseek_v4"),
/// quantization_config (fp8 e4m3, ue8m0, 128x128 blocks), bos/eos_token_id (< vocab_size).
/// Unknown fields are ignored.
/// Consistency (official source of each rule in parentheses):
/// * compress_ratios has at least num_hidden_layers + num_nextn_predict_layers entries, the
///   used ones in {0, 4, 128} (the library's compressors); extra trailing entries are ignored;
/// * qk_rope_head_dim even (RoPE pairs) and < head_dim; head_dim - qk_rope_head_dim a multiple
///   of 64 (act_quant of the KV nope dims in blocks of 64);
/// * o_groups divides num_attention_heads; num_attention_heads * head_dim / o_groups and
///   o_groups * o_lora_rank multiples of 128 (convert.py splits wo_a into 128x128 blocks;
///   wo_b's input goes through act_quant(., 128)); o_lora_rank itself is free;
/// * hidden_size, q_lora_rank and moe_intermediate_size multiples of 128 (inputs of FP8/FP4
///   linears go through act_quant(., 128), kernel.py asserts N % 128 == 0);
/// * index_head_dim a multiple of 32 (FP4 simulation blocks), in [qk_rope_head_dim, 32768]
///   (RoPE on its last qk_rope_head_dim dims; the Hadamard transform pads to the next power
///   of two, up to 32768);
/// * num_experts_per_tok <= n_routed_experts; num_hash_layers <= num_hidden_layers;
/// * sliding_window any value >= 1 (official window_size).
/// What the forward additionally requires (e.g. sliding_window, index_head_dim, hc_mult) is
/// checked when a model is opened (model/forward), not here.
inline model_config parse_model_config(std::string_view json_text, std::string_view source) {
    const std::string src(source);
    const nlohmann::json j = detail::parse_json_strict(json_text, src);
    if (!j.is_object()) throw error(src + ": config is " + detail::json_type_name(j) + ", not a JSON object");
    const detail::config_reader r(j, src);
    model_config c;
    c.source = src;
    constexpr uint64_t dim_max = uint64_t(1) << 20, count_max = 4096;

    if (const auto* v = r.get(j, "model_type", "model_type", false))
        if (r.str(*v, "model_type") != "deepseek_v4")
            r.fail("model_type", "= " + v->dump() + ", expected \"deepseek_v4\"");
    c.vocab_size = r.u32("vocab_size", 1, uint64_t(1) << 24);
    c.hidden_size = r.u32("hidden_size", 1, dim_max);
    c.num_hidden_layers = r.u32("num_hidden_layers", 1, 1024);
    if (const auto* v = r.get(j, "num_nextn_predict_layers", "num_nextn_predict_layers", false))
        c.num_nextn_predict_layers = uint32_t(r.u64(*v, "num_nextn_predict_layers", 0, 16));
    c.num_attention_heads = r.u32("num_attention_heads", 1, count_max);
    if (const auto* v = r.get(j, "num_key_value_heads", "num_key_value_heads", false))
        c.num_key_value_heads = uint32_t(r.u64(*v, "num_key_value_heads", 1, 1));
    c.head_dim = r.u32("head_dim", 1, 65536);
    c.qk_rope_head_dim = r.u32("qk_rope_head_dim", 2, 65536);
    c.q_lora_rank = r.u32("q_lora_rank", 1, dim_max);
    c.o_groups = r.u32("o_groups", 1, count_max);
    c.o_lora_rank = r.u32("o_lora_rank", 1, dim_max);
    c.sliding_window = r.u32("sliding_window", 1, dim_max);
    c.index_n_heads = r.u32("index_n_heads", 1, count_max);
    c.index_head_dim = r.u32("index_head_dim", 1, 32768);
    c.index_topk = r.u32("index_topk", 1, dim_max);
    c.moe_intermediate_size = r.u32("moe_intermediate_size", 1, dim_max);
    c.n_routed_experts = r.u32("n_routed_experts", 1, count_max);
    c.num_experts_per_tok = r.u32("num_experts_per_tok", 1, count_max);
    c.n_shared_experts = r.u32("n_shared_experts", 0, 16);
    c.num_hash_layers = r.u32("num_hash_layers", 0, 1024);
    c.scoring_func = r.str(*r.get(j, "scoring_func", "scoring_func", true), "scoring_func");
    if (const auto* v = r.get(j, "norm_topk_prob", "norm_topk_prob", false)) c.norm_topk_prob = r.boolean(*v, "norm_topk_prob");
    if (const auto* v = r.get(j, "topk_method", "topk_method", false))
        if (r.str(*v, "topk_method") != "noaux_tc") r.fail("topk_method", "= " + v->dump() + ", expected \"noaux_tc\"");
    c.routed_scaling_factor = r.f64("routed_scaling_factor", 0x1p-30, 1e6);
    c.swiglu_limit = r.f64("swiglu_limit", 0.0, 1e9);
    c.rope_theta = r.f64("rope_theta", 1.0, 1e30);
    c.compress_rope_theta = r.f64("compress_rope_theta", 1.0, 1e30);
    if (const auto* rs = r.get(j, "rope_scaling", "rope_scaling", false)) {
        if (!rs->is_object()) r.fail("rope_scaling", std::string("is ") + detail::json_type_name(*rs) + ", expected an object");
        const auto* type = r.get(*rs, "type", "rope_scaling.type", false);
        if (!type) type = r.get(*rs, "rope_type", "rope_scaling.type", true);
        if (r.str(*type, "rope_scaling.type") != "yarn")
            r.fail("rope_scaling.type", "= " + type->dump() + ", only \"yarn\" is supported");
        c.rope_scaling.yarn = true;
        c.rope_scaling.factor = r.num(*r.get(*rs, "factor", "rope_scaling.factor", true), "rope_scaling.factor", 1.0, 1e6);
        c.rope_scaling.original_max_position_embeddings =
            r.u64(*r.get(*rs, "original_max_position_embeddings", "rope_scaling.original_max_position_embeddings", true),
                  "rope_scaling.original_max_position_embeddings", 1, uint64_t(1) << 40);
        c.rope_scaling.beta_fast = r.num(*r.get(*rs, "beta_fast", "rope_scaling.beta_fast", true), "rope_scaling.beta_fast", 0x1p-30, 1e6);
        c.rope_scaling.beta_slow = r.num(*r.get(*rs, "beta_slow", "rope_scaling.beta_slow", true), "rope_scaling.beta_slow", 0x1p-30, 1e6);
    }
    c.hc_mult = r.u32("hc_mult", 1, 16);
    c.hc_sinkhorn_iters = r.u32("hc_sinkhorn_iters", 1, 1000);
    c.hc_eps = r.f64("hc_eps", 0.0, 1.0);
    c.rms_norm_eps = r.f64("rms_norm_eps", 0x1p-100, 1.0);
    c.max_position_embeddings = r.u64(*r.get(j, "max_position_embeddings", "max_position_embeddings", true),
                                      "max_position_embeddings", 1, uint64_t(1) << 40);
    if (const auto* v = r.get(j, "expert_dtype", "expert_dtype", false)) {
        const std::string e = r.str(*v, "expert_dtype");
        if (e == "fp4") c.expert_dtype = expert_format::fp4;
        else if (e == "fp8") c.expert_dtype = expert_format::fp8;
        else r.fail("expert_dtype", "= " + v->dump() + ", expected \"fp4\" or \"fp8\"");
    }
    if (const auto* v = r.get(j, "tie_word_embeddings", "tie_word_embeddings", false))
        if (r.boolean(*v, "tie_word_embeddings")) r.fail("tie_word_embeddings", "is true; V4 has a separate head.weight");
    for (const char* id : {"bos_token_id", "eos_token_id"})
        if (const auto* v = r.get(j, id, id, false))
            (std::string(id) == "bos_token_id" ? c.bos_token_id : c.eos_token_id) = int64_t(r.u64(*v, id, 0, c.vocab_size - 1));
    if (const auto* q = r.get(j, "quantization_config", "quantization_config", false)) {
        if (!q->is_object()) r.fail("quantization_config", "is not an object");
        auto expect_str = [&](const char* key, const char* want) {
            const std::string f = std::string("quantization_config.") + key;
            if (const auto* v = r.get(*q, key, f, false))
                if (r.str(*v, f) != want) r.fail(f, "= " + v->dump() + ", expected \"" + want + "\"");
        };
        expect_str("quant_method", "fp8");
        expect_str("fmt", "e4m3");
        expect_str("scale_fmt", "ue8m0");
        if (const auto* v = r.get(*q, "weight_block_size", "quantization_config.weight_block_size", false))
            if (!v->is_array() || v->size() != 2 || (*v)[0] != 128 || (*v)[1] != 128)
                r.fail("quantization_config.weight_block_size", "= " + v->dump() + ", expected [128, 128]");
    }

    // compress_ratios: one per main layer and per MTP block; the official code indexes it by
    // layer id, so a longer list is fine (e.g. the published 44 entries with the MTP count absent).
    {
        const auto* cr = r.get(j, "compress_ratios", "compress_ratios", true);
        if (!cr->is_array()) r.fail("compress_ratios", std::string("is ") + detail::json_type_name(*cr) + ", expected an array");
        const std::size_t want = std::size_t(c.num_hidden_layers) + c.num_nextn_predict_layers;
        if (cr->size() < want)
            r.fail("compress_ratios", "has " + std::to_string(cr->size()) + " entries, but num_hidden_layers (" +
                                          std::to_string(c.num_hidden_layers) + ") + num_nextn_predict_layers (" +
                                          std::to_string(c.num_nextn_predict_layers) + ") = " + std::to_string(want) +
                                          " blocks need one each");
        for (std::size_t i = 0; i < want; ++i) {
            const std::string f = "compress_ratios[" + std::to_string(i) + "]";
            const uint64_t v = r.u64((*cr)[i], f, 0, 128);
            if (v != 0 && v != 4 && v != 128)
                r.fail(f, "= " + std::to_string(v) + ", expected 0, 4 or 128 (the compressors this library implements)");
            c.compress_ratios.push_back(uint32_t(v));
        }
        c.compress_ratios_ignored = uint32_t(cr->size() - want);
    }

    // Consistency between fields (what the kernels and the tensor shapes rely on).
    auto multiple = [&](const char* field, uint64_t v, uint64_t m, const char* why) {
        if (v % m != 0) r.fail(field, "gives " + std::to_string(v) + ", not a multiple of " + std::to_string(m) + " (" + why + ")");
    };
    if (c.scoring_func != "sqrtsoftplus") r.fail("scoring_func", "= \"" + c.scoring_func + "\", only \"sqrtsoftplus\" is supported");
    if (c.qk_rope_head_dim % 2 != 0) r.fail("qk_rope_head_dim", "= " + std::to_string(c.qk_rope_head_dim) + " is odd (RoPE rotates pairs)");
    if (c.qk_rope_head_dim >= c.head_dim)
        r.fail("head_dim", "= " + std::to_string(c.head_dim) + " leaves no nope dims next to qk_rope_head_dim = " +
                               std::to_string(c.qk_rope_head_dim));
    multiple("head_dim", c.head_dim - c.qk_rope_head_dim, 64, "head_dim - qk_rope_head_dim: KV FP8 simulation blocks of 64");
    if (const auto* v = r.get(j, "qk_nope_head_dim", "qk_nope_head_dim", false))
        if (r.u64(*v, "qk_nope_head_dim", 0, 65536) != uint64_t(c.head_dim) - c.qk_rope_head_dim)
            r.fail("qk_nope_head_dim", "= " + v->dump() + ", but head_dim - qk_rope_head_dim = " +
                                           std::to_string(c.head_dim - c.qk_rope_head_dim));
    if (c.num_attention_heads % c.o_groups != 0)
        r.fail("o_groups", "= " + std::to_string(c.o_groups) + " does not divide num_attention_heads = " +
                               std::to_string(c.num_attention_heads));
    multiple("hidden_size", c.hidden_size, 128, "the input of every FP8 linear is act_quant'ed in blocks of 128");
    multiple("q_lora_rank", c.q_lora_rank, 128, "the input of wq_b is act_quant'ed in blocks of 128");
    multiple("num_attention_heads", uint64_t(c.num_attention_heads) * c.head_dim / c.o_groups, 128,
             "num_attention_heads * head_dim / o_groups: 128x128 FP8 blocks of wo_a's columns (convert.py)");
    multiple("o_lora_rank", uint64_t(c.o_groups) * c.o_lora_rank, 128,
             "o_groups * o_lora_rank: 128x128 FP8 blocks of wo_a's rows (convert.py) and wo_b's act_quant'ed input");
    if (c.index_head_dim % 32 != 0)
        r.fail("index_head_dim", "= " + std::to_string(c.index_head_dim) +
                                     " is not a multiple of 32 (FP4 simulation blocks of the indexer q and keys)");
    if (c.index_head_dim < c.qk_rope_head_dim)
        r.fail("index_head_dim", "= " + std::to_string(c.index_head_dim) + " is below qk_rope_head_dim = " +
                                     std::to_string(c.qk_rope_head_dim) + " (RoPE on its last qk_rope_head_dim dims)");
    multiple("moe_intermediate_size", c.moe_intermediate_size, 128,
             "the input of every expert's w2 is act_quant'ed in blocks of 128");
    if (c.num_experts_per_tok > c.n_routed_experts)
        r.fail("num_experts_per_tok", "= " + std::to_string(c.num_experts_per_tok) + " exceeds n_routed_experts = " +
                                          std::to_string(c.n_routed_experts));
    if (c.num_hash_layers > c.num_hidden_layers)
        r.fail("num_hash_layers", "= " + std::to_string(c.num_hash_layers) + " exceeds num_hidden_layers = " +
                                      std::to_string(c.num_hidden_layers));
    return c;
}

/// Reads and parses `path`: a config.json, or a directory holding one.
inline model_config load_model_config(const std::string& path) {
    const std::string file = detail::is_directory(path) ? detail::join(path, "config.json") : path;
    return parse_model_config(detail::read_file_limited(file, uint64_t(16) << 20, "config"), file);
}

/// Main layers plus MTP blocks.
inline uint32_t block_count(const model_config& c) { return c.num_hidden_layers + c.num_nextn_predict_layers; }
/// Compress ratio of block `b` (0..block_count-1).
inline uint32_t block_ratio(const model_config& c, uint32_t b) { return c.compress_ratios.at(b); }
/// Whether block `b` routes by tid2eid (main layers below num_hash_layers; never MTP).
inline bool is_hash_block(const model_config& c, uint32_t b) { return b < c.num_hidden_layers && b < c.num_hash_layers; }
/// Tensor-name prefix of block `b`: "layers.<b>." or "mtp.<b - num_hidden_layers>.".
inline std::string block_prefix(const model_config& c, uint32_t b) {
    return b < c.num_hidden_layers ? "layers." + std::to_string(b) + "."
                                   : "mtp." + std::to_string(b - c.num_hidden_layers) + ".";
}

// ------------------------------------------------------------------------------ schema

/// Calls fn(const tensor_spec&) for every tensor the config implies (spec §1.3), top level
/// first, then blocks in order; MTP blocks only if include_mtp. Shapes:
///   FP8 linear [N, K]:  .weight F8_E4M3 [N, K] + .scale F8_E8M0 [ceil(N/128), ceil(K/128)]
///   FP4 expert [N, K]:  .weight I8 [N, K/2] (two e2m1 per byte) + .scale F8_E8M0 [N, K/32]
/// with D = hidden_size, H = num_attention_heads, hd = head_dim, hc = hc_mult,
/// mix = (2 + hc) * hc, E = n_routed_experts, I = moe_intermediate_size:
///   embed.weight, head.weight BF16 [vocab, D]; norm.weight BF16 [D];
///   hc_head_fn F32 [hc, hc*D], hc_head_base F32 [hc], hc_head_scale F32 [1];
///   per block P: attn_norm/ffn_norm BF16 [D]; hc_{attn,ffn}_fn F32 [mix, hc*D], _base [mix],
///   _scale [3]; attn.wq_a FP8 [q_lora, D], attn.q_norm BF16 [q_lora], attn.wq_b FP8
///   [H*hd, q_lora], attn.wkv FP8 [hd, D], attn.kv_norm BF16 [hd], attn.wo_a FP8
///   [o_groups*o_lora, H*hd/o_groups], attn.wo_b FP8 [D, o_groups*o_lora], attn.attn_sink
///   F32 [H]; ratio r != 0: attn.compressor.ape F32 [r, c*hd], .wkv/.wgate BF16 [c*hd, D],
///   .norm BF16 [hd] (c = 2 if r == 4 else 1); r == 4: attn.indexer.wq_b FP8
///   [index_n_heads*index_head_dim, q_lora], .weights_proj BF16 [index_n_heads, D],
///   indexer.compressor (as above with index_head_dim, c = 2); ffn.gate.weight BF16 [E, D],
///   hash blocks ffn.gate.tid2eid I64 [vocab, num_experts_per_tok], others ffn.gate.bias
///   F32 [E]; ffn.experts.{j}.w1/w3 [I, D], w2 [D, I] (expert_dtype); ffn.shared_experts
///   w1/w3 FP8 [S, D], w2 FP8 [D, S] with S = n_shared_experts * I (absent if 0);
///   MTP block also e_proj/h_proj FP8 [D, D], enorm/hnorm/norm BF16 [D], hc_head_* as above.
template <class F> void for_each_expected_tensor(const model_config& c, bool include_mtp, F&& fn) {
    const uint64_t D = c.hidden_size, V = c.vocab_size, hc = c.hc_mult, mix = (2 + hc) * hc;
    const uint64_t H = c.num_attention_heads, hd = c.head_dim, E = c.n_routed_experts, I = c.moe_intermediate_size;
    const uint64_t oa = uint64_t(c.o_groups) * c.o_lora_rank, S = uint64_t(c.n_shared_experts) * I;
    int block = -1;
    bool mtp = false;
    auto emit = [&](std::string name, dtype t, std::initializer_list<uint64_t> dims) {
        tensor_spec s;
        s.name = std::move(name);
        s.type = t;
        s.shape = make_shape(dims);
        s.block = block;
        s.mtp = mtp;
        fn(static_cast<const tensor_spec&>(s));
    };
    auto fp8 = [&](const std::string& base, uint64_t n, uint64_t k) {
        emit(base + ".weight", dtype::f8_e4m3, {n, k});
        emit(base + ".scale", dtype::f8_e8m0, {(n + 127) / 128, (k + 127) / 128});
    };
    auto expert = [&](const std::string& base, uint64_t n, uint64_t k) {
        if (c.expert_dtype == expert_format::fp8) return fp8(base, n, k);
        emit(base + ".weight", dtype::i8, {n, k / 2});
        emit(base + ".scale", dtype::f8_e8m0, {n, k / 32});
    };
    auto compressor = [&](const std::string& base, uint64_t ratio, uint64_t d) {
        const uint64_t cd = (ratio == 4 ? 2 : 1) * d;
        emit(base + "ape", dtype::f32, {ratio, cd});
        emit(base + "wkv.weight", dtype::bf16, {cd, D});
        emit(base + "wgate.weight", dtype::bf16, {cd, D});
        emit(base + "norm.weight", dtype::bf16, {d});
    };
    auto hc_head = [&](const std::string& p) {
        emit(p + "hc_head_fn", dtype::f32, {hc, hc * D});
        emit(p + "hc_head_base", dtype::f32, {hc});
        emit(p + "hc_head_scale", dtype::f32, {1});
    };

    emit("embed.weight", dtype::bf16, {V, D});
    emit("head.weight", dtype::bf16, {V, D});
    emit("norm.weight", dtype::bf16, {D});
    hc_head("");
    const uint32_t blocks = include_mtp ? block_count(c) : c.num_hidden_layers;
    for (uint32_t b = 0; b < blocks; ++b) {
        block = int(b);
        mtp = b >= c.num_hidden_layers;
        const std::string P = block_prefix(c, b);
        const uint32_t r = block_ratio(c, b);
        emit(P + "attn_norm.weight", dtype::bf16, {D});
        emit(P + "ffn_norm.weight", dtype::bf16, {D});
        for (const char* site : {"attn", "ffn"}) {
            emit(P + "hc_" + site + "_fn", dtype::f32, {mix, hc * D});
            emit(P + "hc_" + site + "_base", dtype::f32, {mix});
            emit(P + "hc_" + site + "_scale", dtype::f32, {3});
        }
        fp8(P + "attn.wq_a", c.q_lora_rank, D);
        emit(P + "attn.q_norm.weight", dtype::bf16, {c.q_lora_rank});
        fp8(P + "attn.wq_b", H * hd, c.q_lora_rank);
        fp8(P + "attn.wkv", hd, D);
        emit(P + "attn.kv_norm.weight", dtype::bf16, {hd});
        fp8(P + "attn.wo_a", oa, H * hd / c.o_groups);
        fp8(P + "attn.wo_b", D, oa);
        emit(P + "attn.attn_sink", dtype::f32, {H});
        if (r != 0) compressor(P + "attn.compressor.", r, hd);
        if (r == 4) {
            fp8(P + "attn.indexer.wq_b", uint64_t(c.index_n_heads) * c.index_head_dim, c.q_lora_rank);
            emit(P + "attn.indexer.weights_proj.weight", dtype::bf16, {c.index_n_heads, D});
            compressor(P + "attn.indexer.compressor.", r, c.index_head_dim);
        }
        emit(P + "ffn.gate.weight", dtype::bf16, {E, D});
        if (is_hash_block(c, b)) emit(P + "ffn.gate.tid2eid", dtype::i64, {V, c.num_experts_per_tok});
        else emit(P + "ffn.gate.bias", dtype::f32, {E});
        for (uint64_t e = 0; e < E; ++e) {
            const std::string X = P + "ffn.experts." + std::to_string(e) + ".";
            expert(X + "w1", I, D);
            expert(X + "w3", I, D);
            expert(X + "w2", D, I);
        }
        if (S != 0) {
            fp8(P + "ffn.shared_experts.w1", S, D);
            fp8(P + "ffn.shared_experts.w3", S, D);
            fp8(P + "ffn.shared_experts.w2", D, S);
        }
        if (mtp) {
            fp8(P + "e_proj", D, D);
            fp8(P + "h_proj", D, D);
            emit(P + "enorm.weight", dtype::bf16, {D});
            emit(P + "hnorm.weight", dtype::bf16, {D});
            emit(P + "norm.weight", dtype::bf16, {D});
            hc_head(P);
        }
    }
}

/// Number of tensors for_each_expected_tensor() visits, by formula (no enumeration).
inline uint64_t expected_tensor_count(const model_config& c, bool include_mtp = true) {
    uint64_t n = 6;  // embed, head, norm, hc_head_{fn,base,scale}
    const uint32_t blocks = include_mtp ? block_count(c) : c.num_hidden_layers;
    for (uint32_t b = 0; b < blocks; ++b) {
        const uint32_t r = block_ratio(c, b);
        n += 2 + 6 + 13;                       // norms, hc_{attn,ffn}_*, attention
        n += r != 0 ? 4 : 0;                   // compressor
        n += r == 4 ? 7 : 0;                   // indexer: wq_b (2), weights_proj, compressor (4)
        n += 2 + 6 * uint64_t(c.n_routed_experts) + (c.n_shared_experts ? 6 : 0);  // gate, experts, shared
        n += b >= c.num_hidden_layers ? 10 : 0;  // MTP: e_proj, h_proj (4), 3 norms, hc_head (3)
    }
    return n;
}

/// The expected tensors as a list (see for_each_expected_tensor).
inline std::vector<tensor_spec> checkpoint_schema(const model_config& c, bool include_mtp = true) {
    std::vector<tensor_spec> out;
    for_each_expected_tensor(c, include_mtp, [&](const tensor_spec& s) { out.push_back(s); });
    return out;
}

/// Checks that `ck` holds every tensor `c` implies with the right dtype and shape. MTP
/// blocks are optional: block j is checked (and must be complete) only if some tensor
/// name starts with "mtp.<j>.". Tensors the config does not account for are returned in
/// report.extras (not an error). Throws one dsv4::error listing the problems (missing
/// tensor, wrong dtype, wrong shape), each naming the tensor and, if present, its file.
inline checkpoint_report validate_checkpoint(const model_config& c, const checkpoint& ck) {
    checkpoint_report rep;
    const auto all = ck.tensors();
    std::vector<bool> used(all.size(), false);
    std::vector<std::string> problems;
    std::size_t n_problems = 0;
    std::vector<bool> mtp_present(c.num_nextn_predict_layers, false);
    for (uint32_t j = 0; j < c.num_nextn_predict_layers; ++j) {
        mtp_present[j] = ck.has_prefix("mtp." + std::to_string(j) + ".");
        if (mtp_present[j]) rep.mtp_blocks.push_back(j);
    }
    auto report = [&](bool stopped) {
        std::string msg = ck.path() + ": checkpoint does not match " + c.source + " (" + std::to_string(n_problems) +
                          (stopped ? "+" : "") + " problem" + (n_problems > 1 ? "s" : "") + "):";
        for (const auto& p : problems) msg += "\n  " + p;
        if (n_problems > problems.size())
            msg += "\n  ... and " + std::to_string(n_problems - problems.size()) + (stopped ? "+" : "") + " more";
        return error(msg);
    };
    auto problem = [&](std::string msg) {
        if (++n_problems <= 20) problems.push_back(std::move(msg));
        if (n_problems >= 1000) throw report(true);  // a wrong config: no point listing everything
    };
    for_each_expected_tensor(c, true, [&](const tensor_spec& s) {
        if (s.mtp && !mtp_present[uint32_t(s.block) - c.num_hidden_layers]) return;
        ++rep.expected;
        if (__builtin_add_overflow(rep.expected_bytes, numel(s.shape) * dtype_size(s.type), &rep.expected_bytes))
            rep.expected_bytes = UINT64_MAX;  // only a config far beyond any checkpoint gets here
        const tensor_view* t = ck.find(s.name);
        const std::string want = std::string(dtype_name(s.type)) + " " + to_string(s.shape);
        if (!t) return problem("tensor " + detail::quote(s.name) + ": missing (expected " + want + ")");
        used[std::size_t(t - all.data())] = true;
        if (t->type != s.type || !same_shape(t->shape, s.shape))
            problem("tensor " + detail::quote(s.name) + " in " + std::string(t->file) + ": " +
                    std::string(dtype_name(t->type)) + " " + to_string(t->shape) + ", expected " + want);
    });
    for (std::size_t i = 0; i < all.size(); ++i)
        if (!used[i]) rep.extras.emplace_back(all[i].name);
    if (n_problems) throw report(false);
    return rep;
}

// ------------------------------------------------------------------------------ token ids

/// Throws dsv4::error if any id is negative or >= vocab_size, naming the first bad
/// position and value. Embedding and tid2eid lookups index by token id: check ids from
/// outside (a tokenizer, a user, a file) before they reach them.
template <class Int> void check_token_ids(std::span<const Int> ids, uint64_t vocab_size) {
    static_assert(std::is_integral_v<Int>, "token ids are integers");
    for (std::size_t i = 0; i < ids.size(); ++i) {
        const Int id = ids[i];
        bool bad = false;
        if constexpr (std::is_signed_v<Int>) bad = id < 0 || uint64_t(id) >= vocab_size;
        else bad = uint64_t(id) >= vocab_size;
        if (bad)
            throw error("dsv4::check_token_ids: token id " + std::to_string(id) + " at position " + std::to_string(i) +
                        " is outside [0, " + std::to_string(vocab_size) + ")");
    }
}
inline void check_token_ids(std::span<const int32_t> ids, uint64_t vocab_size) { check_token_ids<int32_t>(ids, vocab_size); }
inline void check_token_ids(std::span<const int64_t> ids, uint64_t vocab_size) { check_token_ids<int64_t>(ids, vocab_size); }

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
