// dsv4/kernels/memory.hpp - the streaming-read kernel that measures the bandwidth ceiling.
// Decode is weight streaming, so every GEMV is judged against how fast this same
// binary can merely read the same bytes (benchmarks print the ratio as bw_frac).
#pragma once

#include "../simd/vec.hpp"

#include <cstring>

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace kernels {

/// Reads `bytes` bytes once and folds them into a checksum (so nothing is elided).
template <class Arch> uint64_t stream_read(const void* data, std::size_t bytes) noexcept {
    const unsigned char* p = static_cast<const unsigned char*>(data);
    std::size_t i = 0;
    uint64_t acc = 0;
    if constexpr (!simd::is_scalar<Arch>) {
        using vi = simd::vi32<Arch>;
        constexpr std::size_t V = sizeof(vi);
        vi a0(0), a1(0), a2(0), a3(0);  // four chains: loads, not the xor, are the limit
        for (; i + 4 * V <= bytes; i += 4 * V) {
            a0 ^= vi::load_unaligned(reinterpret_cast<const int32_t*>(p + i));
            a1 ^= vi::load_unaligned(reinterpret_cast<const int32_t*>(p + i + V));
            a2 ^= vi::load_unaligned(reinterpret_cast<const int32_t*>(p + i + 2 * V));
            a3 ^= vi::load_unaligned(reinterpret_cast<const int32_t*>(p + i + 3 * V));
        }
        alignas(64) int32_t lanes[V / 4];
        ((a0 ^ a1) ^ (a2 ^ a3)).store_aligned(lanes);
        for (int32_t v : lanes) acc = acc * 31 + uint32_t(v);
    }
    for (; i + 8 <= bytes; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        acc ^= w;
    }
    for (; i < bytes; ++i) acc ^= p[i];
    return acc;
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
