// dsv4/kernels/gemm_fp4.hpp - small-M GEMM on FP4 weights, fast mode (int8 activations from
// quantize_q8, spec §2.5): the register-blocked form of gemv.hpp's fp4_gemv_q8_rows and
// fp4_gate_up_q8_rows for several activation rows (prefill / extend expert groups, MTP).
//
// The row path (gemv.hpp dot_fp4_q8_row) decodes every weight row once per tile of
// gemv_m_tile activation rows and reduces each block's dot product across lanes. Here a
// panel of NR x lanes columns (weight rows) is decoded once, for the whole K, into 2*e2m1 + 12
// (the unsigned operand of the u8 x s8 dot, as in the row path) laid out column-per-lane in
// 4-byte k groups, in the order of the activations' group layout; a micro-kernel then runs
// MR activation rows x NR column vectors: per 32-block, 8 dot steps (vpdpbusd, or
// vpmaddubsw+vpmaddwd pairs without VNNI) on int32 accumulators that start at the row's
// correction -12 * sum(q) (q8_rows::corr), one conversion and one FMA by d_m * 2^(e-127)/2.
//
// Numerics: bit-identical to the row path. Each block's term is the same exact integer,
// converted and FMA'd with the same scale (d_m * ws_b, one rounding) into an accumulator
// that the row path keeps in lane b % lanes; the GEMM keeps those lanes as per-column
// slots and folds them in the order of the row path's horizontal sum (xsimd::hadd). On
// AVX-512 it runs slot by slot (blocks l, l + 16, ... in order: lane l's own sequence), so a
// slot's accumulators stay in registers (1.0-1.2x the rate of updating all 16 slots in L1
// once per block, Zen 4, M >= 16); AVX2's 16 registers keep the slots in L1.
// So the result does not depend on M, on the tile an (m, n) falls in, on the row split,
// or on whether the GEMM or the row path ran (the MoE's chunking invariance holds).
//
// Dispatch (gemm4_applies): the AVX2 and AVX-512 tiers, x.m >= gemm4_min_m<A>, k % 512 == 0
// (the row path then runs only whole superblocks of 16 blocks, whose lane order is
// replicated here) and k <= gemm4_max_k (the panel lives on the stack). Otherwise, and for
// the scalar tier and the reference numerics' f32 path, the row path runs.
#pragma once

#include "../gemv_types.hpp"
#include "../simd/fmath.hpp"
#include "../simd/weights.hpp"

#include <climits>
#include <cstring>

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace kernels {

/// Fewest activation rows for which the row-range kernels take the GEMM, per tier. AVX2
/// (tiles of 4 rows): 8 (bench_gemm4 against the row path on Zen 4, the 8-row AVX-512 tile
/// of then: 0.75x at M = 4, 1.1-1.2x at 8, 1.35-1.6x from 16). AVX-512 (tiles of 6 rows,
/// slot-major): 5 (Zen 4, avx512_bf16, gate+up / w2: 0.97x / 1.2x at 5, 1.07x / 1.25x at
/// 6, 1.0x / 0.85x at 4; docs/benchmarks.md). -DDSV4_GEMM4_MIN_M=N sets it for every tier
/// (experiments: a huge N measures the row path alone; the results are the same bits
/// either way).
#ifdef DSV4_GEMM4_MIN_M
template <class A> inline constexpr std::size_t gemm4_min_m = DSV4_GEMM4_MIN_M;
#else
template <class A> inline constexpr std::size_t gemm4_min_m = simd::is_avx512<A> ? 5 : 8;
#endif
/// Largest K of the GEMM: the panel (K x 32 bytes + K x 4 bytes of scales) is a stack array.
inline constexpr std::size_t gemm4_max_k = 4096;

namespace gemm4_detail {

/// Column vectors per panel: two (the w1 and w3 columns of gate+up, or 2 x lanes of one matrix).
inline constexpr std::size_t NR = 2;

template <class A> struct isa;  // per-ISA operations; undefined for the scalar tier

// AVX-512 tiers: zmm, 16 columns per vector, MR = 6 (24 of 32 registers hold accumulators).
// (On Zen 4 a 512-bit vpdpbusd makes half the products per cycle of 256-bit ones, bench peak/int8/.../w256; a
// 256-bit form of this kernel measured 5-20 % slower there all the same: its per-block
// conversion and scaling cost twice the instructions per column.)
#if defined(__AVX512F__) && defined(__AVX512BW__)
template <class A> requires simd::is_avx512<A> struct isa<A> {
    using vi = __m512i;
    using vf = __m512;
    static constexpr std::size_t L = 16;  // columns per vector
    static constexpr std::size_t S = 16;  // slots: the row path's accumulator lanes
    static constexpr std::size_t MR = 6;  // 12 int32 + 12 f32 accumulators + 2 weight vectors of 32 zmm
    static constexpr bool slot_major = true;  // the f32 slot accumulators fit in registers
#  if defined(__AVX512VNNI__)
    static constexpr bool vnni = std::is_base_of_v<arch::avx512_vnni, A>;
#  else
    static constexpr bool vnni = false;
#  endif
    static DSV4_INLINE vi load(const void* p) noexcept { return _mm512_loadu_si512(p); }
    static DSV4_INLINE vi set1(int32_t v) noexcept { return _mm512_set1_epi32(v); }
    static DSV4_INLINE vi add(vi a, vi b) noexcept { return _mm512_add_epi32(a, b); }
    static DSV4_INLINE vi dot(vi acc, vi u, vi s) noexcept {
#  if defined(__AVX512VNNI__)
        return _mm512_dpbusd_epi32(acc, u, s);
#  else
        return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
#  endif
    }
    /// Two u8 x s8 steps summed as int16 before one madd (exact: |pair| <= 2 * 24 * 127).
    static DSV4_INLINE vi dot2(vi u0, vi s0, vi u1, vi s1) noexcept {
        return _mm512_madd_epi16(_mm512_add_epi16(_mm512_maddubs_epi16(u0, s0), _mm512_maddubs_epi16(u1, s1)),
                                 _mm512_set1_epi16(1));
    }
    static DSV4_INLINE vf cvt(vi v) noexcept { return _mm512_cvtepi32_ps(v); }
    static DSV4_INLINE vf fma(vf a, vf b, vf c) noexcept { return _mm512_fmadd_ps(a, b, c); }
    static DSV4_INLINE vf mul(vf a, vf b) noexcept { return _mm512_mul_ps(a, b); }
    static DSV4_INLINE vf addf(vf a, vf b) noexcept { return _mm512_add_ps(a, b); }
    static DSV4_INLINE vf set1f(float v) noexcept { return _mm512_set1_ps(v); }
    static DSV4_INLINE vf loadf(const float* p) noexcept { return _mm512_load_ps(p); }
    static DSV4_INLINE void storef(float* p, vf v) noexcept { _mm512_store_ps(p, v); }
    static DSV4_INLINE void store(void* p, vi v) noexcept { _mm512_store_si512(p, v); }
    /// Rows a, 4 + a, 8 + a, 12 + a (16 bytes each) in the four 128-bit lanes.
    static DSV4_INLINE vi gather4(const uint8_t* const* rows, std::size_t a, std::size_t off) noexcept {
        vi w = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[a] + off)));
        w = _mm512_inserti32x4(w, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 + a] + off)), 1);
        w = _mm512_inserti32x4(w, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[8 + a] + off)), 2);
        return _mm512_inserti32x4(w, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[12 + a] + off)), 3);
    }
    static DSV4_INLINE vi lut() noexcept {
        return _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(simd::e2m1_x2_plus12_table)));
    }
    static DSV4_INLINE vi unpacklo32(vi a, vi b) noexcept { return _mm512_unpacklo_epi32(a, b); }
    static DSV4_INLINE vi unpackhi32(vi a, vi b) noexcept { return _mm512_unpackhi_epi32(a, b); }
    static DSV4_INLINE vi unpacklo64(vi a, vi b) noexcept { return _mm512_unpacklo_epi64(a, b); }
    static DSV4_INLINE vi unpackhi64(vi a, vi b) noexcept { return _mm512_unpackhi_epi64(a, b); }
    static DSV4_INLINE vi lo_nibbles(vi lut, vi v) noexcept {
        return _mm512_shuffle_epi8(lut, _mm512_and_si512(v, _mm512_set1_epi8(0x0F)));
    }
    static DSV4_INLINE vi hi_nibbles(vi lut, vi v) noexcept {
        return _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0F)));
    }
    static DSV4_INLINE vi gather32(const uint8_t* base, vi off) noexcept { return _mm512_i32gather_epi32(off, base, 1); }
    /// Byte q of each lane as an E8M0 block scale times 1/2 (fp4_w_scales8's values).
    static DSV4_INLINE vf e8m0_half(vi g, int q) noexcept {
        const vi e = _mm512_and_si512(_mm512_srlv_epi32(g, _mm512_set1_epi32(8 * q)), _mm512_set1_epi32(0xFF));
        return _mm512_mul_ps(_mm512_max_ps(_mm512_castsi512_ps(_mm512_slli_epi32(e, 23)), _mm512_set1_ps(0x1p-127f)),
                             _mm512_set1_ps(0.5f));
    }
};
#endif

#if defined(__AVX2__)
template <class A> requires(std::is_base_of_v<arch::avx2, A>) struct isa<A> {
    using vi = __m256i;
    using vf = __m256;
    static constexpr std::size_t L = 8;   // columns per vector
    static constexpr std::size_t S = 8;   // slots: the row path's accumulator lanes
    static constexpr std::size_t MR = 4;  // 8 int32 accumulators of 16 ymm
    static constexpr bool slot_major = false;  // no room for the slots: they live in L1
#  if defined(__AVXVNNI__)
    static constexpr bool vnni = std::is_base_of_v<arch::avx2_vnni, A>;
#  else
    static constexpr bool vnni = false;
#  endif
    static DSV4_INLINE vi load(const void* p) noexcept { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static DSV4_INLINE vi set1(int32_t v) noexcept { return _mm256_set1_epi32(v); }
    static DSV4_INLINE vi add(vi a, vi b) noexcept { return _mm256_add_epi32(a, b); }
    static DSV4_INLINE vi dot(vi acc, vi u, vi s) noexcept {
#  if defined(__AVXVNNI__)
        return _mm256_dpbusd_avx_epi32(acc, u, s);
#  else
        return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#  endif
    }
    static DSV4_INLINE vi dot2(vi u0, vi s0, vi u1, vi s1) noexcept { return simd::dot2_u8s8(arch::avx2{}, u0, s0, u1, s1); }
    static DSV4_INLINE vf cvt(vi v) noexcept { return _mm256_cvtepi32_ps(v); }
    static DSV4_INLINE vf fma(vf a, vf b, vf c) noexcept { return _mm256_fmadd_ps(a, b, c); }
    static DSV4_INLINE vf mul(vf a, vf b) noexcept { return _mm256_mul_ps(a, b); }
    static DSV4_INLINE vf addf(vf a, vf b) noexcept { return _mm256_add_ps(a, b); }
    static DSV4_INLINE vf set1f(float v) noexcept { return _mm256_set1_ps(v); }
    static DSV4_INLINE vf loadf(const float* p) noexcept { return _mm256_load_ps(p); }
    static DSV4_INLINE void storef(float* p, vf v) noexcept { _mm256_store_ps(p, v); }
    static DSV4_INLINE void store(void* p, vi v) noexcept { _mm256_store_si256(reinterpret_cast<__m256i*>(p), v); }
    /// Rows a and 4 + a (16 bytes each) in the two 128-bit lanes.
    static DSV4_INLINE vi gather4(const uint8_t* const* rows, std::size_t a, std::size_t off) noexcept {
        const vi w = _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[a] + off)));
        return _mm256_inserti128_si256(w, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[4 + a] + off)), 1);
    }
    static DSV4_INLINE vi lut() noexcept {
        return _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(simd::e2m1_x2_plus12_table)));
    }
    static DSV4_INLINE vi unpacklo32(vi a, vi b) noexcept { return _mm256_unpacklo_epi32(a, b); }
    static DSV4_INLINE vi unpackhi32(vi a, vi b) noexcept { return _mm256_unpackhi_epi32(a, b); }
    static DSV4_INLINE vi unpacklo64(vi a, vi b) noexcept { return _mm256_unpacklo_epi64(a, b); }
    static DSV4_INLINE vi unpackhi64(vi a, vi b) noexcept { return _mm256_unpackhi_epi64(a, b); }
    static DSV4_INLINE vi lo_nibbles(vi lut, vi v) noexcept {
        return _mm256_shuffle_epi8(lut, _mm256_and_si256(v, _mm256_set1_epi8(0x0F)));
    }
    static DSV4_INLINE vi hi_nibbles(vi lut, vi v) noexcept {
        return _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F)));
    }
    static DSV4_INLINE vi gather32(const uint8_t* base, vi off) noexcept {
        return _mm256_i32gather_epi32(reinterpret_cast<const int*>(base), off, 1);
    }
    static DSV4_INLINE vf e8m0_half(vi g, int q) noexcept {
        const vi e = _mm256_and_si256(_mm256_srlv_epi32(g, _mm256_set1_epi32(8 * q)), _mm256_set1_epi32(0xFF));
        return _mm256_mul_ps(_mm256_max_ps(_mm256_castsi256_ps(_mm256_slli_epi32(e, 23)), _mm256_set1_ps(0x1p-127f)),
                             _mm256_set1_ps(0.5f));
    }
};
#endif

template <class A> inline constexpr bool supported = !simd::is_scalar<A>;

/// Panel bytes per block: 8 steps x NR vectors x L columns x 4 bytes (= 32 x NR x L).
template <class A> inline constexpr std::size_t panel_block_bytes = 8 * NR * isa<A>::L * 4;

/// Decodes block `blk` (16 bytes per row) of L weight rows into 8 panel vectors: step s < 4
/// holds, per column, the 4 even elements 8s, 8s+2, 8s+4, 8s+6 (low nibbles of bytes
/// 4s..4s+3: activation positions 16b + 4s.. of the group layout), step 4 + s the odd ones.
/// A 4x4 dword transpose inside each 128-bit lane turns "4 dwords of one row" into "one
/// dword of 4 rows"; the gather puts rows so that the transpose leaves columns in order.
template <class A>
DSV4_INLINE void pack_block(const uint8_t* const* rows, std::size_t blk, typename isa<A>::vi lut, uint8_t* dst,
                            std::size_t step_stride) noexcept {
    using I = isa<A>;
    using vi = typename I::vi;
    const std::size_t off = 16 * blk;
    const vi w0 = I::gather4(rows, 0, off), w1 = I::gather4(rows, 1, off), w2 = I::gather4(rows, 2, off),
             w3 = I::gather4(rows, 3, off);
    const vi t0 = I::unpacklo32(w0, w1), t1 = I::unpackhi32(w0, w1), t2 = I::unpacklo32(w2, w3),
             t3 = I::unpackhi32(w2, w3);
    const vi d[4] = {I::unpacklo64(t0, t2), I::unpackhi64(t0, t2), I::unpacklo64(t1, t3), I::unpackhi64(t1, t3)};
    for (std::size_t s = 0; s < 4; ++s) {
        I::store(dst + s * step_stride, I::lo_nibbles(lut, d[s]));
        I::store(dst + (4 + s) * step_stride, I::hi_nibbles(lut, d[s]));
    }
}

/// One column source of a panel: rows [n0, n0 + L) of w, rows past `last` repeating it.
struct source {
    const fp4_matrix* w;
    std::size_t n0, last;
};

/// Decodes the NR sources' columns for all of K into panel (nblk x panel_block_bytes) and
/// their block scales 2^(e-127)/2 into ws ([nblk][NR][L]): the values of the row path's
/// fp4_w_scales (e = 0 the subnormal 2^-127, e = 255 inf).
template <class A>
DSV4_INLINE void pack_panel(const source* src, std::size_t nblk, uint8_t* panel, float* ws) noexcept {
    using I = isa<A>;
    constexpr std::size_t L = I::L, step_stride = NR * L * 4;
    const auto lut = I::lut();
    for (std::size_t r = 0; r < NR; ++r) {
        const fp4_matrix& w = *src[r].w;
        const uint8_t* rows[L];
        const uint8_t* srows[L];
        for (std::size_t c = 0; c < L; ++c) {
            const std::size_t n = std::min(src[r].n0 + c, src[r].last);
            rows[c] = w.w + n * w.w_stride;
            srows[c] = w.scale + n * w.scale_stride;
        }
        // scales: one gather of 4 bytes (4 blocks) per column when the rows' offsets fit int32
        alignas(64) int32_t off[L];
        bool gather = true;
        for (std::size_t c = 0; c < L; ++c) {
            const std::ptrdiff_t o = srows[c] - srows[0];
            gather = gather && o >= 0 && o <= INT32_MAX;
            off[c] = int32_t(o);
        }
        const auto voff = I::load(off);
        for (std::size_t b = 0; b < nblk; ++b) {
            if (b % 4 == 0) {  // a line of every row per 4 blocks, 8 lines ahead
                for (std::size_t c = 0; c < L; ++c) simd::prefetch_weights<1, 512>(rows[c] + 16 * b);
                if (gather) {  // nblk % 16 == 0: the 4 bytes lie inside the row
                    const auto g = I::gather32(srows[0] + b, voff);
                    for (int q = 0; q < 4; ++q) I::storef(ws + ((b + q) * NR + r) * L, I::e8m0_half(g, q));
                } else {
                    for (std::size_t q = b; q < b + 4; ++q)
                        for (std::size_t c = 0; c < L; ++c) {
                            const uint32_t e = srows[c][q];
                            ws[(q * NR + r) * L + c] = (e == 0 ? 0x1p-127f : std::bit_cast<float>(e << 23)) * 0.5f;
                        }
                }
            }
            pack_block<A>(rows, b, lut, panel + b * panel_block_bytes<A> + r * L * 4, step_stride);
        }
    }
}

/// Micro-kernel: activation rows [m0, m0 + MR) against the panel; out[j][r][c] gets the
/// row path's value of (m0 + j, column c of source r). slots: [S][MR][NR][L] floats.
/// prefetch(b) runs once per block (the next panel's weights stream in meanwhile).
template <class A, std::size_t MR, class Prefetch>
DSV4_INLINE void tile(const uint8_t* panel, const float* ws, std::size_t nblk, const q8_rows& x, std::size_t m0,
                      float* slots, float* out, Prefetch&& prefetch) noexcept {
    using I = isa<A>;
    using vi = typename I::vi;
    using vf = typename I::vf;
    constexpr std::size_t L = I::L, S = I::S, V = MR * NR * L;  // floats per slot
    const int8_t* a[MR];
    const float* d[MR];
    const int32_t* c[MR];
    for (std::size_t j = 0; j < MR; ++j) {
        a[j] = x.q + (m0 + j) * x.q_stride;
        d[j] = x.scales + (m0 + j) * x.scales_stride;
        c[j] = x.corr + (m0 + j) * x.corr_stride;
    }
    const auto bcast = [](const int8_t* p) DSV4_LAMBDA_INLINE {
        int32_t v;
        std::memcpy(&v, p, 4);
        return I::set1(v);
    };
    // block b's exact integer dot products, from -12 * sum(q) (the row path's per-block sum)
    const auto block_dots = [&](std::size_t b, vi (&acc)[MR][NR]) DSV4_LAMBDA_INLINE {
        // group layout (k % 128 == 0: whole groups): block b's evens at 128 (b/4) + 16 (b%4),
        // its odds 64 further
        const std::size_t ev = 128 * (b / 4) + 16 * (b % 4), od = ev + 64;
        const uint8_t* p = panel + b * panel_block_bytes<A>;
        for (std::size_t j = 0; j < MR; ++j)
            for (std::size_t r = 0; r < NR; ++r) acc[j][r] = I::set1(c[j][b]);
        if constexpr (I::vnni) {
            DSV4_UNROLL
            for (std::size_t s = 0; s < 8; ++s) {
                vi w[NR];
                for (std::size_t r = 0; r < NR; ++r) w[r] = I::load(p + (s * NR + r) * L * 4);
                const std::size_t o = s < 4 ? ev + 4 * s : od + 4 * (s - 4);
                for (std::size_t j = 0; j < MR; ++j) {
                    const vi av = bcast(a[j] + o);
                    for (std::size_t r = 0; r < NR; ++r) acc[j][r] = I::dot(acc[j][r], w[r], av);
                }
            }
        } else {
            DSV4_UNROLL
            for (std::size_t s = 0; s < 8; s += 2) {
                vi w0[NR], w1[NR];
                for (std::size_t r = 0; r < NR; ++r) {
                    w0[r] = I::load(p + (s * NR + r) * L * 4);
                    w1[r] = I::load(p + ((s + 1) * NR + r) * L * 4);
                }
                const std::size_t o = s < 4 ? ev + 4 * s : od + 4 * (s - 4);
                for (std::size_t j = 0; j < MR; ++j) {
                    const vi a0 = bcast(a[j] + o), a1 = bcast(a[j] + o + 4);
                    for (std::size_t r = 0; r < NR; ++r) acc[j][r] = I::add(acc[j][r], I::dot2(w0[r], a0, w1[r], a1));
                }
            }
        }
    };
    // the row path's term of block b for (row j, source r): cvt(block sum) * (d * ws) + prev,
    // one rounding
    const auto block_term = [&](std::size_t b, std::size_t j, std::size_t r, vi acc, vf prev) DSV4_LAMBDA_INLINE {
        return I::fma(I::cvt(acc), I::mul(I::set1f(d[j][b]), I::loadf(ws + (b * NR + r) * L)), prev);
    };
    if constexpr (I::slot_major) {
        // slot by slot: slot l gets blocks l, l + S, ... in block order (the row path's lane
        // l), its accumulators stay in registers; one store per slot instead of a load and a
        // store per block
        for (std::size_t l = 0; l < S; ++l) {
            vf f[MR][NR];
            for (std::size_t j = 0; j < MR; ++j)
                for (std::size_t r = 0; r < NR; ++r) f[j][r] = I::set1f(0.0f);
            for (std::size_t b = l; b < nblk; b += S) {
                prefetch(b);
                vi acc[MR][NR];
                block_dots(b, acc);
                for (std::size_t j = 0; j < MR; ++j)
                    for (std::size_t r = 0; r < NR; ++r) f[j][r] = block_term(b, j, r, acc[j][r], f[j][r]);
            }
            for (std::size_t j = 0; j < MR; ++j)
                for (std::size_t r = 0; r < NR; ++r) I::storef(slots + l * V + (j * NR + r) * L, f[j][r]);
        }
    } else {
        for (std::size_t i = 0; i < S * V; i += L) I::storef(slots + i, I::set1f(0.0f));
        for (std::size_t b = 0; b < nblk; ++b) {
            prefetch(b);
            vi acc[MR][NR];
            block_dots(b, acc);
            float* sl = slots + (b % S) * V;  // lane b % S
            for (std::size_t j = 0; j < MR; ++j)
                for (std::size_t r = 0; r < NR; ++r) {
                    float* q = sl + (j * NR + r) * L;
                    I::storef(q, block_term(b, j, r, acc[j][r], I::loadf(q)));
                }
        }
    }
    // the row path's horizontal sum (xsimd::hadd) of lanes 0..S-1, lane-wise over columns:
    // AVX-512 adds the halves (i + 8, i), then ((i, i+4) pairs), then two hadds; AVX2 the last three
    for (std::size_t i = 0; i < V; i += L) {
        vf s[8];
        const auto slot = [&](std::size_t lane) { return I::loadf(slots + lane * V + i); };
        if constexpr (S == 16)
            for (std::size_t l = 0; l < 8; ++l) s[l] = I::addf(slot(l + 8), slot(l));
        else
            for (std::size_t l = 0; l < 8; ++l) s[l] = slot(l);
        const vf t0 = I::addf(s[0], s[4]), t1 = I::addf(s[1], s[5]), t2 = I::addf(s[2], s[6]), t3 = I::addf(s[3], s[7]);
        I::storef(out + i, I::addf(I::addf(t0, t1), I::addf(t2, t3)));
    }
}

/// Prefetches (into L1/L2) the weight and scale lines of the sources `next` (the next
/// panel, null at the last): its pack then reads from cache while the DRAM stream overlaps
/// this panel's arithmetic. prefetch(b, nblk) issues block b's share (a 1/nblk of the lines).
struct next_panel {
    const source* next;
    std::size_t k;
    DSV4_INLINE void operator()(std::size_t b, std::size_t nblk, std::size_t L) const noexcept {
        if (!next) return;
        const std::size_t wl = k / 128, sl = (k / 32 + 63) / 64, per_row = wl + sl;  // lines per row
        const std::size_t total = NR * L * per_row, i0 = total * b / nblk, i1 = total * (b + 1) / nblk;
        for (std::size_t i = i0; i < i1; ++i) {
            const std::size_t rc = i / per_row, l = i % per_row;
            const source& s = next[rc / L];
            const std::size_t n = std::min(s.n0 + rc % L, s.last);
            const uint8_t* p = l < wl ? s.w->w + n * s.w->w_stride + 64 * l : s.w->scale + n * s.w->scale_stride + 64 * (l - wl);
            simd::prefetch_weights<1, 0>(p);
        }
    }
};

/// Runs the panel of `src` against all x.m activation rows: emit(m, y) with y[r * L + c] the
/// value of column c of source r. `next`: the following panel's sources (or null).
template <class A, class Emit>
DSV4_INLINE void run_panel(const source* src, const source* next, const q8_rows& x, std::size_t k,
                           Emit&& emit) noexcept {
    using I = isa<A>;
    constexpr std::size_t L = I::L, MR = I::MR;
    alignas(64) uint8_t panel[gemm4_max_k / 32 * panel_block_bytes<A>];
    alignas(64) float ws[gemm4_max_k / 32 * NR * L];
    alignas(64) float slots[I::S * MR * NR * L];
    alignas(64) float out[MR * NR * L];
    const std::size_t nblk = k / 32;
    pack_panel<A>(src, nblk, panel, ws);
    const next_panel np{next, k};
    // the first M tile issues the next panel's prefetches
    const auto pf = [&](std::size_t b) DSV4_LAMBDA_INLINE { np(b, nblk, L); };
    const auto none = [](std::size_t) DSV4_LAMBDA_INLINE {};
    std::size_t m0 = 0;
    for (; m0 + MR <= x.m; m0 += MR) {
        if (m0 == 0) tile<A, MR>(panel, ws, nblk, x, m0, slots, out, pf);
        else tile<A, MR>(panel, ws, nblk, x, m0, slots, out, none);
        for (std::size_t j = 0; j < MR; ++j) emit(m0 + j, out + j * NR * L);
    }
    const std::size_t rest = x.m - m0;
    if (rest == 0) return;
    simd::unroll<int(MR) - 1>([&](auto t) DSV4_LAMBDA_INLINE {
        constexpr std::size_t mr = std::size_t(decltype(t)::value) + 1;
        if (mr == rest) {
            if (m0 == 0) tile<A, mr>(panel, ws, nblk, x, m0, slots, out, pf);
            else tile<A, mr>(panel, ws, nblk, x, m0, slots, out, none);
        }
    });
    for (std::size_t j = 0; j < rest; ++j) emit(m0 + j, out + j * NR * L);
}

}  // namespace gemm4_detail

/// Whether fp4_gemv_q8_rows / fp4_gate_up_q8_rows take the GEMM for m activation rows
/// and inner dimension k on tier A (the results are the same bits either way).
template <class A> constexpr bool gemm4_applies(std::size_t m, std::size_t k) noexcept {
    return gemm4_detail::supported<A> && m >= gemm4_min_m<A> && k % 512 == 0 && k <= gemm4_max_k;
}

/// y[m, n] = fp4 w[n, :] . q8 x[m, :] for rows [r0, r1) and every m (gemm4_applies must
/// hold); store(m, n, y) writes a result.
template <class A, class Store>
void fp4_gemm_q8_rows(const fp4_matrix& w, const q8_rows& x, std::size_t r0, std::size_t r1, Store&& store) noexcept {
    constexpr std::size_t L = gemm4_detail::isa<A>::L;
    for (std::size_t n0 = r0; n0 < r1; n0 += gemm4_detail::NR * L) {
        const std::size_t n1 = n0 + gemm4_detail::NR * L;
        const gemm4_detail::source src[2] = {{&w, n0, r1 - 1}, {&w, n0 + L, r1 - 1}};
        const gemm4_detail::source next[2] = {{&w, n1, r1 - 1}, {&w, n1 + L, r1 - 1}};
        const std::size_t nv = std::min(r1 - n0, gemm4_detail::NR * L);
        gemm4_detail::run_panel<A>(src, n1 < r1 ? next : nullptr, x, w.k, [&](std::size_t m, const float* y) DSV4_LAMBDA_INLINE {
            for (std::size_t c = 0; c < nv; ++c) store(m, n0 + c, y[c]);
        });
    }
}

/// Gate+up: for rows [r0, r1) of w1/w3 (same shape) and every m, store(m, n, y1, y3).
template <class A, class Store>
void fp4_gemm_gate_up_q8_rows(const fp4_matrix& w1, const fp4_matrix& w3, const q8_rows& x, std::size_t r0,
                              std::size_t r1, Store&& store) noexcept {
    constexpr std::size_t L = gemm4_detail::isa<A>::L;
    for (std::size_t n0 = r0; n0 < r1; n0 += L) {
        const gemm4_detail::source src[2] = {{&w1, n0, r1 - 1}, {&w3, n0, r1 - 1}};
        const gemm4_detail::source next[2] = {{&w1, n0 + L, r1 - 1}, {&w3, n0 + L, r1 - 1}};
        const std::size_t nv = std::min(r1 - n0, L);
        gemm4_detail::run_panel<A>(src, n0 + L < r1 ? next : nullptr, x, w1.k, [&](std::size_t m, const float* y) DSV4_LAMBDA_INLINE {
            for (std::size_t c = 0; c < nv; ++c) store(m, n0 + c, y[c], y[L + c]);
        });
    }
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
