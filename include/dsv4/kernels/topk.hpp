// dsv4/kernels/topk.hpp - top-k selection without a full sort (the indexer's 512 of up to
// 256K compressed entries, spec §6 step 6). Public entry points: dsv4/topk.hpp.
//
// Order: descending score; equal scores (-0 == +0) by LOWER index first; NaN ranks below
// -inf. The k selected are exactly the first k of a stable descending sort of the row,
// whatever path finds them:
//  1. keys: the f32 bits mapped to a monotone uint32 (NaN -> 0, -0 -> +0);
//  2. rows of n >= 4096 (and n >= 8k): the r-th largest of 1024 evenly spaced samples is a
//     threshold t expected to keep ~2k + 64 elements; one vectorised pass (compare +
//     movemask) lists the indices with score >= t. If the list holds >= k entries it
//     contains the whole top k (and every tie of the k-th value); else (an unlucky sample)
//     the whole row is the list;
//  3. radix select on the list, 8 key bits per level: the k-th largest key theta and how
//     many of its ties to take; one pass in index order keeps key > theta and the first
//     ties (lowest indices): the selection, in ascending index order;
//  4. topk_order::score: a stable LSD radix sort of the k by descending key (ties keep
//     ascending index); topk_order::index leaves them in ascending index order.
// Cost: O(n) for step 2 (a few cycles per 16 scores), then O(list) - no sort of n.
#pragma once

#include "../simd/fmath.hpp"
#include "../simd/permute.hpp"

#include <bit>

namespace dsv4 {

/// Order of a top-k result.
enum class topk_order : int {
    score = 0,  ///< descending score, ties by ascending index (torch.topk order, deterministic)
    index = 1,  ///< ascending index (attention does not care about order; gathers run forward)
};

inline constexpr std::size_t topk_sample = 1024;  ///< samples of the threshold estimate

/// uint32 words of scratch topk_row needs for a row of n and k.
inline constexpr std::size_t topk_scratch_words(std::size_t n, std::size_t k) noexcept {
    return 2 * n + 2 * topk_sample + 4 * k + 16;
}

inline namespace DSV4_ISA_NS {
namespace kernels {
namespace topk_detail {

/// Monotone key: a > b as floats <=> key(a) > key(b); -0 == +0; NaN is 0 (below -inf).
DSV4_INLINE uint32_t key_of(float x) noexcept {
    uint32_t b = std::bit_cast<uint32_t>(x);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) return 0;
    if (b == 0x80000000u) b = 0;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
/// The float of a non-NaN key.
DSV4_INLINE float value_of(uint32_t k) noexcept {
    return std::bit_cast<float>((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

/// Radix select: among the candidates (list[0..count), ascending; or every i < count when
/// list is null) finds theta, the k-th largest key (1 <= k <= count), and need, how many
/// candidates with key == theta belong to the top k. work (>= count words, may be list)
/// receives the narrowed candidate list.
template <class Key>
DSV4_INLINE void radix_select(Key key, const uint32_t* list, std::size_t count, std::size_t k, uint32_t* work,
                              uint32_t& theta, std::size_t& need) noexcept {
    uint32_t prefix = 0;
    std::size_t above = 0;
    const uint32_t* cur = list;
    std::size_t n = count;
    for (int shift = 24; shift >= 0; shift -= 8) {
        // four interleaved histograms: runs of equal digits (bf16 scores) would otherwise
        // serialise on one counter's store-to-load forwarding
        uint32_t h4[4][256] = {};
        std::size_t j = 0;
        if (cur) {
            for (; j + 4 <= n; j += 4)
                for (int l = 0; l < 4; ++l) ++h4[l][(key(cur[j + l]) >> shift) & 0xFFu];
            for (; j < n; ++j) ++h4[0][(key(cur[j]) >> shift) & 0xFFu];
        } else {
            for (; j + 4 <= n; j += 4)
                for (int l = 0; l < 4; ++l) ++h4[l][(key(uint32_t(j + l)) >> shift) & 0xFFu];
            for (; j < n; ++j) ++h4[0][(key(uint32_t(j)) >> shift) & 0xFFu];
        }
        uint32_t hist[256];
        for (int b = 0; b < 256; ++b) hist[b] = h4[0][b] + h4[1][b] + h4[2][b] + h4[3][b];
        int b = 255;
        for (; b > 0; --b) {
            if (above + hist[b] >= k) break;
            above += hist[b];
        }
        prefix |= uint32_t(b) << shift;
        if (hist[b] == n) continue;  // every candidate shares this digit
        std::size_t m = 0;
        if (cur) {
            for (std::size_t j = 0; j < n; ++j)
                if (((key(cur[j]) >> shift) & 0xFFu) == uint32_t(b)) work[m++] = cur[j];
        } else {
            for (std::size_t j = 0; j < n; ++j)
                if (((key(uint32_t(j)) >> shift) & 0xFFu) == uint32_t(b)) work[m++] = uint32_t(j);
        }
        cur = work;
        n = m;
    }
    theta = prefix;
    need = k - above;
}

/// Indices i with scores[i] >= t (t not NaN), ascending, into list; returns the count.
template <class A>
DSV4_INLINE std::size_t filter_ge(const float* scores, std::size_t n, float t, uint32_t* list) noexcept {
    std::size_t c = 0, i = 0;
    if constexpr (!simd::is_scalar<A>) {
        using V = simd::vf32<A>;
        constexpr std::size_t W = simd::lanes<A>();
        const V tv(t);
        for (; i + W <= n; i += W) {
            uint32_t m = simd::movemask(A{}, V::load_unaligned(scores + i) >= tv);
            while (m) {
                list[c++] = uint32_t(i) + uint32_t(std::countr_zero(m));
                m &= m - 1;
            }
        }
    }
    for (; i < n; ++i)
        if (scores[i] >= t) list[c++] = uint32_t(i);
    return c;
}

}  // namespace topk_detail

/// The top k of scores[0..n) (1 <= k <= n < 2^32) into out[0..k) (see the file comment).
/// scratch: topk_scratch_words(n, k) words.
template <class A>
void topk_row(const float* scores, std::size_t n, std::size_t k, topk_order order, int32_t* out,
              uint32_t* scratch) noexcept {
    using namespace topk_detail;
    if (k == 0) return;
    uint32_t* list = scratch;                      // [n] the filtered candidates
    uint32_t* work = scratch + n;                  // [n] radix select's narrowing list
    uint32_t* skey = work + n;                     // [topk_sample]
    uint32_t* swork = skey + topk_sample;          // [topk_sample]
    uint32_t* tk = swork + topk_sample;            // [k] keys, [k] indices, twice (sort buffers)
    auto score_key = [scores](uint32_t i) { return key_of(scores[i]); };

    if (k == n && order == topk_order::index) {  // everything, in index order
        for (std::size_t i = 0; i < n; ++i) out[i] = int32_t(i);
        return;
    }
    const uint32_t* cand = nullptr;  // null: every index
    std::size_t count = n;
    if (n >= 4096 && n >= 8 * k) {
        const std::size_t want = 2 * k + 64;
        const std::size_t rank = (want * topk_sample + n - 1) / n;  // 1 <= rank <= 1024 / 4
        for (std::size_t j = 0; j < topk_sample; ++j) skey[j] = key_of(scores[j * n / topk_sample]);
        uint32_t ts;
        std::size_t unused;
        radix_select([skey](uint32_t j) { return skey[j]; }, nullptr, topk_sample, rank, swork, ts, unused);
        if (ts != 0) {  // 0 would be a NaN threshold: use the whole row
            const std::size_t c = filter_ge<A>(scores, n, value_of(ts), list);
            if (c >= k) {
                cand = list;
                count = c;
            }
        }
    }
    uint32_t theta = 0;  // k == n: every key qualifies (0 is the lowest)
    std::size_t need = n;
    if (k < n) radix_select(score_key, cand, count, k, work, theta, need);

    // the selection, in ascending index order: key > theta, and the first `need` ties
    uint32_t* sel_key = tk;
    uint32_t* sel_idx = tk + k;
    std::size_t m = 0;
    auto take = [&](uint32_t i) {
        const uint32_t kk = key_of(scores[i]);
        if (kk > theta || (kk == theta && need > 0)) {
            if (kk == theta) --need;
            sel_key[m] = kk;
            sel_idx[m] = i;
            ++m;
        }
    };
    if (cand)
        for (std::size_t j = 0; j < count && m < k; ++j) take(cand[j]);
    else
        for (std::size_t i = 0; i < n && m < k; ++i) take(uint32_t(i));
    if (order == topk_order::index) {
        for (std::size_t j = 0; j < k; ++j) out[j] = int32_t(sel_idx[j]);
        return;
    }
    // stable LSD radix sort by descending key (digit 255 - byte)
    uint32_t* kb = tk + 2 * k;
    uint32_t* ib = tk + 3 * k;
    for (int shift = 0; shift < 32; shift += 8) {
        uint32_t cnt[256] = {};
        for (std::size_t j = 0; j < k; ++j) ++cnt[255u - ((sel_key[j] >> shift) & 0xFFu)];
        if (cnt[255u - ((sel_key[0] >> shift) & 0xFFu)] == k) continue;  // one digit: nothing moves
        uint32_t pos = 0;
        for (uint32_t& c : cnt) {
            const uint32_t t = c;
            c = pos;
            pos += t;
        }
        for (std::size_t j = 0; j < k; ++j) {
            const uint32_t dgt = 255u - ((sel_key[j] >> shift) & 0xFFu);
            kb[cnt[dgt]] = sel_key[j];
            ib[cnt[dgt]++] = sel_idx[j];
        }
        uint32_t* t = sel_key;
        sel_key = kb;
        kb = t;
        t = sel_idx;
        sel_idx = ib;
        ib = t;
    }
    for (std::size_t j = 0; j < k; ++j) out[j] = int32_t(sel_idx[j]);
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
