// dsv4/kernels/attention.hpp - MQA sparse attention with a per-head sink (spec §4 step 8).
// Public entry points (checked, threaded): dsv4/attention.hpp.
//
// One query row at a time, a group of heads at a time. The heads live in the vector
// lanes: q is transposed once per row to Qt[d][head] (f32), so every softmax statistic
// (running max, denominator, rescale factor) is per lane and no horizontal reduction
// exists anywhere. For each block of 64 index columns (the official kernel's online-
// softmax block) the valid indices are compacted, their KV rows gathered and widened
// once to f32 (Kf), and then
//   QK:  S[j][h] = sum_d Kf[j][d] * Qt[d][h]      broadcast Kf, vector over heads
//   PV:  O[h][d] = O[h][d]*alpha[h] + sum_j P[j][h] * Kf[j][d]   broadcast P, vector over d
// so each gathered KV row is read from memory once and used by every head of the group
// (K = V: the same f32 row serves both products).
//
// Every sum runs in a fixed order whatever the vector width (QK over d, PV and the
// denominator over j, all sequential), with fused multiply-adds and simd::exp_f32: every
// tier computes the scalar tier's bits, and so does every partition of rows and heads.
#pragma once

#include "../simd/fmath.hpp"

#include <algorithm>
#include <limits>
#include <utility>

namespace dsv4 {

/// Where the softmax weights are rounded (spec §4 step 8, §10.2).
enum class attention_precision : int {
    official = 0,     ///< e^{s-m} rounded to bf16 before P·V (the official kernel); denominator unrounded
    f32_weights = 1,  ///< f32 weights in P·V (a plain f32 softmax; closer to the exact result)
};

/// Operands of sparse_attention. Strides are in elements; heads of one token are `dim`
/// apart (q and out), and every index is -1 (masked) or a row of kv.
struct sparse_attention_args {
    const uint16_t* q = nullptr;    ///< [tokens, heads, dim] bf16: token s head h at q + s*q_stride + h*dim
    std::size_t q_stride = 0;
    const uint16_t* kv = nullptr;   ///< [kv_rows, dim] bf16, the one shared KV head (K = V)
    std::size_t kv_rows = 0, kv_stride = 0;
    const int32_t* idx = nullptr;   ///< [tokens, idx_len] int32: row s at idx + s*idx_stride; -1 = masked
    std::size_t idx_len = 0, idx_stride = 0;
    const float* sink = nullptr;    ///< [heads] f32 logits: in the denominator only
    uint16_t* out = nullptr;        ///< [tokens, heads, dim] bf16: token s head h at out + s*out_stride + h*dim
    std::size_t out_stride = 0;
    std::size_t tokens = 0, heads = 0, dim = 0;
    float scale = 0.0f;             ///< score scale, dim^-1/2 in V4
    attention_precision precision = attention_precision::official;
};

inline namespace DSV4_ISA_NS {
namespace kernels {
namespace attn {

inline constexpr std::size_t block = 64;         ///< index columns per online-softmax step
inline constexpr std::size_t max_tile_rows = 16;  ///< the tallest QK tile (pads Kf/S rows)
inline constexpr std::size_t max_head_pad = 16;   ///< heads are padded to a multiple of <= this
inline constexpr std::size_t qk_depth = 128;      ///< d-chunk of QK: keeps a 32 KiB slice of Qt in L1
/// Kf row stride: dim + 16 floats. A stride of a multiple of 2 KiB would put the PV tile's
/// column slice of 64 rows into a handful of L1 sets (conflict misses on every pass).
DSV4_INLINE constexpr std::size_t kf_stride(std::size_t dim) noexcept { return dim + 16; }

DSV4_INLINE constexpr std::size_t round_up(std::size_t x, std::size_t m) noexcept { return (x + m - 1) / m * m; }

/// Sub-buffers of one worker's scratch, in floats, each 64-byte aligned. `heads` is the
/// largest head group the worker will see.
struct layout {
    std::size_t hp, qt, o, kf, s, m, l, alpha, aux, list, total;
    constexpr layout(std::size_t heads, std::size_t dim) noexcept
        : hp(round_up(heads, max_head_pad)), qt(0), o(0), kf(0), s(0), m(0), l(0), alpha(0), aux(0), list(0), total(0) {
        std::size_t at = 0;
        auto take = [&at](std::size_t n) { const std::size_t p = at; at += round_up(n, 16); return p; };
        qt = take(dim * hp);
        o = take(hp * dim);
        kf = take((block + max_tile_rows) * kf_stride(dim));
        s = take((block + max_tile_rows) * hp);
        m = take(hp);
        l = take(hp);
        alpha = take(hp);
        aux = take(hp);
        list = take(2 * block);
        total = at + 16;  // slack to align the caller's pointer to 64 bytes
    }
};

template <class A> inline constexpr std::size_t W = simd::lanes<A>();
/// Head padding: the QK tile's vector width (1 on the scalar tier).
template <class A> inline constexpr std::size_t head_pad = simd::lanes<A>();
/// QK tile: NV head vectors x qk_rows KV rows of accumulators: 24 of 32 zmm (16 for the
/// narrower head groups), 12 of 16 ymm. Per d step a tile loads NV vectors and broadcasts
/// qk_rows values for NV * qk_rows FMAs: on Zen 5 a 4 x 4 zmm tile (0.5 loads per FMA)
/// ran at ~75 % of the FMA peak, the 4 x 6 tile (0.42) at ~92 %.
template <class A> inline constexpr int qk_max_nv = simd::is_avx512<A> ? 4 : (simd::is_scalar<A> ? 4 : 3);
template <class A, int NV>
inline constexpr int qk_rows = simd::is_avx512<A> ? (NV == 4 ? 6 : 16 / NV) : (simd::is_scalar<A> ? 4 : 12 / NV);
/// PV tile: pv_heads heads x pv_dvec d-vectors of accumulators (24 zmm, 12 ymm).
template <class A> inline constexpr int pv_heads = simd::is_avx512<A> ? 6 : (simd::is_scalar<A> ? 4 : 3);
template <class A> inline constexpr int pv_dvec = 4;

/// f32 copy of one bf16 row of `dim` (a multiple of 64) values.
template <class A> DSV4_INLINE void widen_row(const uint16_t* x, float* y, std::size_t dim) noexcept {
    for (std::size_t d = 0; d < dim; d += W<A>) simd::storeu(y + d, simd::load_bf16<A>(x + d));
}

/// Qt[d][h] = f32(q[h][d]) for h < hg, 0 for the padding heads up to hp.
template <class A>
DSV4_INLINE void load_q_transposed(const uint16_t* q, std::size_t hg, std::size_t dim, std::size_t hp, float* qt) noexcept {
    if constexpr (simd::is_scalar<A>) {
        for (std::size_t d = 0; d < dim; ++d)
            for (std::size_t h = 0; h < hp; ++h) qt[d * hp + h] = h < hg ? bf16_to_f32(q[h * dim + d]) : 0.0f;
    } else {
        // 8 x 8 (AVX2) or 16 x 16 (AVX-512) tiles: w heads x w dims in, transposed in registers
        using VF = simd::vf32<A>;
        constexpr int w = int(W<A>);
        for (std::size_t h0 = 0; h0 < hp; h0 += w)
            for (std::size_t d = 0; d < dim; d += w) {
                VF r[w];
                simd::unroll<w>([&](auto i) DSV4_LAMBDA_INLINE {
                    r[i] = h0 + i < hg ? simd::load_bf16<A>(q + (h0 + i) * dim + d) : VF(0.0f);
                });
                simd::transpose(A{}, r);
                simd::unroll<w>([&](auto k) DSV4_LAMBDA_INLINE { r[k].store_unaligned(qt + (d + k) * hp + h0); });
            }
    }
}

/// S[j][hv..hv+NV vectors] over d in [d0, d1) for rows j0..j0+R of Kf; `first` starts from 0.
template <class A, int NV, int R>
DSV4_INLINE void qk_tile(const float* qt, std::size_t hp, const float* kf, std::size_t ldk, float* s, std::size_t h0,
                         std::size_t j0, std::size_t d0, std::size_t d1, bool first) noexcept {
    using V = simd::freg<A>;
    constexpr std::size_t w = W<A>;
    V acc[R * NV];
    simd::unroll<R * NV>([&](auto i) DSV4_LAMBDA_INLINE {
        acc[i] = first ? V(0.0f) : simd::loadu<A>(s + (j0 + i / NV) * hp + h0 + (i % NV) * w);
    });
    const float* krow = kf + j0 * ldk;
    for (std::size_t d = d0; d < d1; ++d) {
        V qv[NV];
        simd::unroll<NV>([&](auto v) DSV4_LAMBDA_INLINE { qv[v] = simd::loadu<A>(qt + d * hp + h0 + v * w); });
        simd::unroll<R>([&](auto r) DSV4_LAMBDA_INLINE {
            const V k(krow[r * ldk + d]);
            simd::unroll<NV>([&](auto v) DSV4_LAMBDA_INLINE { acc[r * NV + v] = simd::fmadd(k, qv[v], acc[r * NV + v]); });
        });
    }
    simd::unroll<R * NV>([&](auto i) DSV4_LAMBDA_INLINE { simd::storeu(s + (j0 + i / NV) * hp + h0 + (i % NV) * w, acc[i]); });
}

template <class A, int NV>
DSV4_INLINE void qk_group(const float* qt, std::size_t hp, const float* kf, std::size_t n, std::size_t ldk, float* s,
                          std::size_t h0, std::size_t d0, std::size_t d1) noexcept {
    constexpr int R = qk_rows<A, NV>;
    for (std::size_t j = 0; j < n; j += R) qk_tile<A, NV, R>(qt, hp, kf, ldk, s, h0, j, d0, d1, d0 == 0);
}

template <class A> DSV4_INLINE std::size_t qk_rows_of(std::size_t nv) noexcept {
    switch (nv) {
        case 1: return qk_rows<A, 1>;
        case 2: return qk_rows<A, 2>;
        case 3: return qk_rows<A, 3>;
        default: return qk_rows<A, 4>;
    }
}

/// S[j][h] = sum_d Kf[j][d] * Qt[d][h] for j < n (f32, sequential in d). Zeroes the Kf rows
/// that pad n up to the tile heights used, so padding rows compute harmless zeros.
/// tick() runs after each d-chunk (the caller spreads its prefetches over the block).
template <class A, class Tick>
DSV4_INLINE void qk_block(const float* qt, std::size_t hp, float* kf, std::size_t n, std::size_t dim, float* s,
                          Tick&& tick) noexcept {
    constexpr std::size_t w = W<A>;
    const std::size_t nvec = hp / w;
    std::size_t npad = n;
    for (std::size_t hv = 0; hv < nvec; hv += std::size_t(qk_max_nv<A>)) {
        const std::size_t r = qk_rows_of<A>(std::min<std::size_t>(qk_max_nv<A>, nvec - hv));
        npad = std::max(npad, round_up(n, r));
    }
    const std::size_t ldk = kf_stride(dim);
    std::fill(kf + n * ldk, kf + npad * ldk, 0.0f);
    for (std::size_t d0 = 0; d0 < dim; d0 += qk_depth) {
        const std::size_t d1 = std::min(dim, d0 + qk_depth);
        for (std::size_t hv = 0; hv < nvec; hv += std::size_t(qk_max_nv<A>)) {
            const std::size_t h0 = hv * w;
            switch (std::min<std::size_t>(qk_max_nv<A>, nvec - hv)) {
                case 1: qk_group<A, 1>(qt, hp, kf, n, ldk, s, h0, d0, d1); break;
                case 2: qk_group<A, 2>(qt, hp, kf, n, ldk, s, h0, d0, d1); break;
                case 3: qk_group<A, 3>(qt, hp, kf, n, ldk, s, h0, d0, d1); break;
                default:
                    if constexpr (qk_max_nv<A> >= 4) qk_group<A, 4>(qt, hp, kf, n, ldk, s, h0, d0, d1);
                    break;
            }
        }
        tick();
    }
}

/// Online-softmax step for one block, per head lane: s = f32(dot * scale); m' = max(m, s);
/// alpha = e^(m - m'); p = e^(s - m'); l = f32(l*alpha) + sum_j p (unrounded p, in j order);
/// S[j] <- bf16(p) (official) or p. Padding heads run too (harmless zeros).
template <class A>
DSV4_INLINE void softmax_block(float* s, std::size_t n, std::size_t hp, float scale, float* m, float* l, float* alpha,
                               bool round_p) noexcept {
    using V = simd::freg<A>;
    constexpr std::size_t w = W<A>;
    const V sc(scale);
    for (std::size_t h = 0; h < hp; h += w) {
        V mx(-std::numeric_limits<float>::infinity());
        for (std::size_t j = 0; j < n; ++j) {
            const V sj = simd::rounded(simd::loadu<A>(s + j * hp + h) * sc);
            simd::storeu(s + j * hp + h, sj);
            mx = simd::vmax(mx, sj);
        }
        const V mo = simd::loadu<A>(m + h);
        const V mn = simd::vmax(mo, mx);
        const V al = simd::exp_f32(mo - mn);  // m = -inf (nothing seen yet): e^-inf = 0
        V sum(0.0f);
        for (std::size_t j = 0; j < n; ++j) {
            const V p = simd::exp_f32(simd::loadu<A>(s + j * hp + h) - mn);
            sum = sum + p;
            simd::storeu(s + j * hp + h, round_p ? simd::round_bf16_nonneg(p) : p);
        }
        simd::storeu(l + h, simd::rounded(simd::loadu<A>(l + h) * al) + sum);
        simd::storeu(m + h, mn);
        simd::storeu(alpha + h, al);
    }
}

/// O[h][d0 .. d0 + ND vectors] for heads h0..h0+NH: rescale by alpha, then add P·V over j.
/// `first` (the first block with a valid index): O is not read, it starts at 0 (= O*alpha,
/// alpha being e^-inf = 0 there).
template <class A, int NH, int ND>
DSV4_INLINE void pv_tile(const float* p, std::size_t n, std::size_t hp, const float* kf, std::size_t dim, float* o,
                         const float* alpha, std::size_t h0, std::size_t d0, bool first) noexcept {
    using V = simd::freg<A>;
    constexpr std::size_t w = W<A>;
    V acc[NH * ND];
    simd::unroll<NH * ND>([&](auto i) DSV4_LAMBDA_INLINE {
        acc[i] = first ? V(0.0f)
                       : simd::rounded(simd::loadu<A>(o + (h0 + i / ND) * dim + d0 + (i % ND) * w) * V(alpha[h0 + i / ND]));
    });
    const std::size_t ldk = kf_stride(dim);
    for (std::size_t j = 0; j < n; ++j) {
        V x[ND];
        simd::unroll<ND>([&](auto v) DSV4_LAMBDA_INLINE { x[v] = simd::loadu<A>(kf + j * ldk + d0 + v * w); });
        simd::unroll<NH>([&](auto i) DSV4_LAMBDA_INLINE {
            const V pj(p[j * hp + h0 + i]);
            simd::unroll<ND>([&](auto v) DSV4_LAMBDA_INLINE { acc[i * ND + v] = simd::fmadd(pj, x[v], acc[i * ND + v]); });
        });
    }
    simd::unroll<NH * ND>([&](auto i) DSV4_LAMBDA_INLINE { simd::storeu(o + (h0 + i / ND) * dim + d0 + (i % ND) * w, acc[i]); });
}

/// The last r < NH heads of a PV column slice.
template <class A, int NH, int ND>
DSV4_INLINE void pv_rest(std::size_t r, const float* p, std::size_t n, std::size_t hp, const float* kf, std::size_t dim,
                         float* o, const float* alpha, std::size_t h0, std::size_t d0, bool first) noexcept {
    if constexpr (NH > 1) {
        if (r == NH - 1) pv_tile<A, NH - 1, ND>(p, n, hp, kf, dim, o, alpha, h0, d0, first);
        else pv_rest<A, NH - 1, ND>(r, p, n, hp, kf, dim, o, alpha, h0, d0, first);
    }
}

/// O[h] = O[h]*alpha[h] + sum_j P[j][h] Kf[j] for h < hg; tick() after each d-chunk.
template <class A, class Tick>
DSV4_INLINE void pv_block(const float* p, std::size_t n, std::size_t hp, std::size_t hg, const float* kf, std::size_t dim,
                          float* o, const float* alpha, bool first, Tick&& tick) noexcept {
    constexpr int NH = pv_heads<A>, ND = pv_dvec<A>;
    constexpr std::size_t chunk = std::size_t(ND) * W<A>;
    for (std::size_t d0 = 0; d0 < dim; d0 += chunk) {
        std::size_t h = 0;
        for (; h + NH <= hg; h += NH) pv_tile<A, NH, ND>(p, n, hp, kf, dim, o, alpha, h, d0, first);
        if (h < hg) pv_rest<A, NH, ND>(hg - h, p, n, hp, kf, dim, o, alpha, h, d0, first);
        tick();
    }
}

/// One query row s, heads [h0, h1).
template <class A>
void attend_row(const sparse_attention_args& a, std::size_t s, std::size_t h0, std::size_t h1, float* ws) noexcept {
    using V = simd::freg<A>;
    constexpr std::size_t w = W<A>;
    const std::size_t dim = a.dim, hg = h1 - h0, hp = round_up(hg, head_pad<A>);
    const layout lay(hg, dim);
    float* qt = ws + lay.qt;
    float* o = ws + lay.o;
    float* kf = ws + lay.kf;
    float* sp = ws + lay.s;
    float* m = ws + lay.m;
    float* l = ws + lay.l;
    float* alpha = ws + lay.alpha;
    float* aux = ws + lay.aux;
    int32_t* list = reinterpret_cast<int32_t*>(ws + lay.list);


    const int32_t* ir = a.idx + s * a.idx_stride;
    const bool round_p = a.precision == attention_precision::official;
    // valid indices of the block at column b0, compacted into out (an all-masked block
    // changes nothing: alpha = 1 and no terms, so it is skipped)
    auto compact = [&](std::size_t b0, int32_t* out) {
        std::size_t n = 0;
        for (std::size_t c = b0, e = std::min(a.idx_len, b0 + block); c < e; ++c)
            if (ir[c] >= 0) out[n++] = ir[c];
        return n;
    };
    // While one block computes (~100k cycles), the next block's KV rows are prefetched, a
    // slice after each d-chunk of QK and PV (one burst of a thousand prefetches would
    // overrun the miss buffers): a decode step reads its rows cold, often from DRAM.
    const std::size_t lines_per_row = (dim * sizeof(uint16_t) + 63) / 64;
    const int32_t* pf_rows = nullptr;
    std::size_t pf_next = 0, pf_end = 0, pf_slice = 0;  // in cache lines
    auto prefetch = [&](const int32_t* rows, std::size_t n) {
        pf_rows = rows;
        pf_next = 0;
        pf_end = n * lines_per_row;
        pf_slice = (pf_end + 15) / 16;
    };
    auto prefetch_some = [&](std::size_t count) {
        for (const std::size_t e = std::min(pf_end, pf_next + count); pf_next < e; ++pf_next) {
            const std::size_t r = pf_next / lines_per_row, line = pf_next % lines_per_row;
            simd::prefetch_l2(reinterpret_cast<const char*>(a.kv + std::size_t(pf_rows[r]) * a.kv_stride) + line * 64);
        }
    };
    auto tick = [&] { prefetch_some(pf_slice); };
    int32_t* next = list + block;
    bool seen = false;  // a block with a valid index has been accumulated into O
    std::size_t n_next = compact(0, next);
    prefetch(next, n_next);  // the first block's rows load while q is transposed
    prefetch_some(pf_end);
    load_q_transposed<A>(a.q + s * a.q_stride + h0 * dim, hg, dim, hp, qt);
    std::fill(m, m + hp, -std::numeric_limits<float>::infinity());
    std::fill(l, l + hp, 0.0f);
    for (std::size_t b0 = 0; b0 < a.idx_len; b0 += block) {
        std::swap(list, next);
        const std::size_t n = n_next;
        n_next = b0 + block < a.idx_len ? compact(b0 + block, next) : 0;
        if (n == 0) continue;
        prefetch(next, n_next);
        for (std::size_t r = 0; r < n; ++r) widen_row<A>(a.kv + std::size_t(list[r]) * a.kv_stride, kf + r * kf_stride(dim), dim);
        qk_block<A>(qt, hp, kf, n, dim, sp, tick);
        softmax_block<A>(sp, n, hp, a.scale, m, l, alpha, round_p);
        pv_block<A>(sp, n, hp, hg, kf, dim, o, alpha, !seen, tick);
        prefetch_some(pf_end);
        seen = true;
    }

    // denominator: l + e^(sink - m); a head that saw no valid index (m = -inf) outputs 0
    for (std::size_t h = 0; h < hp; ++h) aux[h] = h < hg ? a.sink[h0 + h] : 0.0f;
    for (std::size_t h = 0; h < hp; h += w) {
        const V mm = simd::loadu<A>(m + h);
        simd::storeu(aux + h, simd::loadu<A>(l + h) + simd::exp_f32(simd::loadu<A>(aux + h) - mm));
    }
    for (std::size_t h = 0; h < hg; ++h) {
        uint16_t* out = a.out + s * a.out_stride + (h0 + h) * dim;
        if (m[h] == -std::numeric_limits<float>::infinity()) {
            std::fill(out, out + dim, uint16_t(0));
            continue;
        }
        const V den(aux[h]);
        for (std::size_t d = 0; d < dim; d += w) simd::store_bf16<A>(out + d, simd::loadu<A>(o + h * dim + d) / den);
    }
}

}  // namespace attn

/// Sparse attention for query rows [s0, s1) and heads [h0, h1) (spec §4 step 8).
/// Unchecked: the public entry points in dsv4/attention.hpp validate `a`. scratch holds
/// attn::layout(h1 - h0, dim).total floats; results do not depend on the row/head split.
template <class A>
void sparse_attention_rows(const sparse_attention_args& a, std::size_t s0, std::size_t s1, std::size_t h0,
                           std::size_t h1, float* scratch) noexcept {
    float* ws = reinterpret_cast<float*>((reinterpret_cast<std::uintptr_t>(scratch) + 63) & ~std::uintptr_t(63));
    for (std::size_t s = s0; s < s1; ++s) {
        if (s + 1 < s1) {  // the next row's q (64 KiB at V4 shapes) arrives while this row computes
            const char* q = reinterpret_cast<const char*>(a.q + (s + 1) * a.q_stride + h0 * a.dim);
            for (std::size_t o = 0, e = (h1 - h0) * a.dim * sizeof(uint16_t); o < e; o += 64) simd::prefetch_l2(q + o);
        }
        attn::attend_row<A>(a, s, h0, h1, ws);
    }
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
