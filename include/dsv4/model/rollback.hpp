// dsv4/model/rollback.hpp - taking back the tail of an append (speculative decoding).
//
//   dsv4::append_undo u;
//   dsv4::save_for_append(s, n, u);        // right before appending n tokens at s.pos
//   m.extend(s, ids, n, ...);
//   dsv4::rollback_append(s, u, keep);     // as if only the first `keep` of them were appended
//
// An append of n tokens at positions p0..p0+n-1 changes, per layer (spec §5.5): the n window
// ring slots (p mod window); the compressor state rows of those positions (slot p mod r, or
// r + p mod r for the overlapping ratio-4 compressors) and, where a window of the
// overlapping compressor completes, its previous-window half (slots 0..r-1, overwritten by
// the current one); the compressors' next position; the sequence position. Entries emitted
// into the compressed cache and the indexer's key cache need no saving: entry i is read
// only by positions >= (i+1)r-1, so entries of rejected positions are dead and the next
// append at those positions writes them again.
//
// The saved rows are the state before the append; restoring those of the rejected
// positions gives exactly the state after the first `keep` tokens as long as the n
// positions use distinct slots and at most one overlapping window completes among them,
// i.e. n <= min(window, every compressor ratio): max_rollback_tokens(s) (4 for V4-Flash).
#pragma once

#include "sequence.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

namespace dsv4 {

/// What one compressor state loses in an append (rows of its kv and score arrays).
struct compressor_undo {
    int64_t next_pos = 0;
    std::vector<float> kv, score;  ///< [n, c·d] the slot rows of the appended positions, in order
    std::vector<float> prev_kv, prev_score;  ///< [r, c·d] slots 0..r-1 (overlapping compressors)
};

struct layer_undo {
    std::vector<uint16_t> ring;  ///< [n, head_dim] the ring rows of the appended positions, in order
    compressor_undo comp, index_comp;
};

/// Saved by save_for_append, used by rollback_append.
struct append_undo {
    int64_t pos = -1;   ///< the sequence position before the append
    std::size_t n = 0;  ///< tokens the append will add
    std::vector<layer_undo> layers;
};

inline namespace DSV4_ISA_NS {
namespace detail {

/// Row of compressor state slot for position p (compressor_decode's slot choice).
inline std::size_t undo_slot(const compressor_state& c, int64_t p) {
    return (compressor_overlap(c.ratio) ? c.ratio : 0) + std::size_t(p) % c.ratio;
}

inline void save_compressor(const compressor_state& c, int64_t pos, std::size_t n, compressor_undo& u) {
    const std::size_t cd = compressor_c(c.ratio) * c.head_dim;
    u.next_pos = c.next_pos;
    u.kv.resize(n * cd);
    u.score.resize(n * cd);
    for (std::size_t t = 0; t < n; ++t) {
        const std::size_t slot = undo_slot(c, pos + int64_t(t));
        std::memcpy(u.kv.data() + t * cd, c.kv.data() + slot * cd, cd * sizeof(float));
        std::memcpy(u.score.data() + t * cd, c.score.data() + slot * cd, cd * sizeof(float));
    }
    if (compressor_overlap(c.ratio)) {
        u.prev_kv.assign(c.kv.begin(), c.kv.begin() + std::ptrdiff_t(c.ratio * cd));
        u.prev_score.assign(c.score.begin(), c.score.begin() + std::ptrdiff_t(c.ratio * cd));
    }
}

inline void restore_compressor(compressor_state& c, int64_t pos, std::size_t n, std::size_t keep,
                               const compressor_undo& u) {
    const std::size_t cd = compressor_c(c.ratio) * c.head_dim;
    bool window_done = false;  // a rejected position completed a window (and moved the halves)
    for (std::size_t t = keep; t < n; ++t) {
        const int64_t p = pos + int64_t(t);
        const std::size_t slot = undo_slot(c, p);
        std::memcpy(c.kv.data() + slot * cd, u.kv.data() + t * cd, cd * sizeof(float));
        std::memcpy(c.score.data() + slot * cd, u.score.data() + t * cd, cd * sizeof(float));
        window_done |= (std::size_t(p) + 1) % c.ratio == 0;
    }
    if (compressor_overlap(c.ratio) && window_done) {
        std::copy(u.prev_kv.begin(), u.prev_kv.end(), c.kv.begin());
        std::copy(u.prev_score.begin(), u.prev_score.end(), c.score.begin());
    }
    c.next_pos = u.next_pos + int64_t(keep);
}

}  // namespace detail

/// The most tokens an append may have and still be rolled back exactly (file comment).
inline std::size_t max_rollback_tokens(const sequence_state& s) {
    std::size_t n = s.window;
    for (const layer_state& l : s.layers)
        if (l.ratio) n = std::min<std::size_t>(n, l.ratio);
    return n;
}

/// Saves what appending n tokens at s.pos will overwrite (call it right before the append).
inline void save_for_append(const sequence_state& s, std::size_t n, append_undo& u) {
    detail::require(s.pos > 0, "save_for_append", "the sequence has not started (prefill first)");
    if (n < 1 || n > max_rollback_tokens(s))
        throw error("dsv4::save_for_append: an append of " + std::to_string(n) +
                    " tokens cannot be rolled back exactly (1 to " + std::to_string(max_rollback_tokens(s)) + ")");
    const std::size_t W = s.window, hd = s.head_dim;
    u.pos = s.pos;
    u.n = n;
    u.layers.resize(s.layers.size());
    for (std::size_t l = 0; l < s.layers.size(); ++l) {
        const layer_state& ls = s.layers[l];
        layer_undo& lu = u.layers[l];
        lu.ring.resize(n * hd);
        for (std::size_t t = 0; t < n; ++t)
            std::memcpy(lu.ring.data() + t * hd, ls.cache.data() + std::size_t(s.pos + int64_t(t)) % W * hd,
                        hd * sizeof(uint16_t));
        if (ls.ratio) detail::save_compressor(ls.comp, s.pos, n, lu.comp);
        if (ls.ratio == 4) detail::save_compressor(ls.index_comp, s.pos, n, lu.index_comp);
    }
}

/// Takes back the last n - keep tokens of the append `u` was saved for (s.pos must be
/// u.pos + u.n): afterwards s is exactly as if only the first `keep` had been appended.
inline void rollback_append(sequence_state& s, const append_undo& u, std::size_t keep) {
    detail::require(u.pos > 0 && s.pos == u.pos + int64_t(u.n) && u.layers.size() == s.layers.size(),
                    "rollback_append", "the sequence is not right after the append this undo was saved for");
    detail::require(keep <= u.n, "rollback_append", "keep exceeds the appended tokens");
    const std::size_t W = s.window, hd = s.head_dim;
    for (std::size_t l = 0; l < s.layers.size(); ++l) {
        layer_state& ls = s.layers[l];
        const layer_undo& lu = u.layers[l];
        for (std::size_t t = keep; t < u.n; ++t)
            std::memcpy(ls.cache.data() + std::size_t(u.pos + int64_t(t)) % W * hd, lu.ring.data() + t * hd,
                        hd * sizeof(uint16_t));
        if (ls.ratio) detail::restore_compressor(ls.comp, u.pos, u.n, keep, lu.comp);
        if (ls.ratio == 4) detail::restore_compressor(ls.index_comp, u.pos, u.n, keep, lu.index_comp);
    }
    s.pos = u.pos + int64_t(keep);
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
