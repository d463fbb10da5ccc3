// dsv4/kernels/gemm_ref.hpp - register-blocked small-M GEMM of the reference numerics (f32
// activations) on FP8 and FP4 weights, AVX-512 tiers: y[m, n] = sum_k x[m, k] * w[n, k] for
// M >= gemm_ref_min_m activation rows (prefill chunks and extend in reference mode).
//
// Why: the row kernels (dot_fp8_row, dot_fp4_row) load every activation vector once per
// FMA: on a core that retires one 512-bit load and one 512-bit FMA per cycle (Zen 4) that
// load stream, mostly from L2 at M = 64, caps them at 0.22-0.35 of the FMA ceiling. Here a
// tile of MR activation rows x NR weight rows keeps MR x NR accumulators in registers: each
// decoded weight vector serves MR rows and each activation vector NR weight rows.
//
// Numerics: the same bits as the row kernels, whatever M, the tile or the row split. The row
// kernels keep, per (m, n), a few independent f32 chains (the FP8 row: chain (k / 16) % 4,
// one FMA of the scale-folded weights per 16 k; the FP4 row: chain (k / 32) % 4, one FMA of
// the block partial times its scale per 32 k) and add them in a fixed order at the end. A
// chain's sum depends only on its own steps in k order, so the GEMM runs the chains one
// after the other ("chain-major": one register per (m, n) instead of four) with the very
// same operations, then adds the four results exactly as the row kernel does and reduces
// them with the same horizontal sum. FP8 blocks whose scale is outside the fold range
// (fp8_fold_e_min..max: never in a real checkpoint) take the row kernel for the whole row
// block, which is then the same code as before.
//
// Layout: rows [r0, r1) in row blocks of NB; per block, M tiles of MR rows (a last tile of
// fewer rows repeats its last row; a remainder of under MR / 2 rows takes the row kernel),
// per tile, panels of NR weight rows (the last one repeats its last row). Stack: about
// 6 KiB, no heap, no state.
// The AVX2 tiers and scalar keep the row kernels: the AVX2 FP8 row is already a 4 x 1 tile at
// ~0.4 of its FMA ceiling whatever M, and the variants with its bits (K slices, 6- and
// 8-row tiles, a shared decoded block) measured 0.4-1.28x (docs/benchmarks.md).
#pragma once

#include "../gemv_types.hpp"
#include "gemv.hpp"

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace kernels {

namespace gemm_ref_detail {

/// One weight row of a panel: its bytes and its E8M0 block scales (one per block of k).
struct wrow {
    const uint8_t* w;
    const uint8_t* s;
};

/// Weight rows per row block: their bytes (128 KiB of FP8 at k = 4096) stay in L2 while
/// every M tile runs over them.
inline constexpr std::size_t NB = 32;

#if defined(__AVX512F__) && defined(__AVX512BW__)
template <class A> inline constexpr bool supported = simd::is_avx512<A>;

/// Tiles of 4 activation rows x 4 weight rows: 16 accumulators, then 4 decoded weight vectors
/// (FP8) or 8 (FP4) and the activations of 32 zmm. 4 x 4 measured best on Zen 4 for both
/// (1.0-1.6x the rate of 6 x 4, 5 x 4, 8 x 3 or 7 x 3, which spill or starve the load port).
inline constexpr std::size_t tile_mr = 4, tile_nr = 4;

/// The FP8 row kernel's fold factor 2^(e - 7) = E8M0(e) * 2^120 for e in the fold range, as
/// a table: a load and a broadcast per weight row and block (computing it there, as the row
/// kernel does, cost the tile a quarter of its rate on Zen 4: 58-74 -> 45 GFLOP/s).
struct fp8_fold_lut {
    float v[256];
    constexpr fp8_fold_lut() : v() {
        for (unsigned e = gemv_detail::fp8_fold_e_min; e <= gemv_detail::fp8_fold_e_max; ++e)
            v[e] = gemv_detail::e8m0.v[e] * 0x1p120f;
    }
};
inline constexpr fp8_fold_lut fp8_fold{};

/// FP8 chain c of an MR x NR tile: for every 16-k step s with s % 4 == c, in k order,
/// acc[j][n] = fma(e4m3(w_n[16s..]) * fold(e_n), x_j[16s..], acc[j][n]) - dot_fp8_row's
/// chain c. out[(j * NR + n) * 16 ..] gets the 16 lanes.
template <class Arch, std::size_t MR, std::size_t NR>
DSV4_INLINE void fp8_chain(const wrow* rows, const float* const* x, std::size_t k, std::size_t c, float* out) noexcept {
    using vf = simd::vf32<Arch>;
    vf acc[MR][NR];
    for (auto& a : acc)
        for (auto& v : a) v = vf(0.0f);
    for (std::size_t b0 = 0; b0 < k; b0 += 128) {
        vf f[NR];
        for (std::size_t n = 0; n < NR; ++n) f[n] = vf(fp8_fold.v[rows[n].s[b0 / 128]]);
        DSV4_UNROLL
        for (std::size_t h = 0; h < 2; ++h) {
            const std::size_t o = b0 + 16 * (c + 4 * h);
            vf wv[NR];
            for (std::size_t n = 0; n < NR; ++n) wv[n] = vf(simd::fp8_to_f32_bits(Arch{}, rows[n].w + o)) * f[n];
            for (std::size_t j = 0; j < MR; ++j) {
                const vf xv = vf::load_unaligned(x[j] + o);
                for (std::size_t n = 0; n < NR; ++n) acc[j][n] = simd::fmadd(wv[n], xv, acc[j][n]);
            }
        }
    }
    for (std::size_t j = 0; j < MR; ++j)
        for (std::size_t n = 0; n < NR; ++n) acc[j][n].store_aligned(out + (j * NR + n) * 16);
}

/// FP4 chain a: blocks b with b % 4 == a, in k order: p = w0 * x0 + w1 * x1 (the block's
/// 32 products, as dot_fp4_row), acc[j][n] = fma(p, E8M0(e_nb) / 2, acc[j][n]).
template <class Arch, std::size_t MR, std::size_t NR>
DSV4_INLINE void fp4_chain(const wrow* rows, const float* const* x, std::size_t k, std::size_t a, float* out) noexcept {
    using vf = simd::vf32<Arch>;
    vf acc[MR][NR];
    for (auto& r : acc)
        for (auto& v : r) v = vf(0.0f);
    for (std::size_t b0 = 32 * a; b0 < k; b0 += 128) {
        vf wv[NR][2];
        for (std::size_t n = 0; n < NR; ++n) simd::fp4_block_to_f32x2(Arch{}, rows[n].w + b0 / 2, wv[n]);
        for (std::size_t j = 0; j < MR; ++j) {
            const vf x0 = vf::load_unaligned(x[j] + b0), x1 = vf::load_unaligned(x[j] + b0 + 16);
            for (std::size_t n = 0; n < NR; ++n) {
                const vf p = simd::fmadd(wv[n][1], x1, wv[n][0] * x0);
                acc[j][n] = simd::fmadd(p, vf(gemv_detail::e8m0.v[rows[n].s[b0 / 32]] * 0.5f), acc[j][n]);
            }
        }
    }
    for (std::size_t j = 0; j < MR; ++j)
        for (std::size_t n = 0; n < NR; ++n) acc[j][n].store_aligned(out + (j * NR + n) * 16);
}

/// One MR x NR tile: the four chains, then the row kernels' final sum. y[j * NR + n].
template <class Arch, bool Fp8, std::size_t MR, std::size_t NR>
DSV4_INLINE void tile(const wrow* rows, const float* const* x, std::size_t k, float* y) noexcept {
    using vf = simd::vf32<Arch>;
    alignas(64) float ch[4][MR * NR * 16];
    for (std::size_t c = 0; c < 4; ++c) {
        if constexpr (Fp8) fp8_chain<Arch, MR, NR>(rows, x, k, c, ch[c]);
        else fp4_chain<Arch, MR, NR>(rows, x, k, c, ch[c]);
    }
    for (std::size_t i = 0; i < MR * NR; ++i) {
        const vf a0 = vf::load_aligned(ch[0] + 16 * i), a1 = vf::load_aligned(ch[1] + 16 * i),
                 a2 = vf::load_aligned(ch[2] + 16 * i), a3 = vf::load_aligned(ch[3] + 16 * i);
        if constexpr (Fp8) y[i] = gemv_detail::hsum<Arch>((a0 + a1) + (a2 + a3));  // dot_fp8_row's order
        else y[i] = gemv_detail::hsum<Arch>(((a0 + a1) + a2) + a3);                // dot_fp4_row's
    }
}
#else
template <class A> inline constexpr bool supported = false;
#endif

/// Activation rows [0, mg) run in GEMM tiles; [mg, m) (under MR / 2 rows past the last full
/// tile) go to the row kernel.
inline std::size_t gemm_rows(std::size_t m, std::size_t mr) noexcept {
    const std::size_t r = m % mr;
    return (r == 0 || 2 * r >= mr) ? m : m - r;
}

/// Runs the tiles of one row block (here and in gemm_bf16.hpp): vr[0..nv) are its weight
/// rows (for gate+up, w1's then w3's; nv <= 2 NB), x its activation rows (x_stride elements
/// apart, [0, mg) in tiles); tile(pr, xp, y) fills y[j * NR + n] for MR activation rows x NR
/// weight rows (a short last tile repeats its last row, a short last panel its last weight
/// row); emit(m0, mr, y) gets y[j * nv + v] for the tile's rows m0 .. m0 + mr.
template <std::size_t MR, std::size_t NR, class W, class T, class Tile, class Emit>
DSV4_INLINE void run_block(const W* vr, std::size_t nv, const T* x, std::size_t x_stride, std::size_t mg, Tile&& tile,
                           Emit&& emit) noexcept {
    alignas(64) float yb[MR * 2 * NB];
    for (std::size_t m0 = 0; m0 < mg; m0 += MR) {
        const std::size_t mr = std::min(MR, mg - m0);
        const T* xp[MR];
        for (std::size_t j = 0; j < MR; ++j) xp[j] = x + (m0 + std::min(j, mr - 1)) * x_stride;
        for (std::size_t v0 = 0; v0 < nv; v0 += NR) {
            W pr[NR];
            for (std::size_t n = 0; n < NR; ++n) pr[n] = vr[std::min(v0 + n, nv - 1)];
            float y[MR * NR];
            tile(static_cast<const W*>(pr), static_cast<const T* const*>(xp), y);
            for (std::size_t j = 0; j < mr; ++j)
                for (std::size_t n = 0; n < NR && v0 + n < nv; ++n) yb[j * nv + v0 + n] = y[j * NR + n];
        }
        emit(m0, mr, static_cast<const float*>(yb));
    }
}

/// emit for one projection: a tile's results straight to out.
struct plain_store {
    const gemv_out& out;
    DSV4_INLINE void operator()(std::size_t nb0, std::size_t nb1, std::size_t m0, std::size_t mr,
                                const float* y) const noexcept {
        for (std::size_t j = 0; j < mr; ++j)
            for (std::size_t n = nb0; n < nb1; ++n) gemv_detail::store_out(out, m0 + j, n, y[j * (nb1 - nb0) + n - nb0]);
    }
};

/// The GEMM over output rows [r0, r1) in row blocks of NB where the tier has it and
/// `applies` (k fits the row kernel's block loop); else row_path(0, r0, r1). rows(nb0, nb1,
/// vr) lists a block's weight rows and returns how many (0: the block takes the row kernel,
/// all M); emit(nb0, nb1, m0, mr, y) writes a tile's results; row_path(m0, n0, n1) runs the
/// row kernel for activation rows [m0, M) (also the remainder of under MR / 2 rows).
template <class Arch, bool Fp8, class Rows, class Emit, class RowPath>
DSV4_INLINE void run_rows(bool applies, const f32_rows& x, std::size_t k, std::size_t r0, std::size_t r1, Rows&& rows,
                          Emit&& emit, RowPath&& row_path) noexcept {
#if defined(__AVX512F__) && defined(__AVX512BW__)
    if constexpr (supported<Arch>) {
        if (applies) {
            const std::size_t mg = gemm_rows(x.m, tile_mr);
            for (std::size_t nb0 = r0; nb0 < r1; nb0 += NB) {
                const std::size_t nb1 = std::min(r1, nb0 + NB);
                wrow vr[2 * NB];
                const std::size_t nv = rows(nb0, nb1, vr);
                if (nv == 0) {
                    row_path(0, nb0, nb1);
                    continue;
                }
                run_block<tile_mr, tile_nr>(
                    vr, nv, x.x, x.stride, mg,
                    [&](const wrow* pr, const float* const* xp, float* y) DSV4_LAMBDA_INLINE {
                        tile<Arch, Fp8, tile_mr, tile_nr>(pr, xp, k, y);
                    },
                    [&](std::size_t m0, std::size_t mr, const float* y) DSV4_LAMBDA_INLINE { emit(nb0, nb1, m0, mr, y); });
            }
            if (mg < x.m) row_path(mg, r0, r1);
            return;
        }
    }
#endif
    (void)applies, (void)x, (void)k, (void)rows, (void)emit;
    row_path(0, r0, r1);
}

/// Rows [m0, x.m) of x / out as views of their own.
inline f32_rows rows_from(const f32_rows& x, std::size_t m0) noexcept { return {x.x + m0 * x.stride, x.stride, x.m - m0}; }
inline gemv_out out_from(const gemv_out& o, std::size_t m0) noexcept {
    return {o.f32 ? o.f32 + m0 * o.stride : nullptr, o.bf16 ? o.bf16 + m0 * o.stride : nullptr, o.stride};
}

}  // namespace gemm_ref_detail

/// Whether the reference FP8 / FP4 paths take the GEMM for m activation rows on tier A.
template <class A> constexpr bool gemm_ref_applies(std::size_t m) noexcept {
    return gemm_ref_detail::supported<A> && m >= gemm_ref_min_m;
}

/// Reference FP8 GEMV rows [r0, r1) through the GEMM where the tier has it (else, and for
/// what the GEMM leaves, the row kernel).
template <class Arch>
void fp8_gemm_ref_rows(const fp8_matrix& w, const f32_rows& x, const gemv_out& out, std::size_t r0,
                       std::size_t r1) noexcept {
    // rows [m0, x.m) x weight rows [n0, n1) on the row kernel
    const auto row_path = [&](std::size_t m0, std::size_t n0, std::size_t n1) {
        gemv_detail::fp8_row_path<Arch>(w, gemm_ref_detail::rows_from(x, m0), gemm_ref_detail::out_from(out, m0), n0, n1);
    };
    const std::size_t nsb = w.k / 128;
    gemm_ref_detail::run_rows<Arch, true>(
        w.k % 128 == 0, x, w.k, r0, r1,
        [&](std::size_t nb0, std::size_t nb1, gemm_ref_detail::wrow* vr) -> std::size_t {
            // every scale of the block's scale rows in the fold range, else the row kernel
            for (std::size_t g = nb0 / 128; g <= (nb1 - 1) / 128; ++g)
                for (std::size_t b = 0; b < nsb; ++b) {
                    const uint8_t e = w.scale[g * w.scale_stride + b];
                    if (e < gemv_detail::fp8_fold_e_min || e > gemv_detail::fp8_fold_e_max) return 0;
                }
            for (std::size_t n = nb0; n < nb1; ++n) vr[n - nb0] = {w.w + n * w.w_stride, w.scale + (n / 128) * w.scale_stride};
            return nb1 - nb0;
        },
        gemm_ref_detail::plain_store{out}, row_path);
}

/// Reference FP4 GEMV rows [r0, r1) through the GEMM where the tier has it.
template <class Arch>
void fp4_gemm_ref_rows(const fp4_matrix& w, const f32_rows& x, const gemv_out& out, std::size_t r0,
                       std::size_t r1) noexcept {
    const auto row_path = [&](std::size_t m0, std::size_t n0, std::size_t n1) {
        gemv_detail::fp4_row_path<Arch>(w, gemm_ref_detail::rows_from(x, m0), gemm_ref_detail::out_from(out, m0), n0, n1);
    };
    gemm_ref_detail::run_rows<Arch, false>(
        w.k % 32 == 0, x, w.k, r0, r1,
        [&](std::size_t nb0, std::size_t nb1, gemm_ref_detail::wrow* vr) {
            for (std::size_t n = nb0; n < nb1; ++n) vr[n - nb0] = {w.w + n * w.w_stride, w.scale + n * w.scale_stride};
            return nb1 - nb0;
        },
        gemm_ref_detail::plain_store{out}, row_path);
}

/// Reference fused gate+up rows [r0, r1) through the GEMM: each row block's w1 and w3 rows
/// are one list of weight rows, the SwiGLU epilogue pairs them per tile.
template <class Arch>
void fp4_gate_up_ref_rows(const fp4_matrix& w1, const fp4_matrix& w3, const f32_rows& x, const swiglu_epilogue& e,
                          const gemv_out& out, std::size_t r0, std::size_t r1) noexcept {
    const auto row_path = [&](std::size_t m0, std::size_t n0, std::size_t n1) {
        const swiglu_epilogue em{e.route_weights ? e.route_weights + m0 : nullptr, e.limit};
        gemv_detail::fp4_gate_up_row_path<Arch>(w1, w3, gemm_ref_detail::rows_from(x, m0), em,
                                                gemm_ref_detail::out_from(out, m0), n0, n1);
    };
    gemm_ref_detail::run_rows<Arch, false>(
        w1.k % 32 == 0, x, w1.k, r0, r1,
        [&](std::size_t nb0, std::size_t nb1, gemm_ref_detail::wrow* vr) {
            const std::size_t nn = nb1 - nb0;
            for (std::size_t n = nb0; n < nb1; ++n) {
                vr[n - nb0] = {w1.w + n * w1.w_stride, w1.scale + n * w1.scale_stride};
                vr[nn + n - nb0] = {w3.w + n * w3.w_stride, w3.scale + n * w3.scale_stride};
            }
            return 2 * nn;
        },
        [&](std::size_t nb0, std::size_t nb1, std::size_t m0, std::size_t mr, const float* y) {
            const std::size_t nn = nb1 - nb0;
            for (std::size_t j = 0; j < mr; ++j) {
                const float rw = e.route_weights ? e.route_weights[m0 + j] : 1.0f;
                for (std::size_t i = 0; i < nn; ++i)
                    gemv_detail::store_out(out, m0 + j, nb0 + i,
                                           gemv_detail::swiglu(y[j * 2 * nn + i], y[j * 2 * nn + nn + i], rw, e.limit));
            }
        },
        row_path);
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
