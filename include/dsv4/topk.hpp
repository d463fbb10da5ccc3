// dsv4/topk.hpp - top-k selection over rows of f32 scores (spec §6 step 6), without a
// full sort. Order and tie-break (documented, deterministic): descending score, equal
// scores by LOWER index first (-0 == +0; NaN below -inf) - exactly the first k of a stable
// descending sort. topk_order::index returns the same set in ascending index order.
// Algorithm: kernels/topk.hpp. Throws dsv4::error on bad arguments; never allocates.
#pragma once

#include "codec.hpp"
#include "regions.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>

namespace dsv4 {
inline namespace DSV4_ISA_NS {

/// Scratch bytes of topk for rows of n scores and k picks (one row at a time).
inline std::size_t topk_scratch_bytes(std::size_t n, std::size_t k) noexcept {
    return topk_scratch_words(n, k) * sizeof(uint32_t) + 64;
}

namespace detail {
inline void check_topk(const float* scores, std::size_t rows, std::size_t n, std::size_t stride, std::size_t k,
                       const int32_t* out, std::size_t out_stride, const char* fn) {
    require(k <= n, fn, "k larger than n");
    require(n < (std::size_t(1) << 31), fn, "n must be below 2^31");
    require(rows == 0 || k == 0 || (scores && out), fn, "null pointer");
    require(rows <= 1 || (stride >= n && out_stride >= k), fn, "stride smaller than the row");
}
inline uint32_t* align64_u32(void* p) noexcept {
    return reinterpret_cast<uint32_t*>((reinterpret_cast<std::uintptr_t>(p) + 63) & ~std::uintptr_t(63));
}
}  // namespace detail

/// For each of `rows` rows (scores + r*stride, n values) the indices of its k largest
/// scores into out + r*out_stride. scratch: topk_scratch_bytes(n, k), any alignment.
inline void topk(const float* scores, std::size_t rows, std::size_t n, std::size_t stride, std::size_t k,
                 topk_order order, int32_t* out, std::size_t out_stride, void* scratch, std::size_t scratch_bytes) {
    detail::check_topk(scores, rows, n, stride, k, out, out_stride, "topk");
    detail::require(scratch && scratch_bytes >= topk_scratch_bytes(n, k), "topk", "scratch smaller than topk_scratch_bytes(n, k)");
    const auto fn = DSV4_KERNEL(topk_row);
    uint32_t* ws = detail::align64_u32(scratch);
    for (std::size_t r = 0; r < rows; ++r) fn(scores + r * stride, n, k, order, out + r * out_stride, ws);
}

namespace par {
/// Scratch bytes of par::topk in the current task arena (one row's worth per thread).
inline std::size_t topk_scratch_bytes(std::size_t n, std::size_t k) {
    return dsv4::topk_scratch_bytes(n, k) * std::size_t(tbb::this_task_arena::max_concurrency());
}
/// topk with the rows spread over oneTBB (same result).
inline void topk(const float* scores, std::size_t rows, std::size_t n, std::size_t stride, std::size_t k,
                 topk_order order, int32_t* out, std::size_t out_stride, void* scratch, std::size_t scratch_bytes) {
    detail::check_topk(scores, rows, n, stride, k, out, out_stride, "par::topk");
    const std::size_t per = dsv4::topk_scratch_bytes(n, k);
    const std::size_t slots = std::size_t(tbb::this_task_arena::max_concurrency());
    detail::require(scratch && scratch_bytes >= per * slots, "par::topk", "scratch smaller than par::topk_scratch_bytes(n, k)");
    const auto fn = DSV4_KERNEL(topk_row);
    unsigned char* base = static_cast<unsigned char*>(scratch);
    parallel_region([&] {
        tbb::parallel_for(tbb::blocked_range<std::size_t>(0, rows, 1), [&](const tbb::blocked_range<std::size_t>& rg) {
            uint32_t* ws = detail::align64_u32(base + std::size_t(tbb::this_task_arena::current_thread_index()) * per);
            for (std::size_t r = rg.begin(); r != rg.end(); ++r) fn(scores + r * stride, n, k, order, out + r * out_stride, ws);
        });
    });
}
}  // namespace par

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
