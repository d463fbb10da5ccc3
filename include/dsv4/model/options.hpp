// dsv4/model/options.hpp - what a caller chooses when opening the model (numerics, capacity,
// checks) and the optional per-call diagnostics.
#pragma once

#include "../codec.hpp"
#include "../io/expert_store.hpp"
#include "../moe.hpp"

#include <cstdint>
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
    std::size_t chunk = 512;      ///< tokens per call a sequence's workspace holds (prefill_chunked's piece)
    bool validate = true;         ///< check every tensor against the config (validate_checkpoint)
    bool check_finite = true;     ///< NaN/Inf in a layer's residual streams or the logits is a dsv4::error
    // A checkpoint larger than RAM (model/expert_streaming.hpp, docs/streaming.md): with a
    // ram_budget below the routed experts' bytes, everything else is copied into owned memory at
    // open and the routed experts stream from disk into a cache of ram_budget bytes.
    uint64_t ram_budget = 0;      ///< routed-expert cache bytes; 0 (or >= all experts): map everything
    cache_policy cache = cache_policy::lfu;  ///< eviction policy (LFU: at least LRU's hit rate on every trace of docs/streaming.md)
    unsigned io_threads = 8;      ///< concurrent expert reads (queue depth)
    bool direct_io = true;        ///< O_DIRECT reads where the file system allows
    bool lock_resident = false;   ///< mlock the resident part
    bool prefetch_next = false;   ///< one-token calls: start reading the next layer's guessed experts (measured: docs/streaming.md)
    std::string expert_trace;     ///< if set: write the routing trace (one line per layer chunk) here
    io_read_fn io_read;           ///< test hook: replaces pread for the streamed reads (io/expert_store.hpp)

    static forward_options for_revision(model_revision r) {
        forward_options o;
        o.kv_fp8 = r == model_revision::current ? fp8_sim_revision::current : fp8_sim_revision::initial;
        o.shared_clamp = r == model_revision::current;
        return o;
    }
};

/// What a forward call writes. logits: [vocab] f32 of the last position, or [n, vocab] of
/// every position with every_position (what verifying drafted tokens needs); streams
/// (optional): [n, 4, dim] bf16, the residual streams after the last layer (before hc_head:
/// what the MTP block reads).
struct forward_outputs {
    float* logits = nullptr;
    bool every_position = false;
    uint16_t* streams = nullptr;
};

/// Optional per-call diagnostics of the last position (as forward.py's diagnostics).
struct forward_diagnostics {
    std::vector<uint16_t> layer_out;   ///< [L, 4, dim] bf16 residual streams after each block
    std::vector<uint16_t> final_norm;  ///< [dim] bf16 final-norm output
    std::vector<int32_t> moe_idx;      ///< [L, topk] routed experts of the last token (ascending)
    std::vector<int32_t> index_idx;    ///< [L, index_topk] indexer picks (entry numbers ascending, -1 padded)
};

}  // namespace dsv4
