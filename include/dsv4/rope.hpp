// dsv4/rope.hpp - rotary embeddings on the trailing 64 dims (spec §3.2, §3.3, §4 step 9).
//
// Frequencies: f_i = 1 / base^(2i/64) in f32, with the YaRN blend for compressed layers
// (no mscale). Angles θ(p, i) = f32(f32(p) * f_i); cos/sin are evaluated in double and
// rounded once to f32 (correctly rounded in practice), so a row is the same whether it
// comes from a precomputed table or is computed on the fly. A table covers positions
// [0, n_rows); positions beyond it are computed on the fly (one 32-pair row per token,
// shared by all the token's heads), so a 1M-token context needs no 1M-row table.
#pragma once

#include "codec.hpp"

#include <cmath>
#include <numbers>

namespace dsv4 {

inline constexpr std::size_t rope_dim = 64;    ///< rope dims per vector (the last 64)
inline constexpr std::size_t rope_pairs = 32;  ///< frequencies per table
inline constexpr std::size_t rope_row_floats = 64;  ///< one cos/sin row: cos[32] then sin[32]

/// Frequency-table parameters (spec §0, §3.2). original_seq_len == 0: no YaRN.
struct rope_config {
    double base = 10000.0;
    double factor = 1.0;
    int64_t original_seq_len = 0;
    double beta_fast = 32.0;
    double beta_slow = 1.0;
};
/// Ratio-0 layers (0, 1 and MTP): rope_theta 10000, no YaRN.
inline constexpr rope_config rope_config_ratio0{10000.0, 1.0, 0, 32.0, 1.0};
/// Compressed layers (ratio 4 and 128): compress_rope_theta 160000, YaRN x16 over 65536.
inline constexpr rope_config rope_config_compressed{160000.0, 16.0, 65536, 32.0, 1.0};

/// Frequencies plus an optional precomputed cos/sin table (views; the caller owns memory).
struct rope_table {
    const float* freqs = nullptr;  ///< [32]
    const float* rows = nullptr;   ///< [n_rows][64]: row p = cos θ(p, 0..31), sin θ(p, 0..31); may be null
    std::size_t n_rows = 0;
};

inline namespace DSV4_ISA_NS {

/// The table of a layer with compress ratio `ratio` (0, 4 or 128), spec §3.2.
inline const rope_config& rope_config_for_ratio(int ratio) {
    detail::require(ratio == 0 || ratio == 4 || ratio == 128, "rope_config_for_ratio", "ratio must be 0, 4 or 128");
    return ratio == 0 ? rope_config_ratio0 : rope_config_compressed;
}

/// freqs[0..32) of a configuration, in f32 exactly as spec §3.2 computes them.
inline void rope_freqs(const rope_config& c, float* freqs) {
    detail::require(freqs != nullptr, "rope_freqs", "null pointer");
    detail::require(c.base > 1.0 && std::isfinite(c.base), "rope_freqs", "base must be finite and > 1");
    const int d = int(rope_dim);
    for (int i = 0; i < d / 2; ++i) {
        const float e = float(2 * i) / float(d);  // exact
        const float pw = float(std::pow(double(float(c.base)), double(e)));
        freqs[i] = 1.0f / pw;
    }
    if (c.original_seq_len <= 0) return;
    detail::require(c.factor > 0.0, "rope_freqs", "YaRN factor must be positive");
    const double L = double(c.original_seq_len);
    auto corr = [&](double r) { return d * std::log(L / (2.0 * std::numbers::pi * r)) / (2.0 * std::log(c.base)); };
    const double lo = std::max(std::floor(corr(c.beta_fast)), 0.0);
    double hi = std::min(std::ceil(corr(c.beta_slow)), double(d - 1));
    if (lo == hi) hi += 0.001;
    const float lof = float(lo), span = float(hi - lo), fac = float(c.factor);
    for (int i = 0; i < d / 2; ++i) {
        float ramp = (float(i) - lof) / span;
        ramp = ramp < 0.0f ? 0.0f : (ramp > 1.0f ? 1.0f : ramp);
        const float f = freqs[i];
        // f*(1-ramp) + (f/factor)*ramp, each product rounded (no contraction)
        freqs[i] = simd::rounded(f * (1.0f - ramp)) + simd::rounded((f / fac) * ramp);
    }
}

/// One cos/sin row for position `pos` (>= 0): row[i] = cos θ_i, row[32+i] = sin θ_i.
inline void rope_cos_sin(const float* freqs, int64_t pos, float* row) noexcept {
    const float p = float(pos);  // exact below 2^24
    for (std::size_t i = 0; i < rope_pairs; ++i) {
        const double th = double(p * freqs[i]);  // θ rounded to f32, then evaluated in double
        row[i] = float(std::cos(th));
        row[rope_pairs + i] = float(std::sin(th));
    }
}

/// Fills rows[0 .. n_rows*64) with the cos/sin rows of positions 0 .. n_rows-1.
inline void rope_table_fill(const float* freqs, std::size_t n_rows, float* rows) {
    detail::require(n_rows == 0 || (freqs && rows), "rope_table_fill", "null pointer");
    for (std::size_t p = 0; p < n_rows; ++p) rope_cos_sin(freqs, int64_t(p), rows + p * rope_row_floats);
}

/// RoPE on the last 64 dims of `vecs` vectors per token (vector v of token s starts at
/// x + s*token_stride + v*dim; e.g. q [S, H, D] has vecs = H, token_stride >= H*D), token s
/// at position positions[s] (spec §3.3). inverse = true rotates by -θ (the output
/// de-rotation, spec §4 step 9). In place, bf16.
inline void rope_apply(uint16_t* x, std::size_t tokens, std::size_t vecs, std::size_t dim, std::size_t token_stride,
                       const int64_t* positions, const rope_table& t, bool inverse) {
    detail::require(dim >= rope_dim, "rope_apply", "dim must be >= 64");
    detail::require(tokens == 0 || (x && positions && t.freqs), "rope_apply", "null pointer");
    detail::require(vecs == 0 || token_stride >= vecs * dim || tokens <= 1, "rope_apply", "token_stride smaller than vecs*dim");
    detail::require(t.n_rows == 0 || t.rows, "rope_apply", "table has rows but no data");
    for (std::size_t s = 0; s < tokens; ++s)
        detail::require(positions[s] >= 0, "rope_apply", "negative position");
    const auto fn = DSV4_KERNEL(rope_rows);
    alignas(64) float row[rope_row_floats];
    for (std::size_t s = 0; s < tokens; ++s) {
        const int64_t p = positions[s];
        const float* cs = row;
        if (uint64_t(p) < t.n_rows) cs = t.rows + std::size_t(p) * rope_row_floats;
        else rope_cos_sin(t.freqs, p, row);
        fn(x + s * token_stride + (dim - rope_dim), vecs, dim, cs, inverse);
    }
}

/// Spec §4 step 9: de-rotates o[..., dim-64 : dim] of every head with the query position.
/// o [tokens, heads, dim] bf16 in place (heads `dim` apart, tokens `token_stride` apart).
inline void output_derope(uint16_t* o, std::size_t tokens, std::size_t heads, std::size_t dim,
                          std::size_t token_stride, const int64_t* positions, const rope_table& t) {
    rope_apply(o, tokens, heads, dim, token_stride, positions, t, true);
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
