// dsv4/codec.hpp - checked public entry points for the number formats and the
// activation quantisers (spec §1.4, §2). Layouts are the checkpoint's: bf16 as uint16
// bit patterns, e4m3/e8m0 as bytes, e2m1 packed two per byte with the even element in
// the low nibble. All functions throw dsv4::error on bad arguments and never allocate.
#pragma once

#include "dispatch.hpp"

#include <string>

namespace dsv4 {
inline namespace DSV4_ISA_NS {

namespace detail {
inline void require(bool ok, const char* fn, const char* what) {
    if (!ok) throw error(std::string("dsv4::") + fn + ": " + what);
}
}  // namespace detail

/// e4m3fn codes -> f32 (NaN codes 0x7F/0xFF decode to NaN).
inline void decode_e4m3(const uint8_t* in, float* out, std::size_t n) {
    detail::require(n == 0 || (in && out), "decode_e4m3", "null pointer");
    DSV4_KERNEL(decode_e4m3)(in, out, n);
}
/// bf16 bit patterns -> f32 (exact).
inline void decode_bf16(const uint16_t* in, float* out, std::size_t n) {
    detail::require(n == 0 || (in && out), "decode_bf16", "null pointer");
    DSV4_KERNEL(decode_bf16)(in, out, n);
}
/// f32 -> bf16 bit patterns, round to nearest even.
inline void encode_bf16(const float* in, uint16_t* out, std::size_t n) {
    detail::require(n == 0 || (in && out), "encode_bf16", "null pointer");
    DSV4_KERNEL(encode_bf16)(in, out, n);
}
/// IEEE fp16 bit patterns -> f32 (exact).
inline void decode_fp16(const uint16_t* in, float* out, std::size_t n) {
    detail::require(n == 0 || (in && out), "decode_fp16", "null pointer");
    DSV4_KERNEL(decode_fp16)(in, out, n);
}
/// f32 -> e4m3fn codes, round to nearest even, saturating at ±448.
inline void encode_e4m3(const float* in, uint8_t* out, std::size_t n) {
    detail::require(n == 0 || (in && out), "encode_e4m3", "null pointer");
    DSV4_KERNEL(encode_e4m3)(in, out, n);
}
/// f32 -> e2m1 nibbles (one per output byte), round to nearest even, saturating at ±6.
inline void encode_e2m1(const float* in, uint8_t* out, std::size_t n) {
    detail::require(n == 0 || (in && out), "encode_e2m1", "null pointer");
    DSV4_KERNEL(encode_e2m1)(in, out, n);
}

/// FP8 act_quant, GEMM-input form (spec §2.2) of a [rows, cols] bf16 matrix:
/// codes [rows, cols] e4m3 and scales [rows, cols/block] E8M0. Strides in elements.
/// @pre block > 0, cols % block == 0.
inline void act_quant_fp8(const uint16_t* x, std::size_t rows, std::size_t cols, std::size_t x_stride,
                          std::size_t block, uint8_t* codes, std::size_t codes_stride, uint8_t* scales,
                          std::size_t scales_stride) {
    detail::require(block > 0 && cols % block == 0, "act_quant_fp8", "cols must be a multiple of block");
    detail::require(rows == 0 || (x && codes && scales), "act_quant_fp8", "null pointer");
    detail::require(x_stride >= cols && codes_stride >= cols && scales_stride >= cols / block,
                    "act_quant_fp8", "stride smaller than the row");
    const auto fn = DSV4_KERNEL(act_quant_fp8_row);
    for (std::size_t r = 0; r < rows; ++r)
        fn(x + r * x_stride, cols, block, codes + r * codes_stride, scales + r * scales_stride);
}

/// FP8 act_quant, simulation form (spec §2.2), in place on a [rows, cols] bf16 matrix.
inline void act_quant_fp8_sim(uint16_t* x, std::size_t rows, std::size_t cols, std::size_t x_stride,
                              std::size_t block, fp8_sim_revision rev = fp8_sim_revision::current) {
    detail::require(block > 0 && cols % block == 0, "act_quant_fp8_sim", "cols must be a multiple of block");
    detail::require(rows == 0 || x, "act_quant_fp8_sim", "null pointer");
    detail::require(x_stride >= cols, "act_quant_fp8_sim", "stride smaller than the row");
    const auto fn = DSV4_KERNEL(act_quant_fp8_sim_row);
    for (std::size_t r = 0; r < rows; ++r) fn(x + r * x_stride, cols, block, rev);
}

/// FP4 act_quant, GEMM-input form (spec §2.3): packed [rows, cols/2], scales [rows, cols/32].
inline void fp4_act_quant(const uint16_t* x, std::size_t rows, std::size_t cols, std::size_t x_stride,
                          uint8_t* packed, std::size_t packed_stride, uint8_t* scales,
                          std::size_t scales_stride) {
    detail::require(cols % 32 == 0, "fp4_act_quant", "cols must be a multiple of 32");
    detail::require(rows == 0 || (x && packed && scales), "fp4_act_quant", "null pointer");
    detail::require(x_stride >= cols && packed_stride >= cols / 2 && scales_stride >= cols / 32,
                    "fp4_act_quant", "stride smaller than the row");
    const auto fn = DSV4_KERNEL(fp4_act_quant_row);
    for (std::size_t r = 0; r < rows; ++r)
        fn(x + r * x_stride, cols, packed + r * packed_stride, scales + r * scales_stride);
}

/// FP4 simulation (spec §2.3), in place on a [rows, cols] bf16 matrix, blocks of 32.
inline void fp4_act_quant_sim(uint16_t* x, std::size_t rows, std::size_t cols, std::size_t x_stride) {
    detail::require(cols % 32 == 0, "fp4_act_quant_sim", "cols must be a multiple of 32");
    detail::require(rows == 0 || x, "fp4_act_quant_sim", "null pointer");
    detail::require(x_stride >= cols, "fp4_act_quant_sim", "stride smaller than the row");
    const auto fn = DSV4_KERNEL(fp4_act_quant_sim_row);
    for (std::size_t r = 0; r < rows; ++r) fn(x + r * x_stride, cols);
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
