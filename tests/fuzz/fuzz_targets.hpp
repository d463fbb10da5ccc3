// tests/fuzz/fuzz_targets.hpp - the bodies of the libFuzzer targets (tests/fuzz/fuzz_*.cpp)
// and of their regression replay in the `loader` test. Each feeds arbitrary bytes to one
// parser of untrusted input. A dsv4::error is the expected outcome of bad input; anything
// else is a finding: a crash or sanitizer report, another exception type escaping, or a
// broken invariant of an accepted input (reported as dsv4_fuzz::invariant_failure).
#pragma once

#include "../npy.hpp"

#include <dsv4/io/model_config.hpp>
#include <dsv4/io/safetensors.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace dsv4_fuzz {

struct invariant_failure : std::logic_error {
    using std::logic_error::logic_error;
};
inline void require(bool ok, const char* what) {
    if (!ok) throw invariant_failure(what);
}

/// Whole-file input: the header parser with its range checks against the file size.
inline void safetensors_header(const uint8_t* data, std::size_t size) {
    try {
        const auto h = dsv4::parse_safetensors_header({data, size}, "fuzz.safetensors");
        require(h.data_start == 8 + h.header_bytes && h.data_start <= size, "data start inside the file");
        const uint64_t data_bytes = size - h.data_start;
        for (std::size_t i = 0; i < h.tensors.size(); ++i) {
            const auto& e = h.tensors[i];
            require(i == 0 || h.tensors[i - 1].name < e.name, "tensors sorted by unique name");
            require(e.begin <= e.end && e.end <= data_bytes, "range inside the data");
            require(dsv4::numel(e.shape) * dsv4::dtype_size(e.type) == e.end - e.begin, "size matches the shape");
            require(e.shape.rank <= dsv4::max_tensor_rank, "rank bounded");
            require(dsv4::parse_dtype(dsv4::dtype_name(e.type)) == e.type, "dtype round trip");
        }
    } catch (const dsv4::error&) {
    }
}

/// model.safetensors.index.json text.
inline void index_json(const uint8_t* data, std::size_t size) {
    try {
        const auto idx = dsv4::parse_safetensors_index(
            std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.index.json");
        require(!idx.weight_map.empty(), "non-empty weight_map");
        for (std::size_t i = 1; i < idx.shards.size(); ++i) require(idx.shards[i - 1] < idx.shards[i], "shards unique");
        for (const auto& [name, shard] : idx.weight_map) {
            require(!name.empty(), "tensor name non-empty");
            require(std::binary_search(idx.shards.begin(), idx.shards.end(), shard), "shard listed");
            require(shard.find('/') == std::string::npos && shard != ".." && shard != ".", "plain shard name");
        }
    } catch (const dsv4::error&) {
    }
}

/// config.json text; an accepted config must give a schema whose enumeration agrees with
/// the count formula (checked when it is small enough to enumerate quickly).
inline void config_json(const uint8_t* data, std::size_t size) {
    try {
        const auto c = dsv4::parse_model_config(std::string_view(reinterpret_cast<const char*>(data), size),
                                                "fuzz.config.json");
        require(c.compress_ratios.size() == dsv4::block_count(c), "one ratio per block");
        require(c.head_dim > c.qk_rope_head_dim && c.num_attention_heads % c.o_groups == 0, "attention dims");
        require(c.num_experts_per_tok <= c.n_routed_experts, "top-k within experts");
        const uint64_t count = dsv4::expected_tensor_count(c);
        if (count <= 20000) {
            uint64_t seen = 0;
            dsv4::for_each_expected_tensor(c, true, [&](const dsv4::tensor_spec& s) {
                ++seen;
                uint64_t n = 0;
                require(dsv4::checked_numel(s.shape, n), "schema shape fits 64 bits");
                require(n <= (uint64_t(1) << 60), "schema bytes fit 64 bits");
            });
            require(seen == count, "schema enumeration matches expected_tensor_count");
        }
    } catch (const dsv4::error&) {
    }
}

/// .npy bytes (tests/npy.hpp, the golden reader).
inline void npy_file(const uint8_t* data, std::size_t size) {
    try {
        const auto a = npy::parse(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.npy");
        static const std::pair<const char*, std::size_t> sizes[] = {
            {"u1", 1}, {"i1", 1}, {"b1", 1}, {"u2", 2}, {"i2", 2}, {"f2", 2}, {"u4", 4},
            {"i4", 4}, {"f4", 4}, {"u8", 8}, {"i8", 8}, {"f8", 8}};
        std::size_t esize = 0;
        for (const auto& [n, s] : sizes)
            if (a.dtype == n) esize = s;
        require(esize != 0, "known dtype");
        require(a.bytes.size() == a.size() * esize, "data size matches the shape");
    } catch (const dsv4::error&) {
    }
}

}  // namespace dsv4_fuzz
