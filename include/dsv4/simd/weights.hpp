// dsv4/simd/weights.hpp - per-ISA decoding of checkpoint weights inside GEMV loops.
//
//  * FP8 e4m3 -> f32 exactly with F16C: the byte's exponent/mantissa placed into an fp16
//    bit pattern is e4m3 * 2^-8 (biases 7 vs 15); callers fold 2^8 into the block scale.
//    Subnormals come out right; the NaN codes 0x7F/0xFF do not (checkpoints have none:
//    `dsv4-generate --verify` reports them).
//  * FP4 e2m1 -> int8: 2*e2m1 is an integer in {0,1,2,3,4,6,8,12} with sign, so one pshufb
//    table lookup per 16 nibbles is exact; callers fold the factor 1/2 into the scale.
//  * int8 dot products for the fast FP4 path: maddubs+madd (AVX2, AVX-512BW) or vpdpbusd
//    (AVX-VNNI, AVX512-VNNI) on 2*e2m1 + 12 (0..24, unsigned) and int8 activations, each
//    block's sum starting at -12 * sum(a); 2 * 24 * 127 cannot saturate the int16 pairs.
#pragma once

#include "vec.hpp"

#include <cstdint>
#include <cstring>

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace simd {

/// Software prefetch distance of the weight stream in GEMV loops (into L1: prefetcht1/t2
/// measured worse). With one thread busy decoding, the hardware prefetchers alone keep too
/// few misses in flight, and they stop at every 4 KiB page of a mapped checkpoint: a Zen 5
/// core then reaches ~0.6 of its streaming-read rate on FP4; two pages ahead lifts that to
/// 0.7-0.85 (1-4 KiB were worse, 16 KiB no better). Past the end of a matrix it only wastes
/// a few lines. -DDSV4_WEIGHT_PREFETCH_BYTES=N overrides it for experiments.
#ifndef DSV4_WEIGHT_PREFETCH_BYTES
#  define DSV4_WEIGHT_PREFETCH_BYTES 8192
#endif
inline constexpr std::size_t weight_prefetch_bytes = DSV4_WEIGHT_PREFETCH_BYTES;

/// Prefetches `Lines` cache lines `Distance` bytes ahead of p (address arithmetic in
/// integers: the target may lie past the end of the caller's object). A stream that advances
/// 1/16 as fast as the weights (FP4 scales) takes Distance = weight_prefetch_bytes / 16: the
/// same lead in time (it gains 0.07-0.13 of bw_frac on FP4). Defining DSV4_NO_PREFETCH turns
/// it off (to measure what it buys).
template <std::size_t Lines, std::size_t Distance = weight_prefetch_bytes>
DSV4_INLINE void prefetch_weights(const void* p) noexcept {
#if defined(__GNUC__) && !defined(DSV4_NO_PREFETCH)
    const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p) + Distance;
    for (std::size_t l = 0; l < Lines; ++l) __builtin_prefetch(reinterpret_cast<const void*>(a + 64 * l), 0, 3);
#else
    (void)p;
#endif
}

/// 2*e2m1 as int8, indexed by the nibble.
alignas(16) inline constexpr int8_t e2m1_x2_table[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
/// 2*e2m1 + 12 as uint8 (0..24): an unsigned operand for u8 x s8 dot products without
/// moving signs around; the fast path starts each block's sum at -12 * sum(a) (q8_rows::corr).
alignas(16) inline constexpr uint8_t e2m1_x2_plus12_table[16] = {12, 13, 14, 15, 16, 18, 20, 24,
                                                                 12, 11, 10, 9, 8, 6, 4, 0};
inline constexpr int32_t fp4_q8_offset = 12;

template <class A, class... T> requires is_scalar<A> void fp8_to_f32_scaled(A, T...) = delete;
template <class A, class... T> requires is_scalar<A> void fp4_block_to_f32x2(A, T...) = delete;
template <class A, class... T> requires(!std::is_base_of_v<arch::avx2, A>) void fp8_to_f32_pairs(A, T...) = delete;
template <class A, class... T> requires(!std::is_base_of_v<arch::avx2, A>) void bf16_pairs_to_f32(A, T...) = delete;
template <class A, class... T> requires is_scalar<A> void fp4q8_group_fma(A, T...) = delete;
template <class A, class... T> requires is_scalar<A> void fp4q8_super_fma(A, T...) = delete;
template <class A, class... T> requires(!std::is_base_of_v<arch::avx512, A>) void fp8_to_f32_bits(A, T...) = delete;
template <class A, class... T> requires(!std::is_base_of_v<arch::avx512_bf16, A>) void fp8_to_bf16_bits(A, T...) = delete;

#if defined(__AVX2__)
/// Weight scales of 4 consecutive FP4 blocks as 4 f32 lanes, times 1/2 (undoing the
/// table's 2*e2m1): 2^(e_b - 128). E8M0 byte 0 is the subnormal 2^-127 as in the scalar
/// table; byte 255 (NaN, never in a checkpoint) gives inf here, NaN there: non-finite both.
DSV4_INLINE __m128 fp4_w_scales4(const uint8_t* sw) noexcept {
    int32_t raw;
    std::memcpy(&raw, sw, 4);
    const __m128i e = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(raw));
    __m128 f = _mm_castsi128_ps(_mm_slli_epi32(e, 23));
    f = _mm_blendv_ps(f, _mm_set1_ps(0x1p-127f), _mm_castsi128_ps(_mm_cmpeq_epi32(e, _mm_setzero_si128())));
    return _mm_mul_ps(f, _mm_set1_ps(0.5f));
}
/// The same for 8 consecutive blocks (AVX2 superblocks). e << 23 is 2^(e-127) for e >= 1 and
/// +0 for e = 0, the one value below 2^-127: a max puts the subnormal 2^-127 there (one op
/// where a compare and a blend took two or three; 255 gives inf, as in fp4_w_scales4).
DSV4_INLINE __m256 fp4_w_scales8(const uint8_t* sw) noexcept {
    int64_t raw;
    std::memcpy(&raw, sw, 8);
    const __m256i e = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(raw));
    const __m256 f = _mm256_max_ps(_mm256_castsi256_ps(_mm256_slli_epi32(e, 23)), _mm256_set1_ps(0x1p-127f));
    return _mm256_mul_ps(f, _mm256_set1_ps(0.5f));
}
#endif

#if defined(__AVX2__)
// ------------------------------------------------------------------ AVX2
/// 16 e4m3 bytes -> two vectors of 8 f32 holding e4m3 * 2^-8 (exact).
DSV4_INLINE void fp8_to_f32_scaled(arch::avx2, const uint8_t* p, vf32<arch::avx2>& lo, vf32<arch::avx2>& hi) noexcept {
    // sign-extended byte << 7 puts sign at bit 15 (and a stray bit 14), exp+mantissa at 7..13
    const __m256i h = _mm256_and_si256(
        _mm256_slli_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 7),
        _mm256_set1_epi16(int16_t(0xBF80)));
    lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
    hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

/// 16 e4m3 codes -> e4m3 * 2^-120 as bf16 bit patterns (16-bit lanes): sign-extended to 16
/// bits, shifted by 4 and masked, the code's exponent and mantissa land in bf16's fields (f32's
/// exponent field, hence the 2^-120). Subnormal codes become bf16 subnormals (m * 2^-129); the
/// NaN codes 0x7F/0xFF come out as 480 * 2^-120.
DSV4_INLINE __m256i fp8_to_bf16_words(__m128i codes) noexcept {
    return _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(codes), 4), _mm256_set1_epi16(int16_t(0x87F0)));
}
/// 16 bf16 bit patterns -> f32 split by parity: even[i] = element 2i (the low half of a
/// 32-bit lane shifted up), odd[i] = element 2i + 1 (the high half, low half cleared). Two
/// ops, exact.
DSV4_INLINE void bf16_words_to_f32_pairs(__m256i v, __m256& even, __m256& odd) noexcept {
    odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(int(0xFFFF0000u))));
    even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/// 16 e4m3 bytes -> e4m3 * 2^-120 as f32, split by parity: even[i] = weight 2i, odd[i] =
/// weight 2i + 1 (the pairing of bf16_pairs_to_f32). Integer ops only, no F16C: five ops per
/// 16 weights (F16C: six, two of them 2-uop conversions). Subnormal codes become exact f32
/// subnormals.
DSV4_INLINE void fp8_to_f32_pairs(arch::avx2, const uint8_t* p, __m256& even, __m256& odd) noexcept {
    bf16_words_to_f32_pairs(fp8_to_bf16_words(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), even, odd);
}
/// 16 bf16 values -> f32 split by parity, as fp8_to_f32_pairs: two ops (exact).
DSV4_INLINE void bf16_pairs_to_f32(arch::avx2, const uint16_t* p, __m256& even, __m256& odd) noexcept {
    bf16_words_to_f32_pairs(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), even, odd);
}

/// 32 e2m1 values (16 bytes, element 2k in the low nibble of byte k) -> 4 x 8 f32 of 2*e2m1.
DSV4_INLINE void fp4_block_to_f32x2(arch::avx2, const uint8_t* p, vf32<arch::avx2>* out) noexcept {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i m = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    const __m128i lut = _mm_load_si128(reinterpret_cast<const __m128i*>(e2m1_x2_table));
    const __m128i v0 = _mm_shuffle_epi8(lut, _mm_unpacklo_epi8(lo, hi));  // elements 0..15
    const __m128i v1 = _mm_shuffle_epi8(lut, _mm_unpackhi_epi8(lo, hi));  // elements 16..31
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v0));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v0, 8)));
    out[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v1));
    out[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v1, 8)));
}

/// u8 x s8 dot products accumulated into int32 lanes (4 products per lane).
DSV4_INLINE __m256i dot_u8s8(arch::avx2, __m256i acc, __m256i u, __m256i s) noexcept {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
DSV4_INLINE __m256i dot_u8s8(arch::avx2_vnni, __m256i acc, __m256i u, __m256i s) noexcept {
#  if defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(acc, u, s);
#  else
    return dot_u8s8(arch::avx2{}, acc, u, s);
#  endif
}
/// Two u8 x s8 dot products into one set of int32 lanes (from zero). Without VNNI the two
/// maddubs results are added as int16 before one madd: 4 ops instead of 6 (|pair| <= 2 * 24
/// * 127 = 6096 for the FP4 operands, so the int16 sum of two stays below 2^15: exact).
DSV4_INLINE __m256i dot2_u8s8(arch::avx2, __m256i u0, __m256i s0, __m256i u1, __m256i s1) noexcept {
    return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(u0, s0), _mm256_maddubs_epi16(u1, s1)),
                             _mm256_set1_epi16(1));
}
DSV4_INLINE __m256i dot2_u8s8(arch::avx2_vnni, __m256i u0, __m256i s0, __m256i u1, __m256i s1) noexcept {
#  if defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u0, s0), u1, s1);
#  else
    return dot2_u8s8(arch::avx2{}, u0, s0, u1, s1);
#  endif
}

/// One group of 4 FP4 blocks (64 weight bytes, 128 elements, scales sw[0..4)) against MT
/// int8 activation rows in group layout (see kernels/gemv.hpp) starting at element g0:
/// acc[j] += sum_b dot_b(w, a_j) * d_j[g0/32 + b] * 2^(e_b - 127) / 2.
template <std::size_t MT, class A>
DSV4_INLINE void fp4q8_group_fma(A, const uint8_t* w, const uint8_t* sw, const int8_t* const* a,
                                 const float* const* d, const int32_t* const* corr, std::size_t g0,
                                 vf32<arch::avx2>* acc) noexcept {
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(e2m1_x2_plus12_table)));
    const __m256i m = _mm256_set1_epi8(0x0F);
    const __m256i b01 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    const __m256i b23 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32));
    const __m256i ul[2] = {_mm256_shuffle_epi8(lut, _mm256_and_si256(b01, m)),  // evens of blocks 0,1 / 2,3
                           _mm256_shuffle_epi8(lut, _mm256_and_si256(b23, m))};
    const __m256i uh[2] = {_mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(b01, 4), m)),  // odds
                           _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(b23, 4), m))};
    const __m128 ws = fp4_w_scales4(sw);
    const __m256i lo_idx = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), hi_idx = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
    for (std::size_t j = 0; j < MT; ++j) {
        const int8_t* aj = a[j] + g0;
        const int32_t* cj = corr[j] + g0 / 32;
        const __m256 s4 = _mm256_castps128_ps256(_mm_mul_ps(_mm_loadu_ps(d[j] + g0 / 32), ws));
        __m256 r = acc[j];
        for (int h = 0; h < 2; ++h) {  // blocks 2h, 2h+1: int32 lanes 0-3 and 4-7
            const __m256i al = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aj + 32 * h));
            const __m256i ah = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aj + 64 + 32 * h));
            // starts from -12 * sum(a) per block (q8_rows::corr) in one lane of the block's four
            __m256i dot = dot_u8s8(A{}, _mm256_setr_epi32(cj[2 * h], 0, 0, 0, cj[2 * h + 1], 0, 0, 0), ul[h], al);
            dot = dot_u8s8(A{}, dot, uh[h], ah);
            r = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_permutevar8x32_ps(s4, h ? hi_idx : lo_idx), r);
        }
        acc[j] = r;
    }
}

/// Block sums of 4 vectors of int32 partials, one block per 128-bit half (4 partials):
/// lane 4h + i of the result = the sum of v[i]'s half h. Exact (integers), 6 shuffles + 3
/// adds for 8 blocks instead of a conversion, scale broadcast and FMA per block.
DSV4_INLINE __m256i block_sums4(const __m256i* v) noexcept {
    const __m256i t0 = _mm256_add_epi32(_mm256_unpacklo_epi32(v[0], v[1]), _mm256_unpackhi_epi32(v[0], v[1]));
    const __m256i t1 = _mm256_add_epi32(_mm256_unpacklo_epi32(v[2], v[3]), _mm256_unpackhi_epi32(v[2], v[3]));
    return _mm256_add_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
}

/// Four groups (16 blocks, 256 weight bytes, 512 elements) at once: per activation row,
/// exact int32 block dot products (each starting at -12 * sum(a)), reduced to one lane
/// per block, converted once and scaled by d_j[b] * 2^(e_b - 128) in one FMA per 8 blocks.
template <std::size_t MT, class A>
DSV4_INLINE void fp4q8_super_fma(A, const uint8_t* w, const uint8_t* sw, const int8_t* const* a,
                                 const float* const* d, const int32_t* const* corr, std::size_t g0,
                                 vf32<arch::avx2>* acc) noexcept {
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(e2m1_x2_plus12_table)));
    const __m256i m = _mm256_set1_epi8(0x0F);
    __m256i ul[8], uh[8];  // [2g + h]: blocks 2h, 2h+1 of group g
    DSV4_UNROLL
    for (int i = 0; i < 8; ++i) {
        const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * i));
        ul[i] = _mm256_shuffle_epi8(lut, _mm256_and_si256(b, m));
        uh[i] = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(b, 4), m));
    }
    // block_sums4 of [g0h0, g0h1, g1h0, g1h1] puts natural block 2i + h in lane 4h + i;
    // to_natural gathers them back in block order (lane b <- lane 4(b % 2) + b / 2)
    const __m256i to_natural = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256 ws[2] = {fp4_w_scales8(sw), fp4_w_scales8(sw + 8)};
    DSV4_UNROLL
    for (std::size_t j = 0; j < MT; ++j) {
        const int8_t* aj = a[j] + g0;
        const int32_t* cj = corr[j] + g0 / 32;
        __m256 r = acc[j];
        DSV4_UNROLL
        for (int p = 0; p < 2; ++p) {  // groups 2p, 2p+1
            __m256i dot[4];
            DSV4_UNROLL
            for (int i = 0; i < 4; ++i) {
                const int gi = 2 * p + i / 2, h = i % 2;
                const int8_t* ag = aj + 128 * gi + 32 * h;
                dot[i] = dot2_u8s8(A{}, ul[2 * gi + h], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ag)),
                                   uh[2 * gi + h], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ag + 64)));
            }
            // exact block sums in block order, plus -12 * sum(a) per block (q8_rows::corr)
            const __m256i sums = _mm256_add_epi32(_mm256_permutevar8x32_epi32(block_sums4(dot), to_natural),
                                                  _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cj + 8 * p)));
            const __m256 s = _mm256_mul_ps(_mm256_loadu_ps(d[j] + g0 / 32 + 8 * p), ws[p]);
            r = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), s, r);
        }
        acc[j] = r;
    }
}
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__)
/// fp8_to_bf16_words on 32 codes (16-bit lanes of a zmm).
DSV4_INLINE __m512i fp8_to_bf16_words(__m256i codes) noexcept {
    return _mm512_and_si512(_mm512_slli_epi16(_mm512_cvtepi8_epi16(codes), 4), _mm512_set1_epi16(int16_t(0x87F0)));
}
/// bf16_words_to_f32_pairs on 32 bf16 values (16 even, 16 odd).
DSV4_INLINE void bf16_words_to_f32_pairs(__m512i v, __m512& even, __m512& odd) noexcept {
    odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(int(0xFFFF0000u))));
    even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

// ------------------------------------------------------------------ AVX-512
DSV4_INLINE void fp8_to_f32_scaled(arch::avx512, const uint8_t* p, vf32<arch::avx512>& lo,
                                   vf32<arch::avx512>& hi) noexcept {
    const __m512i h = _mm512_and_si512(
        _mm512_slli_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 7),
        _mm512_set1_epi16(int16_t(0xBF80)));
    lo = _mm512_cvtph_ps(_mm512_castsi512_si256(h));
    hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(h, 1));
}

/// 16 e4m3 bytes -> e4m3 * 2^-120 as f32 bit patterns, by integer ops only: the byte's
/// exponent and mantissa land in the f32 exponent and mantissa fields (biases 7 vs 127).
/// Subnormal codes become f32 subnormals m * 2^-129, still exact; callers multiply by
/// 2^120 * block scale (fp8_scaled_weights) before any sum. Cheaper than F16C on Zen 4/5.
DSV4_INLINE __m512 fp8_to_f32_bits(arch::avx512, const uint8_t* p) noexcept {
    const __m512i v = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_slli_epi32(v, 20), _mm512_set1_epi32(int(0x87F00000u))));
}

#  if defined(__AVX512BF16__)
/// 32 e4m3 bytes -> e4m3 * 2^-120 as bf16 bit patterns (same integer trick as
/// fp8_to_f32_bits, on 16-bit lanes: bf16 has f32's exponent field). Subnormal codes
/// become bf16 subnormals, which vdpbf16ps reads as zero (its inputs are DAZ): the one
/// approximation of the fast FP8 path (kernels/gemv.hpp states the bound).
DSV4_INLINE __m512bh fp8_to_bf16_bits(arch::avx512_bf16, const uint8_t* p) noexcept {
    return (__m512bh)fp8_to_bf16_words(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));  // vector bit cast
}
#  endif

DSV4_INLINE void fp4_block_to_f32x2(arch::avx512, const uint8_t* p, vf32<arch::avx512>* out) noexcept {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i m = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    const __m128i lut = _mm_load_si128(reinterpret_cast<const __m128i*>(e2m1_x2_table));
    out[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_shuffle_epi8(lut, _mm_unpacklo_epi8(lo, hi))));
    out[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_shuffle_epi8(lut, _mm_unpackhi_epi8(lo, hi))));
}

DSV4_INLINE __m512i dot_u8s8(arch::avx512, __m512i acc, __m512i u, __m512i s) noexcept {
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1)));
}
DSV4_INLINE __m512i dot_u8s8(arch::avx512_vnni, __m512i acc, __m512i u, __m512i s) noexcept {
#  if defined(__AVX512VNNI__)
    return _mm512_dpbusd_epi32(acc, u, s);
#  else
    return dot_u8s8(arch::avx512{}, acc, u, s);
#  endif
}

template <std::size_t MT, class A>
DSV4_INLINE void fp4q8_group_fma(A, const uint8_t* w, const uint8_t* sw, const int8_t* const* a,
                                 const float* const* d, const int32_t* const* corr, std::size_t g0,
                                 vf32<arch::avx512>* acc) noexcept {
    const __m512i lut = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(e2m1_x2_plus12_table)));
    const __m512i m = _mm512_set1_epi8(0x0F);
    const __m512i b = _mm512_loadu_si512(w);
    const __m512i ul = _mm512_shuffle_epi8(lut, _mm512_and_si512(b, m));                         // evens of blocks 0-3
    const __m512i uh = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(b, 4), m));  // odds
    const __m512i spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const __m128 ws = fp4_w_scales4(sw);
    for (std::size_t j = 0; j < MT; ++j) {
        const int8_t* aj = a[j] + g0;
        const int32_t* cj = corr[j] + g0 / 32;  // -12 * sum(a) per block, into lane 0 of its 4
        const __m512i c = _mm512_setr_epi32(cj[0], 0, 0, 0, cj[1], 0, 0, 0, cj[2], 0, 0, 0, cj[3], 0, 0, 0);
        __m512i dot = dot_u8s8(A{}, c, ul, _mm512_loadu_si512(aj));
        dot = dot_u8s8(A{}, dot, uh, _mm512_loadu_si512(aj + 64));
        const __m128 s4 = _mm_mul_ps(_mm_loadu_ps(d[j] + g0 / 32), ws);
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(s4)), acc[j]);
    }
}

/// AVX-512 block_sums4: lane 4L + i = the sum of v[i]'s 128-bit lane L (one block each).
DSV4_INLINE __m512i block_sums4(const __m512i* v) noexcept {
    const __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[0], v[1]), _mm512_unpackhi_epi32(v[0], v[1]));
    const __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2], v[3]), _mm512_unpackhi_epi32(v[2], v[3]));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
}

/// Four groups (16 blocks, 256 weight bytes) at once; see the AVX2 form.
template <std::size_t MT, class A>
DSV4_INLINE void fp4q8_super_fma(A, const uint8_t* w, const uint8_t* sw, const int8_t* const* a,
                                 const float* const* d, const int32_t* const* corr, std::size_t g0,
                                 vf32<arch::avx512>* acc) noexcept {
    const __m512i lut = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(e2m1_x2_plus12_table)));
    const __m512i m = _mm512_set1_epi8(0x0F);
    __m512i ul[4], uh[4];
    DSV4_UNROLL
    for (int g = 0; g < 4; ++g) {
        const __m512i b = _mm512_loadu_si512(w + 64 * g);
        ul[g] = _mm512_shuffle_epi8(lut, _mm512_and_si512(b, m));
        uh[g] = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(b, 4), m));
    }
    // block_sums4 puts natural block 4i + L (group i, block L) in lane 4L + i; the same
    // transposition brings them back to block order
    const __m512i to_natural = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i e = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sw)));
    const __m512 ws = _mm512_mul_ps(
        _mm512_mask_mov_ps(_mm512_castsi512_ps(_mm512_slli_epi32(e, 23)), _mm512_testn_epi32_mask(e, e),
                           _mm512_set1_ps(0x1p-127f)),
        _mm512_set1_ps(0.5f));
    DSV4_UNROLL
    for (std::size_t j = 0; j < MT; ++j) {
        const int8_t* aj = a[j] + g0;
        __m512i dot[4];
        DSV4_UNROLL
        for (int g = 0; g < 4; ++g) {
            dot[g] = dot_u8s8(A{}, _mm512_setzero_si512(), ul[g], _mm512_loadu_si512(aj + 128 * g));
            dot[g] = dot_u8s8(A{}, dot[g], uh[g], _mm512_loadu_si512(aj + 128 * g + 64));
        }
        // exact block sums in block order, plus -12 * sum(a) per block (q8_rows::corr): one
        // load per 16 blocks rather than an accumulator load per 4
        const __m512i sums = _mm512_add_epi32(_mm512_permutexvar_epi32(to_natural, block_sums4(dot)),
                                              _mm512_loadu_si512(corr[j] + g0 / 32));
        const __m512 s = _mm512_mul_ps(_mm512_loadu_ps(d[j] + g0 / 32), ws);
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums), s, acc[j]);
    }
}
#endif

}  // namespace simd
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
