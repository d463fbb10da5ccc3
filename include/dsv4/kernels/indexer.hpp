// dsv4/kernels/indexer.hpp - the indexer's scores (spec §6 step 5). Public entry points:
// dsv4/indexer.hpp.
//
//   score[m][u] = bf16( sum_h bf16( relu( bf16(q[m][h] · k[u]) ) * w[m][h] ) )
// with the official precision points: each 128-long dot product in f32 (fused multiply-
// adds over d = 0..127 in order, from 0), rounded to bf16; relu; times the bf16 head weight
// (exact in f32), rounded to bf16; the head sum in f32 over h = 0..H-1 in order, from 0;
// the total rounded to bf16. Stored as f32 (bf16-exact values) for the top-k.
//
// Candidates sit in the vector lanes: a block of 3 vectors of candidates (48 on AVX-512,
// 24 on AVX2) is transposed once to kT[d][u] in f32 (32-bit pairs of bf16 keys, one tile
// transpose per 16 or 8 pairs, then shift/mask to f32), and for each query and each group
// of HT heads (8 zmm / 4 ymm) the micro-kernel keeps HT x 3 accumulators, broadcasting
// q[h][d] and loading 3 kT vectors per d: 24 (12) FMAs per 3 loads + HT broadcasts. Every
// candidate sees the same operations in the same order as the scalar tier computes them
// one at a time, so every tier gives the scalar tier's bits. The block is reused by all
// queries of a call (prefill passes several).
#pragma once

#include "../simd/fmath.hpp"
#include "../simd/permute.hpp"

#include <algorithm>

namespace dsv4 {

inline constexpr std::size_t index_head_dim = 128;  ///< indexer head dim (fixed by V4)

/// Operands of the score kernel. Strides in elements.
struct indexer_score_args {
    const float* q = nullptr;             ///< query m head h: q + m*q_stride + h*128 (bf16 values as f32)
    std::size_t q_stride = 0;
    const float* w = nullptr;             ///< query m head h weight: w[m*w_stride + h] (bf16 values, scale included)
    std::size_t w_stride = 0;
    const std::size_t* limit = nullptr;   ///< query m scores candidates u < limit[m] only (null: all keys)
    std::size_t queries = 0, heads = 0;
    const uint16_t* k = nullptr;          ///< key u: k + u*k_stride, 128 bf16
    std::size_t k_stride = 0, keys = 0;
    float* scores = nullptr;              ///< score of query m, key u: scores[m*scores_stride + u]
    std::size_t scores_stride = 0;
};

/// Floats of scratch one call of indexer_scores_rows needs (the largest tier's block).
inline constexpr std::size_t indexer_score_scratch_floats = index_head_dim * 48 + 48 + 16;

inline namespace DSV4_ISA_NS {
namespace kernels {
namespace idx_detail {

/// bf16 RNE of a finite f32 (either sign): the carry trick on the bit pattern.
template <class V> DSV4_INLINE V round_bf16_finite(V x) noexcept { return simd::round_bf16_nonneg(x); }

/// The per-head epilogue: s += bf16(bf16(relu(dot)) * w). relu(NaN) = NaN (as torch.relu):
/// vmax returns its second operand when one is NaN.
template <class V> DSV4_INLINE V head_term(V dot, V w) noexcept {
    const V r = round_bf16_finite(simd::vmax(V(0.0f), dot));
    return round_bf16_finite(simd::rounded(r * w));
}

template <class A> inline constexpr int head_tile = simd::is_avx512<A> ? 8 : 4;
inline constexpr int cand_vecs = 3;

/// Heads [0, HT) of one query over the transposed block kt[d][NCB]: s[v] += terms.
template <class A, int HT>
DSV4_INLINE void head_group(const float* q, const float* w, const float* kt, simd::vf32<A>* s) noexcept {
    using V = simd::vf32<A>;
    constexpr std::size_t W = simd::lanes<A>(), NCB = cand_vecs * W;
    V acc[HT][cand_vecs];
    for (auto& a : acc)
        for (auto& v : a) v = V(0.0f);
    for (std::size_t d = 0; d < index_head_dim; ++d) {
        V kv[cand_vecs];
        for (int c = 0; c < cand_vecs; ++c) kv[c] = V::load_aligned(kt + d * NCB + c * W);
        for (int h = 0; h < HT; ++h) {
            const V qb(q[h * index_head_dim + d]);
            for (int c = 0; c < cand_vecs; ++c) acc[h][c] = simd::fmadd(qb, kv[c], acc[h][c]);
        }
    }
    for (int h = 0; h < HT; ++h) {
        const V wv(w[h]);
        for (int c = 0; c < cand_vecs; ++c) s[c] = s[c] + head_term(acc[h][c], wv);
    }
}

template <class A, int HT>
DSV4_INLINE void head_tail(int n, const float* q, const float* w, const float* kt, simd::vf32<A>* s) noexcept {
    if constexpr (HT > 0) {
        if (n == HT) head_group<A, HT>(q, w, kt, s);
        else head_tail<A, HT - 1>(n, q, w, kt, s);
    }
}

/// kt[d][u - ub] = f32(k[u][d]) for the block's candidates (zeros past u1).
template <class A>
DSV4_INLINE void transpose_block(const indexer_score_args& a, std::size_t ub, std::size_t u1, float* kt) noexcept {
    using VI = simd::vi32<A>;
    constexpr std::size_t W = simd::lanes<A>(), NCB = cand_vecs * W;
    alignas(64) static constexpr uint16_t zeros[index_head_dim] = {};
    for (int c = 0; c < cand_vecs; ++c) {
        const uint16_t* rows[W];
        for (std::size_t l = 0; l < W; ++l) {
            const std::size_t u = ub + c * W + l;
            rows[l] = u < u1 ? a.k + u * a.k_stride : zeros;
        }
        for (std::size_t pc = 0; pc < index_head_dim / 2; pc += W) {  // W pairs = 2W dims
            VI r[W];
            for (std::size_t l = 0; l < W; ++l) r[l] = VI::load_unaligned(reinterpret_cast<const int32_t*>(rows[l] + 2 * pc));
            simd::transpose_u32(A{}, r);  // r[j] lane l = (k[l][2(pc+j)], k[l][2(pc+j)+1])
            for (std::size_t j = 0; j < W; ++j) {
                const std::size_t d = 2 * (pc + j);
                simd::from_bits(r[j] << 16).store_aligned(kt + d * NCB + c * W);
                simd::from_bits(r[j] & VI(int32_t(0xFFFF0000u))).store_aligned(kt + (d + 1) * NCB + c * W);
            }
        }
    }
}

}  // namespace idx_detail

/// Scores of every query for candidates [u0, u1) (each query m only up to limit[m]).
/// scratch: indexer_score_scratch_floats floats, any alignment. Unchecked (dsv4/indexer.hpp
/// validates); results do not depend on how [0, keys) is split into calls.
template <class A>
void indexer_scores_rows(const indexer_score_args& a, std::size_t u0, std::size_t u1, float* scratch) noexcept {
    using namespace idx_detail;
    auto lim = [&](std::size_t m) { return std::min(a.limit ? a.limit[m] : a.keys, u1); };
    if constexpr (simd::is_scalar<A>) {
        (void)scratch;
        float kf[index_head_dim];
        for (std::size_t u = u0; u < u1; ++u) {
            bool needed = false;
            for (std::size_t m = 0; m < a.queries; ++m) needed = needed || u < lim(m);
            if (!needed) continue;
            for (std::size_t d = 0; d < index_head_dim; ++d) kf[d] = bf16_to_f32(a.k[u * a.k_stride + d]);
            for (std::size_t m = 0; m < a.queries; ++m) {
                if (u >= lim(m)) continue;
                const float* q = a.q + m * a.q_stride;
                const float* w = a.w + m * a.w_stride;
                float s = 0.0f;
                for (std::size_t h = 0; h < a.heads; ++h) {
                    float dot = 0.0f;
                    for (std::size_t d = 0; d < index_head_dim; ++d) dot = std::fma(q[h * index_head_dim + d], kf[d], dot);
                    s = s + head_term(dot, w[h]);
                }
                a.scores[m * a.scores_stride + u] = round_bf16_finite(s);
            }
        }
    } else {
        using V = simd::vf32<A>;
        constexpr std::size_t W = simd::lanes<A>(), NCB = cand_vecs * W;
        constexpr int HT = head_tile<A>;
        float* kt = reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(scratch) + 63) & ~std::uintptr_t(63));
        alignas(64) float out[NCB];
        for (std::size_t ub = u0; ub < u1; ub += NCB) {
            bool needed = false;
            for (std::size_t m = 0; m < a.queries; ++m) needed = needed || ub < lim(m);
            if (!needed) continue;
            transpose_block<A>(a, ub, u1, kt);
            for (std::size_t m = 0; m < a.queries; ++m) {
                const std::size_t end = lim(m);
                if (ub >= end) continue;
                const float* q = a.q + m * a.q_stride;
                const float* w = a.w + m * a.w_stride;
                V s[cand_vecs];
                for (auto& v : s) v = V(0.0f);
                std::size_t h = 0;
                for (; h + HT <= a.heads; h += HT) head_group<A, HT>(q + h * index_head_dim, w + h, kt, s);
                if (h < a.heads) head_tail<A, HT - 1>(int(a.heads - h), q + h * index_head_dim, w + h, kt, s);
                for (int c = 0; c < cand_vecs; ++c) round_bf16_finite(s[c]).store_aligned(out + c * W);
                float* dst = a.scores + m * a.scores_stride + ub;
                for (std::size_t j = 0, nj = std::min(NCB, end - ub); j < nj; ++j) dst[j] = out[j];
            }
        }
    }
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
