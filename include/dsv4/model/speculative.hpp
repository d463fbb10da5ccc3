// dsv4/model/speculative.hpp - speculative decoding with the checkpoint's MTP block.
//
//   dsv4::mtp_block d(m);
//   dsv4::speculative_decoder g(m, d, 2, sampling);   // draft 2 tokens per round
//   int64_t tok = g.start(prompt.data(), prompt.size());
//   while (...) g.step(out);                          // 1 to 3 tokens per round
//
// A round: the MTP block drafts k tokens (the first from the main model's streams of the
// last position and the token after it, the others chained on its own output streams);
// the main model appends the pending token and the k drafts in one extend (its weights are
// read once for k + 1 tokens) with the logits of every position; the longest agreeing
// prefix is kept (acceptance rule below) plus one token from the main model's logits after
// it, and the rest is rolled back (rollback.hpp): a rejected draft leaves no trace. The
// block's chained steps are rolled back too; it then catches up on the kept positions in
// the next round's first call. Greedy output is the plain greedy output token for token
// (extend computes each position exactly as its decode step); sampled output has the
// distribution of plain sampling.
//
// The acceptance rule (standard speculative sampling: Leviathan et al. 2023, Chen et al.
// 2023): a draft token d drawn from the draft distribution q is kept with probability
// min(1, p(d) / q(d)), p the target (main model) distribution at that position; otherwise
// the emitted token is drawn from max(0, p - q) normalised, and no later draft is looked
// at. Every emitted token is then distributed exactly as p. With greedy choice p and q are
// one-hot and the rule reduces to "keep d iff it is the main model's argmax".
#pragma once

#include "mtp.hpp"
#include "rollback.hpp"
#include "sampling.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace dsv4 {

/// What verifying one draft token gave: the token to emit and whether it was the draft.
struct draft_verdict {
    int32_t token = 0;
    bool accepted = false;
};

inline namespace DSV4_ISA_NS {

/// The acceptance rule for draft token d ~ q against target p (both [vocab], normalised),
/// drawing from `s`'s stream; `residual` is scratch of vocab doubles.
inline draft_verdict accept_draft(sampler& s, const double* p, const double* q, int32_t d, std::size_t vocab,
                                  double* residual) {
    if (d < 0 || std::size_t(d) >= vocab || !(q[d] > 0))
        throw error("dsv4::accept_draft: draft token " + std::to_string(d) +
                    " is outside the vocabulary or has probability 0 under the draft distribution");
    if (s.uniform() * q[d] < p[d]) return {d, true};
    bool any = false;
    for (std::size_t i = 0; i < vocab; ++i) any |= (residual[i] = std::max(0.0, p[i] - q[i])) > 0;
    return {s.draw(any ? residual : p, vocab), false};  // p <= q everywhere only by rounding: draw from p
}

/// Counts of a speculative run: rounds (main-model passes), drafted and accepted tokens.
struct speculative_stats {
    std::size_t rounds = 0, drafted = 0, accepted = 0;
};

/// One sequence generated with MTP drafts (file comment). The model and block must outlive it.
class speculative_decoder {
public:
    /// draft: tokens drafted per round, 1 to max_rollback_tokens - 1 (3 for V4-Flash: the
    /// verifying append of draft + 1 tokens must roll back exactly).
    speculative_decoder(const model& m, const mtp_block& drafter, std::size_t draft, const sampling_params& sp)
        : m_(m), d_(drafter), k_(draft), smp_(m.vocab(), sp), s_(m.new_sequence()), ds_(drafter.new_sequence()) {
        detail::require(&drafter.main_model() == &m, "speculative_decoder", "the MTP block belongs to another model");
        if (k_ < 1 || k_ + 1 > max_rollback_tokens(s_))
            throw error("dsv4::speculative_decoder: draft must be 1 to " + std::to_string(max_rollback_tokens(s_) - 1) +
                        " tokens, got " + std::to_string(k_));
        const std::size_t V = m.vocab(), W = hc_mult * m.context().D;
        logits_.resize((k_ + 1) * V);
        streams_.resize((k_ + 1) * W);
        dlogits_.resize(V);
        dstreams_.resize(W);
        q_.resize(k_ * V);
        p_.resize(V);
        residual_.resize(V);
    }

    /// Starts the sequence with prompt[0..n) (main model in pieces of at most `chunk`
    /// tokens, the block on every prompt position) and returns the first generated token.
    int64_t start(const int64_t* prompt, std::size_t n, std::size_t chunk = 512) {
        detail::require(n >= 1 && prompt, "speculative_decoder::start", "empty prompt");
        detail::require(chunk >= 1, "speculative_decoder::start", "chunk must be at least 1");
        const std::size_t V = m_.vocab(), W = hc_mult * m_.context().D;
        s_.pos = 0;  // the first extend is then the prefill
        ds_.pos = 0;
        pend_H_.clear();
        pend_ids_.clear();
        stats_ = {};
        std::vector<uint16_t> H;
        for (std::size_t a = 0; a < n; a += chunk) {
            const std::size_t len = std::min(chunk, n - a);
            H.resize(len * W);
            m_.extend(s_, prompt + a, len, forward_outputs{logits_.data(), false, H.data()});
            pend_H_.insert(pend_H_.end(), H.begin(), H.end());
            pend_ids_.insert(pend_ids_.end(), prompt + a + 1, prompt + a + len);
            if (a + len < n) {  // the block runs on the rows whose next token is known
                pend_ids_.push_back(prompt[a + len]);
                catch_up(pend_ids_.size());
            }
        }
        next_ = smp_.pick(logits_.data(), V);
        pend_ids_.push_back(next_);
        return next_;
    }

    /// One round: appends the tokens it produces (1 to draft + 1) to `out`.
    void step(std::vector<int64_t>& out) {
        detail::require(s_.pos > 0, "speculative_decoder::step", "call start first");
        const std::size_t V = m_.vocab();
        const std::size_t room = s_.max_context - std::min<std::size_t>(s_.max_context, std::size_t(s_.pos));
        const std::size_t k = std::min(k_, room > 0 ? room - 1 : 0);
        const bool greedy = smp_.params().temperature == 0.0f;

        // draft k tokens: the block's catch-up call gives the first, chained steps the rest
        drafts_.resize(k);
        if (k) {
            catch_up(pend_ids_.size(), true);
            for (std::size_t j = 0; j < k; ++j) {
                if (j == 1) save_for_append(ds_, k - 1, dundo_);
                if (j >= 1) d_.run(ds_, dstreams_.data(), &drafts_[j - 1], 1, dlogits_.data(), dstreams_.data());
                double* q = q_.data() + j * V;
                smp_.distribution(dlogits_.data(), V, q);
                drafts_[j] = greedy ? int64_t(argmax(q, V)) : smp_.draw(q, V);
            }
            if (k >= 2) rollback_append(ds_, dundo_, 0);
        }
        verify(drafts_.data(), k, out);
    }

    /// A round with drafts from elsewhere (greedy decoding only: sampling needs the draft
    /// distributions): verifies the pending token and drafts[0..k) in one pass, as step().
    /// The block catches up on the kept positions in the next step().
    void step_with_drafts(const int64_t* drafts, std::size_t k, std::vector<int64_t>& out) {
        detail::require(s_.pos > 0, "speculative_decoder::step_with_drafts", "call start first");
        detail::require(smp_.params().temperature == 0.0f, "speculative_decoder::step_with_drafts",
                        "drafts without their distribution can only be verified greedily");
        detail::require(k <= k_ && (k == 0 || drafts), "speculative_decoder::step_with_drafts",
                        "more drafts than the decoder was made for");
        check_token_ids(std::span<const int64_t>(drafts, k), m_.vocab());
        verify(drafts, k, out);
    }

    const speculative_stats& stats() const noexcept { return stats_; }
    /// The main model's sequence (its position: tokens fed so far; the last emitted token is not).
    const sequence_state& sequence() const noexcept { return s_; }

private:
    const model& m_;
    const mtp_block& d_;
    std::size_t k_;
    sampler smp_;
    sequence_state s_, ds_;
    append_undo undo_, dundo_;
    std::vector<float> logits_, dlogits_;      ///< [(k+1), V] verify logits; [V] draft logits
    std::vector<uint16_t> streams_, dstreams_;  ///< [(k+1), 4, D] main streams; [4, D] the block's last
    std::vector<double> q_, p_, residual_;     ///< [k, V] draft distributions; [V] target; scratch
    std::vector<uint16_t> pend_H_;             ///< main streams of positions the block has not seen
    std::vector<int64_t> pend_ids_;            ///< the tokens after them
    std::vector<int64_t> drafts_, ids_;        ///< this round's drafts; the tokens verified
    int64_t next_ = 0;                         ///< last emitted token (not yet in the main model)
    speculative_stats stats_;

    /// One main-model pass over the pending token and drafts[0..k) (with their distributions
    /// in q_ when sampling); keeps the agreeing prefix and one more token, rolls back the rest.
    void verify(const int64_t* drafts, std::size_t k, std::vector<int64_t>& out) {
        const std::size_t V = m_.vocab(), W = hc_mult * m_.context().D;
        const bool greedy = smp_.params().temperature == 0.0f;
        std::vector<int64_t>& ids = ids_;
        ids.assign(1, next_);
        ids.insert(ids.end(), drafts, drafts + k);
        save_for_append(s_, k + 1, undo_);
        m_.extend(s_, ids.data(), k + 1, forward_outputs{logits_.data(), true, streams_.data()});
        std::size_t a = 0;
        int64_t emit = -1;
        for (; a < k; ++a) {
            const float* L = logits_.data() + a * V;
            const int64_t d = ids[a + 1];
            if (greedy) {
                const int64_t t = smp_.pick(L, V);
                if (t != d) {
                    emit = t;
                    break;
                }
            } else {
                smp_.distribution(L, V, p_.data());
                const draft_verdict v = accept_draft(smp_, p_.data(), q_.data() + a * V, int32_t(d), V, residual_.data());
                if (!v.accepted) {
                    emit = v.token;
                    break;
                }
            }
        }
        if (a == k) emit = smp_.pick(logits_.data() + k * V, V);  // every draft kept: one more from the last logits
        rollback_append(s_, undo_, a + 1);

        // the kept positions wait for the block's next call
        pend_H_.insert(pend_H_.end(), streams_.begin(), streams_.begin() + std::ptrdiff_t((a + 1) * W));
        pend_ids_.insert(pend_ids_.end(), ids.begin() + 1, ids.begin() + std::ptrdiff_t(a + 1));
        pend_ids_.push_back(emit);
        out.insert(out.end(), ids.begin() + 1, ids.begin() + std::ptrdiff_t(a + 1));
        out.push_back(emit);
        next_ = emit;
        ++stats_.rounds;
        stats_.drafted += k;
        stats_.accepted += a;
    }

    static std::size_t argmax(const double* q, std::size_t n) {
        return std::size_t(std::max_element(q, q + n) - q);
    }

    /// Runs the block over the first `rows` pending positions (all of them have their next
    /// token) and drops them; keep_streams: its last output streams go to dstreams_.
    void catch_up(std::size_t rows, bool keep_streams = false) {
        if (rows == 0) return;
        const std::size_t W = hc_mult * m_.context().D;
        std::vector<uint16_t> out(keep_streams ? rows * W : 0);
        d_.run(ds_, pend_H_.data(), pend_ids_.data(), rows, dlogits_.data(), keep_streams ? out.data() : nullptr);
        if (keep_streams) std::copy(out.end() - std::ptrdiff_t(W), out.end(), dstreams_.begin());
        pend_H_.erase(pend_H_.begin(), pend_H_.begin() + std::ptrdiff_t(rows * W));
        pend_ids_.erase(pend_ids_.begin(), pend_ids_.begin() + std::ptrdiff_t(rows));
    }
};

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
