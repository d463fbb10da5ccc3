// dsv4/model/sequence.hpp - everything one sequence keeps between calls (spec §5.5): per layer
// the attention cache [window ring slots | compressed entries] (bf16, head_dim wide), the main
// compressor's state, and for ratio-4 layers the indexer's key cache and compressor state;
// plus the position. Nothing per sequence lives in the model.
#pragma once

#include "context.hpp"
#include "workspace.hpp"

#include <span>
#include <vector>

namespace dsv4 {

/// One layer's state of one sequence (spec §5.5).
struct layer_state {
    uint32_t ratio = 0;
    std::vector<uint16_t> cache;  ///< [window + max_context/ratio, head_dim]: window ring, then entries
    compressor_state comp;        ///< main compressor (ratio != 0)
    std::vector<uint16_t> keys;   ///< [max_context/4, index_head_dim] indexer keys (ratio 4)
    compressor_state index_comp;  ///< indexer compressor (ratio 4)
};

/// Everything one sequence keeps between calls. Make it with model::new_sequence().
struct sequence_state {
    std::vector<layer_state> layers;
    int64_t pos = 0;              ///< tokens in the sequence so far (the next position)
    std::size_t max_context = 0;  ///< capacity in positions
    std::size_t window = 0;       ///< ring slots at the start of every layer's cache
    std::size_t head_dim = 0;     ///< width of a cache row
    uint64_t owner = 0;           ///< id of the model that made it (survives moving the model)
    forward_workspace ws;         ///< working memory of this sequence's calls (sized by new_sequence)
    /// If set, every forward call on this sequence adds its parallel regions, the time inside
    /// them and its own wall time here (regions.hpp); null: nothing is counted.
    region_stats* profile = nullptr;
};

inline namespace DSV4_ISA_NS {

/// A fresh state of the blocks `blocks` (the main layers, or an MTP block) sized for
/// m.max_ctx positions, owned by `owner`.
inline sequence_state make_sequence_state(const model_context& m, uint64_t owner,
                                          std::span<const layer_weights> blocks) {
    sequence_state s;
    s.max_context = m.max_ctx;
    s.window = m.window;
    s.head_dim = m.hd;
    s.owner = owner;
    s.layers.resize(blocks.size());
    for (std::size_t l = 0; l < s.layers.size(); ++l) {
        layer_state& ls = s.layers[l];
        const uint32_t r = blocks[l].ratio;
        ls.ratio = r;
        ls.cache.assign((m.window + (r ? m.max_ctx / r : 0)) * m.hd, 0);
        if (r) compressor_state_init(ls.comp, m.comp_cfg(r));
        if (r == 4) {
            ls.keys.assign(m.max_ctx / 4 * m.cfg.index_head_dim, 0);
            compressor_state_init(ls.index_comp, m.index_cfg().comp);
        }
    }
    return s;
}

/// A fresh state of the main model's layers, owned by the model with id `owner`.
inline sequence_state make_sequence_state(const model_context& m, uint64_t owner) {
    return make_sequence_state(m, owner, std::span<const layer_weights>(m.w.layers));
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
