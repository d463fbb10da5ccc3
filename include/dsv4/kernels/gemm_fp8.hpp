// dsv4/kernels/gemm_fp8.hpp - register-blocked small-M GEMM for FP8 weights (e4m3, E8M0 per
// 128x128 block), fast numerics on avx512_bf16: y[m, n] = sum_k x[m, k] * w[n, k] for M >=
// fp8_gemm_min_m activation rows (prefill chunks, extend, MTP verification of long drafts).
//
// Why: the row kernels (gemv.hpp) decode a weight row once per M tile of 4 activation rows,
// so at M = 32 the decode runs 8 times and costs as much as the dot products. Here a panel
// of up to 32 output rows x one 128-k block is transposed (e4m3 byte pairs) and decoded once
// to bf16 pairs, so that one zmm holds the pair (w[n][2p], w[n][2p+1]) of 16 output rows, into
// a buffer on the stack (8 KiB); a micro-kernel then runs every activation row over it in
// tiles of 8 rows x 32 columns: per k pair, 2 weight loads and 8 broadcasts feed 16 vdpbf16ps.
//
// Numerics (fast FP8 mode, same products as dot_fp8_bf16_row): weights e4m3 * 2^-120 as bf16
// (subnormal codes read as zero by vdpbf16ps, as on the row path), activations bf16 per block
// of 128 with their power-of-two shift; every (m, n) gets one f32 partial per 128-block (a
// chain of 64 vdpbf16ps steps, 128 exact products), scaled once by 2^(e - 127 + 120 - shift)
// and added to an f32 accumulator in block order (one FMA, fp8_bf16_block_fma). Only the
// summation order inside a block and across blocks differs from the row path, so
//   |y_gemm - S| <= (128 + K/128) * 2^-24 * sum_k |a_k w_k|   (+ the output rounding)
// for the exact S of the same (DAZ) products; the row path's bound is K * 2^-24 * sum|a w|,
// so the two differ by at most the sum of both. Each (m, n) is computed by the same
// instruction sequence whatever [r0, r1), the M tiling or the panel width: results do not
// depend on the row split. Tiers other than avx512_bf16 keep the row path (a dispatch
// choice: fp8_gemm_bf16_rows returns false there).
#pragma once

#include "../gemv_types.hpp"
#include "gemv.hpp"

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace kernels {

namespace gemm_fp8_detail {

inline constexpr std::size_t panel_n = 32;  // output rows per panel (two zmm of 16 lanes)
inline constexpr std::size_t tile_m = 8;    // activation rows per micro-tile (16 accumulators)
inline constexpr std::size_t chunk_m = 64;  // activation rows per f32 accumulator tile (8 KiB)

#if defined(__AVX512BF16__)
/// 16x16 transpose of 16-bit elements in ymm registers (r[i] element j -> r[j] element i):
/// 64 in-lane unpacks and lane permutes, half the cost of the same on zmm. Used on the raw
/// e4m3 byte pairs, before the decode doubles their width.
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

/// Decodes one 128-k block of weight rows [0, nr) (nr <= 32; rows at stride `stride` bytes)
/// into panel[p * 32 + c] = bf16 pair (w[c][2p], w[c][2p + 1]) * 2^-120, p < 64; columns c >=
/// nr are zero. The byte pairs are transposed first, then decoded as fp8_to_bf16_bits does.
/// The rows' next block (the next call's) is prefetched: 32 row streams are more than the
/// hardware prefetchers follow.
DSV4_INLINE void pack_bf16_panel(const uint8_t* w, std::size_t stride, std::size_t nr, uint32_t* panel) noexcept {
    for (std::size_t c0 = 0; c0 < panel_n; c0 += 16)
        for (std::size_t q = 0; q < 4; ++q) {  // k pairs [16q, 16q + 16): 32 bytes of each row
            __m256i r[16];
            if (q < 2)
                for (std::size_t i = 0; i < 16 && c0 + i < nr; ++i)
                    _mm_prefetch(reinterpret_cast<const char*>(w + (c0 + i) * stride + 128 + 64 * q), _MM_HINT_T0);
            for (std::size_t i = 0; i < 16; ++i)
                r[i] = c0 + i < nr ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (c0 + i) * stride + 32 * q))
                                   : _mm256_setzero_si256();
            transpose16x16_epi16(r);
            for (std::size_t i = 0; i < 16; ++i) {
                const __m512i v = _mm512_cvtepi8_epi16(r[i]);
                _mm512_store_si512(panel + (16 * q + i) * panel_n + c0,
                                   _mm512_and_si512(_mm512_slli_epi16(v, 4), _mm512_set1_epi16(int16_t(0x87F0))));
            }
        }
}

/// MT activation rows x 32 columns over one packed block: p[j][h] (lanes = columns 16h..16h+15)
/// = sum over the block's 64 k pairs, one vdpbf16ps chain per accumulator.
template <std::size_t MT>
DSV4_INLINE void bf16_tile(const uint32_t* panel, const uint16_t* const* x, __m512* p) noexcept {
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
DSV4_INLINE void bf16_tile_block(const uint32_t* panel, const bf16_block_rows& x, std::size_t m0, std::size_t blk,
                                 uint8_t e, float* acc) noexcept {
    using vf = simd::vf32<arch::avx512_bf16>;
    const uint16_t* xp[MT];
    for (std::size_t j = 0; j < MT; ++j) xp[j] = x.x + (m0 + j) * x.x_stride + blk * 128;
    __m512 p[2 * MT];
    bf16_tile<MT>(panel, xp, p);
    for (std::size_t j = 0; j < MT; ++j) {
        const int d = 120 - x.shift[(m0 + j) * x.shift_stride + blk];
        float* a = acc + j * panel_n;
        for (std::size_t h = 0; h < 2; ++h) {
            const vf r = gemv_detail::fp8_bf16_block_fma(vf(p[2 * j + h]), e, d, vf::load_aligned(a + 16 * h));
            r.store_aligned(a + 16 * h);
        }
    }
}
#endif

}  // namespace gemm_fp8_detail

/// The GEMM over output rows [r0, r1), fast FP8 numerics (header comment). Returns false,
/// doing nothing, where the tier has no GEMM or x.m < fp8_gemm_min_m (the caller then runs
/// the row kernel); the GEMM itself takes any m >= 1.
template <class Arch>
bool fp8_gemm_bf16_rows(const fp8_matrix& w, const bf16_block_rows& x, const gemv_out& out, std::size_t r0,
                        std::size_t r1, std::size_t min_m) noexcept {
#if defined(__AVX512BF16__)
    if constexpr (std::is_base_of_v<arch::avx512_bf16, Arch>) {
        if (x.m < min_m) return false;
        using namespace gemm_fp8_detail;
        alignas(64) uint32_t panel[64 * panel_n];
        alignas(64) float acc[chunk_m * panel_n];
        const std::size_t nb = w.k / 128;
        for (std::size_t n0 = r0; n0 < r1;) {
            // a panel never crosses a 128-row scale block: one E8M0 per k-block
            const std::size_t n1 = std::min({r1, n0 + panel_n, (n0 / 128 + 1) * 128});
            const uint8_t* srow = w.scale + (n0 / 128) * w.scale_stride;
            for (std::size_t c0 = 0; c0 < x.m; c0 += chunk_m) {
                const std::size_t cm = std::min(chunk_m, x.m - c0);
                std::fill(acc, acc + cm * panel_n, 0.0f);
                for (std::size_t b = 0; b < nb; ++b) {
                    pack_bf16_panel(w.w + n0 * w.w_stride + b * 128, w.w_stride, n1 - n0, panel);
                    std::size_t m0 = c0;
                    for (; m0 + tile_m <= c0 + cm; m0 += tile_m)
                        bf16_tile_block<tile_m>(panel, x, m0, b, srow[b], acc + (m0 - c0) * panel_n);
                    float* a = acc + (m0 - c0) * panel_n;
                    switch (c0 + cm - m0) {
                        case 7: bf16_tile_block<7>(panel, x, m0, b, srow[b], a); break;
                        case 6: bf16_tile_block<6>(panel, x, m0, b, srow[b], a); break;
                        case 5: bf16_tile_block<5>(panel, x, m0, b, srow[b], a); break;
                        case 4: bf16_tile_block<4>(panel, x, m0, b, srow[b], a); break;
                        case 3: bf16_tile_block<3>(panel, x, m0, b, srow[b], a); break;
                        case 2: bf16_tile_block<2>(panel, x, m0, b, srow[b], a); break;
                        case 1: bf16_tile_block<1>(panel, x, m0, b, srow[b], a); break;
                        default: break;
                    }
                }
                for (std::size_t j = 0; j < cm; ++j)
                    for (std::size_t n = n0; n < n1; ++n)
                        gemv_detail::store_out(out, c0 + j, n, acc[j * panel_n + (n - n0)]);
            }
            n0 = n1;
        }
        return true;
    }
#endif
    (void)w, (void)x, (void)out, (void)r0, (void)r1, (void)min_m;
    return false;
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
