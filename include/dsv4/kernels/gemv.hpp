// dsv4/kernels/gemv.hpp - dequant-fused GEMV and small-batch GEMM on the checkpoint's native
// weight formats (spec §1.4, §2.5), read in place (mmap-friendly, no conversion, no copy).
//
//   y[m, n] = sum_k x[m, k] * w[n, k]      m < M (1..64 tokens), n in a row range
//
// Weights (all row-major, row strides in bytes for byte formats, elements otherwise):
//   fp4_matrix  w [N, K/2] bytes, element 2k in the low nibble; scale [N, K/32] E8M0
//   fp8_matrix  w [N, K] e4m3;  scale [ceil(N/128), K/128] E8M0 (128x128 blocks)
//   bf16_matrix w [N, K] bf16 bits;  f32_matrix w [N, K] float
// Activations:
//   bf16_rows   x [M, K] bf16 bits: BF16 weights times bf16 activations (the head), every
//               product exact in f32.
//   f32_rows    x [M, K] float. Reference mode feeds the exact dequantised FP8
//               activations (fp8_acts_to_f32 of act_quant's output, spec §2.2); wo_a and
//               the BF16/F32 weights take plain bf16/f32 activations.
//   q8_rows     fast FP4 mode: int8 per block of 32 with an f32 scale (quantize_q8), in
//               the group layout described at quantize_q8_row.
//   bf16_block_rows  fast FP8 mode: bf16 per block of 128 with a power-of-two shift.
//
// Numerics. Reference mode: every product is exact in f32 (e4m3 x e2m1 or e4m3 x e4m3
// significands fit), block partials are scaled by exact powers of two, sums are f32 in a
// fixed order; the output is rounded once (f32 or bf16, as the caller asks). Against the
// exact sum S = sum_k a_k w_k the error is at most K * 2^-24 * sum_k |a_k w_k| (any order
// of f32 summation), plus the final rounding. The order is fixed per tier (not across
// tiers: wider vectors sum in another order), so results do not depend on how rows are
// split between threads. Fast mode adds the int8 activation rounding: at most
// sum_blocks (d_b / 2) * sum_{k in b} |w_k| where d_b = amax_b / 127.
//
// Every vector FMA is simd::fmadd (explicitly fused): xsimd 8.1 spells AVX-512 fma as a
// multiply and an add, fused only if the compiler contracts (not under -std=c++20).
//
// Fast FP8 mode: e4m3 weights are not integers (a 128x128 block spans 2^-9..448), so an
// int8 form would not be exact; bf16 is. Activations go to bf16 per block of 128 times a
// power of two (bf16_block_rows, to_bf16_blocks); on avx512_bf16 vdpbf16ps makes the exact
// products (dot_fp8_bf16_row states the bound).
#pragma once

#include "../gemv_types.hpp"
#include "codec.hpp"
#include "gemm_fp4.hpp"
#include "../simd/fmath.hpp"
#include "../simd/weights.hpp"

#include <cmath>
#include <limits>

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace kernels {

/// Small-M GEMM of the fast FP8 path (gemm_fp8.hpp, included at the end): false where it
/// does not run.
template <class Arch>
bool fp8_gemm_bf16_rows(const fp8_matrix& w, const bf16_block_rows& x, const gemv_out& out, std::size_t r0,
                        std::size_t r1, std::size_t min_m) noexcept;
/// Small-M GEMM of BF16 weights x bf16 activations (gemm_bf16.hpp, included at the end; the
/// same bits as the row kernel): false where it does not run.
template <class Arch>
bool bf16_gemm_bf16_rows(const bf16_matrix& w, const bf16_rows& x, const gemv_out& out, std::size_t r0,
                         std::size_t r1) noexcept;
/// Small-M GEMM of the reference FP8 / FP4 paths (gemm_ref.hpp, included at the end; the
/// same bits as the row kernels): the row kernels where the tier has no such GEMM.
template <class Arch>
void fp8_gemm_ref_rows(const fp8_matrix& w, const f32_rows& x, const gemv_out& out, std::size_t r0,
                       std::size_t r1) noexcept;
template <class Arch>
void fp4_gemm_ref_rows(const fp4_matrix& w, const f32_rows& x, const gemv_out& out, std::size_t r0,
                       std::size_t r1) noexcept;
template <class Arch>
void fp4_gate_up_ref_rows(const fp4_matrix& w1, const fp4_matrix& w3, const f32_rows& x, const swiglu_epilogue& e,
                          const gemv_out& out, std::size_t r0, std::size_t r1) noexcept;
/// Activation rows from which the reference FP8 / FP4 paths take that GEMM (Zen 4: at 4 rows
/// 1.1-2.4x the row kernel's rate; at 2-3 rows FP8 gains, FP4 loses; docs/benchmarks.md).
/// -DDSV4_GEMM_REF_MIN_M=N overrides it (a huge N measures the row kernels alone; the bits
/// are the same either way).
#ifndef DSV4_GEMM_REF_MIN_M
#  define DSV4_GEMM_REF_MIN_M 4
#endif
inline constexpr std::size_t gemm_ref_min_m = DSV4_GEMM_REF_MIN_M;
/// Activation rows from which the FP8 GEMM runs (bench_gemm, Zen 4: 0.8x the row time at 5 on
/// avx512_bf16; on the f32 variant the GEMM's rate at 5 rows matches the row kernel's at 4).
inline constexpr std::size_t fp8_gemm_min_m = 5;

/// Largest M tile: each weight byte is read from memory once per tile; rows of the tile
/// beyond the first reuse it from L1.
inline constexpr std::size_t gemv_m_tile = 4;

namespace gemv_detail {

DSV4_INLINE void store_out(const gemv_out& out, std::size_t m, std::size_t n, float v) noexcept {
    if (out.f32) out.f32[m * out.stride + n] = v;
    else out.bf16[m * out.stride + n] = f32_to_bf16(v);
}

/// E8M0 as f32 for every byte (e = 0 is the subnormal 2^-127, 255 is NaN).
struct e8m0_lut {
    float v[256];
    constexpr e8m0_lut() : v() {
        for (int e = 0; e < 256; ++e) v[e] = e == 255 ? std::numeric_limits<float>::quiet_NaN()
                                                      : (e == 0 ? std::bit_cast<float>(0x00400000u)
                                                                : std::bit_cast<float>(uint32_t(e) << 23));
    }
};
inline constexpr e8m0_lut e8m0{};

template <class Arch> DSV4_INLINE float hsum(simd::vf32<Arch> v) noexcept { return xsimd::hadd(v); }

// ---------------------------------------------------------------- per-row dot products
// Each computes y[j] = sum_k w[k] * x_j[k] for the MT activation rows x[0..MT).

template <class Arch, std::size_t MT>
DSV4_INLINE void dot_f32_row(const float* w, std::size_t k, const float* const* x, float* y) noexcept {
    std::size_t i = 0;
    if constexpr (!simd::is_scalar<Arch>) {
        using vf = simd::vf32<Arch>;
        constexpr std::size_t W = simd::lanes<Arch>();
        vf acc[MT][2];
        for (auto& a : acc) a[0] = a[1] = vf(0.0f);
        for (; i + 2 * W <= k; i += 2 * W) {
            simd::prefetch_weights<2 * W * 4 / 64>(w + i);
            const vf w0 = vf::load_unaligned(w + i), w1 = vf::load_unaligned(w + i + W);
            for (std::size_t j = 0; j < MT; ++j) {
                acc[j][0] = simd::fmadd(w0, vf::load_unaligned(x[j] + i), acc[j][0]);
                acc[j][1] = simd::fmadd(w1, vf::load_unaligned(x[j] + i + W), acc[j][1]);
            }
        }
        for (std::size_t j = 0; j < MT; ++j) y[j] = hsum<Arch>(acc[j][0] + acc[j][1]);
    } else {
        for (std::size_t j = 0; j < MT; ++j) y[j] = 0.0f;
    }
    for (; i < k; ++i)
        for (std::size_t j = 0; j < MT; ++j) y[j] = std::fma(w[i], x[j][i], y[j]);
}

/// Activation element i of an f32 or a bf16 row, as f32 (scalar / one vector).
DSV4_INLINE float act_f32(const float* x, std::size_t i) noexcept { return x[i]; }
DSV4_INLINE float act_f32(const uint16_t* x, std::size_t i) noexcept { return bf16_to_f32(x[i]); }
template <class Arch> DSV4_INLINE simd::vf32<Arch> act_vec(const float* x) noexcept {
    return simd::vf32<Arch>::load_unaligned(x);
}
template <class Arch> DSV4_INLINE simd::vf32<Arch> act_vec(const uint16_t* x) noexcept { return simd::load_bf16<Arch>(x); }

/// BF16 row against f32 activations (T = float) or widened bf16 ones (T = uint16_t: the
/// same sums as on their f32 values).
template <class Arch, std::size_t MT, class T>
DSV4_INLINE void dot_bf16_row(const uint16_t* w, std::size_t k, const T* const* x, float* y) noexcept {
    std::size_t i = 0;
    if constexpr (!simd::is_scalar<Arch>) {
        using vf = simd::vf32<Arch>;
        constexpr std::size_t W = simd::lanes<Arch>();
        vf acc[MT][2];
        for (auto& a : acc) a[0] = a[1] = vf(0.0f);
        for (; i + 2 * W <= k; i += 2 * W) {
            if (W == 16 || i % (4 * W) == 0) simd::prefetch_weights<1>(w + i);  // a line per 64 bytes
            const vf w0 = vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, w + i));
            const vf w1 = vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, w + i + W));
            for (std::size_t j = 0; j < MT; ++j) {
                acc[j][0] = simd::fmadd(w0, act_vec<Arch>(x[j] + i), acc[j][0]);
                acc[j][1] = simd::fmadd(w1, act_vec<Arch>(x[j] + i + W), acc[j][1]);
            }
        }
        for (std::size_t j = 0; j < MT; ++j) y[j] = hsum<Arch>(acc[j][0] + acc[j][1]);
    } else {
        for (std::size_t j = 0; j < MT; ++j) y[j] = 0.0f;
    }
    for (; i < k; ++i) {
        const float wi = bf16_to_f32(w[i]);
        for (std::size_t j = 0; j < MT; ++j) y[j] = std::fma(wi, act_f32(x[j], i), y[j]);
    }
}

/// BF16 weights times bf16 activations (bf16_gemv_bf16): every product is exact in f32
/// (8-bit significands), sums are f32 (the error bound of the header). On avx512_bf16,
/// vdpbf16ps makes 32 products per instruction from the 2-byte activations (half the L1
/// traffic and a third of the instructions of widening both: the 1.06 GB head then streams
/// at ~0.95 of the read ceiling instead of ~0.6 on Zen 4); it sums each pair into its lane
/// in its own order and reads subnormal inputs as zero (|w|, |x| < 2^-126: nothing a
/// checkpoint's head or a normed activation holds). Other tiers widen both to f32 and run
/// dot_bf16_row's loop: bit-identical to bf16_gemv on the widened activations. No software
/// prefetch on the vdpbf16ps path: on Zen 4 it cost 0.05-0.08 of the ceiling there.
template <class Arch, std::size_t MT>
DSV4_INLINE void dot_bf16_bf16_row(const uint16_t* w, std::size_t k, const uint16_t* const* x, float* y) noexcept {
#if defined(__AVX512BF16__)
    if constexpr (std::is_base_of_v<arch::avx512_bf16, Arch>) {
        std::size_t i = 0;
        // four vdpbf16ps chains per row whatever MT (16 of the 32 zmm at MT = 4): one sum
        // order for every M tile, so a row's logits do not depend on the other rows
        constexpr std::size_t NC = 4;
        __m512 acc[MT][NC];
        for (auto& a : acc)
            for (auto& c : a) c = _mm512_setzero_ps();
        for (; i + 32 * NC <= k; i += 32 * NC) {
            DSV4_UNROLL
            for (std::size_t c = 0; c < NC; ++c) {
                const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + i + 32 * c);
                for (std::size_t j = 0; j < MT; ++j)
                    acc[j][c] = _mm512_dpbf16_ps(acc[j][c], wv, (__m512bh)_mm512_loadu_si512(x[j] + i + 32 * c));
            }
        }
        for (; i + 32 <= k; i += 32) {
            const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + i);
            for (std::size_t j = 0; j < MT; ++j)
                acc[j][0] = _mm512_dpbf16_ps(acc[j][0], wv, (__m512bh)_mm512_loadu_si512(x[j] + i));
        }
        using vf = simd::vf32<Arch>;
        for (std::size_t j = 0; j < MT; ++j) {
            __m512 t = acc[j][0];
            for (std::size_t c = 1; c < NC; ++c) t = _mm512_add_ps(t, acc[j][c]);
            y[j] = hsum<Arch>(vf(t));
        }
        for (; i < k; ++i) {
            const float wi = bf16_to_f32(w[i]);
            for (std::size_t j = 0; j < MT; ++j) y[j] = std::fma(wi, bf16_to_f32(x[j][i]), y[j]);
        }
        return;
    }
#endif
    dot_bf16_row<Arch, MT>(w, k, x, y);
}

/// E8M0 exponents e for which the AVX-512 FP8 row folds the block scale into the weights:
/// w * 2^(e-127) is then a normal f32 (or zero) for every e4m3 code, and 2^120 * 2^(e-127)
/// is finite. Real checkpoints sit near e = 112..122; other blocks take the two-step path.
inline constexpr unsigned fp8_fold_e_min = 10, fp8_fold_e_max = 134;

/// Decoded e4m3 weights on the f32 paths are e4m3 * 2^-fp8_decode_shift: integer decode to
/// f32 bits on AVX-512 (fp8_to_f32_bits), F16C on AVX2 (fp8_to_f32_scaled), exact in scalar.
template <class Arch>
inline constexpr int fp8_decode_shift = simd::lanes<Arch>() == 16 ? 120 : (simd::is_scalar<Arch> ? 0 : 8);

/// One 128-weight FP8 block on the f32 paths: p[j] = sum_i e4m3(w[i]) * 2^-fp8_decode_shift
/// * x_j[i], where load(j, i) gives activation row j's elements [i, i + lanes) as f32. Two
/// FMA chains per row (one in scalar), summed at the end: a fixed order per tier.
template <class Arch, std::size_t MT, class Load>
DSV4_INLINE void fp8_block_partials(const uint8_t* w, Load&& load, simd::freg<Arch>* p) noexcept {
    constexpr std::size_t B = 128;
    if constexpr (simd::is_scalar<Arch>) {
        for (std::size_t j = 0; j < MT; ++j) p[j] = 0.0f;
        for (std::size_t i = 0; i < B; ++i) {
            const float wi = e4m3_to_f32(w[i]);
            for (std::size_t j = 0; j < MT; ++j) p[j] = std::fma(wi, load(j, i), p[j]);
        }
    } else {
        using vf = simd::vf32<Arch>;
        constexpr std::size_t W = simd::lanes<Arch>();
        vf a[MT][2];
        for (auto& q : a) q[0] = q[1] = vf(0.0f);
        DSV4_UNROLL
        for (std::size_t i = 0; i < B; i += 16) {
            vf wv[2];  // 16 weights: one AVX-512 vector, or two AVX2 halves
            if constexpr (W == 16) wv[0] = vf(simd::fp8_to_f32_bits(Arch{}, w + i));
            else simd::fp8_to_f32_scaled(Arch{}, w + i, wv[0], wv[1]);
            for (std::size_t h = 0; h < 16 / W; ++h)
                for (std::size_t j = 0; j < MT; ++j) {
                    const std::size_t c = W == 16 ? (i / 16) % 2 : h;  // alternate the two chains
                    a[j][c] = simd::fmadd(wv[h], load(j, i + W * h), a[j][c]);
                }
        }
        for (std::size_t j = 0; j < MT; ++j) p[j] = a[j][0] + a[j][1];
    }
}

/// FP8 row: per 128-block partial sums (f32), scaled by the block's power of two. On
/// AVX-512, blocks whose scale allows it multiply each decoded weight by its (exact) scale
/// and accumulate straight into per-lane sums instead: one multiply per 16 weights, no
/// per-block reduction (1.5x the throughput of the F16C form on Zen 5).
template <class Arch, std::size_t MT>
DSV4_INLINE void dot_fp8_row(const uint8_t* w, const uint8_t* scale_row, std::size_t k, const float* const* x,
                             float* y) noexcept {
    constexpr std::size_t B = 128;
    if constexpr (simd::lanes<Arch>() == 16) {
        using vf = simd::vf32<Arch>;
        vf acc[MT][4];  // four FMA chains per row: one FMA per 16 weights, latency 4
        for (auto& a : acc)
            for (auto& v : a) v = vf(0.0f);
        for (std::size_t b0 = 0; b0 < k; b0 += B) {
            simd::prefetch_weights<2>(w + b0);
            const uint8_t e = scale_row[b0 / B];
            if (e >= fp8_fold_e_min && e <= fp8_fold_e_max) {
                const vf c(e8m0.v[e] * 0x1p120f);  // exact: 2^(e - 7)
                DSV4_UNROLL
                for (std::size_t q = 0; q < B / 16; ++q) {  // constant trip count: acc stays in registers
                    const vf wv = vf(simd::fp8_to_f32_bits(Arch{}, w + b0 + 16 * q)) * c;  // exact e4m3 * 2^(e-127)
                    for (std::size_t j = 0; j < MT; ++j)
                        acc[j][q % 4] = simd::fmadd(wv, vf::load_unaligned(x[j] + b0 + 16 * q), acc[j][q % 4]);
                }
            } else {  // extreme scales: block partial (weights * 2^-120), then 2^120, then the scale
                vf p[MT];
                for (auto& q : p) q = vf(0.0f);
                for (std::size_t i = b0; i < b0 + B; i += 16) {
                    const vf wv = vf(simd::fp8_to_f32_bits(Arch{}, w + i)) * vf(0x1p120f);  // exact e4m3
                    for (std::size_t j = 0; j < MT; ++j) p[j] = simd::fmadd(wv, vf::load_unaligned(x[j] + i), p[j]);
                }
                const vf s(e8m0.v[e]);
                for (std::size_t j = 0; j < MT; ++j) acc[j][0] = simd::fmadd(p[j], s, acc[j][0]);
            }
        }
        for (std::size_t j = 0; j < MT; ++j) y[j] = hsum<Arch>((acc[j][0] + acc[j][1]) + (acc[j][2] + acc[j][3]));
    } else {  // AVX2 (F16C decode, e4m3 * 2^-8) and scalar: block partials, then the block scale
        using R = simd::freg<Arch>;
        R acc[MT];
        for (auto& a : acc) a = R(0.0f);
        for (std::size_t b0 = 0; b0 < k; b0 += B) {
            if constexpr (!simd::is_scalar<Arch>) simd::prefetch_weights<2>(w + b0);
            R p[MT];
            fp8_block_partials<Arch, MT>(w + b0, [&](std::size_t j, std::size_t i) { return simd::loadu<Arch>(x[j] + b0 + i); }, p);
            // (p * 2^D) * 2^(e-127): two exact scalings, never an overflowing 2^135
            const R s(e8m0.v[scale_row[b0 / B]]);
            for (std::size_t j = 0; j < MT; ++j)
                acc[j] = simd::fmadd(p[j] * R(float(1 << fp8_decode_shift<Arch>)), s, acc[j]);
        }
        for (std::size_t j = 0; j < MT; ++j) {
            if constexpr (simd::is_scalar<Arch>) y[j] = acc[j];
            else y[j] = hsum<Arch>(acc[j]);
        }
    }
}

/// 2^t as f32 for any integer t (exact while 2^t is representable; outside, the same
/// rounding as one multiply by 2^t would give).
template <class V> DSV4_INLINE V scale_pow2(V v, int t) noexcept {
    const auto p2 = [](int u) { return std::bit_cast<float>(uint32_t(u + 127) << 23); };  // u in [-126, 127]
    if (t >= -126 && t <= 127) return v * V(p2(t));
    for (; t > 127; t -= 127) v = v * V(p2(127));
    for (; t < -126; t += 126) v = v * V(p2(-126));
    return v * V(p2(t));
}

/// Block scale of the fast FP8 row: the weight block's E8M0 e, the decoded weights'
/// factor 2^-D, the activation block's shift: partial * 2^(e - 127 + D - shift). The
/// exponent stays a small integer for real checkpoints (one multiply); NaN for e = 255.
template <class V> DSV4_INLINE V fp8_bf16_block_scaled(V partial, uint8_t e, int d_minus_shift) noexcept {
    if (e == 255) return partial * V(std::numeric_limits<float>::quiet_NaN());
    return scale_pow2(partial, int(e) - 127 + d_minus_shift);
}

/// acc + fp8_bf16_block_scaled(partial, ...): one FMA when the factor is a normal f32
/// (every block of a real checkpoint), the same value (the product is exact, or rounds once
/// either way); the general path otherwise.
template <class V> DSV4_INLINE V fp8_bf16_block_fma(V partial, uint8_t e, int d_minus_shift, V acc) noexcept {
    const int t = int(e) - 127 + d_minus_shift;
    if (e != 255 && t >= -126 && t <= 127) return simd::fmadd(partial, V(std::bit_cast<float>(uint32_t(t + 127) << 23)), acc);
    return acc + fp8_bf16_block_scaled(partial, e, d_minus_shift);
}

/// FP8 row, fast mode (activations from to_bf16_blocks): per 128-block partials of
/// e4m3 * bf16 products, scaled once per block. With AVX512-BF16 the partials come from
/// vdpbf16ps (32 products per instruction, activations read as 2 bytes each); other tiers
/// run the same math through f32 FMAs.
///
/// Numerics: every product of a normal e4m3 code and an activation with |x| >= 1 (all
/// but those below 2^-109 of their block's max) is an exact normal f32; sums are f32. On
/// avx512_bf16 the subnormal e4m3 codes (|code| <= 7 * 2^-9) count as zero (vdpbf16ps
/// reads subnormal inputs as zero); other tiers use them exactly.
template <class Arch, std::size_t MT>
DSV4_INLINE void dot_fp8_bf16_row(const uint8_t* w, const uint8_t* scale_row, std::size_t k, const uint16_t* const* x,
                                  const int32_t* const* shift, float* y) noexcept {
    constexpr std::size_t B = 128;
#if defined(__AVX512BF16__)
    if constexpr (std::is_base_of_v<arch::avx512_bf16, Arch>) {
        using vf = simd::vf32<Arch>;
        vf acc[MT];
        for (auto& a : acc) a = vf(0.0f);
        for (std::size_t b0 = 0; b0 < k; b0 += B) {
            simd::prefetch_weights<2>(w + b0);
            __m512 p[MT][2];
            for (auto& q : p) q[0] = q[1] = _mm512_setzero_ps();
            DSV4_UNROLL
            for (std::size_t q = 0; q < B / 32; ++q) {
                const __m512bh wv = simd::fp8_to_bf16_bits(Arch{}, w + b0 + 32 * q);  // e4m3 * 2^-120
                for (std::size_t j = 0; j < MT; ++j)
                    p[j][q % 2] = _mm512_dpbf16_ps(p[j][q % 2], wv, (__m512bh)_mm512_loadu_si512(x[j] + b0 + 32 * q));
            }
            for (std::size_t j = 0; j < MT; ++j)
                acc[j] = acc[j] + fp8_bf16_block_scaled(vf(_mm512_add_ps(p[j][0], p[j][1])), scale_row[b0 / B],
                                                        120 - shift[j][b0 / B]);
        }
        for (std::size_t j = 0; j < MT; ++j) y[j] = hsum<Arch>(acc[j]);
        return;
    }
#endif
#if defined(__AVX2__)
    if constexpr (simd::lanes<Arch>() == 8) {
        // AVX2 tiers: weights decoded by integer ops to e4m3 * 2^-120 (fp8_to_f32_pairs), the
        // bf16 activations widened by a shift or a mask (bf16_pairs_to_f32), both split by
        // parity so that neither needs a lane-crossing widen; two FMAs per 16 weights and row
        using vf = simd::vf32<Arch>;
        constexpr std::size_t NC = MT == 1 ? 4 : (MT == 2 ? 2 : 1);  // FMA chains per row (16 ymm registers)
        vf acc[MT];
        for (auto& a : acc) a = vf(0.0f);
        for (std::size_t b0 = 0; b0 < k; b0 += B) {
            simd::prefetch_weights<2>(w + b0);
            __m256 p[MT][NC];
            for (auto& q : p)
                for (auto& v : q) v = _mm256_setzero_ps();
            DSV4_UNROLL
            for (std::size_t q = 0; q < B / 16; ++q) {
                __m256 we, wo;
                simd::fp8_to_f32_pairs(Arch{}, w + b0 + 16 * q, we, wo);
                const std::size_t ce = NC == 4 ? 2 * (q % 2) : 0, co = NC == 1 ? 0 : ce + 1;
                for (std::size_t j = 0; j < MT; ++j) {
                    __m256 xe, xo;
                    simd::bf16_pairs_to_f32(Arch{}, x[j] + b0 + 16 * q, xe, xo);
                    p[j][ce] = _mm256_fmadd_ps(we, xe, p[j][ce]);
                    p[j][co] = _mm256_fmadd_ps(wo, xo, p[j][co]);
                }
            }
            for (std::size_t j = 0; j < MT; ++j) {
                __m256 t = p[j][0];
                if constexpr (NC >= 2) t = _mm256_add_ps(t, p[j][1]);
                if constexpr (NC == 4) t = _mm256_add_ps(t, _mm256_add_ps(p[j][2], p[j][3]));
                acc[j] = fp8_bf16_block_fma(vf(t), scale_row[b0 / B], 120 - shift[j][b0 / B], acc[j]);
            }
        }
        for (std::size_t j = 0; j < MT; ++j) y[j] = hsum<Arch>(acc[j]);
        return;
    }
#endif
    // scalar and the AVX-512 tiers without BF16: f32 block partials of the decoded weights
    // and the bf16 activations
    using R = simd::freg<Arch>;
    R acc[MT];
    for (auto& a : acc) a = R(0.0f);
    for (std::size_t b0 = 0; b0 < k; b0 += B) {
        if constexpr (!simd::is_scalar<Arch>) simd::prefetch_weights<2>(w + b0);
        R p[MT];
        fp8_block_partials<Arch, MT>(w + b0, [&](std::size_t j, std::size_t i) { return simd::load_bf16<Arch>(x[j] + b0 + i); }, p);
        for (std::size_t j = 0; j < MT; ++j)
            acc[j] = acc[j] + fp8_bf16_block_scaled(p[j], scale_row[b0 / B], fp8_decode_shift<Arch> - shift[j][b0 / B]);
    }
    for (std::size_t j = 0; j < MT; ++j) {
        if constexpr (simd::is_scalar<Arch>) y[j] = acc[j];
        else y[j] = hsum<Arch>(acc[j]);
    }
}

/// FP4 row (reference mode): per 32-block partials of 2*e2m1 * x, scaled by 2^(e-127)/2.
template <class Arch, std::size_t MT>
DSV4_INLINE void dot_fp4_row(const uint8_t* w, const uint8_t* scale_row, std::size_t k, const float* const* x,
                             float* y) noexcept {
    constexpr std::size_t B = 32;
    if constexpr (!simd::is_scalar<Arch>) {
        using vf = simd::vf32<Arch>;
        constexpr std::size_t W = simd::lanes<Arch>(), NV = B / W;
        // block b adds into acc[.][b % NA]: NA independent FMA chains, else the chain's
        // latency (one FMA per 16 weight bytes) caps the row at a few bytes per cycle
        constexpr std::size_t NA = W == 16 ? 4 : 2;
        vf acc[MT][NA];
        for (auto& a : acc)
            for (auto& v : a) v = vf(0.0f);
        std::size_t b0 = 0;
        const auto block = [&](std::size_t b0, std::size_t slot) DSV4_LAMBDA_INLINE {
            vf wv[NV];
            simd::fp4_block_to_f32x2(Arch{}, w + b0 / 2, wv);
            const vf s(e8m0.v[scale_row[b0 / B]] * 0.5f);  // exact: a power of two (or NaN)
            for (std::size_t j = 0; j < MT; ++j) {
                vf p = wv[0] * vf::load_unaligned(x[j] + b0);
                for (std::size_t v = 1; v < NV; ++v) p = simd::fmadd(wv[v], vf::load_unaligned(x[j] + b0 + v * W), p);
                acc[j][slot] = simd::fmadd(p, s, acc[j][slot]);
            }
        };
        for (; b0 + NA * B <= k; b0 += NA * B) {
            simd::prefetch_weights<1>(w + b0 / 2);  // NA * 16 bytes of weights per pass
            if (b0 % 2048 == 0) simd::prefetch_weights<1, simd::weight_prefetch_bytes / 16>(scale_row + b0 / B);
            for (std::size_t a = 0; a < NA; ++a) block(b0 + a * B, a);
        }
        for (std::size_t a = 0; b0 < k; b0 += B, ++a) block(b0, a);
        for (std::size_t j = 0; j < MT; ++j) {
            vf t = acc[j][0];
            for (std::size_t a = 1; a < NA; ++a) t += acc[j][a];
            y[j] = hsum<Arch>(t);
        }
    } else {
        for (std::size_t j = 0; j < MT; ++j) y[j] = 0.0f;
        for (std::size_t b0 = 0; b0 < k; b0 += B) {
            float p[MT] = {};
            for (std::size_t i = b0; i < b0 + B; ++i) {
                const uint8_t byte = w[i / 2];
                const float wi = float(simd::e2m1_x2_table[(i & 1) ? (byte >> 4) : (byte & 0xF)]);
                for (std::size_t j = 0; j < MT; ++j) p[j] = std::fma(wi, x[j][i], p[j]);
            }
            const float s = e8m0.v[scale_row[b0 / B]] * 0.5f;
            for (std::size_t j = 0; j < MT; ++j) y[j] = std::fma(p[j], s, y[j]);
        }
    }
}

/// Position of element i of a 32-block b inside a group of gb blocks (gb = 4 except in
/// the last, partial group): evens of every block first, then the odds, so that one
/// load of weight bytes splits into an "even nibbles" and an "odd nibbles" vector that
/// meet contiguous activations.
DSV4_INLINE std::size_t q8_group_pos(std::size_t b, std::size_t i, std::size_t gb) noexcept {
    return (i & 1) ? gb * 16 + b * 16 + i / 2 : b * 16 + i / 2;
}

/// FP4 row (fast mode): exact int8 block dots, scaled by d_a * 2^(e-127) / 2.
template <class Arch, std::size_t MT>
DSV4_INLINE void dot_fp4_q8_row(const uint8_t* w, const uint8_t* scale_row, std::size_t k, const int8_t* const* q,
                                const float* const* d, const int32_t* const* corr, float* y) noexcept {
    constexpr std::size_t G = 128;  // group of 4 blocks
    std::size_t g0 = 0;
    if constexpr (!simd::is_scalar<Arch>) {
        using vf = simd::vf32<Arch>;
        vf acc[MT];
        for (auto& a : acc) a = vf(0.0f);
        for (; g0 + 4 * G <= k; g0 += 4 * G) {
            simd::prefetch_weights<4>(w + g0 / 2);
            if (g0 % 2048 == 0)  // a line of scales per 4 superblocks
                simd::prefetch_weights<1, simd::weight_prefetch_bytes / 16>(scale_row + g0 / 32);
            simd::fp4q8_super_fma<MT>(Arch{}, w + g0 / 2, scale_row + g0 / 32, q, d, corr, g0, acc);
        }
        for (; g0 + G <= k; g0 += G)
            simd::fp4q8_group_fma<MT>(Arch{}, w + g0 / 2, scale_row + g0 / 32, q, d, corr, g0, acc);
        for (std::size_t j = 0; j < MT; ++j) y[j] = hsum<Arch>(acc[j]);
    } else {
        for (std::size_t j = 0; j < MT; ++j) y[j] = 0.0f;
    }
    // scalar: whole groups (scalar tier) and the partial last group (every tier)
    for (; g0 < k; g0 += G) {
        const std::size_t gb = std::min<std::size_t>(4, (k - g0) / 32);
        for (std::size_t b = 0; b < gb; ++b) {
            const std::size_t b0 = g0 + 32 * b;
            int32_t dot[MT] = {};
            for (std::size_t i = 0; i < 32; ++i) {
                const uint8_t byte = w[(b0 + i) / 2];
                const int32_t wi = simd::e2m1_x2_table[(i & 1) ? (byte >> 4) : (byte & 0xF)];
                const std::size_t pos = g0 + q8_group_pos(b, i, gb);
                for (std::size_t j = 0; j < MT; ++j) dot[j] += wi * int32_t(q[j][pos]);
            }
            const float sw = e8m0.v[scale_row[b0 / 32]] * 0.5f;
            for (std::size_t j = 0; j < MT; ++j) y[j] = std::fma(float(dot[j]), d[j][b0 / 32] * sw, y[j]);
        }
    }
}

/// Weight rows per block when M > gemv_m_tile: every M tile runs over the block's rows, which
/// stay in L1/L2, so the activation tiles are fetched once per block instead of once per row
/// (at M = 64 that traffic, not the arithmetic, would bound the kernel). Results are the
/// same bits as row by row: each (m, n) is still one row_dot call.
inline constexpr std::size_t gemv_row_block = 8;

/// Drives a row kernel over rows [r0, r1) and all M activation rows in tiles of up to
/// gemv_m_tile: row_dot.template operator()<MT>(n, m0, y) fills y[0..MT).
template <class RowDot, class Store>
DSV4_INLINE void for_rows_and_tiles(std::size_t m, std::size_t r0, std::size_t r1, RowDot&& row_dot,
                                    Store&& store) {
    const std::size_t rb = m > gemv_m_tile ? gemv_row_block : 1;
    for (std::size_t n0 = r0; n0 < r1; n0 += rb) {
        const std::size_t n1 = std::min(r1, n0 + rb);
        float y[gemv_m_tile];
        std::size_t m0 = 0;
        for (; m0 + 4 <= m; m0 += 4)
            for (std::size_t n = n0; n < n1; ++n) {
                row_dot.template operator()<4>(n, m0, y);
                for (std::size_t j = 0; j < 4; ++j) store(m0 + j, n, y[j]);
            }
        if (m0 == m) continue;
        for (std::size_t n = n0; n < n1; ++n) {
            switch (m - m0) {
                case 3: row_dot.template operator()<3>(n, m0, y); break;
                case 2: row_dot.template operator()<2>(n, m0, y); break;
                default: row_dot.template operator()<1>(n, m0, y); break;
            }
            for (std::size_t j = 0; j < m - m0; ++j) store(m0 + j, n, y[j]);
        }
    }
}

template <std::size_t MT> DSV4_INLINE void tile_ptrs(const f32_rows& x, std::size_t m0, const float** p) noexcept {
    for (std::size_t j = 0; j < MT; ++j) p[j] = x.x + (m0 + j) * x.stride;
}

/// for_rows_and_tiles for f32 activation rows: row_dot.template operator()<MT>(n, p, y)
/// gets the MT activation row pointers of the tile; results go to `out`.
template <class RowDot>
DSV4_INLINE void f32_rows_and_tiles(const f32_rows& x, const gemv_out& out, std::size_t r0, std::size_t r1,
                                    RowDot&& row_dot) {
    for_rows_and_tiles(
        x.m, r0, r1,
        [&]<std::size_t MT>(std::size_t n, std::size_t m0, float* y) {
            const float* p[MT];
            tile_ptrs<MT>(x, m0, p);
            row_dot.template operator()<MT>(n, p, y);
        },
        [&](std::size_t m, std::size_t n, float v) { store_out(out, m, n, v); });
}

template <std::size_t MT>
DSV4_INLINE void q8_tile_ptrs(const q8_rows& x, std::size_t m0, const int8_t** q, const float** d,
                              const int32_t** c) noexcept {
    for (std::size_t j = 0; j < MT; ++j) {
        q[j] = x.q + (m0 + j) * x.q_stride;
        d[j] = x.scales + (m0 + j) * x.scales_stride;
        c[j] = x.corr + (m0 + j) * x.corr_stride;
    }
}

DSV4_INLINE float silu(float v) noexcept { return v / (1.0f + std::exp(-v)); }

/// SwiGLU epilogue on the bf16-rounded projections (spec §8.2 clamp order). The clamps keep
/// NaN (as torch.clamp does; std::fmin/fmax would turn it into the limit).
DSV4_INLINE float swiglu(float y1, float y3, float route_weight, float limit) noexcept {
    float a = round_bf16(y1), b = round_bf16(y3);
    if (limit > 0.0f) {
        a = a > limit ? limit : a;
        b = b > limit ? limit : (b < -limit ? -limit : b);
    }
    return route_weight * (silu(a) * b);
}

}  // namespace gemv_detail

// ---------------------------------------------------------------- activation preparation

/// Dequantises one row of FP8 activations (act_quant output, blocks of 128) to f32,
/// exactly: out[k] = e4m3(codes[k]) * 2^(scales[k/128] - 127).
template <class Arch>
void fp8_acts_to_f32(const uint8_t* codes, const uint8_t* scales, std::size_t k, float* out) noexcept {
    decode_e4m3<Arch>(codes, out, k);
    for (std::size_t b0 = 0; b0 < k; b0 += 128) {
        const float s = gemv_detail::e8m0.v[scales[b0 / 128]];
        for (std::size_t i = b0; i < b0 + 128 && i < k; ++i) out[i] *= s;
    }
}

/// Fast FP8 mode: one row of f32 activations (k % 128 == 0) to bf16 per block of 128,
/// scaled by a power of two: shift[b] puts the block's largest finite |a| in
/// [2^109, 2^110) (0 for an all-zero block or one holding Inf/NaN, which then propagate);
/// x = bf16(a * 2^shift), exact when a already fits bf16 (FP8-dequantised or bf16
/// activations). Identical on every tier (scalar code, O(k)).
template <class Arch>
void to_bf16_blocks_row(const float* a, std::size_t k, uint16_t* x, int32_t* shift) noexcept {
    for (std::size_t b0 = 0; b0 < k; b0 += 128) {
        float amax = 0.0f;
        bool finite = true;
        for (std::size_t i = b0; i < b0 + 128; ++i) {
            const float v = std::fabs(a[i]);
            finite = finite && v <= std::numeric_limits<float>::max();
            amax = v > amax ? v : amax;
        }
        const int s = finite && amax > 0.0f ? 109 - std::ilogb(amax) : 0;
        shift[b0 / 128] = s;
        for (std::size_t i = b0; i < b0 + 128; ++i) x[i] = f32_to_bf16(gemv_detail::scale_pow2(a[i], s));
    }
}

/// Fast FP4 mode: one row of bf16 activations (k % 32 == 0) to int8 per block of 32,
/// d = amax/127 (f32 division), q = round_to_nearest_even(x * (127/amax)), written in
/// group layout (4 blocks of 32 per group; within a group the even-index elements of
/// every block come first, then the odd ones; the last group may have fewer blocks).
/// corr gets, per block, -12 * sum(q) (k/32 int32): the SIMD dot products use
/// the unsigned 2*e2m1 + 12 and start from it. Identical on every tier (plain scalar code:
/// it is O(k) beside O(n k) of weights).
template <class Arch>
void quantize_q8_row(const uint16_t* x, std::size_t k, int8_t* q, float* d, int32_t* corr) noexcept {
    for (std::size_t g0 = 0; g0 < k; g0 += 128) {
        const std::size_t gb = std::min<std::size_t>(4, (k - g0) / 32);
        for (std::size_t b = 0; b < gb; ++b) {
            const std::size_t b0 = g0 + 32 * b;
            const uint32_t amax_bits = bf16_block_amax_bits<arch::scalar>(x + b0, 32);
            const float amax = f32_from_bits(amax_bits);
            // a NaN or Inf in the block makes d NaN (the amax ignores NaN, so test for it)
            const bool finite = amax_bits < 0x7F800000u && !bf16_block_has_nan(x + b0, 32);
            d[b0 / 32] = finite ? amax / 127.0f : std::numeric_limits<float>::quiet_NaN();
            const float inv = (finite && amax > 0.0f) ? 127.0f / amax : 0.0f;
            int32_t sum = 0;
            for (std::size_t i = 0; i < 32; ++i) {
                const float v = std::nearbyint(bf16_to_f32(x[b0 + i]) * inv);
                const int8_t qi = int8_t(std::isnan(v) ? 0 : v);
                q[g0 + gemv_detail::q8_group_pos(b, i, gb)] = qi;
                sum += qi;
            }
            corr[b0 / 32] = -simd::fp4_q8_offset * sum;
        }
    }
}

// ---------------------------------------------------------------- GEMV row-range kernels

template <class Arch>
void f32_gemv_rows(const f32_matrix& w, const f32_rows& x, const gemv_out& out, std::size_t r0,
                   std::size_t r1) noexcept {
    gemv_detail::f32_rows_and_tiles(x, out, r0, r1, [&]<std::size_t MT>(std::size_t n, const float** p, float* y) {
        gemv_detail::dot_f32_row<Arch, MT>(w.w + n * w.w_stride, w.k, p, y);
    });
}

template <class Arch>
void bf16_gemv_rows(const bf16_matrix& w, const f32_rows& x, const gemv_out& out, std::size_t r0,
                    std::size_t r1) noexcept {
    gemv_detail::f32_rows_and_tiles(x, out, r0, r1, [&]<std::size_t MT>(std::size_t n, const float** p, float* y) {
        gemv_detail::dot_bf16_row<Arch, MT>(w.w + n * w.w_stride, w.k, p, y);
    });
}

/// BF16 weights times bf16 activations (dot_bf16_bf16_row states the numerics); from
/// gemm_bf16_min_m rows on avx512_bf16 the GEMM of gemm_bf16.hpp (the same bits).
template <class Arch>
void bf16_gemv_bf16_rows(const bf16_matrix& w, const bf16_rows& x, const gemv_out& out, std::size_t r0,
                         std::size_t r1) noexcept {
    if (bf16_gemm_bf16_rows<Arch>(w, x, out, r0, r1)) return;
    gemv_detail::for_rows_and_tiles(
        x.m, r0, r1,
        [&]<std::size_t MT>(std::size_t n, std::size_t m0, float* y) {
            const uint16_t* p[MT];
            for (std::size_t j = 0; j < MT; ++j) p[j] = x.x + (m0 + j) * x.stride;
            gemv_detail::dot_bf16_bf16_row<Arch, MT>(w.w + n * w.w_stride, w.k, p, y);
        },
        [&](std::size_t m, std::size_t n, float v) { gemv_detail::store_out(out, m, n, v); });
}

namespace gemv_detail {
/// The reference FP8 path on the row kernel (all M).
template <class Arch>
void fp8_row_path(const fp8_matrix& w, const f32_rows& x, const gemv_out& out, std::size_t r0, std::size_t r1) noexcept {
    f32_rows_and_tiles(x, out, r0, r1, [&]<std::size_t MT>(std::size_t n, const float** p, float* y) {
        dot_fp8_row<Arch, MT>(w.w + n * w.w_stride, w.scale + (n / 128) * w.scale_stride, w.k, p, y);
    });
}
}  // namespace gemv_detail

/// FP8 GEMV, reference mode (f32 activations); from gemm_ref_min_m rows the GEMM of
/// gemm_ref.hpp (the same bits).
template <class Arch>
void fp8_gemv_rows(const fp8_matrix& w, const f32_rows& x, const gemv_out& out, std::size_t r0,
                   std::size_t r1) noexcept {
    if (x.m >= gemm_ref_min_m) fp8_gemm_ref_rows<Arch>(w, x, out, r0, r1);
    else gemv_detail::fp8_row_path<Arch>(w, x, out, r0, r1);
}

/// FP8 GEMV, fast mode (activations from to_bf16_blocks; dot_fp8_bf16_row states the numerics).
/// From fp8_gemm_min_m activation rows on the SIMD tiers, the GEMM of gemm_fp8.hpp (its header
/// states how its sums differ from the row kernel's).
template <class Arch>
void fp8_gemv_bf16_rows(const fp8_matrix& w, const bf16_block_rows& x, const gemv_out& out, std::size_t r0,
                        std::size_t r1) noexcept {
    if (fp8_gemm_bf16_rows<Arch>(w, x, out, r0, r1, fp8_gemm_min_m)) return;
    gemv_detail::for_rows_and_tiles(
        x.m, r0, r1,
        [&]<std::size_t MT>(std::size_t n, std::size_t m0, float* y) {
            const uint16_t* p[MT];
            const int32_t* s[MT];
            for (std::size_t j = 0; j < MT; ++j) {
                p[j] = x.x + (m0 + j) * x.x_stride;
                s[j] = x.shift + (m0 + j) * x.shift_stride;
            }
            gemv_detail::dot_fp8_bf16_row<Arch, MT>(w.w + n * w.w_stride, w.scale + (n / 128) * w.scale_stride, w.k,
                                                    p, s, y);
        },
        [&](std::size_t m, std::size_t n, float v) { gemv_detail::store_out(out, m, n, v); });
}

/// Grouped projection (wo_a, spec §4 step 10): output rows [g*ng, (g+1)*ng) use the
/// activation columns [g*w.k, (g+1)*w.k); w.n = groups * ng.
template <class Arch>
void fp8_grouped_gemv_rows(const fp8_matrix& w, std::size_t groups, const f32_rows& x, const gemv_out& out,
                           std::size_t r0, std::size_t r1) noexcept {
    const std::size_t ng = w.n / groups;
    for (std::size_t g = r0 / ng; g < groups && g * ng < r1; ++g) {
        const f32_rows xg{x.x + g * w.k, x.stride, x.m};
        fp8_gemv_rows<Arch>(w, xg, out, std::max(r0, g * ng), std::min(r1, (g + 1) * ng));
    }
}

/// Grouped projection, fast mode: group g reads the activation blocks [g*k/128, (g+1)*k/128).
template <class Arch>
void fp8_grouped_gemv_bf16_rows(const fp8_matrix& w, std::size_t groups, const bf16_block_rows& x,
                                const gemv_out& out, std::size_t r0, std::size_t r1) noexcept {
    const std::size_t ng = w.n / groups;
    for (std::size_t g = r0 / ng; g < groups && g * ng < r1; ++g) {
        const bf16_block_rows xg{x.x + g * w.k, x.x_stride, x.shift + g * (w.k / 128), x.shift_stride, x.m};
        fp8_gemv_bf16_rows<Arch>(w, xg, out, std::max(r0, g * ng), std::min(r1, (g + 1) * ng));
    }
}

namespace gemv_detail {
/// The reference FP4 path on the row kernel (all M).
template <class Arch>
void fp4_row_path(const fp4_matrix& w, const f32_rows& x, const gemv_out& out, std::size_t r0, std::size_t r1) noexcept {
    f32_rows_and_tiles(x, out, r0, r1, [&]<std::size_t MT>(std::size_t n, const float** p, float* y) {
        dot_fp4_row<Arch, MT>(w.w + n * w.w_stride, w.scale + n * w.scale_stride, w.k, p, y);
    });
}
}  // namespace gemv_detail

/// FP4 GEMV, reference mode; from gemm_ref_min_m rows the GEMM of gemm_ref.hpp (the same bits).
template <class Arch>
void fp4_gemv_rows(const fp4_matrix& w, const f32_rows& x, const gemv_out& out, std::size_t r0,
                   std::size_t r1) noexcept {
    if (x.m >= gemm_ref_min_m) fp4_gemm_ref_rows<Arch>(w, x, out, r0, r1);
    else gemv_detail::fp4_row_path<Arch>(w, x, out, r0, r1);
}

/// FP4 GEMV, fast mode. From gemm4_min_m<Arch> activation rows on (and k % 512 == 0) the
/// register-blocked GEMM of gemm_fp4.hpp runs instead: the same bits, fewer decodes.
template <class Arch>
void fp4_gemv_q8_rows(const fp4_matrix& w, const q8_rows& x, const gemv_out& out, std::size_t r0,
                      std::size_t r1) noexcept {
    if (gemm4_applies<Arch>(x.m, w.k)) {
        if constexpr (gemm4_detail::supported<Arch>)
            fp4_gemm_q8_rows<Arch>(w, x, r0, r1, [&](std::size_t m, std::size_t n, float v) DSV4_LAMBDA_INLINE {
                gemv_detail::store_out(out, m, n, v);
            });
        return;
    }
    gemv_detail::for_rows_and_tiles(
        x.m, r0, r1,
        [&]<std::size_t MT>(std::size_t n, std::size_t m0, float* y) {
            const int8_t* q[MT];
            const float* d[MT];
            const int32_t* c[MT];
            gemv_detail::q8_tile_ptrs<MT>(x, m0, q, d, c);
            gemv_detail::dot_fp4_q8_row<Arch, MT>(w.w + n * w.w_stride, w.scale + n * w.scale_stride, w.k, q, d, c, y);
        },
        [&](std::size_t m, std::size_t n, float v) { gemv_detail::store_out(out, m, n, v); });
}

namespace gemv_detail {
/// Shared driver of the fused gate+up kernels: for_rows_and_tiles with a row kernel that
/// runs dot(MT, n, m0, matrix, y) for w1 then w3 and applies the SwiGLU epilogue, so h[m, n]
/// is written once, in the same row blocks and M tiles as every GEMV.
template <class Dot>
DSV4_INLINE void gate_up_rows(const fp4_matrix& w1, const fp4_matrix& w3, std::size_t m, const swiglu_epilogue& e,
                              const gemv_out& out, std::size_t r0, std::size_t r1, Dot&& dot) {
    for_rows_and_tiles(
        m, r0, r1,
        [&]<std::size_t MT>(std::size_t n, std::size_t m0, float* y) {
            float y1[MT], y3[MT];
            dot.template operator()<MT>(n, m0, w1, y1);
            dot.template operator()<MT>(n, m0, w3, y3);
            for (std::size_t j = 0; j < MT; ++j)
                y[j] = swiglu(y1[j], y3[j], e.route_weights ? e.route_weights[m0 + j] : 1.0f, e.limit);
        },
        [&](std::size_t mi, std::size_t n, float v) { store_out(out, mi, n, v); });
}

/// The reference gate+up path on the row kernel (all M).
template <class Arch>
void fp4_gate_up_row_path(const fp4_matrix& w1, const fp4_matrix& w3, const f32_rows& x, const swiglu_epilogue& e,
                          const gemv_out& out, std::size_t r0, std::size_t r1) noexcept {
    gate_up_rows(w1, w3, x.m, e, out, r0, r1, [&]<std::size_t MT>(std::size_t n, std::size_t m0, const fp4_matrix& w, float* y) {
        const float* p[MT];
        tile_ptrs<MT>(x, m0, p);
        dot_fp4_row<Arch, MT>(w.w + n * w.w_stride, w.scale + n * w.scale_stride, w.k, p, y);
    });
}
}  // namespace gemv_detail

/// Fused routed-expert gate+up (spec §8.2), reference mode: for rows [r0, r1) of w1/w3
/// (same shape), h[m, n] = swiglu(bf16(w1 x), bf16(w3 x)). One pass: the activation tile
/// is read from L1 for both matrices. From gemm_ref_min_m rows, the GEMM of gemm_ref.hpp
/// (the same bits).
template <class Arch>
void fp4_gate_up_rows(const fp4_matrix& w1, const fp4_matrix& w3, const f32_rows& x, const swiglu_epilogue& e,
                      const gemv_out& out, std::size_t r0, std::size_t r1) noexcept {
    if (x.m >= gemm_ref_min_m) fp4_gate_up_ref_rows<Arch>(w1, w3, x, e, out, r0, r1);
    else gemv_detail::fp4_gate_up_row_path<Arch>(w1, w3, x, e, out, r0, r1);
}

/// Fused gate+up, fast mode (int8 activations); the GEMM from gemm4_min_m<Arch> rows on, as
/// fp4_gemv_q8_rows.
template <class Arch>
void fp4_gate_up_q8_rows(const fp4_matrix& w1, const fp4_matrix& w3, const q8_rows& x, const swiglu_epilogue& e,
                         const gemv_out& out, std::size_t r0, std::size_t r1) noexcept {
    if (gemm4_applies<Arch>(x.m, w1.k)) {  // the GEMM of gemm_fp4.hpp: the same bits
        if constexpr (gemm4_detail::supported<Arch>)
            fp4_gemm_gate_up_q8_rows<Arch>(
                w1, w3, x, r0, r1, [&](std::size_t m, std::size_t n, float y1, float y3) DSV4_LAMBDA_INLINE {
                    gemv_detail::store_out(
                        out, m, n, gemv_detail::swiglu(y1, y3, e.route_weights ? e.route_weights[m] : 1.0f, e.limit));
                });
        return;
    }
    gemv_detail::gate_up_rows(w1, w3, x.m, e, out, r0, r1,
                              [&]<std::size_t MT>(std::size_t n, std::size_t m0, const fp4_matrix& w, float* y) {
                                  const int8_t* q[MT];
                                  const float* d[MT];
                                  const int32_t* c[MT];
                                  gemv_detail::q8_tile_ptrs<MT>(x, m0, q, d, c);
                                  gemv_detail::dot_fp4_q8_row<Arch, MT>(w.w + n * w.w_stride,
                                                                        w.scale + n * w.scale_stride, w.k, q, d, c, y);
                              });
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4

#include "gemm_fp8.hpp"
#include "gemm_ref.hpp"
#include "gemm_bf16.hpp"
