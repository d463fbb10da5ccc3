// dsv4/formats.hpp - the checkpoint's number formats, one element at a time.
//
// These scalar codecs define the exact semantics (spec §1.4, §2.1); the bulk and SIMD
// forms in kernels/codec.hpp must agree with them bit for bit. Nothing here depends on FTZ/DAZ
// being off except that E8M0 code 0 (2^-127) is an fp32 subnormal: keep them off.
#pragma once

#include "config.hpp"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace dsv4 {
inline namespace DSV4_ISA_NS {

DSV4_INLINE uint32_t f32_bits(float x) noexcept { return std::bit_cast<uint32_t>(x); }
DSV4_INLINE float f32_from_bits(uint32_t b) noexcept { return std::bit_cast<float>(b); }

// ---------------------------------------------------------------- BF16 / FP16

/// BF16 bits -> f32 (exact).
DSV4_INLINE float bf16_to_f32(uint16_t h) noexcept { return f32_from_bits(uint32_t(h) << 16); }

/// f32 -> BF16 bits, round to nearest even; overflow rounds to inf, NaN becomes a
/// quiet NaN with the sign kept (0x7FC0 / 0xFFC0, as torch writes it).
DSV4_INLINE uint16_t f32_to_bf16(float x) noexcept {
    const uint32_t b = f32_bits(x);
    if ((b & 0x7FFFFFFFu) > 0x7F800000u) return uint16_t(((b >> 16) & 0x8000u) | 0x7FC0u);
    return uint16_t((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

/// BF16 round trip: the f32 value of bf16(x).
DSV4_INLINE float round_bf16(float x) noexcept { return bf16_to_f32(f32_to_bf16(x)); }

/// IEEE binary16 bits -> f32 (exact, subnormals included).
DSV4_INLINE float fp16_to_f32(uint16_t h) noexcept {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1F) return f32_from_bits(sign | 0x7F800000u | (m << 13));
    if (e != 0) return f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
    // subnormal: m * 2^-24, exact in f32
    const float v = float(m) * 0x1p-24f;
    return sign ? -v : v;
}

// ---------------------------------------------------------------- FP8 e4m3fn

/// e4m3fn code -> f32. Codes 0x7F/0xFF are NaN; no infinities; max 448.
DSV4_INLINE float e4m3_to_f32(uint8_t c) noexcept {
    const uint32_t sign = uint32_t(c & 0x80u) << 24;
    const uint32_t e = (c >> 3) & 0xFu, m = c & 0x7u;
    if (e == 0xF && m == 0x7) return f32_from_bits(sign | 0x7FC00000u);
    if (e != 0) return f32_from_bits(sign | ((e + 120u) << 23) | (m << 20));
    const float v = float(m) * 0x1p-9f;
    return sign ? -v : v;
}

/// f32 -> e4m3fn, round to nearest even, saturating at ±448 (no NaN input expected;
/// NaN maps to 0x7F|sign). The sign survives rounding to zero (-tiny -> 0x80).
DSV4_INLINE uint8_t f32_to_e4m3(float x) noexcept {
    const uint32_t b = f32_bits(x);
    const uint8_t sign = uint8_t((b >> 24) & 0x80u);
    const uint32_t a = b & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return uint8_t(sign | 0x7F);
    if (a >= 0x43E00000u) return uint8_t(sign | 0x7E);  // >= 448 saturates
    if (a < 0x3C800000u) {                             // < 2^-6: subnormal grid of 2^-9
        const float q = std::nearbyint(f32_from_bits(a) * 512.0f);  // RNE (default mode)
        return uint8_t(sign | uint8_t(q));             // q == 8 is exactly code 0x08 = 2^-6
    }
    const uint32_t r = (a + 0x7FFFFu + ((a >> 20) & 1u)) & ~0xFFFFFu;  // keep 3 mantissa bits
    const uint32_t code = (r >> 20) - (120u << 3);
    return uint8_t(sign | (code > 0x7Eu ? 0x7Eu : code));
}

// ---------------------------------------------------------------- FP4 e2m1

/// e2m1 nibble (0..15) -> f32: magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6; bit 3 is the sign.
DSV4_INLINE float e2m1_to_f32(uint8_t nib) noexcept {
    constexpr float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    const float v = mag[nib & 7u];
    return (nib & 8u) ? -v : v;
}

/// f32 -> e2m1 nibble, round to nearest even on the e2m1 grid, saturating at ±6.
DSV4_INLINE uint8_t f32_to_e2m1(float x) noexcept {
    const uint32_t b = f32_bits(x);
    const uint8_t sign = uint8_t((b >> 28) & 0x8u);
    const uint32_t a = b & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return uint8_t(sign | 0x7);
    if (a >= 0x40C00000u) return uint8_t(sign | 0x7);  // >= 6 saturates
    if (a < 0x3F800000u) {                             // < 1: grid of 0.5
        const float q = std::nearbyint(f32_from_bits(a) * 2.0f);
        return uint8_t(sign | uint8_t(q));             // q == 2 is code 2 = 1.0
    }
    const uint32_t r = (a + 0x1FFFFFu + ((a >> 22) & 1u)) & ~0x3FFFFFu;  // keep 1 mantissa bit
    const uint32_t code = (r >> 22) - (126u << 1);
    return uint8_t(sign | (code > 7u ? 7u : code));
}

// ---------------------------------------------------------------- E8M0

/// E8M0 scale byte -> f32 2^(e-127). e = 0 is the subnormal 2^-127; 0xFF is NaN.
DSV4_INLINE float e8m0_to_f32(uint8_t e) noexcept {
    if (e == 0xFF) return f32_from_bits(0x7FC00000u);
    if (e == 0) return f32_from_bits(0x00400000u);
    return f32_from_bits(uint32_t(e) << 23);
}

// ---------------------------------------------------------------- scale rule (§2.1)

inline constexpr float fp8_max = 448.0f;
inline constexpr float fp4_max = 6.0f;
inline constexpr float fp8_amax_floor = 1e-4f;
inline constexpr float fp4_amax_floor = 6.0f * 0x1p-126f;

/// Power-of-two scale exponent for a block with absolute maximum amax:
/// e = ceil(log2(max(amax, floor) * f32(1/qmax))) computed from the f32 bits, exactly as
/// the official kernel does (multiply by the rounded reciprocal, never divide).
/// The E8M0 byte is e + 127.
DSV4_INLINE int pow2_scale_exponent(float amax, float qmax, float amax_floor) noexcept {
    const float a = amax > amax_floor ? amax : amax_floor;  // NaN amax -> floor (see kernels/codec.hpp)
    const float t = a * (1.0f / qmax);
    const uint32_t b = f32_bits(t);
    int e = int((b >> 23) & 0xFFu) - 127;
    if (b & 0x7FFFFFu) e += 1;
    return e;
}

/// 2^e as f32 for e in [-127, 128] (2^128 -> inf, 2^-127 subnormal).
DSV4_INLINE float exp2i(int e) noexcept {
    if (e >= 128) return f32_from_bits(0x7F800000u);
    if (e >= -126) return f32_from_bits(uint32_t(e + 127) << 23);
    return f32_from_bits(0x00400000u >> (-127 - e));
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
