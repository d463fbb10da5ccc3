// dsv4/hadamard.hpp - the Hadamard rotation of spec §3.4 (the indexer's q and keys before
// their FP4 simulation): rotate(x) = (x · H_n) · n^-1/2, H_n Sylvester order, bf16 in/out,
// f32 inside, in place. Kernel and precision: kernels/hadamard.hpp. Every tier gives the
// same bits. Throws dsv4::error on bad arguments; never allocates.
#pragma once

#include "codec.hpp"

namespace dsv4 {
inline namespace DSV4_ISA_NS {

/// Rotates each of `rows` vectors of n bf16 values in place (row r at x + r * stride).
/// n: a power of two up to hadamard_max_n (128 in V4: one indexer head).
inline void hadamard_rotate(uint16_t* x, std::size_t rows, std::size_t n, std::size_t stride) {
    detail::require(n > 0 && (n & (n - 1)) == 0 && n <= hadamard_max_n, "hadamard_rotate",
                    "n must be a power of two in [1, 1024]");
    detail::require(rows == 0 || x, "hadamard_rotate", "null pointer");
    detail::require(rows <= 1 || stride >= n, "hadamard_rotate", "stride smaller than n");
    const auto fn = DSV4_KERNEL(hadamard_row);
    for (std::size_t r = 0; r < rows; ++r) fn(x + r * stride, n);
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
