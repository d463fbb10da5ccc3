// dsv4/model/speculative.hpp - speculative decoding with the checkpoint's MTP block.
//
// The acceptance rule (standard speculative sampling: Leviathan et al. 2023, Chen et al.
// 2023): a draft token d drawn from the draft distribution q is kept with probability
// min(1, p(d) / q(d)), p the target (main model) distribution at that position; otherwise
// the emitted token is drawn from max(0, p - q) normalised, and no later draft is looked
// at. Every emitted token is then distributed exactly as p. With greedy choice p and q are
// one-hot and the rule reduces to "keep d iff it is the main model's argmax".
#pragma once

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

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
