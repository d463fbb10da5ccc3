// dsv4/kernels/gemm_bf16.hpp - register-blocked small-M GEMM of BF16 weights times bf16
// activations on avx512_bf16: y[m, n] = sum_k x[m, k] * w[n, k] for M >= gemm_bf16_min_m
// rows (bf16_gemv_bf16 in prefill: the compressors' wkv / wgate, the indexer's weights_proj,
// the MoE gate).
//
// Why: the row kernel (dot_bf16_bf16_row) loads an activation vector for every vdpbf16ps and
// a weight vector per M tile of 4 rows: 5 zmm loads per 4 dot products, and at K = 4096 a
// tile's 4 activation rows (32 KiB) come from L2. Here a tile of 4 activation rows x 4
// weight rows keeps 16 accumulators: 8 loads per 16 dot products.
//
// Numerics: the row kernel's bits, whatever M, the tile or the row split. Per (m, n) it keeps
// four vdpbf16ps chains (32-k step s of the whole-128 part in chain s % 4, the steps of the
// k % 128 remainder that fill 32 in chain 0 after its own), adds them ((c0 + c1) + c2) + c3,
// reduces the lanes (hsum) and adds the last k % 32 products with scalar FMAs. A chain depends
// only on its own steps in k order, so the GEMM runs the four chains one after the other
// ("chain-major", as gemm_ref.hpp) with the same instructions, then the same final sums.
// Layout and stack: gemm_ref.hpp's driver (run_block: row blocks of 32 weight rows, M tiles
// of 4, a last tile of 2-3 rows repeating its last row), a single leftover row to the row
// kernel; ~5 KiB of stack, no heap, no state. Other tiers keep the row kernel.
#pragma once

#include "../gemv_types.hpp"
#include "gemm_ref.hpp"
#include "gemv.hpp"

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace kernels {

/// Activation rows from which bf16_gemv_bf16_rows takes the GEMM on avx512_bf16.
inline constexpr std::size_t gemm_bf16_min_m = 4;

namespace gemm_bf16_detail {

#if defined(__AVX512BF16__)
inline constexpr std::size_t tile_mr = 4, tile_nr = 4;

/// Chain c of an MR x NR tile into out[(j * NR + n) * 16 ..]: steps 32 c, 32 c + 128, ... of
/// the whole-128 part (k4), and for chain 0 then the 32-steps of [k4, k32).
template <std::size_t MR, std::size_t NR>
DSV4_INLINE void chain(const uint16_t* const* w, const uint16_t* const* x, std::size_t k, std::size_t c,
                       float* out) noexcept {
    const std::size_t k4 = k / 128 * 128, k32 = k / 32 * 32;
    __m512 acc[MR][NR];
    for (auto& r : acc)
        for (auto& v : r) v = _mm512_setzero_ps();
    const auto step = [&](std::size_t i) DSV4_LAMBDA_INLINE {
        __m512bh wv[NR];
        for (std::size_t n = 0; n < NR; ++n) wv[n] = (__m512bh)_mm512_loadu_si512(w[n] + i);
        for (std::size_t j = 0; j < MR; ++j) {
            const __m512bh xv = (__m512bh)_mm512_loadu_si512(x[j] + i);
            for (std::size_t n = 0; n < NR; ++n) acc[j][n] = _mm512_dpbf16_ps(acc[j][n], wv[n], xv);
        }
    };
    for (std::size_t i = 32 * c; i < k4; i += 128) step(i);
    if (c == 0)
        for (std::size_t i = k4; i < k32; i += 32) step(i);
    for (std::size_t j = 0; j < MR; ++j)
        for (std::size_t n = 0; n < NR; ++n) _mm512_store_ps(out + (j * NR + n) * 16, acc[j][n]);
}

/// One tile: the four chains, then dot_bf16_bf16_row's final sums. y[j * NR + n].
template <class Arch, std::size_t MR, std::size_t NR>
DSV4_INLINE void tile(const uint16_t* const* w, const uint16_t* const* x, std::size_t k, float* y) noexcept {
    using vf = simd::vf32<Arch>;
    alignas(64) float ch[4][MR * NR * 16];
    for (std::size_t c = 0; c < 4; ++c) chain<MR, NR>(w, x, k, c, ch[c]);
    for (std::size_t j = 0; j < MR; ++j)
        for (std::size_t n = 0; n < NR; ++n) {
            const std::size_t i = j * NR + n;
            __m512 t = _mm512_load_ps(ch[0] + 16 * i);
            for (std::size_t c = 1; c < 4; ++c) t = _mm512_add_ps(t, _mm512_load_ps(ch[c] + 16 * i));
            float v = gemv_detail::hsum<Arch>(vf(t));
            for (std::size_t q = k / 32 * 32; q < k; ++q) v = std::fma(bf16_to_f32(w[n][q]), bf16_to_f32(x[j][q]), v);
            y[i] = v;
        }
}
#endif

}  // namespace gemm_bf16_detail

/// The GEMM over output rows [r0, r1) where the tier has it and x.m >= gemm_bf16_min_m
/// (returns true), else nothing (false: the caller runs the row kernel). Same bits as the
/// row kernel.
template <class Arch>
bool bf16_gemm_bf16_rows(const bf16_matrix& w, const bf16_rows& x, const gemv_out& out, std::size_t r0,
                         std::size_t r1) noexcept {
#if defined(__AVX512BF16__)
    if constexpr (std::is_base_of_v<arch::avx512_bf16, Arch>) {
        using namespace gemm_bf16_detail;
        if (x.m < gemm_bf16_min_m) return false;
        const std::size_t mg = gemm_ref_detail::gemm_rows(x.m, tile_mr);
        constexpr std::size_t NB = gemm_ref_detail::NB;  // run_block's row blocks
        for (std::size_t nb0 = r0; nb0 < r1; nb0 += NB) {
            const std::size_t nb1 = std::min(r1, nb0 + NB);
            const uint16_t* vr[NB];
            for (std::size_t n = nb0; n < nb1; ++n) vr[n - nb0] = w.w + n * w.w_stride;
            gemm_ref_detail::run_block<tile_mr, tile_nr>(
                vr, nb1 - nb0, x.x, x.stride, mg,
                [&](const uint16_t* const* pr, const uint16_t* const* xp, float* y) DSV4_LAMBDA_INLINE {
                    tile<Arch, tile_mr, tile_nr>(pr, xp, w.k, y);
                },
                [&](std::size_t m0, std::size_t mr, const float* y) DSV4_LAMBDA_INLINE {
                    gemm_ref_detail::plain_store{out}(nb0, nb1, m0, mr, y);
                });
        }
        if (mg < x.m) {  // a single leftover row: the row kernel
            for (std::size_t n = r0; n < r1; ++n) {
                const uint16_t* p[1] = {x.x + mg * x.stride};
                float v;
                gemv_detail::dot_bf16_bf16_row<Arch, 1>(w.w + n * w.w_stride, w.k, p, &v);
                gemv_detail::store_out(out, mg, n, v);
            }
        }
        return true;
    }
#endif
    (void)w, (void)x, (void)out, (void)r0, (void)r1;
    return false;
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
