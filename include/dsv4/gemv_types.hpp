// dsv4/gemv_types.hpp - views of weights, activations and outputs for the GEMV family.
// Plain data: the same types in every translation unit whatever its ISA flags.
#pragma once

#include "config.hpp"

namespace dsv4 {

struct fp4_matrix {
    const uint8_t* w = nullptr;      ///< [n, k/2] packed e2m1
    std::size_t w_stride = 0;        ///< bytes between rows (>= k/2)
    const uint8_t* scale = nullptr;  ///< [n, k/32] E8M0
    std::size_t scale_stride = 0;    ///< bytes between scale rows (>= k/32)
    std::size_t n = 0, k = 0;
};
struct fp8_matrix {
    const uint8_t* w = nullptr;      ///< [n, k] e4m3
    std::size_t w_stride = 0;        ///< bytes between rows (>= k)
    const uint8_t* scale = nullptr;  ///< [ceil(n/128), k/128] E8M0
    std::size_t scale_stride = 0;    ///< bytes between scale rows (>= k/128)
    std::size_t n = 0, k = 0;
};
struct bf16_matrix {
    const uint16_t* w = nullptr;  ///< [n, k] bf16 bits
    std::size_t w_stride = 0;     ///< elements between rows (>= k)
    std::size_t n = 0, k = 0;
};
struct f32_matrix {
    const float* w = nullptr;  ///< [n, k]
    std::size_t w_stride = 0;  ///< elements between rows (>= k)
    std::size_t n = 0, k = 0;
};
/// M activation rows of f32.
struct f32_rows {
    const float* x = nullptr;
    std::size_t stride = 0;  ///< elements between rows
    std::size_t m = 0;
};
/// M activation rows of bf16 bit patterns (bf16_gemv_bf16: the head's normed input).
struct bf16_rows {
    const uint16_t* x = nullptr;
    std::size_t stride = 0;  ///< elements between rows
    std::size_t m = 0;
};
/// M activation rows quantised to int8 per 32 (fast FP4 mode), see quantize_q8.
struct q8_rows {
    const int8_t* q = nullptr;
    std::size_t q_stride = 0;  ///< elements between rows (>= k)
    const float* scales = nullptr;
    std::size_t scales_stride = 0;  ///< elements between rows (>= k/32)
    const int32_t* corr = nullptr;  ///< per block -12 * sum(q): k/32 per row
    std::size_t corr_stride = 0;    ///< elements between rows (>= k/32)
    std::size_t m = 0;
};
/// M activation rows for the fast FP8 mode (fp8_gemv_bf16), see to_bf16_blocks: per block
/// of 128, x[k] = bf16(a[k] * 2^shift[k/128]), the power of two putting the block's largest
/// |a| in [2^109, 2^110) so that every product with an e4m3 weight is a normal f32.
struct bf16_block_rows {
    const uint16_t* x = nullptr;
    std::size_t x_stride = 0;  ///< elements between rows (>= k)
    const int32_t* shift = nullptr;
    std::size_t shift_stride = 0;  ///< elements between rows (>= k/128)
    std::size_t m = 0;
};
/// Output y[m, n]: exactly one of f32 / bf16 is set; stride in elements between rows of m.
struct gemv_out {
    float* f32 = nullptr;
    uint16_t* bf16 = nullptr;
    std::size_t stride = 0;
};
/// Routed-expert SwiGLU epilogue of the fused gate+up projection (spec §8.2):
/// h = route_weight[m] * silu(min(a, limit)) * clamp(b, -limit, limit), with a = bf16(w1 x),
/// b = bf16(w3 x). route_weights may be null (weight 1: the shared expert); limit <= 0
/// disables the clamp (the initial revision's shared expert).
struct swiglu_epilogue {
    const float* route_weights = nullptr;
    float limit = 10.0f;
};

}  // namespace dsv4
