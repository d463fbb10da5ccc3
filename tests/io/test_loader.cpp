// tests/test_loader.cpp - checkpoint loader (label: loader): the toy checkpoint written by
// reference/make_checkpoint.py, config.json parsing, validate_checkpoint, and a suite of
// malformed inputs, each of which must be a dsv4::error naming the file and the tensor or
// field (never a crash, never another exception type).
#include "fuzz/fuzz_targets.hpp"
#include "npy.hpp"

#include <dsv4/io/model_config.hpp>
#include <dsv4/io/safetensors.hpp>

#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string env_path(const char* var) {
    const char* v = std::getenv(var);
    if (!v || !*v) throw std::runtime_error(std::string(var) + " is not set (ctest sets it)");
    return v;
}
std::string toy_dir() { return env_path("DSV4_TOY_CHECKPOINT"); }

/// A fresh, empty scratch directory for one case.
fs::path scratch(const std::string& name) {
    const fs::path d = fs::path(env_path("DSV4_LOADER_SCRATCH")) / name;
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

std::string read_text(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    REQUIRE(f.good());
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void write_bytes(const fs::path& p, std::string_view bytes) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), std::streamsize(bytes.size()));
    REQUIRE(f.good());
}

/// A safetensors file: 8-byte LE length (the header's own unless `declared` is given),
/// the header text, then `data_bytes` bytes of data (byte i = i mod 251).
std::string st_bytes(std::string_view header, std::size_t data_bytes, std::optional<uint64_t> declared = {}) {
    const uint64_t n = declared ? *declared : header.size();
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[std::size_t(i)] = char((n >> (8 * i)) & 0xFF);
    out += header;
    for (std::size_t i = 0; i < data_bytes; ++i) out += char(i % 251);
    return out;
}

/// Runs f; it must throw a dsv4::error whose message contains every one of `parts`.
template <class F> void expect_error(F&& f, std::initializer_list<std::string> parts) {
    std::string msg;
    try {
        f();
    } catch (const dsv4::error& e) {
        msg = e.what();
    }
    std::string want;
    for (const auto& p : parts) want += " [" + p + "]";
    CAPTURE(want);
    REQUIRE_MESSAGE(!msg.empty(), "no dsv4::error thrown");
    for (const auto& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, "error \"" << msg << "\" lacks \"" << p << "\"");
}

/// Parses a header-only file (with `data_bytes` of data) written to the scratch dir.
void expect_header_error(const std::string& case_name, std::string_view header, std::size_t data_bytes,
                         std::initializer_list<std::string> parts, std::optional<uint64_t> declared = {}) {
    CAPTURE(case_name);
    const fs::path d = scratch("hdr_" + case_name);
    const fs::path f = d / "bad.safetensors";
    write_bytes(f, st_bytes(header, data_bytes, declared));
    std::vector<std::string> all(parts);
    all.push_back(f.string());
    // Both through the whole loader (open + map) and through the pure parser.
    const std::string bytes = read_text(f);
    std::string msg_open, msg_parse;
    try { (void)dsv4::checkpoint::open(f.string()); } catch (const dsv4::error& e) { msg_open = e.what(); }
    try {
        (void)dsv4::parse_safetensors_header(
            {reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size()}, f.string());
    } catch (const dsv4::error& e) { msg_parse = e.what(); }
    REQUIRE_MESSAGE(!msg_open.empty(), "checkpoint::open accepted the file");
    REQUIRE_MESSAGE(!msg_parse.empty(), "parse_safetensors_header accepted the file");
    for (const auto& p : all) {
        CHECK_MESSAGE(msg_open.find(p) != std::string::npos, "error \"" << msg_open << "\" lacks \"" << p << "\"");
        CHECK_MESSAGE(msg_parse.find(p) != std::string::npos, "error \"" << msg_parse << "\" lacks \"" << p << "\"");
    }
}

/// A copy of the toy checkpoint's directory: shards symlinked, config and index copied
/// (the index possibly edited by `edit`).
fs::path toy_mirror(const std::string& name, const std::function<void(json&)>& edit = {}) {
    const fs::path d = scratch(name);
    const fs::path src(toy_dir());
    for (const auto& e : fs::directory_iterator(src))
        if (e.path().extension() == ".safetensors") fs::create_symlink(fs::absolute(e.path()), d / e.path().filename());
    fs::copy_file(src / "config.json", d / "config.json");
    json idx = json::parse(read_text(src / "model.safetensors.index.json"));
    if (edit) edit(idx);
    write_bytes(d / "model.safetensors.index.json", idx.dump(1));
    return d;
}

json toy_config_json() { return json::parse(read_text(fs::path(toy_dir()) / "config.json")); }

dsv4::model_config config_with(const std::function<void(json&)>& edit, const std::string& name = "edited/config.json") {
    json j = toy_config_json();
    edit(j);
    return dsv4::parse_model_config(j.dump(), name);
}

void expect_config_error(const std::function<void(json&)>& edit, std::initializer_list<std::string> parts) {
    expect_error([&] { (void)config_with(edit); }, parts);
}

std::string shard_of(const std::string& tensor) {
    const json idx = json::parse(read_text(fs::path(toy_dir()) / "model.safetensors.index.json"));
    return idx["weight_map"][tensor].get<std::string>();
}

}  // namespace

// ================================================================================== happy path

TEST_CASE("loader: the toy checkpoint loads; views match the generator's bytes") {
    const auto ck = dsv4::checkpoint::open(toy_dir());
    const auto cfg = dsv4::load_model_config(toy_dir());
    CHECK(ck.size() == dsv4::expected_tensor_count(cfg));
    CHECK(ck.size() == 427);
    REQUIRE(ck.files().size() == 3);
    CHECK(ck.index_path().size() > 0);

    // Every view inside its mapping, sized by its shape, aligned to its element size (the
    // writer orders tensors by element size), and the sum equal to the index's total_size.
    uint64_t total = 0;
    std::set<std::string> files;
    for (const auto& t : ck.tensors()) {
        CAPTURE(t.name);
        CHECK(t.bytes == dsv4::numel(t.shape) * dsv4::dtype_size(t.type));
        CHECK(t.file_offset % dsv4::dtype_size(t.type) == 0);
        CHECK(t.file_offset + t.bytes <= fs::file_size(std::string(t.file)));
        CHECK(reinterpret_cast<uintptr_t>(t.data) % dsv4::dtype_size(t.type) == 0);
        total += t.bytes;
        files.insert(std::string(t.file));
    }
    CHECK(files.size() == 3);
    REQUIRE(ck.index_total_size().has_value());
    CHECK(total == *ck.index_total_size());
    CHECK(std::is_sorted(ck.tensors().begin(), ck.tensors().end(),
                         [](const auto& a, const auto& b) { return a.name < b.name; }));

    // Spot checks: the bytes make_checkpoint.py generated (saved with --spot) are the bytes
    // the views point at, with the same shape and a matching dtype.
    const fs::path spot(env_path("DSV4_TOY_SPOT"));
    const std::string names = read_text(spot / "names.txt");
    std::size_t checked = 0;
    std::set<dsv4::dtype> dtypes_seen;
    for (std::size_t at = 0; at < names.size();) {
        const std::size_t nl = names.find('\n', at);
        const std::string name = names.substr(at, nl - at);
        at = nl + 1;
        CAPTURE(name);
        const npy::array a = npy::load((spot / (name + ".npy")).string());
        const dsv4::tensor_view& t = ck.at(name);
        REQUIRE(a.shape.size() == t.shape.rank);
        for (std::size_t i = 0; i < a.shape.size(); ++i) CHECK(a.shape[i] == t.shape.dims[i]);
        const std::map<std::string, std::set<dsv4::dtype>> compatible = {
            {"u1", {dsv4::dtype::f8_e4m3, dsv4::dtype::f8_e8m0, dsv4::dtype::i8}},
            {"u2", {dsv4::dtype::bf16}}, {"f4", {dsv4::dtype::f32}}, {"i8", {dsv4::dtype::i64}}};
        CHECK(compatible.at(a.dtype).count(t.type) == 1);
        REQUIRE(a.bytes.size() == t.bytes);
        CHECK(std::memcmp(a.bytes.data(), t.data, t.bytes) == 0);
        dtypes_seen.insert(t.type);
        ++checked;
    }
    CHECK(checked >= 10);
    CHECK(dtypes_seen.size() == 6);  // F8_E4M3, F8_E8M0, I8, BF16, F32, I64

    // Typed access.
    const auto& tid = ck.at("layers.0.ffn.gate.tid2eid");
    const int64_t* ids = dsv4::tensor_data<int64_t>(tid);
    for (uint64_t r = 0; r < tid.shape.dims[0]; ++r) {
        CHECK(ids[2 * r] != ids[2 * r + 1]);
        CHECK((ids[2 * r] >= 0 && ids[2 * r] < 8 && ids[2 * r + 1] >= 0 && ids[2 * r + 1] < 8));
    }
    CHECK(dsv4::tensor_data<float>(ck.at("hc_head_scale"))[0] == 0.5f);
    CHECK(dsv4::tensor_data<uint16_t>(ck.at("norm.weight")) != nullptr);
    CHECK(dsv4::tensor_data<uint8_t>(ck.at("layers.1.ffn.experts.0.w1.weight")) != nullptr);  // FP4 in I8
    CHECK(dsv4::tensor_data<int8_t>(ck.at("layers.1.ffn.experts.0.w1.weight")) != nullptr);
    CHECK(ck.find("no.such.tensor") == nullptr);
    expect_error([&] { (void)ck.at("no.such.tensor"); }, {toy_dir(), "'no.such.tensor'"});
    CHECK(ck.has_prefix("mtp.0."));
    CHECK(!ck.has_prefix("mtp.1."));

    // The same checkpoint through the index file, and one shard on its own.
    const auto by_index = dsv4::checkpoint::open(toy_dir() + "/model.safetensors.index.json");
    CHECK(by_index.size() == ck.size());
    auto one = dsv4::checkpoint::open(ck.files()[1]);
    CHECK(one.size() > 0);
    CHECK(one.size() < ck.size());
    CHECK(one.index_path().empty());
    for (const auto& t : one.tensors()) {
        const dsv4::tensor_view* u = ck.find(t.name);
        REQUIRE(u != nullptr);
        CHECK(u->file_offset == t.file_offset);
        CHECK(std::memcmp(u->data, t.data, t.bytes) == 0);
    }
    // A moved checkpoint keeps its views valid (state lives behind a pointer).
    const std::string first(one.tensors().front().name);
    const dsv4::checkpoint moved = std::move(one);
    CHECK(moved.tensors().front().name == first);
    CHECK(moved.find(first) != nullptr);
}

TEST_CASE("loader: the toy config.json parses into the preset's values") {
    const auto c = dsv4::load_model_config(toy_dir());
    CHECK(c.vocab_size == 512);
    CHECK(c.hidden_size == 256);
    CHECK(c.num_hidden_layers == 4);
    CHECK(c.num_nextn_predict_layers == 1);
    CHECK(c.num_attention_heads == 4);
    CHECK(c.num_key_value_heads == 1);
    CHECK(c.head_dim == 128);
    CHECK(c.qk_rope_head_dim == 64);
    CHECK(c.q_lora_rank == 128);
    CHECK(c.o_groups == 2);
    CHECK(c.o_lora_rank == 128);
    CHECK(c.sliding_window == 128);
    CHECK(c.compress_ratios == std::vector<uint32_t>{0, 4, 128, 4, 0});
    CHECK(c.index_n_heads == 4);
    CHECK(c.index_head_dim == 128);
    CHECK(c.index_topk == 8);
    CHECK(c.moe_intermediate_size == 128);
    CHECK(c.n_routed_experts == 8);
    CHECK(c.num_experts_per_tok == 2);
    CHECK(c.n_shared_experts == 1);
    CHECK(c.num_hash_layers == 1);
    CHECK(c.scoring_func == "sqrtsoftplus");
    CHECK(c.norm_topk_prob);
    CHECK(c.routed_scaling_factor == 1.5);
    CHECK(c.swiglu_limit == 10.0);
    CHECK(c.rope_theta == 10000.0);
    CHECK(c.compress_rope_theta == 160000.0);
    CHECK(c.rope_scaling.yarn);
    CHECK(c.rope_scaling.factor == 16.0);
    CHECK(c.rope_scaling.original_max_position_embeddings == 65536);
    CHECK(c.rope_scaling.beta_fast == 32.0);
    CHECK(c.rope_scaling.beta_slow == 1.0);
    CHECK(c.hc_mult == 4);
    CHECK(c.hc_sinkhorn_iters == 20);
    CHECK(c.hc_eps == 1e-6);
    CHECK(c.rms_norm_eps == 1e-6);
    CHECK(c.max_position_embeddings == 4096);
    CHECK(c.expert_dtype == dsv4::expert_format::fp4);
    CHECK(c.bos_token_id == 0);
    CHECK(c.eos_token_id == 1);
    CHECK(dsv4::block_count(c) == 5);
    CHECK(dsv4::is_hash_block(c, 0));
    CHECK(!dsv4::is_hash_block(c, 1));
    CHECK(!dsv4::is_hash_block(c, 4));
    CHECK(dsv4::block_prefix(c, 3) == "layers.3.");
    CHECK(dsv4::block_prefix(c, 4) == "mtp.0.");
    CHECK(dsv4::block_ratio(c, 2) == 128);
    // Also from the file path, and without the optional fields.
    CHECK(dsv4::load_model_config(toy_dir() + "/config.json").hidden_size == 256);
    const auto bare = config_with([](json& j) {
        for (const char* k : {"rope_scaling", "expert_dtype", "num_key_value_heads", "quantization_config",
                              "bos_token_id", "eos_token_id", "norm_topk_prob", "topk_method", "model_type",
                              "tie_word_embeddings"})
            j.erase(k);
    });
    CHECK(!bare.rope_scaling.yarn);
    CHECK(bare.expert_dtype == dsv4::expert_format::fp4);
    CHECK(bare.bos_token_id == -1);
}

TEST_CASE("loader: validate_checkpoint accepts the toy checkpoint, reports extras, MTP optional") {
    const auto ck = dsv4::checkpoint::open(toy_dir());
    const auto cfg = dsv4::load_model_config(toy_dir());
    const auto rep = dsv4::validate_checkpoint(cfg, ck);
    CHECK(rep.expected == ck.size());
    CHECK(rep.extras.empty());
    CHECK(rep.mtp_blocks == std::vector<uint32_t>{0});
    CHECK(rep.expected_bytes == *ck.index_total_size());
    const uint64_t mtp_tensors = dsv4::expected_tensor_count(cfg, true) - dsv4::expected_tensor_count(cfg, false);
    CHECK(mtp_tensors == 1 + 21 + 2 + 48 + 6 + 10 - 1);  // norms+hc 8, attn 13, gate 2, experts 48, shared 6, MTP 10

    // A config without MTP: the mtp.0.* tensors are reported as extras, not errors.
    const auto no_mtp = config_with([](json& j) {
        j["num_nextn_predict_layers"] = 0;
        j["compress_ratios"] = {0, 4, 128, 4};
    });
    const auto rep2 = dsv4::validate_checkpoint(no_mtp, ck);
    CHECK(rep2.extras.size() == mtp_tensors);
    for (const auto& e : rep2.extras) CHECK(e.rfind("mtp.0.", 0) == 0);
    CHECK(rep2.mtp_blocks.empty());
    // A config with two MTP blocks: the absent mtp.1 is fine (MTP is optional).
    const auto two_mtp = config_with([](json& j) {
        j["num_nextn_predict_layers"] = 2;
        j["compress_ratios"] = {0, 4, 128, 4, 0, 0};
    });
    const auto rep3 = dsv4::validate_checkpoint(two_mtp, ck);
    CHECK(rep3.mtp_blocks == std::vector<uint32_t>{0});
    CHECK(rep3.expected == ck.size());
}

TEST_CASE("loader: the V4-Flash config implies the real checkpoint's census (spec §1.2)") {
    // config.json of deepseek-ai/DeepSeek-V4-Flash, field names and values as published
    // (values also in spec §0).
    const std::string real = R"({
      "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
      "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 1,
      "expert_dtype": "fp4", "hc_eps": 1e-06, "hc_mult": 4, "hc_sinkhorn_iters": 20, "head_dim": 512,
      "hidden_act": "silu", "hidden_size": 4096, "index_head_dim": 128, "index_n_heads": 64,
      "index_topk": 512, "initializer_range": 0.02, "max_position_embeddings": 1048576,
      "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1,
      "norm_topk_prob": true, "num_attention_heads": 64, "num_experts_per_tok": 6,
      "num_hidden_layers": 43, "num_hash_layers": 3, "num_key_value_heads": 1,
      "num_nextn_predict_layers": 1, "o_groups": 8, "o_lora_rank": 1024, "q_lora_rank": 1024,
      "qk_rope_head_dim": 64,
      "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                              "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
      "rms_norm_eps": 1e-06,
      "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 16,
                       "original_max_position_embeddings": 65536, "type": "yarn"},
      "rope_theta": 10000, "routed_scaling_factor": 1.5, "scoring_func": "sqrtsoftplus",
      "sliding_window": 128, "swiglu_limit": 10.0, "tie_word_embeddings": false,
      "topk_method": "noaux_tc", "torch_dtype": "bfloat16", "transformers_version": "4.57.1",
      "use_cache": true, "vocab_size": 129280, "compress_rope_theta": 160000,
      "compress_ratios": [0, 0, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128,
                          4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128,
                          4, 128, 4, 0]
    })";
    const auto c = dsv4::parse_model_config(real, "V4-Flash/config.json");
    CHECK(dsv4::expected_tensor_count(c) == 69187);
    std::map<dsv4::dtype, uint64_t> count;
    std::map<int, uint64_t> per_block;
    std::map<std::string, dsv4::tensor_spec> by_name;
    uint64_t bytes = 0, n = 0;
    dsv4::for_each_expected_tensor(c, true, [&](const dsv4::tensor_spec& s) {
        ++n;
        ++count[s.type];
        ++per_block[s.block];
        bytes += dsv4::numel(s.shape) * dsv4::dtype_size(s.type);
        CHECK(by_name.emplace(s.name, s).second);  // names unique
    });
    CHECK(n == 69187);
    CHECK(bytes == 159609485896ull);
    CHECK(count[dsv4::dtype::f8_e4m3] == 375);
    CHECK(count[dsv4::dtype::f8_e8m0] == 34167);
    CHECK(count[dsv4::dtype::i8] == 33792);
    CHECK(count[dsv4::dtype::bf16] == 433);
    CHECK(count[dsv4::dtype::f32] == 417);
    CHECK(count[dsv4::dtype::i64] == 3);
    CHECK(per_block[-1] == 6);
    CHECK(per_block[0] == 1565);  // ratio 0
    CHECK(per_block[3] == 1569);  // ratio 128
    CHECK(per_block[2] == 1576);  // ratio 4
    CHECK(per_block[43] == 1575); // MTP
    auto shape_of = [&](const std::string& name) { return dsv4::to_string(by_name.at(name).shape); };
    CHECK(shape_of("layers.0.ffn.gate.tid2eid") == "[129280, 6]");
    CHECK(by_name.count("layers.3.ffn.gate.tid2eid") == 0);
    CHECK(shape_of("layers.3.ffn.gate.bias") == "[256]");
    CHECK(shape_of("mtp.0.ffn.gate.bias") == "[256]");
    CHECK(shape_of("layers.2.attn.indexer.compressor.ape") == "[4, 256]");
    CHECK(shape_of("layers.2.attn.compressor.ape") == "[4, 1024]");
    CHECK(shape_of("layers.3.attn.compressor.ape") == "[128, 512]");
    CHECK(shape_of("layers.3.attn.compressor.wgate.weight") == "[512, 4096]");
    CHECK(shape_of("layers.42.ffn.experts.255.w3.scale") == "[2048, 128]");
    CHECK(shape_of("layers.7.ffn.experts.0.w2.weight") == "[4096, 1024]");
    CHECK(shape_of("layers.7.attn.wq_b.scale") == "[256, 8]");
    CHECK(shape_of("layers.7.attn.wo_a.weight") == "[8192, 4096]");
    CHECK(shape_of("layers.7.attn.wo_b.scale") == "[32, 64]");
    CHECK(shape_of("layers.2.attn.indexer.wq_b.scale") == "[64, 8]");
    CHECK(shape_of("layers.7.ffn.shared_experts.w2.scale") == "[32, 16]");
    CHECK(shape_of("layers.7.hc_attn_fn") == "[24, 16384]");
    CHECK(shape_of("mtp.0.hc_head_fn") == "[4, 16384]");
    CHECK(shape_of("mtp.0.e_proj.scale") == "[32, 32]");
    CHECK(by_name.count("mtp.0.attn.compressor.ape") == 0);
}

TEST_CASE("loader: memory report (mapped, resident, touched)") {
    const auto ck = dsv4::checkpoint::open(toy_dir());
    uint64_t file_bytes = 0;
    for (const auto& f : ck.files()) file_bytes += fs::file_size(f);
    const auto before = ck.memory();
    CHECK(before.files == 3);
    CHECK(before.bytes_mapped == file_bytes);
    CHECK(before.bytes_resident <= before.bytes_mapped);
    REQUIRE(before.bytes_touched.has_value());
    CHECK(*before.bytes_touched > 0);                       // the headers were read
    CHECK(*before.bytes_touched < before.bytes_mapped);     // the data was not

    const dsv4::tensor_view& t = ck.at("head.weight");
    uint64_t sum = 0;
    for (uint64_t i = 0; i < t.bytes; ++i) sum += t.data[i];
    CHECK(sum > 0);
    const auto after = ck.memory();
    REQUIRE(after.bytes_touched.has_value());
    CHECK(*after.bytes_touched >= *before.bytes_touched + t.bytes / 2);
    CHECK(*after.bytes_touched <= after.bytes_mapped + 3 * 4096);
    CHECK(ck.resident_bytes(t) == t.bytes);  // just read: in the page cache
    CHECK(after.bytes_resident >= t.bytes);
    expect_error([&] { (void)ck.resident_bytes(dsv4::tensor_view{}); }, {"not from this checkpoint"});
}

// ================================================================================== malformed files

TEST_CASE("loader: malformed safetensors headers are clear errors") {
    const std::string ok_tensor = R"("t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})";
    SUBCASE("valid baseline") {
        const fs::path f = scratch("hdr_valid") / "ok.safetensors";
        write_bytes(f, st_bytes("{" + ok_tensor + R"(,"__metadata__":{"format":"pt"}})", 16));
        const auto ck = dsv4::checkpoint::open(f.string());
        REQUIRE(ck.size() == 1);
        CHECK(ck.at("t").bytes == 16);
        CHECK(ck.file_metadata(ck.at("t")).at(0).second == "pt");
    }
    SUBCASE("empty file and short file") {
        expect_header_error("len_zero", "", 0, {"header of 0 bytes cannot hold a JSON object"}, 0);
        const fs::path d = scratch("hdr_short");
        write_bytes(d / "short.safetensors", "\x05\x00\x00");
        expect_error([&] { (void)dsv4::checkpoint::open((d / "short.safetensors").string()); },
                     {(d / "short.safetensors").string(), "too short"});
        write_bytes(d / "zero.safetensors", "");
        expect_error([&] { (void)dsv4::checkpoint::open((d / "zero.safetensors").string()); },
                     {(d / "zero.safetensors").string(), "too short"});
    }
    SUBCASE("header length larger than the file") {
        expect_header_error("len_gt_file", "{" + ok_tensor + "}", 16, {"header length 1000 exceeds the file size"}, 1000);
        expect_header_error("len_huge", "{}", 0, {"header length 18446744073709551615 exceeds the file size"},
                            UINT64_MAX);
        expect_header_error("len_2_63", "{}", 0, {"exceeds the file size"}, uint64_t(1) << 63);
    }
    SUBCASE("header JSON invalid, not an object, duplicate keys, too deep") {
        expect_header_error("json_cut", R"({"t":{"dtype":"F32")", 0, {"invalid JSON"});
        expect_header_error("json_garbage", "{} trailing", 0, {"invalid JSON"});
        expect_header_error("json_array", "[1,2,3]", 0, {"header is an array, not a JSON object"});
        expect_header_error("json_string", R"("abc")", 0, {"not a JSON object"});
        expect_header_error("json_dup", "{" + ok_tensor + "," + ok_tensor + "}", 16, {"duplicate key 't'"});
        expect_header_error("json_deep", std::string(200, '[') + std::string(200, ']'), 0, {"nested deeper"});
        expect_header_error("json_utf8", "{\"t\xff\":{}}", 0, {"invalid JSON"});
        expect_header_error("json_nul", std::string("{\"a\":1}\0", 8), 0, {"invalid JSON"});
    }
    SUBCASE("tensor entries: dtype, shape, offsets, fields") {
        expect_header_error("dtype_unknown", R"({"w":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}})", 1,
                            {"tensor 'w'", "unknown dtype 'F4'"});
        expect_header_error("dtype_missing", R"({"w":{"shape":[2],"data_offsets":[0,2]}})", 2,
                            {"tensor 'w'", "dtype"});
        expect_header_error("dtype_number", R"({"w":{"dtype":7,"shape":[2],"data_offsets":[0,2]}})", 2,
                            {"tensor 'w'", "dtype"});
        expect_header_error("size_mismatch", R"({"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,10]}})", 10,
                            {"tensor 'w'", "shape [2, 3] x BF16 is 12 bytes but data_offsets span 10"});
        expect_header_error("shape_negative", R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})", 0,
                            {"tensor 'w'", "shape[0] is not a non-negative integer"});
        expect_header_error("shape_float", R"({"w":{"dtype":"U8","shape":[2.0],"data_offsets":[0,2]}})", 2,
                            {"tensor 'w'", "shape[0]"});
        expect_header_error("shape_huge", R"({"w":{"dtype":"U8","shape":[1e30],"data_offsets":[0,2]}})", 2,
                            {"tensor 'w'", "shape[0]"});
        expect_header_error("shape_overflow",
                            R"({"w":{"dtype":"I64","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})", 8,
                            {"tensor 'w'", "overflows"});
        expect_header_error("shape_not_array", R"({"w":{"dtype":"U8","shape":3,"data_offsets":[0,3]}})", 3,
                            {"tensor 'w'", "shape is not an array"});
        expect_header_error("rank_9", R"({"w":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}})", 1,
                            {"tensor 'w'", "rank 9"});
        expect_header_error("offsets_three", R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}})", 2,
                            {"tensor 'w'", "data_offsets"});
        expect_header_error("offsets_reversed", R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,2]}})", 4,
                            {"tensor 'w'", "reversed"});
        expect_header_error("offsets_negative", R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", 4,
                            {"tensor 'w'", "data_offsets"});
        expect_header_error("unknown_field",
                            R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":1}})", 1,
                            {"tensor 'w'", "unknown field 'extra'"});
        expect_header_error("entry_not_object", R"({"w":[1,2]})", 0, {"tensor 'w'", "not an object"});
        expect_header_error("empty_name", R"({"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1,
                            {"empty name"});
        expect_header_error("metadata_not_strings", R"({"__metadata__":{"format":1}})", 0,
                            {"__metadata__ value 'format'", "not a string"});
        expect_header_error("metadata_array", R"({"__metadata__":[]})", 0, {"__metadata__ is an array"});
        expect_header_error("control_chars_in_name",
                            "{\"a\\nb\":{\"dtype\":\"F4\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                            {"tensor 'a\\x0ab'", "unknown dtype"});
    }
    SUBCASE("data ranges outside the file or overlapping") {
        expect_header_error("range_outside", R"({"w":{"dtype":"F32","shape":[256],"data_offsets":[0,1024]}})", 16,
                            {"tensor 'w'", "ends beyond the 16 data bytes"});
        expect_header_error("range_outside_huge",
                            R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]}})",
                            16, {"tensor 'w'", "ends beyond"});
        expect_header_error("overlap",
                            R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
                            R"("b":{"dtype":"U8","shape":[16],"data_offsets":[8,24]}})",
                            24, {"tensor 'a' [0, 16) overlaps tensor 'b' [8, 24)"});
        expect_header_error("same_range",
                            R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]},)"
                            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                            8, {"overlaps", "'a'", "'b'"});
        // Empty tensors may share an offset; a hole between tensors is harmless.
        const fs::path f = scratch("hdr_empty_ok") / "ok.safetensors";
        write_bytes(f, st_bytes(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},)"
                                R"("b":{"dtype":"U8","shape":[2,0],"data_offsets":[4,4]},)"
                                R"("c":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})", 12));
        CHECK(dsv4::checkpoint::open(f.string()).size() == 3);
    }
    SUBCASE("not a regular file") {
        const fs::path d = scratch("hdr_dir");
        expect_error([&] { (void)dsv4::checkpoint::open("/dev/null"); }, {"/dev/null", "not a regular file"});
        expect_error([&] { (void)dsv4::checkpoint::open((d / "missing.safetensors").string()); },
                     {"missing.safetensors", "cannot open"});
        expect_error([&] { (void)dsv4::checkpoint::open(d.string()); },
                     {d.string(), "neither model.safetensors.index.json nor model.safetensors"});
    }
}

TEST_CASE("loader: malformed sharded checkpoints are clear errors") {
    SUBCASE("truncated shard") {
        const fs::path d = toy_mirror("shard_truncated");
        const std::string victim = "model-00002-of-00003.safetensors";
        fs::remove(d / victim);
        const std::string bytes = read_text(fs::path(toy_dir()) / victim);
        write_bytes(d / victim, std::string_view(bytes).substr(0, bytes.size() * 6 / 10));
        expect_error([&] { (void)dsv4::checkpoint::open(d.string()); },
                     {(d / victim).string(), "ends beyond", "tensor '", "truncated", "model.safetensors.index.json"});
        expect_error([&] { (void)dsv4::checkpoint::open((d / victim).string()); },
                     {(d / victim).string(), "ends beyond", "tensor '"});
        // Cut inside the header as well.
        write_bytes(d / victim, std::string_view(bytes).substr(0, 100));
        expect_error([&] { (void)dsv4::checkpoint::open(d.string()); }, {(d / victim).string(), "exceeds the file size"});
    }
    SUBCASE("index names a missing shard") {
        const fs::path d = toy_mirror("index_missing_shard", [](json& idx) {
            idx["weight_map"]["layers.0.attn.wq_a.weight"] = "model-00009-of-00009.safetensors";
        });
        expect_error([&] { (void)dsv4::checkpoint::open(d.string()); },
                     {(d / "model.safetensors.index.json").string(), "shard 'model-00009-of-00009.safetensors'",
                      "tensor 'layers.0.attn.wq_a.weight'", "cannot open"});
    }
    SUBCASE("index maps a tensor to a shard that does not hold it") {
        const fs::path d = toy_mirror("index_absent_tensor", [](json& idx) {
            idx["weight_map"]["layers.9.ghost.weight"] = "model-00001-of-00003.safetensors";
        });
        expect_error([&] { (void)dsv4::checkpoint::open(d.string()); },
                     {"model.safetensors.index.json", "tensor 'layers.9.ghost.weight'",
                      "'model-00001-of-00003.safetensors'", "no such tensor"});
        const std::string moved = shard_of("embed.weight") == "model-00001-of-00003.safetensors"
                                      ? "model-00002-of-00003.safetensors"
                                      : "model-00001-of-00003.safetensors";
        const fs::path d2 = toy_mirror("index_wrong_shard", [&](json& idx) { idx["weight_map"]["embed.weight"] = moved; });
        expect_error([&] { (void)dsv4::checkpoint::open(d2.string()); },
                     {"tensor 'embed.weight'", "'" + moved + "'", "no such tensor"});
    }
    SUBCASE("a shard holds a tensor the index does not list") {
        const fs::path d = toy_mirror("index_unlisted", [](json& idx) { idx["weight_map"].erase("norm.weight"); });
        expect_error([&] { (void)dsv4::checkpoint::open(d.string()); },
                     {shard_of("norm.weight"), "tensor 'norm.weight'", "not listed"});
    }
    SUBCASE("index JSON broken, wrong types, unsafe shard names") {
        auto with_index = [](const std::string& name, const std::string& text) {
            const fs::path d = toy_mirror(name);
            write_bytes(d / "model.safetensors.index.json", text);
            return d;
        };
        const fs::path a = with_index("index_invalid", "{\"weight_map\": {");
        expect_error([&] { (void)dsv4::checkpoint::open(a.string()); },
                     {(a / "model.safetensors.index.json").string(), "invalid JSON"});
        const fs::path b = with_index("index_no_map", R"({"metadata": {}})");
        expect_error([&] { (void)dsv4::checkpoint::open(b.string()); }, {"model.safetensors.index.json", "no weight_map"});
        const fs::path c = with_index("index_map_array", R"({"weight_map": []})");
        expect_error([&] { (void)dsv4::checkpoint::open(c.string()); }, {"weight_map is an array"});
        const fs::path e = with_index("index_value_int", R"({"weight_map": {"embed.weight": 3}})");
        expect_error([&] { (void)dsv4::checkpoint::open(e.string()); }, {"'embed.weight'", "not a shard file name"});
        for (const char* bad : {"../model-00001-of-00003.safetensors", "/etc/passwd", "..", "a\\\\b", ""}) {
            const fs::path f = with_index("index_path_escape",
                                          std::string(R"({"weight_map": {"embed.weight": ")") + bad + "\"}}");
            expect_error([&] { (void)dsv4::checkpoint::open(f.string()); },
                         {"'embed.weight'", "not a plain file name"});
        }
        const fs::path g = with_index("index_total_size", R"({"metadata":{"total_size":-5},"weight_map":{"a":"b"}})");
        expect_error([&] { (void)dsv4::checkpoint::open(g.string()); }, {"total_size"});
        const fs::path h = with_index("index_dup", R"({"weight_map":{"a":"x","a":"y"}})");
        expect_error([&] { (void)dsv4::checkpoint::open(h.string()); }, {"duplicate key 'a'"});
        const fs::path i = with_index("index_empty", R"({"weight_map":{}})");
        expect_error([&] { (void)dsv4::checkpoint::open(i.string()); }, {"lists no tensors"});
        const fs::path j = toy_mirror("index_shard_is_dir");
        fs::create_directories(j / "dir.safetensors");
        write_bytes(j / "model.safetensors.index.json", R"({"weight_map":{"embed.weight":"dir.safetensors"}})");
        expect_error([&] { (void)dsv4::checkpoint::open(j.string()); },
                     {"'dir.safetensors'", "'embed.weight'", "not a regular file"});
    }
}

TEST_CASE("loader: a checkpoint that does not match its config is a clear error") {
    const auto ck = dsv4::checkpoint::open(toy_dir());
    SUBCASE("more experts than the checkpoint has: missing tensors, wrong gate shape") {
        const auto c = config_with([](json& j) { j["n_routed_experts"] = 9; });
        expect_error([&] { (void)dsv4::validate_checkpoint(c, ck); },
                     {toy_dir(), "edited/config.json", "tensor 'layers.0.ffn.experts.8.w1.weight': missing",
                      "expected I8 [128, 128]", "tensor 'layers.0.ffn.gate.weight' in ",
                      "BF16 [8, 256], expected BF16 [9, 256]", "more"});
    }
    SUBCASE("a wider expert: every expert shape is wrong") {
        const auto c = config_with([](json& j) { j["moe_intermediate_size"] = 256; });
        expect_error([&] { (void)dsv4::validate_checkpoint(c, ck); },
                     {"tensor 'layers.0.ffn.experts.0.w1.weight' in ", "I8 [128, 128], expected I8 [256, 128]",
                      "F8_E8M0 [128, 8], expected F8_E8M0 [256, 8]"});
    }
    SUBCASE("hash layers: tid2eid missing where the config expects one") {
        const auto c = config_with([](json& j) { j["num_hash_layers"] = 2; });
        expect_error([&] { (void)dsv4::validate_checkpoint(c, ck); },
                     {"tensor 'layers.1.ffn.gate.tid2eid': missing (expected I64 [512, 2])", "1 problem"});
    }
    SUBCASE("a ratio change: compressor and indexer tensors missing or misshapen") {
        const auto c = config_with([](json& j) { j["compress_ratios"] = {0, 4, 4, 4, 0}; });
        expect_error([&] { (void)dsv4::validate_checkpoint(c, ck); },
                     {"tensor 'layers.2.attn.compressor.ape' in ", "F32 [128, 128], expected F32 [4, 256]",
                      "tensor 'layers.2.attn.indexer.wq_b.weight': missing"});
    }
    SUBCASE("fp8 experts expected, fp4 found") {
        const auto c = config_with([](json& j) { j["expert_dtype"] = "fp8"; });
        expect_error([&] { (void)dsv4::validate_checkpoint(c, ck); },
                     {"tensor 'layers.0.ffn.experts.0.w1.weight' in ", "I8 [128, 128], expected F8_E4M3 [128, 256]"});
    }
}

TEST_CASE("loader: every configuration the official code accepts parses (issue 13)") {
    // The official inference code (model.py ModelArgs, kernel.py, convert.py) constrains these
    // fields less than a first reading of the V4-Flash config suggests.
    SUBCASE("num_nextn_predict_layers absent: 0 MTP blocks, the longer compress_ratios list is fine") {
        const auto c = config_with([](json& j) { j.erase("num_nextn_predict_layers"); });
        CHECK(c.num_nextn_predict_layers == 0);
        CHECK(dsv4::block_count(c) == 4);
        CHECK(c.compress_ratios == std::vector<uint32_t>{0, 4, 128, 4});
        CHECK(c.compress_ratios_ignored == 1);
        CHECK(dsv4::expected_tensor_count(c, true) == dsv4::expected_tensor_count(c, false));
        // The toy checkpoint's mtp.0.* tensors are then extras, not a validation error.
        const auto ck = dsv4::checkpoint::open(toy_dir());
        const auto rep = dsv4::validate_checkpoint(c, ck);
        CHECK(rep.mtp_blocks.empty());
        CHECK(rep.extras.size() == 87);
        for (const auto& e : rep.extras) CHECK(e.rfind("mtp.0.", 0) == 0);
        // exactly as many ratios as main layers is fine too
        const auto c2 = config_with([](json& j) {
            j.erase("num_nextn_predict_layers");
            j["compress_ratios"] = {0, 4, 128, 4};
        });
        CHECK(c2.compress_ratios_ignored == 0);
        // unused trailing entries are not examined (the official code never reads them)
        const auto c3 = config_with([](json& j) { j["compress_ratios"] = {0, 4, 128, 4, 0, 7, "x"}; });
        CHECK(c3.compress_ratios == std::vector<uint32_t>{0, 4, 128, 4, 0});
        CHECK(c3.compress_ratios_ignored == 2);
        // but used ones are
        expect_config_error([](json& j) { j.erase("num_nextn_predict_layers"); j["compress_ratios"] = {0, 4, 64, 4, 0}; },
                            {"field 'compress_ratios[2]' = 64, expected 0, 4 or 128"});
    }
    SUBCASE("o_lora_rank: only o_groups * o_lora_rank must be a multiple of 128 (convert.py)") {
        for (const auto& gr_rank : std::vector<std::pair<int, int>>{{2, 64}, {4, 32}, {1, 128}, {2, 192}}) {
            const int groups = gr_rank.first, rank = gr_rank.second;  // (Clang 14: no lambda capture of bindings)
            CAPTURE(groups);
            CAPTURE(rank);
            const auto c = config_with([&](json& j) {
                j["o_groups"] = groups;
                j["o_lora_rank"] = rank;
            });
            CHECK(c.o_lora_rank == uint32_t(rank));
            std::map<std::string, dsv4::tensor_spec> by;
            dsv4::for_each_expected_tensor(c, true, [&](const dsv4::tensor_spec& s) { by.emplace(s.name, s); });
            const uint64_t gr = uint64_t(groups) * uint64_t(rank), cols = 4 * 128 / uint64_t(groups);
            CHECK(dsv4::to_string(by.at("layers.1.attn.wo_a.weight").shape) ==
                  "[" + std::to_string(gr) + ", " + std::to_string(cols) + "]");
            CHECK(dsv4::to_string(by.at("layers.1.attn.wo_a.scale").shape) ==
                  "[" + std::to_string(gr / 128) + ", " + std::to_string(cols / 128) + "]");
            CHECK(dsv4::to_string(by.at("layers.1.attn.wo_b.weight").shape) == "[256, " + std::to_string(gr) + "]");
        }
    }
    SUBCASE("index_head_dim: a multiple of 32 from qk_rope_head_dim on, no power of two needed") {
        for (int d : {64, 96, 128, 192, 256, 32768}) {
            CAPTURE(d);
            const auto c = config_with([&](json& j) { j["index_head_dim"] = d; });
            CHECK(c.index_head_dim == uint32_t(d));
        }
        const auto c = config_with([](json& j) { j["index_head_dim"] = 96; });
        std::map<std::string, dsv4::tensor_spec> by;
        dsv4::for_each_expected_tensor(c, true, [&](const dsv4::tensor_spec& s) { by.emplace(s.name, s); });
        CHECK(dsv4::to_string(by.at("layers.1.attn.indexer.wq_b.weight").shape) == "[384, 128]");
        CHECK(dsv4::to_string(by.at("layers.1.attn.indexer.wq_b.scale").shape) == "[3, 1]");
        CHECK(dsv4::to_string(by.at("layers.1.attn.indexer.compressor.ape").shape) == "[4, 192]");
        CHECK(dsv4::to_string(by.at("layers.1.attn.indexer.compressor.norm.weight").shape) == "[96]");
    }
    SUBCASE("sliding_window: any positive value (the official window_size), exposed as given") {
        for (int w : {1, 64, 100, 128, 256, 4096}) {
            CAPTURE(w);
            CHECK(config_with([&](json& j) { j["sliding_window"] = w; }).sliding_window == uint32_t(w));
        }
    }
    SUBCASE("head_dim: a multiple of 64 with the nope part in KV FP8 blocks, not necessarily of 128") {
        const auto c = config_with([](json& j) { j["head_dim"] = 192; });
        CHECK(c.head_dim == 192);
        std::map<std::string, dsv4::tensor_spec> by;
        dsv4::for_each_expected_tensor(c, true, [&](const dsv4::tensor_spec& s) { by.emplace(s.name, s); });
        CHECK(dsv4::to_string(by.at("layers.0.attn.wkv.weight").shape) == "[192, 256]");
        CHECK(dsv4::to_string(by.at("layers.0.attn.wkv.scale").shape) == "[2, 2]");
        CHECK(dsv4::to_string(by.at("layers.0.attn.wo_a.weight").shape) == "[256, 384]");
    }
}

TEST_CASE("loader: the V4-Pro config loads and implies its checkpoint schema") {
    // Root config.json of deepseek-ai/DeepSeek-V4-Pro as published (copied verbatim in
    // github.com/Nicooo-Wang/DeepSeek-V4-Pro-code @ 0ec3a03; reference/make_checkpoint.py
    // --preset v4-pro --config-only writes the same values). Nobody here holds its weights:
    // the schema is checked against numbers derived from the architecture.
    const std::string pro = R"({
      "architectures": ["DeepseekV4ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 0, "eos_token_id": 1, "expert_dtype": "fp4", "hc_eps": 1e-06, "hc_mult": 4,
      "hc_sinkhorn_iters": 20, "head_dim": 512, "hidden_act": "silu", "hidden_size": 7168,
      "index_head_dim": 128, "index_n_heads": 64, "index_topk": 1024, "initializer_range": 0.02,
      "max_position_embeddings": 1048576, "model_type": "deepseek_v4", "moe_intermediate_size": 3072,
      "n_routed_experts": 384, "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 128,
      "num_experts_per_tok": 6, "num_hidden_layers": 61, "num_hash_layers": 3, "num_key_value_heads": 1,
      "num_nextn_predict_layers": 1, "o_groups": 16, "o_lora_rank": 1024, "q_lora_rank": 1536,
      "qk_rope_head_dim": 64,
      "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                              "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
      "rms_norm_eps": 1e-06,
      "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 16,
                       "original_max_position_embeddings": 65536, "type": "yarn"},
      "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sqrtsoftplus",
      "sliding_window": 128, "swiglu_limit": 10.0, "tie_word_embeddings": false, "topk_method": "noaux_tc",
      "torch_dtype": "bfloat16", "transformers_version": "4.57.1", "use_cache": true, "vocab_size": 129280,
      "compress_rope_theta": 160000,
      "compress_ratios": [128, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128,
                          4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128,
                          4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128, 4, 128,
                          4, 0]
    })";
    const auto c = dsv4::parse_model_config(pro, "V4-Pro/config.json");
    CHECK(c.hidden_size == 7168);
    CHECK(c.num_hidden_layers == 61);
    CHECK(c.num_nextn_predict_layers == 1);
    CHECK(c.num_attention_heads == 128);
    CHECK(c.q_lora_rank == 1536);
    CHECK(c.o_groups == 16);
    CHECK(c.o_lora_rank == 1024);
    CHECK(c.index_topk == 1024);
    CHECK(c.moe_intermediate_size == 3072);
    CHECK(c.n_routed_experts == 384);
    CHECK(c.routed_scaling_factor == 2.5);
    CHECK(c.compress_ratios.size() == 62);
    CHECK(c.compress_ratios_ignored == 0);
    CHECK(dsv4::block_ratio(c, 0) == 128);
    CHECK(dsv4::block_ratio(c, 60) == 4);
    CHECK(dsv4::block_ratio(c, 61) == 0);  // MTP
    // Per block (E = 384 experts, 6 tensors each): norms + hc 8, attention 13, gate 2,
    // experts 2304, shared 6 = 2333; + compressor 4 (ratio 128) or + compressor 4 + indexer 7
    // (ratio 4); MTP (ratio 0) + 10. Layers: 30 of ratio 4, 31 of ratio 128 (0 and 1 among them).
    const uint64_t want_n = 6 + 30 * 2344 + 31 * 2337 + 2343;
    CHECK(want_n == 145116);
    CHECK(dsv4::expected_tensor_count(c) == want_n);
    CHECK(dsv4::expected_tensor_count(c, false) == want_n - 2343);
    std::map<int, uint64_t> per_block;
    std::map<std::string, dsv4::tensor_spec> by_name;
    uint64_t bytes = 0, n = 0, expert_bytes = 0;
    dsv4::for_each_expected_tensor(c, true, [&](const dsv4::tensor_spec& s) {
        ++n;
        ++per_block[s.block];
        const uint64_t b = dsv4::numel(s.shape) * dsv4::dtype_size(s.type);
        bytes += b;
        if (s.name.find(".ffn.experts.") != std::string::npos) expert_bytes += b;
        CHECK(by_name.emplace(s.name, s).second);
    });
    CHECK(n == want_n);
    // Routed experts: 62 blocks x 384 experts x 3 matrices of 7168 x 3072 FP4 (half a byte
    // each) plus one E8M0 scale per 32.
    CHECK(expert_bytes == 62ull * 384 * 3 * (7168ull * 3072 / 2 + 7168ull * 3072 / 32));
    CHECK(bytes == 864704792696ull);  // = reference/make_checkpoint.py schema(v4-pro), written independently
    CHECK(per_block[-1] == 6);
    CHECK(per_block[0] == 2337);   // ratio 128, hash
    CHECK(per_block[2] == 2344);   // ratio 4, hash
    CHECK(per_block[3] == 2337);   // ratio 128
    CHECK(per_block[61] == 2343);  // MTP
    auto shape_of = [&](const std::string& name) { return dsv4::to_string(by_name.at(name).shape); };
    CHECK(shape_of("embed.weight") == "[129280, 7168]");
    CHECK(shape_of("layers.0.ffn.gate.tid2eid") == "[129280, 6]");
    CHECK(shape_of("layers.2.ffn.gate.tid2eid") == "[129280, 6]");
    CHECK(by_name.count("layers.3.ffn.gate.tid2eid") == 0);
    CHECK(shape_of("layers.0.attn.compressor.ape") == "[128, 512]");
    CHECK(by_name.count("layers.0.attn.indexer.wq_b.weight") == 0);
    CHECK(shape_of("layers.2.attn.compressor.ape") == "[4, 1024]");
    CHECK(shape_of("layers.2.attn.indexer.wq_b.weight") == "[8192, 1536]");
    CHECK(shape_of("layers.5.attn.wq_a.scale") == "[12, 56]");
    CHECK(shape_of("layers.5.attn.wq_b.weight") == "[65536, 1536]");
    CHECK(shape_of("layers.5.attn.wo_a.weight") == "[16384, 4096]");
    CHECK(shape_of("layers.5.attn.wo_b.scale") == "[56, 128]");
    CHECK(shape_of("layers.5.attn.attn_sink") == "[128]");
    CHECK(shape_of("layers.60.ffn.experts.383.w2.weight") == "[7168, 1536]");
    CHECK(shape_of("layers.60.ffn.experts.383.w1.scale") == "[3072, 224]");
    CHECK(shape_of("layers.60.ffn.shared_experts.w2.scale") == "[56, 24]");
    CHECK(shape_of("layers.60.hc_ffn_fn") == "[24, 28672]");
    CHECK(shape_of("mtp.0.e_proj.weight") == "[7168, 7168]");
    CHECK(shape_of("mtp.0.ffn.gate.bias") == "[384]");
    CHECK(by_name.count("mtp.0.attn.compressor.ape") == 0);
    // Also as the inference/ config reads it without the MTP count: 61 blocks, no MTP tensors.
    json j = json::parse(pro);
    j.erase("num_nextn_predict_layers");
    const auto c0 = dsv4::parse_model_config(j.dump(), "V4-Pro/config.json");
    CHECK(dsv4::block_count(c0) == 61);
    CHECK(c0.compress_ratios_ignored == 1);
    CHECK(dsv4::expected_tensor_count(c0) == want_n - 2343);
}

TEST_CASE("loader: config.json fields missing, mistyped or inconsistent are clear errors") {
    expect_config_error([](json& j) { j.erase("hidden_size"); }, {"edited/config.json", "field 'hidden_size' is missing"});
    expect_config_error([](json& j) { j["hidden_size"] = nullptr; }, {"field 'hidden_size' is missing"});
    expect_config_error([](json& j) { j["hidden_size"] = "256"; }, {"field 'hidden_size' is a string"});
    expect_config_error([](json& j) { j["hidden_size"] = 256.0; }, {"field 'hidden_size' is a floating-point number"});
    expect_config_error([](json& j) { j["hidden_size"] = -256; }, {"field 'hidden_size'", "< 0"});
    expect_config_error([](json& j) { j["hidden_size"] = 0; }, {"field 'hidden_size' = 0 is outside"});
    expect_config_error([](json& j) { j["hidden_size"] = 192; }, {"field 'hidden_size'", "not a multiple of 128"});
    expect_config_error([](json& j) { j.erase("compress_ratios"); }, {"field 'compress_ratios' is missing"});
    expect_config_error([](json& j) { j["compress_ratios"] = {0, 4, 128, 4}; },
                        {"field 'compress_ratios' has 4 entries", "num_hidden_layers (4)",
                         "num_nextn_predict_layers (1) = 5"});
    expect_config_error([](json& j) { j["num_hidden_layers"] = 5; }, {"'compress_ratios' has 5 entries", "= 6"});
    expect_config_error([](json& j) { j["compress_ratios"] = {0, 4, 3, 4, 0}; },
                        {"field 'compress_ratios[2]' = 3, expected 0, 4 or 128"});
    expect_config_error([](json& j) { j["compress_ratios"] = "0,4"; }, {"field 'compress_ratios' is a string"});
    expect_config_error([](json& j) { j["head_dim"] = 96; }, {"field 'head_dim'", "not a multiple of 64"});
    expect_config_error([](json& j) { j["qk_rope_head_dim"] = 63; }, {"field 'qk_rope_head_dim' = 63 is odd"});
    expect_config_error([](json& j) { j["qk_rope_head_dim"] = 128; }, {"field 'head_dim' = 128 leaves no nope dims"});
    expect_config_error([](json& j) { j["qk_nope_head_dim"] = 32; }, {"field 'qk_nope_head_dim' = 32", "= 64"});
    expect_config_error([](json& j) { j["o_groups"] = 3; }, {"field 'o_groups' = 3 does not divide num_attention_heads = 4"});
    expect_config_error([](json& j) { j["num_experts_per_tok"] = 9; },
                        {"field 'num_experts_per_tok' = 9 exceeds n_routed_experts = 8"});
    expect_config_error([](json& j) { j["num_hash_layers"] = 5; }, {"field 'num_hash_layers' = 5 exceeds"});
    expect_config_error([](json& j) { j["num_key_value_heads"] = 8; }, {"field 'num_key_value_heads' = 8"});
    expect_config_error([](json& j) { j["index_head_dim"] = 80; }, {"field 'index_head_dim' = 80", "multiple of 32"});
    expect_config_error([](json& j) { j["index_head_dim"] = 32; },
                        {"field 'index_head_dim' = 32 is below qk_rope_head_dim = 64"});
    expect_config_error([](json& j) { j["index_head_dim"] = 65536; }, {"field 'index_head_dim' = 65536 is outside"});
    expect_config_error([](json& j) { j["moe_intermediate_size"] = 48; }, {"field 'moe_intermediate_size'"});
    expect_config_error([](json& j) { j["moe_intermediate_size"] = 96; },
                        {"field 'moe_intermediate_size' gives 96, not a multiple of 128", "act_quant"});
    expect_config_error([](json& j) { j["o_lora_rank"] = 96; },
                        {"field 'o_lora_rank' gives 192, not a multiple of 128", "o_groups * o_lora_rank"});
    expect_config_error([](json& j) { j["sliding_window"] = 0; }, {"field 'sliding_window' = 0 is outside"});
    expect_config_error([](json& j) { j["num_nextn_predict_layers"] = -1; }, {"field 'num_nextn_predict_layers'", "< 0"});
    expect_config_error([](json& j) { j["num_nextn_predict_layers"] = "1"; }, {"field 'num_nextn_predict_layers' is a string"});
    expect_config_error([](json& j) { j["head_dim"] = 192; j["o_groups"] = 4; },
                        {"field 'num_attention_heads' gives 192, not a multiple of 128", "wo_a"});
    expect_config_error([](json& j) { j["scoring_func"] = "softmax"; }, {"field 'scoring_func'", "sqrtsoftplus"});
    expect_config_error([](json& j) { j["rope_scaling"]["type"] = "linear"; }, {"field 'rope_scaling.type'", "yarn"});
    expect_config_error([](json& j) { j["rope_scaling"].erase("factor"); }, {"field 'rope_scaling.factor' is missing"});
    expect_config_error([](json& j) { j["rope_scaling"] = 16; }, {"field 'rope_scaling' is an integer"});
    expect_config_error([](json& j) { j["rms_norm_eps"] = "1e-6"; }, {"field 'rms_norm_eps' is a string"});
    expect_config_error([](json& j) { j["rms_norm_eps"] = 0; }, {"field 'rms_norm_eps' = 0 is outside"});
    expect_config_error([](json& j) { j.erase("swiglu_limit"); }, {"field 'swiglu_limit' is missing"});
    expect_config_error([](json& j) { j["expert_dtype"] = "fp16"; }, {"field 'expert_dtype'"});
    expect_config_error([](json& j) { j["tie_word_embeddings"] = true; }, {"field 'tie_word_embeddings' is true"});
    expect_config_error([](json& j) { j["model_type"] = "llama"; }, {"field 'model_type'"});
    expect_config_error([](json& j) { j["quantization_config"]["weight_block_size"] = {64, 64}; },
                        {"field 'quantization_config.weight_block_size'"});
    expect_config_error([](json& j) { j["eos_token_id"] = 512; }, {"field 'eos_token_id' = 512 is outside [0, 511]"});
    expect_config_error([](json& j) { j["norm_topk_prob"] = 1; }, {"field 'norm_topk_prob' is an integer"});
    expect_error([] { (void)dsv4::parse_model_config("[]", "x/config.json"); }, {"x/config.json", "not a JSON object"});
    expect_error([] { (void)dsv4::parse_model_config("{\"hidden_size\": 256, \"hidden_size\": 512}", "x/config.json"); },
                 {"x/config.json", "duplicate key 'hidden_size'"});
    expect_error([] { (void)dsv4::parse_model_config("{", "x/config.json"); }, {"x/config.json", "invalid JSON"});
    expect_error([] { (void)dsv4::load_model_config("/nonexistent/dir/config.json"); },
                 {"/nonexistent/dir/config.json", "cannot open"});
}

TEST_CASE("loader: check_token_ids rejects out-of-range ids") {
    const std::vector<int32_t> ok = {0, 1, 511, 7};
    dsv4::check_token_ids(std::span<const int32_t>(ok), 512);
    const std::vector<int64_t> ok64 = {0, 511};
    dsv4::check_token_ids(std::span<const int64_t>(ok64), 512);
    const std::vector<int32_t> big = {0, 512, 3};
    expect_error([&] { dsv4::check_token_ids(std::span<const int32_t>(big), 512); },
                 {"token id 512 at position 1", "[0, 512)"});
    const std::vector<int64_t> neg = {5, 6, -1};
    expect_error([&] { dsv4::check_token_ids(std::span<const int64_t>(neg), 512); }, {"token id -1 at position 2"});
    const std::vector<uint32_t> uns = {4000000000u};
    expect_error([&] { dsv4::check_token_ids(std::span<const uint32_t>(uns), 129280); }, {"token id 4000000000"});
    dsv4::check_token_ids(std::span<const int32_t>(), 0);  // nothing to check
}

TEST_CASE("loader: typed access checks the dtype and the alignment") {
    const fs::path f = scratch("typed") / "t.safetensors";
    // Header padded so that data starts at an 8-aligned offset; "b" then lies at data+1.
    std::string h = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})";
    h += std::string((8 - (8 + h.size()) % 8) % 8, ' ');
    write_bytes(f, st_bytes(h, 5));
    const auto ck = dsv4::checkpoint::open(f.string());
    CHECK(dsv4::tensor_data<uint8_t>(ck.at("a")) != nullptr);
    expect_error([&] { (void)dsv4::tensor_data<float>(ck.at("a")); }, {f.string(), "tensor 'a' is U8"});
    expect_error([&] { (void)dsv4::tensor_data<float>(ck.at("b")); }, {f.string(), "tensor 'b'", "not aligned to 4"});
    expect_error([&] { (void)dsv4::tensor_data<int64_t>(ck.at("b")); }, {"tensor 'b' is F32"});
    expect_error([&] { (void)dsv4::tensor_data<uint8_t>(ck.at("b")); }, {"tensor 'b' is F32"});  // raw bytes: .data
}

TEST_CASE("loader: fuzz regression inputs replay without crashing") {
    // Every input a fuzzer ever crashed on (tests/fuzz/regressions/<target>/) and a few
    // hand-made hostile ones: each must end in success or a dsv4::error.
    const fs::path root(env_path("DSV4_FUZZ_REGRESSIONS"));
    const std::map<std::string, void (*)(const uint8_t*, std::size_t)> targets = {
        {"safetensors_header", dsv4_fuzz::safetensors_header},
        {"index_json", dsv4_fuzz::index_json},
        {"config_json", dsv4_fuzz::config_json},
        {"npy_file", dsv4_fuzz::npy_file}};
    std::size_t replayed = 0;
    for (const auto& [name, fn] : targets) {
        REQUIRE(fs::is_directory(root / name));
        for (const auto& e : fs::directory_iterator(root / name)) {
            const std::string bytes = read_text(e.path());
            CAPTURE(e.path().string());
            bool ok = true;
            try {
                fn(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
            } catch (const std::exception& ex) {
                ok = false;
                MESSAGE(ex.what());
            }
            CHECK(ok);
            ++replayed;
        }
    }
    CHECK(replayed >= 4);
    // The toy checkpoint's own files through the harnesses: accepted, invariants hold.
    for (const char* f : {"config.json", "model.safetensors.index.json", "model-00001-of-00003.safetensors"}) {
        const std::string bytes = read_text(fs::path(toy_dir()) / f);
        const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
        CAPTURE(f);
        bool ok = true;
        try {
            dsv4_fuzz::safetensors_header(p, bytes.size());
            dsv4_fuzz::index_json(p, bytes.size());
            dsv4_fuzz::config_json(p, bytes.size());
        } catch (const std::exception&) {
            ok = false;
        }
        CHECK(ok);
    }
}

// ================================================================================== verification

namespace {
/// A full copy of the toy checkpoint (real files: the verification tests write and cut them).
fs::path toy_copy(const std::string& name) {
    const fs::path d = scratch(name);
    for (const auto& e : fs::directory_iterator(fs::path(toy_dir()))) fs::copy_file(e.path(), d / e.path().filename());
    return d;
}
/// Overwrites element `elem` of `tensor` in the copy at `dir` with `bytes`.
void poke(const fs::path& dir, const std::string& tensor, uint64_t elem, std::string_view bytes) {
    const fs::path shard = dir / shard_of(tensor);
    uint64_t offset = 0;
    {
        const auto ck = dsv4::checkpoint::open(shard.string());
        const auto& t = ck.at(tensor);
        REQUIRE(bytes.size() == dsv4::dtype_size(t.type));
        REQUIRE(elem * bytes.size() < t.bytes);
        offset = t.file_offset + elem * bytes.size();
    }
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(offset));
    f.write(bytes.data(), std::streamsize(bytes.size()));
    REQUIRE(f.good());
}
const dsv4::verify_problem* problem_of(const dsv4::verify_report& r, const std::string& tensor) {
    for (const auto& p : r.problems)
        if (p.tensor == tensor) return &p;
    return nullptr;
}
}  // namespace

TEST_CASE("loader: verify_checkpoint reads every byte of the clean toy checkpoint") {
    const auto ck = dsv4::checkpoint::open(toy_dir());
    uint64_t total = 0;
    for (const auto& t : ck.tensors()) total += t.bytes;
    for (unsigned threads : {1u, 2u, 5u})
        for (std::size_t chunk : {std::size_t(64), std::size_t(1000), std::size_t(8) << 20}) {
            CAPTURE(threads);
            CAPTURE(chunk);
            const dsv4::verify_report r = dsv4::verify_checkpoint(ck, {threads, chunk});
            CHECK(r.ok());
            CHECK(r.files == 3);
            CHECK(r.tensors == 427);
            CHECK(r.bytes == total);
            CHECK(r.threads >= 1);
        }
    // The pass never touches the mapping: no page of it is faulted in by the pass (open
    // itself read the headers through it).
    const auto fresh = dsv4::checkpoint::open(toy_dir());
    const auto before = fresh.memory().bytes_touched;
    CHECK(dsv4::verify_checkpoint(fresh).ok());
    const auto after = fresh.memory().bytes_touched;
    if (before && after) CHECK(*after == *before);
    expect_error([&] { (void)dsv4::verify_checkpoint(ck, {1, 0}); }, {"verify_checkpoint", "chunk_bytes"});
}

TEST_CASE("loader: populate maps every page now; a file cut short since it was mapped is an error naming it") {
    const auto ck = dsv4::checkpoint::open(toy_dir());
    const auto before = ck.memory();
    REQUIRE(before.bytes_touched.has_value());
    REQUIRE(*before.bytes_touched < before.bytes_mapped);  // open read the headers only
    const bool full = ck.populate();
    const auto after = ck.memory();
    if (full) {  // MADV_POPULATE_READ (Linux 5.14+): every page of every file is mapped
        const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
        CHECK(*after.bytes_touched >= before.bytes_mapped);
        CHECK(*after.bytes_touched <= before.bytes_mapped + before.files * page);
        CHECK(after.bytes_resident == after.bytes_mapped);
    } else {
        MESSAGE("this kernel has no MADV_POPULATE_READ: populate asked for readahead only");
    }

    // A shard truncated after open: populate reports it (EFAULT), no SIGBUS.
    const fs::path d = toy_copy("populate_truncated");
    const auto cut = dsv4::checkpoint::open(d.string());
    const std::string victim = (d / "model-00002-of-00003.safetensors").string();
    const auto size = fs::file_size(victim);
    REQUIRE(::truncate(victim.c_str(), off_t(size / 2)) == 0);
    if (full) expect_error([&] { (void)cut.populate(); }, {victim, "cannot populate", "shorter than when it was mapped"});
}

TEST_CASE("loader: verify_checkpoint reports NaN codes, NaN scales and non-finite values per tensor") {
    const fs::path d = toy_copy("verify_bad");
    const std::string fp8 = "layers.0.attn.wq_a.weight", e8m0 = "layers.1.attn.wq_b.scale",
                      bf16 = "layers.2.ffn.gate.weight", f32 = "layers.3.hc_ffn_fn", fp4 = "layers.0.ffn.experts.0.w1.weight",
                      fp4s = "layers.0.ffn.experts.0.w1.scale", edge = "layers.1.attn.wkv.weight";
    // FP8: both NaN codes, counted; the largest finite codes (0x7E, 0xFE) are not NaN.
    poke(d, fp8, 100, "\x7f");
    poke(d, fp8, 17, "\xff");
    poke(d, fp8, 4000, "\x7f");
    poke(d, edge, 0, "\x7e");
    poke(d, edge, 1, "\xfe");
    poke(d, e8m0, 1, "\xff");
    poke(d, fp4s, 0, "\xfe");          // 2^127: a valid scale
    poke(d, fp4, 3, "\xff");           // FP4 (I8): no NaN exists
    poke(d, bf16, 300, "\x80\x7f");    // +Inf
    poke(d, bf16, 301, "\xc0\xff");    // -NaN
    poke(d, bf16, 302, "\x7f\x7f");    // the largest finite bf16
    poke(d, f32, 5, std::string("\x00\x00\x80\xff", 4));  // -Inf
    const auto ck = dsv4::checkpoint::open(d.string());
    for (std::size_t chunk : {std::size_t(64), std::size_t(8) << 20}) {
        CAPTURE(chunk);
        const dsv4::verify_report r = dsv4::verify_checkpoint(ck, {2, chunk});
        REQUIRE(r.problems.size() == 4);
        CHECK(std::is_sorted(r.problems.begin(), r.problems.end(),
                             [](const auto& a, const auto& b) { return a.tensor < b.tensor; }));
        const auto* p = problem_of(r, fp8);
        REQUIRE(p);
        CHECK(p->count == 3);
        CHECK(p->first == 17);
        CHECK(!p->read_error);
        CHECK(p->what.find("3 FP8 e4m3 NaN codes (0x7F/0xFF), first at element 17") != std::string::npos);
        CHECK(dsv4::to_string(*p).find(p->file + ": tensor '" + fp8 + "': 3 FP8") == 0);
        p = problem_of(r, e8m0);
        REQUIRE(p);
        CHECK((p->count == 1 && p->first == 1));
        CHECK(p->what.find("1 E8M0 NaN scale (0xFF)") != std::string::npos);
        p = problem_of(r, bf16);
        REQUIRE(p);
        CHECK((p->count == 2 && p->first == 300));
        CHECK(p->what.find("2 non-finite values (NaN/Inf)") != std::string::npos);
        p = problem_of(r, f32);
        REQUIRE(p);
        CHECK((p->count == 1 && p->first == 5));
        CHECK(r.bytes > 7000000);
    }
}

TEST_CASE("loader: verify_checkpoint reports a file cut short after it was opened, without SIGBUS") {
    const fs::path d = toy_copy("verify_short");
    const auto ck = dsv4::checkpoint::open(d.string());
    // Cut the second shard in the middle of its data: every tensor beyond the cut is a
    // read problem (reading the mapping there would raise SIGBUS; the pass uses pread).
    const fs::path shard = d / "model-00002-of-00003.safetensors";
    const uint64_t size = fs::file_size(shard), cut = size / 2;
    fs::resize_file(shard, cut);
    const dsv4::verify_report r = dsv4::verify_checkpoint(ck, {2, 4096});
    REQUIRE(!r.ok());
    std::size_t beyond = 0;
    for (const auto& t : ck.tensors())
        if (t.file == shard.string() && t.file_offset + t.bytes > cut) ++beyond;
    CHECK(r.problems.size() == beyond);
    for (const auto& p : r.problems) {
        CHECK(p.read_error);
        CHECK(p.file == shard.string());
        CHECK(p.what.find("short read: the file ends at byte") != std::string::npos);
    }
    // A shard removed after opening: its tensors are read problems naming the file.
    fs::remove(shard);
    const dsv4::verify_report r2 = dsv4::verify_checkpoint(ck, {1, 1 << 20});
    CHECK(r2.problems.size() > beyond);
    for (const auto& p : r2.problems) {
        CHECK(p.read_error);
        CHECK(p.what.find("not read: " + shard.string() + ": cannot open file") != std::string::npos);
    }
}
