// dsv4/model/expert_streaming.hpp - the model over a checkpoint larger than RAM
// (forward_options::ram_budget): everything but the routed experts is made resident at open
// (io/expert_store.hpp make_resident: owned memory, no page faults later, no SIGBUS if a shard
// changes), and the routed experts (layer, expert) stream into an expert_store under the
// budget. The MoE sub-block then runs the phases of moe.hpp itself:
//   gate + route -> acquire the chunk's experts (every miss's reads issued at once)
//   -> prepare -> the shared expert and the hits' up units (overlapping the reads)
//   -> each miss's up units as it lands -> down -> release.
// Same bits as the mapped run: the same phases on the same bytes (moe.hpp: results do not
// depend on the chunking or the order of the work items). Chunks have at most slots / topk
// tokens so that a chunk's experts fit the slots. Streamed MoE blocks of concurrent
// sequences take turns (one call at a time per model); its buffers are allocated at open.
// The embedding table is not made resident either: read_embedding preads the rows of a call's
// tokens (forward.hpp and mtp.hpp through embed_rows of context.hpp), through the same read
// function as the experts (forward_options::io_read), with the same errors.
#pragma once

#include "../io/expert_store.hpp"
#include "../moe.hpp"
#include "options.hpp"
#include "weights.hpp"

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace dsv4 {
inline namespace DSV4_ISA_NS {

/// The routed-expert cache of a model opened with a ram_budget.
struct expert_streamer {
    std::size_t n_experts = 0, topk = 0;
    std::unique_ptr<expert_store> store;
    /// Per (layer, expert): the slot offsets of w1, w3, w2 weight and scale.
    struct offsets {
        uint64_t w1, s1, w3, s3, w2, s2;
    };
    std::vector<offsets> off;
    resident_report resident;
    std::mutex turn;  ///< one streamed MoE call at a time; guards the buffers below
    // working buffers of streamed_moe_forward, sized at open (no allocation per call)
    std::vector<moe_expert_weights> views;  ///< [n_experts] the layer's expert views, slots bound in
    std::vector<uint32_t> ids;              ///< [n_experts] groups of a chunk's active experts
    std::vector<expert_store::ticket> tickets;
    std::vector<std::size_t> units;         ///< moe_up units run together
    // next-layer prefetch (forward_options::prefetch_next): the next layer's gate on this
    // layer's input guesses its experts for a one-token call; their reads start now
    bool prefetch = false;
    std::vector<unsigned char> pf_mem;      ///< the guess's routing scratch (one token)
    moe_scratch pf_scratch{};
    std::vector<int32_t> pf_idx;
    std::vector<float> pf_weights;
    std::vector<uint32_t> pf_ids;
    std::vector<expert_store::ticket> pf_tickets;  ///< pinned until the next acquire
    std::size_t pf_n = 0;
    // the embedding table, read a row per token (buffered pread: hot rows stay in the page cache)
    std::string embed_path;
    int embed_fd = -1;
    uint64_t embed_offset = 0, embed_row_bytes = 0, embed_rows = 0;
    io_read_fn read;  ///< forward_options::io_read (empty: pread)
    mutable std::atomic<uint64_t> embed_reads{0};  ///< rows read so far

    expert_streamer() = default;
    expert_streamer(const expert_streamer&) = delete;
    expert_streamer& operator=(const expert_streamer&) = delete;
    ~expert_streamer() {
        if (embed_fd >= 0) ::close(embed_fd);
    }

    uint32_t group(std::size_t layer, std::size_t e) const { return uint32_t(layer * n_experts + e); }

    /// Row ids[t] of the embedding table into dst + t * stride (bf16), for t < n. Throws
    /// dsv4::error naming the file and the tensor on a read error or a short read.
    void read_embedding(const int64_t* ids, std::size_t n, uint16_t* dst, std::size_t stride) const {
        for (std::size_t t = 0; t < n; ++t) {
            if (ids[t] < 0 || uint64_t(ids[t]) >= embed_rows)
                throw error("dsv4::expert_streamer: token id " + std::to_string(ids[t]) + " outside the embedding's " +
                            std::to_string(embed_rows) + " rows");
            const uint64_t off = embed_offset + uint64_t(ids[t]) * embed_row_bytes;
            int err = 0;
            const uint64_t got = detail::pread_full(embed_fd, reinterpret_cast<unsigned char*>(dst + t * stride),
                                                    embed_row_bytes, off, err, read ? &read : nullptr);
            if (got < embed_row_bytes)
                throw error("dsv4::expert_store: " + embed_path + ": tensor embed.weight: row " + std::to_string(ids[t]) +
                            ": " +
                            (err ? "read error: " + detail::errno_text(err)
                                 : "short read (" + std::to_string(got) + " of " + std::to_string(embed_row_bytes) +
                                       " bytes at offset " + std::to_string(off) + "): the file is truncated"));
        }
        embed_reads.fetch_add(n, std::memory_order_relaxed);
    }
};

/// Whether a tensor is a routed expert's (streamed) and whether the forward reads it at all.
inline bool is_routed_expert_tensor(std::string_view name) { return name.find(".ffn.experts.") != std::string_view::npos; }
inline bool is_main_model_tensor(std::string_view name) { return name.substr(0, 4) != "mtp."; }
/// The tensors made resident when streaming: the main model's, less the routed experts and the
/// embedding table (read by row).
inline bool is_resident_when_streaming(std::string_view name) {
    return is_main_model_tensor(name) && !is_routed_expert_tensor(name) && name != "embed.weight";
}

/// Bytes of every routed expert's tensors in the checkpoint.
inline uint64_t routed_expert_bytes(const checkpoint& ck) {
    uint64_t b = 0;
    for (const tensor_view& t : ck.tensors())
        if (is_routed_expert_tensor(t.name)) b += t.bytes;
    return b;
}

/// Sets up streaming for a bound model: the resident part copied, the store made.
inline std::unique_ptr<expert_streamer> make_expert_streamer(const model_config& c, const checkpoint& ck,
                                                             const forward_options& o) {
    auto s = std::make_unique<expert_streamer>();
    const std::size_t L = c.num_hidden_layers, E = c.n_routed_experts;
    s->n_experts = E;
    s->topk = c.num_experts_per_tok;
    std::vector<std::vector<const tensor_view*>> groups(L * E);
    for (std::size_t l = 0; l < L; ++l)
        for (std::size_t e = 0; e < E; ++e) {
            const std::string X = "layers." + std::to_string(l) + ".ffn.experts." + std::to_string(e) + ".";
            for (const char* n : {"w1.weight", "w1.scale", "w3.weight", "w3.scale", "w2.weight", "w2.scale"})
                groups[l * E + e].push_back(&ck.at(X + n));
        }
    expert_store_options so;
    so.budget_bytes = o.ram_budget;
    so.policy = o.cache;
    so.io_threads = o.io_threads;
    so.read = o.io_read;
    so.direct = o.direct_io;
    so.trace_path = o.expert_trace;
    so.trace_header = "layers " + std::to_string(L) + " experts " + std::to_string(E) + " topk " +
                      std::to_string(s->topk);
    s->store = std::make_unique<expert_store>(groups, so, s->topk);
    s->views.resize(E);
    s->ids.resize(E);
    s->tickets.resize(E);
    s->units.reserve((E + 1) * (c.moe_intermediate_size / 128));
    s->prefetch = o.prefetch_next && s->store->slots() >= 3 * s->topk;  // room for two layers' pins + margin
    if (s->prefetch) {
        moe_config mc;
        mc.dim = c.hidden_size;
        mc.inter = c.moe_intermediate_size;
        mc.n_experts = E;
        mc.topk = s->topk;
        mc.route_scale = float(c.routed_scaling_factor);
        const std::size_t bytes = bytes_needed(mc, 1);
        s->pf_mem.resize(bytes);
        s->pf_scratch = moe_scratch{s->pf_mem.data(), bytes, 1};
        s->pf_idx.resize(s->topk);
        s->pf_weights.resize(s->topk);
        s->pf_ids.resize(s->topk);
        s->pf_tickets.resize(s->topk);
    }
    s->off.resize(L * E);
    for (std::size_t g = 0; g < L * E; ++g) {
        auto at = [&](std::size_t k) { return s->store->offset_of(uint32_t(g), groups[g][k]); };
        s->off[g] = expert_streamer::offsets{at(0), at(1), at(2), at(3), at(4), at(5)};
    }
    const tensor_view& emb = ck.at("embed.weight");
    if (emb.shape.rank != 2 || emb.bytes != emb.shape.dims[0] * emb.shape.dims[1] * 2)
        throw error("dsv4::expert_streamer: " + std::string(emb.file) + ": tensor embed.weight is not a bf16 matrix");
    s->embed_path = std::string(emb.file);
    s->embed_offset = emb.file_offset;
    s->embed_rows = emb.shape.dims[0];
    s->embed_row_bytes = emb.shape.dims[1] * 2;
    s->read = o.io_read;
    s->embed_fd = ::open(s->embed_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (s->embed_fd < 0) throw error(s->embed_path + ": cannot open for reading: " + detail::errno_text(errno));
    s->resident = make_resident(ck, is_resident_when_streaming, o.lock_resident);
    return s;
}

/// y [S, D] = MoE of x [S, D] for `layer`, routed experts from the streamer's cache (see the
/// top of this file). Same arguments as par::moe_forward, plus the next layer's weights (null
/// for the last) for the prefetch.
inline void streamed_moe_forward(expert_streamer& st, std::size_t layer, const moe_config& c, const moe_weights& w,
                                 const uint16_t* x, std::size_t x_stride, const int64_t* token_ids, std::size_t tokens,
                                 uint16_t* y, std::size_t y_stride, const moe_scratch& s,
                                 const moe_weights* next = nullptr) {
    const par::tbb_executor ex;
    const std::size_t E = c.n_experts, nch = c.inter / 128;
    const std::size_t chunk = std::min(s.max_tokens, std::max<std::size_t>(1, st.store->slots() / c.topk));
    std::lock_guard<std::mutex> turn(st.turn);
    detail::require(st.views.size() == E, "streamed_moe_forward", "expert count differs from the streamer's");
    std::vector<moe_expert_weights>& views = st.views;
    std::vector<uint32_t>& ids = st.ids;
    std::vector<expert_store::ticket>& tk = st.tickets;
    std::vector<std::size_t>& units = st.units;
    moe_weights mw = w;
    mw.experts = views.data();
    for (std::size_t t0 = 0; t0 < tokens; t0 += chunk) {
        const std::size_t n = std::min(tokens - t0, chunk);
        std::copy(w.experts, w.experts + E, views.begin());  // mapped views: checked, never read
        moe_run r = moe_begin(c, mw, x + t0 * x_stride, x_stride, token_ids ? token_ids + t0 : nullptr, n,
                              y + t0 * y_stride, y_stride, s);
        ex(E, moe_gate_grain, [&](std::size_t a, std::size_t b) { moe_gate_rows(r, a, b); });
        moe_route(r);
        const std::size_t na = r.n_active;
        for (std::size_t a = 0; a < na; ++a) ids[a] = st.group(layer, r.active[a]);
        st.store->acquire(ids.data(), na, tk.data());
        struct releaser {
            expert_store& s;
            const expert_store::ticket* t;
            std::size_t n;
            ~releaser() { s.release(t, n); }
        } rel{*st.store, tk.data(), na};
        // the previous guess has served (its hits are pinned by this acquire now); guess the next layer
        st.store->release(st.pf_tickets.data(), st.pf_n);
        st.pf_n = 0;
        if (st.prefetch && next && tokens == 1) {
            moe_route_tokens(c, next->gate, x, x_stride, token_ids, 1,
                             moe_routing_out{st.pf_idx.data(), st.pf_weights.data(), nullptr}, st.pf_scratch);
            for (std::size_t k = 0; k < c.topk; ++k) st.pf_ids[k] = st.group(layer + 1, std::size_t(st.pf_idx[k]));
            if (st.store->prefetch(st.pf_ids.data(), c.topk, st.pf_tickets.data())) st.pf_n = c.topk;
        }
        auto bind = [&](std::size_t a, const unsigned char* base) {
            const expert_streamer::offsets& o = st.off[ids[a]];
            moe_expert_weights& v = views[r.active[a]];
            v.w1.w = base + o.w1;
            v.w1.scale = base + o.s1;
            v.w3.w = base + o.w3;
            v.w3.scale = base + o.s3;
            v.w2.w = base + o.w2;
            v.w2.scale = base + o.s2;
        };
        auto run_units = [&](const std::vector<std::size_t>& u) {
            ex(u.size(), 1, [&](std::size_t a, std::size_t b) {
                for (std::size_t i = a; i < b; ++i) moe_up(r, u[i], u[i] + 1);
            });
        };
        ex(n, 1, [&](std::size_t a, std::size_t b) { moe_prepare(r, a, b); });
        // the shared expert and the hits first, while the misses are read
        units.clear();
        for (std::size_t u = na * nch; u < (na + 1) * nch; ++u) units.push_back(u);
        for (std::size_t a = 0; a < na; ++a)
            if (tk[a].hit) {
                bind(a, st.store->wait(tk[a]));
                for (std::size_t u = a * nch; u < (a + 1) * nch; ++u) units.push_back(u);
            }
        run_units(units);
        for (std::size_t a = 0; a < na; ++a)  // each miss as it lands (reads complete in issue order)
            if (!tk[a].hit) {
                bind(a, st.store->wait(tk[a]));
                units.clear();
                for (std::size_t u = a * nch; u < (a + 1) * nch; ++u) units.push_back(u);
                run_units(units);
            }
        moe_down_on(ex, r);
    }
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
