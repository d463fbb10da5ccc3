// dsv4/kernels/gemm_fp8.hpp - register-blocked small-M GEMM for FP8 weights (e4m3, E8M0 per
// 128x128 block), fast numerics, every SIMD tier: y[m, n] = sum_k x[m, k] * w[n, k] for M >=
// fp8_gemm_min_m activation rows (prefill chunks, extend, MTP verification of long drafts).
//
// Why: the row kernels (gemv.hpp) decode a weight row once per M tile of 4 activation rows,
// so at M = 32 the decode runs 8 times and costs as much as the dot products. Here a panel
// of output rows x one 128-k block is transposed (e4m3 byte pairs, 16x16 on ymm) and decoded
// once into a buffer on the stack; a micro-kernel then runs every activation row over it:
//  * avx512_bf16 (bf16_variant): 32 output rows decoded to bf16 pairs, one zmm holding the
//    pair (w[n][2p], w[n][2p+1]) of 16 rows (8 KiB); tiles of 8 rows x 32 columns: per k
//    pair, 2 weight loads and 8 activation-pair broadcasts feed 16 vdpbf16ps.
//  * AVX2 tiers and AVX-512 without BF16 (f32_variant): 2 x lanes output rows (16 on ymm,
//    32 on zmm) decoded to f32, panel[k][n] (8 / 16 KiB); the tile's activation rows widened
//    to f32 once per block (3 / 6 KiB); tiles of 6 (AVX2) or 12 (AVX-512) rows x 2 vectors:
//    per k, 2 weight loads and one broadcast per row feed 2 FMAs per row (12 or 24
//    accumulators). The AVX2 tiers are the Core Ultra's (no bf16 dot product there).
//
// Numerics (fast FP8 mode, same products as dot_fp8_bf16_row): weights e4m3 * 2^-120 (bf16 or
// f32: every value exact; subnormal codes read as zero by vdpbf16ps on avx512_bf16, exact
// f32 subnormals on the f32 variant, as on each tier's row path), activations bf16 per block
// of 128 with their power-of-two shift; every (m, n) gets one f32 partial per 128-block (a
// chain of 64 vdpbf16ps steps or of 128 FMAs, 128 exact products), scaled once by
// 2^(e - 127 + 120 - shift) and added to an f32 accumulator in block order (one FMA,
// fp8_bf16_block_fma). Only the summation order inside a block and across blocks differs
// from the row path, so
//   |y_gemm - S| <= (128 + K/128) * 2^-24 * sum_k |a_k w_k|   (+ the output rounding)
// for the exact S of the same products; the row path's bound is K * 2^-24 * sum|a w|, so
// the two differ by at most the sum of both. Each (m, n) is computed by the same
// instruction sequence whatever [r0, r1), the M tiling or the panel width: results do not
// depend on the row split. The scalar tier keeps the row path (fp8_gemm_bf16_rows returns
// false there). Stack: at most 40 KiB (avx512_bf16: an 8 KiB panel, 32 KiB of accumulators),
// no heap, no state.
#pragma once

#include "../gemv_types.hpp"
#include "gemv.hpp"

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace kernels {

namespace gemm_fp8_detail {

#if defined(__AVX2__)
/// 16x16 transpose of 16-bit elements in ymm registers (r[i] element j -> r[j] element i):
/// 64 in-lane unpacks and lane permutes, half the cost of the same on zmm. Used on the raw
/// e4m3 byte pairs, before the decode widens them.
DSV4_INLINE void transpose16x16_epi16(__m256i* r) noexcept {
    __m256i a[16], b[16];
    for (int i = 0; i < 8; ++i) {  // a[2i + h], lane L: 32-bit (row 2i, 2i+1) of columns 8L + 4h + 0..3
        a[2 * i] = _mm256_unpacklo_epi16(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm256_unpackhi_epi16(r[2 * i], r[2 * i + 1]);
    }
    for (int j = 0; j < 4; ++j)  // b[4j + 2h + g], lane L: 64-bit rows 4j..4j+3 of columns 8L + 4h + 2g + 0..1
        for (int h = 0; h < 2; ++h) {
            b[4 * j + 2 * h] = _mm256_unpacklo_epi32(a[4 * j + h], a[4 * j + 2 + h]);
            b[4 * j + 2 * h + 1] = _mm256_unpackhi_epi32(a[4 * j + h], a[4 * j + 2 + h]);
        }
    for (int hg = 0; hg < 4; ++hg)  // column 8L + 2hg + f: rows 0..7 (c) and 8..15 (d) in lane L
        for (int f = 0; f < 2; ++f) {
            const __m256i c = f ? _mm256_unpackhi_epi64(b[hg], b[4 + hg]) : _mm256_unpacklo_epi64(b[hg], b[4 + hg]);
            const __m256i d = f ? _mm256_unpackhi_epi64(b[8 + hg], b[12 + hg]) : _mm256_unpacklo_epi64(b[8 + hg], b[12 + hg]);
            r[2 * hg + f] = _mm256_permute2x128_si256(c, d, 0x20);
            r[8 + 2 * hg + f] = _mm256_permute2x128_si256(c, d, 0x31);
        }
}

/// Loads 32 bytes (k pairs [16q, 16q + 16)) of weight rows c0 .. c0 + 15 of a block (rows
/// >= nr as zeros), prefetches the rows' next block (32 row streams are more than the
/// hardware prefetchers follow) and transposes: r[i] = the 16 rows' byte pairs of k pair
/// 16q + i.
DSV4_INLINE void load_pairs_transposed(const uint8_t* w, std::size_t stride, std::size_t nr, std::size_t c0,
                                       std::size_t q, __m256i* r) noexcept {
    if (q < 2)
        for (std::size_t i = 0; i < 16 && c0 + i < nr; ++i)
            _mm_prefetch(reinterpret_cast<const char*>(w + (c0 + i) * stride + 128 + 64 * q), _MM_HINT_T0);
    for (std::size_t i = 0; i < 16; ++i)
        r[i] = c0 + i < nr ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (c0 + i) * stride + 32 * q))
                           : _mm256_setzero_si256();
    transpose16x16_epi16(r);
}

/// Calls emit(p, c0, r) for the 64 k pairs p of one 128-k block and each group of 16 weight
/// rows c0 < PanelN: r = those rows' byte pairs of k pair p (load_pairs_transposed).
template <std::size_t PanelN, class Emit>
DSV4_INLINE void for_block_pairs(const uint8_t* w, std::size_t stride, std::size_t nr, Emit&& emit) noexcept {
    for (std::size_t c0 = 0; c0 < PanelN; c0 += 16)
        for (std::size_t q = 0; q < 4; ++q) {
            __m256i r[16];
            load_pairs_transposed(w, stride, nr, c0, q, r);
            for (std::size_t i = 0; i < 16; ++i) emit(16 * q + i, c0, r[i]);
        }
}

#endif

// ---------------------------------------------------------------------------------------
// avx512_bf16: panels of bf16 pairs, vdpbf16ps.
#if defined(__AVX512BF16__)
struct bf16_variant {
    static constexpr std::size_t panel_n = 32;  // output rows per panel (two zmm of 16 lanes)
    static constexpr std::size_t tile_m = 8;    // activation rows per micro-tile (16 accumulators)
    // activation rows per f32 accumulator tile (32 KiB): the panel of a block is decoded once
    // per chunk, so at 64 rows a 512-token prefill decoded every block 8 times (M = 512,
    // standalone, Zen 4: 170-175 -> 192-193 GFLOP/s at K = 4096, 183 -> 190 at K = 1024;
    // 512 rows: no better)
    static constexpr std::size_t chunk_m = 256;
    using panel_t = uint32_t;                   // a bf16 pair
    static constexpr std::size_t panel_elems = 64 * panel_n;

    /// Decodes one 128-k block of weight rows [0, nr) (nr <= 32; rows at stride `stride`
    /// bytes) into panel[p * 32 + c] = bf16 pair (w[c][2p], w[c][2p + 1]) * 2^-120, p < 64;
    /// columns c >= nr are zero.
    static DSV4_INLINE void pack(const uint8_t* w, std::size_t stride, std::size_t nr, uint32_t* panel) noexcept {
        for_block_pairs<panel_n>(w, stride, nr, [&](std::size_t p, std::size_t c0, __m256i r) {
            _mm512_store_si512(panel + p * panel_n + c0, simd::fp8_to_bf16_words(r));
        });
    }

    /// MT activation rows x 32 columns over one packed block: p[2j + h] (lanes = columns
    /// 16h..16h+15) = sum over the block's 64 k pairs, one vdpbf16ps chain per accumulator.
    template <std::size_t MT>
    static DSV4_INLINE void tile(const uint32_t* panel, const uint16_t* const* x, __m512* p) noexcept {
        for (std::size_t i = 0; i < 2 * MT; ++i) p[i] = _mm512_setzero_ps();
        for (std::size_t kp = 0; kp < 64; ++kp) {
            const __m512bh b0 = (__m512bh)_mm512_load_si512(panel + kp * panel_n);
            const __m512bh b1 = (__m512bh)_mm512_load_si512(panel + kp * panel_n + 16);
            DSV4_UNROLL
            for (std::size_t j = 0; j < MT; ++j) {
                int32_t pair;
                std::memcpy(&pair, x[j] + 2 * kp, 4);
                const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
                p[2 * j] = _mm512_dpbf16_ps(p[2 * j], a, b0);
                p[2 * j + 1] = _mm512_dpbf16_ps(p[2 * j + 1], a, b1);
            }
        }
    }

    /// acc[j][0..32) += block partials * 2^(e - 127 + 120 - shift_j) (fp8_bf16_block_fma).
    template <std::size_t MT>
    static DSV4_INLINE void tile_block(const uint32_t* panel, const bf16_block_rows& x, std::size_t m0,
                                       std::size_t blk, uint8_t e, float* acc) noexcept {
        using vf = simd::vf32<arch::avx512_bf16>;
        const uint16_t* xp[MT];
        for (std::size_t j = 0; j < MT; ++j) xp[j] = x.x + (m0 + j) * x.x_stride + blk * 128;
        __m512 p[2 * MT];
        tile<MT>(panel, xp, p);
        for (std::size_t j = 0; j < MT; ++j) {
            const int d = 120 - x.shift[(m0 + j) * x.shift_stride + blk];
            float* a = acc + j * panel_n;
            for (std::size_t h = 0; h < 2; ++h) {
                const vf r = gemv_detail::fp8_bf16_block_fma(vf(p[2 * j + h]), e, d, vf::load_aligned(a + 16 * h));
                r.store_aligned(a + 16 * h);
            }
        }
    }
};
#endif

// ---------------------------------------------------------------------------------------
// AVX2 tiers and AVX-512 without BF16: panels of f32 weights, FMAs.
#if defined(__AVX2__)
/// Position of activation k (< 128) in a widened block: groups of 16 split by parity
/// ([x0, x2, .., x14, x1, x3, .., x15]), the order one shift and one mask produce.
constexpr std::size_t widened_index(std::size_t k) noexcept { return 16 * (k / 16) + 8 * (k % 2) + (k % 16) / 2; }

/// One block (128) of bf16 activations to f32 in widened_index order (exact).
DSV4_INLINE void widen_block(const uint16_t* x, float* out) noexcept {
    for (std::size_t g = 0; g < 8; ++g) {
        __m256 even, odd;
        simd::bf16_pairs_to_f32(arch::avx2{}, x + 16 * g, even, odd);
        _mm256_store_ps(out + 16 * g, even);
        _mm256_store_ps(out + 16 * g + 8, odd);
    }
}

template <class Arch> struct f32_variant {
    using vf = simd::vf32<Arch>;
    static constexpr std::size_t L = simd::lanes<Arch>();
    static constexpr std::size_t panel_n = 2 * L;  // output rows per panel (two vectors)
    // activation rows per micro-tile: 2 * tile_m accumulators + 2 weight vectors (+ a
    // broadcast on AVX2, whose FMAs have no broadcast operand) in 16 ymm / 32 zmm registers
    static constexpr std::size_t tile_m = L == 16 ? 12 : 6;
    static constexpr std::size_t chunk_m = 64;  // activation rows per f32 accumulator tile (4 or 8 KiB)
    using panel_t = float;
    static constexpr std::size_t panel_elems = 128 * panel_n;  // 8 KiB (AVX2) or 16 KiB

    /// Decodes one 128-k block of weight rows [0, nr) (nr <= panel_n) into panel[k *
    /// panel_n + c] = w[c][k] * 2^-120 as f32 (exact, subnormal codes included); columns c
    /// >= nr are zero.
    static DSV4_INLINE void pack(const uint8_t* w, std::size_t stride, std::size_t nr, float* panel) noexcept {
        for_block_pairs<panel_n>(w, stride, nr, [&](std::size_t p, std::size_t c0, __m256i r) {
            float* even = panel + 2 * p * panel_n + c0;  // k = 2p
            float* odd = even + panel_n;                 // k = 2p + 1
#  if defined(__AVX512F__) && defined(__AVX512BW__)
            if constexpr (L == 16) {
                __m512 e, o;
                simd::bf16_words_to_f32_pairs(simd::fp8_to_bf16_words(r), e, o);
                _mm512_store_ps(even, e);
                _mm512_store_ps(odd, o);
                return;
            }
#  endif
            for (std::size_t h = 0; h < 2; ++h) {  // rows c0 + 8h .. c0 + 8h + 7
                __m256 e, o;
                simd::bf16_words_to_f32_pairs(
                    simd::fp8_to_bf16_words(h ? _mm256_extracti128_si256(r, 1) : _mm256_castsi256_si128(r)), e, o);
                _mm256_store_ps(even + 8 * h, e);
                _mm256_store_ps(odd + 8 * h, o);
            }
        });
    }

    /// acc[j][0..panel_n) += (sum over the block of w * x, one FMA chain per accumulator in
    /// k order) * 2^(e - 127 + 120 - shift_j) (fp8_bf16_block_fma).
    template <std::size_t MT>
    static DSV4_INLINE void tile_block(const float* panel, const bf16_block_rows& x, std::size_t m0, std::size_t blk,
                                       uint8_t e, float* acc) noexcept {
        alignas(64) float xw[MT][128];
        for (std::size_t j = 0; j < MT; ++j) widen_block(x.x + (m0 + j) * x.x_stride + blk * 128, xw[j]);
        vf p[2 * MT];
        for (auto& v : p) v = vf(0.0f);
        for (std::size_t g = 0; g < 128; g += 16) {
            DSV4_UNROLL
            for (std::size_t kk = 0; kk < 16; ++kk) {
                const std::size_t k = g + kk, xi = widened_index(k);
                const vf w0 = vf::load_aligned(panel + k * panel_n), w1 = vf::load_aligned(panel + k * panel_n + L);
                DSV4_UNROLL
                for (std::size_t j = 0; j < MT; ++j) {
                    const vf a(xw[j][xi]);
                    p[2 * j] = simd::fmadd(w0, a, p[2 * j]);
                    p[2 * j + 1] = simd::fmadd(w1, a, p[2 * j + 1]);
                }
            }
        }
        for (std::size_t j = 0; j < MT; ++j) {
            const int d = 120 - x.shift[(m0 + j) * x.shift_stride + blk];
            float* a = acc + j * panel_n;
            for (std::size_t h = 0; h < 2; ++h)
                gemv_detail::fp8_bf16_block_fma(p[2 * j + h], e, d, vf::load_aligned(a + L * h)).store_aligned(a + L * h);
        }
    }
};
#endif

/// Runs V::tile_block<r> for a tile of r rows, 1 <= r <= MT.
template <class V, std::size_t MT = V::tile_m>
DSV4_INLINE void tile_rows(std::size_t r, const typename V::panel_t* panel, const bf16_block_rows& x, std::size_t m0,
                           std::size_t blk, uint8_t e, float* acc) noexcept {
    if constexpr (MT > 0) {
        if (r == MT) V::template tile_block<MT>(panel, x, m0, blk, e, acc);
        else tile_rows<V, MT - 1>(r, panel, x, m0, blk, e, acc);
    }
}

/// The GEMM over output rows [r0, r1): panels of V::panel_n rows (never crossing a 128-row
/// scale block: one E8M0 per k-block), activation rows in chunks of V::chunk_m whose f32
/// accumulators live on the stack; per 128-k block the panel is decoded once and every
/// tile of the chunk runs over it.
template <class V>
DSV4_INLINE void run(const fp8_matrix& w, const bf16_block_rows& x, const gemv_out& out, std::size_t r0,
                     std::size_t r1) noexcept {
    constexpr std::size_t PN = V::panel_n;
    alignas(64) typename V::panel_t panel[V::panel_elems];
    alignas(64) float acc[V::chunk_m * PN];
    const std::size_t nb = w.k / 128;
    for (std::size_t n0 = r0; n0 < r1;) {
        const std::size_t n1 = std::min({r1, n0 + PN, (n0 / 128 + 1) * 128});
        const uint8_t* srow = w.scale + (n0 / 128) * w.scale_stride;
        for (std::size_t c0 = 0; c0 < x.m; c0 += V::chunk_m) {
            const std::size_t cm = std::min(V::chunk_m, x.m - c0);
            std::fill(acc, acc + cm * PN, 0.0f);
            for (std::size_t b = 0; b < nb; ++b) {
                V::pack(w.w + n0 * w.w_stride + b * 128, w.w_stride, n1 - n0, panel);
                // tiles of balanced sizes (8 rows: 4 + 4, not 6 + 2): a short tile has too few
                // accumulator chains to cover the FMA latency
                const std::size_t tiles = (cm + V::tile_m - 1) / V::tile_m;
                for (std::size_t t = 0, m0 = c0; t < tiles; ++t) {
                    const std::size_t r = (c0 + cm - m0 + (tiles - t) - 1) / (tiles - t);
                    if (r == V::tile_m) V::template tile_block<V::tile_m>(panel, x, m0, b, srow[b], acc + (m0 - c0) * PN);
                    else tile_rows<V>(r, panel, x, m0, b, srow[b], acc + (m0 - c0) * PN);
                    m0 += r;
                }
            }
            for (std::size_t j = 0; j < cm; ++j)
                for (std::size_t n = n0; n < n1; ++n) gemv_detail::store_out(out, c0 + j, n, acc[j * PN + (n - n0)]);
        }
        n0 = n1;
    }
}

}  // namespace gemm_fp8_detail

/// The GEMM over output rows [r0, r1), fast FP8 numerics (header comment). Returns false,
/// doing nothing, on the scalar tier or where x.m < min_m (the caller then runs the row
/// kernel); the GEMM itself takes any m >= 1.
template <class Arch>
bool fp8_gemm_bf16_rows(const fp8_matrix& w, const bf16_block_rows& x, const gemv_out& out, std::size_t r0,
                        std::size_t r1, std::size_t min_m) noexcept {
    if (x.m < min_m) return false;
#if defined(__AVX512BF16__)
    if constexpr (std::is_base_of_v<arch::avx512_bf16, Arch>) {
        gemm_fp8_detail::run<gemm_fp8_detail::bf16_variant>(w, x, out, r0, r1);
        return true;
    } else
#endif
#if defined(__AVX2__)
    if constexpr (!simd::is_scalar<Arch>) {
        gemm_fp8_detail::run<gemm_fp8_detail::f32_variant<Arch>>(w, x, out, r0, r1);
        return true;
    } else
#endif
    {
        (void)w, (void)x, (void)out, (void)r0, (void)r1;
        return false;
    }
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
