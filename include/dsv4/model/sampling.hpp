// dsv4/model/sampling.hpp - next-token choice from the head's f32 logits.
//
// Greedy (temperature 0: argmax, lowest id on ties) or sampled: softmax(logits / T),
// optionally restricted to the smallest set of most likely tokens whose probability
// reaches top_p (nucleus), then one draw from a seeded xoshiro256** stream, so a run is
// reproducible from its seed. The reference generator draws with Gumbel-max on
// softmax(logits/T): the same distribution, a different random stream.
#pragma once

#include "../config.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

namespace dsv4 {

struct sampling_params {
    float temperature = 0.0f;  ///< 0: greedy
    float top_p = 1.0f;        ///< in (0, 1]; 1 keeps every token
    uint64_t seed = 0;
};

inline namespace DSV4_ISA_NS {

/// Owns its random stream and a scratch buffer of vocab entries (allocated once).
class sampler {
public:
    sampler(std::size_t vocab, const sampling_params& p) : p_(p), order_(vocab), prob_(vocab) {
        if (vocab == 0 || vocab > std::size_t(INT32_MAX)) throw error("sampler: vocab must be in [1, 2^31)");
        if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
            throw error("sampler: temperature must be a finite number >= 0, got " + std::to_string(p.temperature));
        if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
            throw error("sampler: top_p must be in (0, 1], got " + std::to_string(p.top_p));
        uint64_t z = p.seed;
        for (auto& s : state_) s = splitmix(z);
    }

    /// Picks the next token id. Throws dsv4::error if the logits contain NaN (a broken
    /// forward pass must not turn into a silently "sampled" token). +Inf logits: the first
    /// +Inf is picked (greedy and sampled alike); -Inf logits have probability 0, and a row
    /// of only -Inf gives id 0.
    int32_t pick(const float* logits, std::size_t vocab) {
        double sum = 0;
        std::size_t best = 0;
        const std::size_t keep = weigh(logits, vocab, sum, best);
        if (keep == 0) return int32_t(best);
        const double u = uniform() * sum;
        double acc = 0;
        for (std::size_t i = 0; i < keep; ++i) {
            acc += prob_[order_[i]];
            if (u < acc) return int32_t(order_[i]);
        }
        return int32_t(order_[keep - 1]);
    }

    /// The distribution pick() draws from, normalised, into p[vocab]: softmax(logits / T)
    /// within the top_p nucleus, 0 outside; one-hot on pick()'s token where it is greedy.
    /// (Speculative sampling needs the target's and the draft's distributions themselves.)
    void distribution(const float* logits, std::size_t vocab, double* p) {
        double sum = 0;
        std::size_t best = 0;
        const std::size_t keep = weigh(logits, vocab, sum, best);
        std::fill(p, p + vocab, 0.0);
        if (keep == 0) {
            p[best] = 1.0;
            return;
        }
        for (std::size_t i = 0; i < keep; ++i) p[order_[i]] = prob_[order_[i]] / sum;
    }

    /// One draw from p[vocab] (non-negative, summing to s > 0) with this sampler's stream.
    int32_t draw(const double* p, std::size_t vocab) {
        double s = 0;
        std::size_t last = 0;
        for (std::size_t i = 0; i < vocab; ++i)
            if (p[i] > 0) s += p[i], last = i;
        if (!(s > 0)) throw error("sampler: draw from an all-zero distribution");
        const double u = uniform() * s;
        double acc = 0;
        for (std::size_t i = 0; i < vocab; ++i)
            if (p[i] > 0 && u < (acc += p[i])) return int32_t(i);
        return int32_t(last);
    }

    /// The next number of the stream, uniform in [0, 1).
    double uniform() {  // xoshiro256**
        const uint64_t r = rotl(state_[1] * 5, 7) * 9, t = state_[1] << 17;
        state_[2] ^= state_[0];
        state_[3] ^= state_[1];
        state_[1] ^= state_[2];
        state_[0] ^= state_[3];
        state_[2] ^= t;
        state_[3] = rotl(state_[3], 45);
        return double(r >> 11) * 0x1p-53;
    }

    const sampling_params& params() const noexcept { return p_; }

private:
    static uint64_t splitmix(uint64_t& z) {
        uint64_t r = (z += 0x9E3779B97F4A7C15ull);
        r = (r ^ (r >> 30)) * 0xBF58476D1CE4E5B9ull;
        r = (r ^ (r >> 27)) * 0x94D049BB133111EBull;
        return r ^ (r >> 31);
    }
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
    /// Checks the logits; greedy (T = 0 or a +Inf logit): returns 0 with `best` set.
    /// Otherwise fills prob_ with exp((l - max) / T) and order_ with the ids to draw from
    /// (the top_p nucleus first, most likely first), sets `sum` over them, returns their count.
    std::size_t weigh(const float* logits, std::size_t vocab, double& sum, std::size_t& best) {
        if (vocab != prob_.size()) throw error("sampler: vocab size changed");
        if (!logits) throw error("sampler: logits is null");
        best = 0;
        for (std::size_t i = 0; i < vocab; ++i) {
            if (std::isnan(logits[i])) throw error("sampler: logit " + std::to_string(i) + " is NaN");
            if (logits[i] > logits[best]) best = i;
        }
        if (p_.temperature == 0.0f || !std::isfinite(logits[best])) return 0;
        const double inv_t = 1.0 / double(p_.temperature), top = double(logits[best]);
        sum = 0;
        for (std::size_t i = 0; i < vocab; ++i) sum += prob_[i] = std::exp((double(logits[i]) - top) * inv_t);
        std::size_t keep = vocab;
        std::iota(order_.begin(), order_.end(), 0u);
        if (p_.top_p < 1.0f) {
            std::sort(order_.begin(), order_.end(), [&](uint32_t a, uint32_t b) {
                return prob_[a] != prob_[b] ? prob_[a] > prob_[b] : a < b;
            });
            double acc = 0;
            for (keep = 0; keep < vocab;) {
                acc += prob_[order_[keep++]];
                if (acc >= double(p_.top_p) * sum) break;
            }
            sum = acc;
        }
        return keep;
    }

    sampling_params p_;
    uint64_t state_[4] = {};
    std::vector<uint32_t> order_;
    std::vector<double> prob_;
};

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
