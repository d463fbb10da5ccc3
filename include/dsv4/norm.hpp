// dsv4/norm.hpp - RMSNorm (spec §3.1): the weighted norm in f32 with one rounding, and the
// unweighted per-head q norm in the official bf16 arithmetic. bf16 in and out (uint16
// bit patterns), strides in elements; outputs may alias inputs. Every tier gives the same
// bits. Throws dsv4::error on bad arguments; never allocates.
#pragma once

#include "codec.hpp"

namespace dsv4 {

/// Arithmetic of the unweighted per-head q norm.
enum class q_norm_arith : int {
    bf16 = 0,  ///< official: squares, mean, mean+eps and rsqrt each rounded to bf16 (spec §3.1)
    f32 = 1,   ///< plain f32 (what many ports do): y = bf16(q * rsqrt(mean(q^2) + eps)). On the
               ///< goldens 24-31 % of outputs differ from bf16 arithmetic, each by 1 bf16 step
               ///< (bf16 squares, mean, mean+eps and rsqrt move r by up to 5 * 2^-10: <= 2 steps)
};

inline constexpr float norm_eps = 1e-6f;  ///< V4-Flash norm_eps (ModelArgs default)

inline namespace DSV4_ISA_NS {

/// Weighted RMSNorm of a [rows, n] bf16 matrix: y = bf16(w * (x * rsqrt(mean(x^2) + eps))),
/// w_f32/x_f32 math, one rounding (spec §3.1). w: [n] bf16 (nullptr: no weight).
inline void rmsnorm(const uint16_t* x, std::size_t rows, std::size_t n, std::size_t x_stride, const uint16_t* w,
                    float eps, uint16_t* y, std::size_t y_stride) {
    detail::require(n > 0, "rmsnorm", "n must be positive");
    detail::require(rows == 0 || (x && y), "rmsnorm", "null pointer");
    detail::require(x_stride >= n && y_stride >= n, "rmsnorm", "stride smaller than the row");
    detail::require(eps >= 0.0f, "rmsnorm", "eps must be >= 0");
    const auto fn = DSV4_KERNEL(rmsnorm_row);
    for (std::size_t r = 0; r < rows; ++r) fn(x + r * x_stride, w, n, eps, y + r * y_stride);
}

/// Unweighted per-head q norm of q [tokens, heads, dim] (heads contiguous, `dim` apart;
/// tokens `q_stride` apart), spec §3.1 / §4 step 2. y has the same layout (y_stride).
inline void q_head_norm(const uint16_t* q, std::size_t tokens, std::size_t heads, std::size_t dim,
                        std::size_t q_stride, float eps, uint16_t* y, std::size_t y_stride,
                        q_norm_arith arith = q_norm_arith::bf16) {
    detail::require(dim > 0 && heads > 0, "q_head_norm", "heads and dim must be positive");
    detail::require(tokens == 0 || (q && y), "q_head_norm", "null pointer");
    detail::require(q_stride >= heads * dim && y_stride >= heads * dim, "q_head_norm", "stride smaller than heads*dim");
    detail::require(eps >= 0.0f, "q_head_norm", "eps must be >= 0");
    if (arith == q_norm_arith::bf16) {
        const auto fn = DSV4_KERNEL(q_head_norm_rows);
        for (std::size_t s = 0; s < tokens; ++s) fn(q + s * q_stride, heads, dim, eps, y + s * y_stride);
    } else {
        const auto fn = DSV4_KERNEL(rmsnorm_row);
        for (std::size_t s = 0; s < tokens; ++s)
            for (std::size_t h = 0; h < heads; ++h) fn(q + s * q_stride + h * dim, nullptr, dim, eps, y + s * y_stride + h * dim);
    }
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
