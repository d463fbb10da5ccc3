// dsv4/parallel.hpp - oneTBB conveniences: the row-range entry points split over the
// current task arena in dynamic chunks (a preempted thread does not stall the rest), or,
// inside a par::placement_scope, by core class (hybrid.hpp).
// Results are identical to the single-threaded call: rows are computed independently.
#pragma once

#include "gemv.hpp"
#include "hybrid.hpp"
#include "regions.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <algorithm>

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace par {

/// Calls f(r0, r1) over [0, n) in chunks of at least `grain` rows, in parallel; inside a
/// placement_scope (hybrid.hpp), split between the core classes of its placement. One chunk
/// (n <= grain) runs on the calling thread: no parallel region.
template <class F> void for_rows(std::size_t n, std::size_t grain, F&& f) {
    if (n <= std::max<std::size_t>(grain, 1)) {  // one chunk: the calling thread's, no fork-join
        if (n) f(std::size_t(0), n);
        return;
    }
    parallel_region([&] {
        if (const hybrid_placement* p = current_placement()) {
            p->for_rows(n, grain, f);
            return;
        }
        tbb::parallel_for(tbb::blocked_range<std::size_t>(0, n, grain ? grain : 1),
                          [&](const tbb::blocked_range<std::size_t>& r) { f(r.begin(), r.end()); });
    });
}

/// Rows per task: large enough to amortise scheduling, small enough to balance.
inline constexpr std::size_t gemv_grain = 32;

inline void f32_gemv(const f32_matrix& w, const f32_rows& x, const gemv_out& y) {
    dsv4::f32_gemv(w, x, y, 0, 0);  // validates once
    for_rows(w.n, gemv_grain, [&](std::size_t a, std::size_t b) { dsv4::f32_gemv(w, x, y, a, b); });
}
inline void bf16_gemv(const bf16_matrix& w, const f32_rows& x, const gemv_out& y) {
    dsv4::bf16_gemv(w, x, y, 0, 0);
    for_rows(w.n, gemv_grain, [&](std::size_t a, std::size_t b) { dsv4::bf16_gemv(w, x, y, a, b); });
}
inline void bf16_gemv_bf16(const bf16_matrix& w, const bf16_rows& x, const gemv_out& y) {
    dsv4::bf16_gemv_bf16(w, x, y, 0, 0);
    for_rows(w.n, gemv_grain, [&](std::size_t a, std::size_t b) { dsv4::bf16_gemv_bf16(w, x, y, a, b); });
}
inline void fp8_gemv(const fp8_matrix& w, const f32_rows& x, const gemv_out& y) {
    dsv4::fp8_gemv(w, x, y, 0, 0);
    for_rows(w.n, gemv_grain, [&](std::size_t a, std::size_t b) { dsv4::fp8_gemv(w, x, y, a, b); });
}
inline void fp8_gemv_bf16(const fp8_matrix& w, const bf16_block_rows& x, const gemv_out& y) {
    dsv4::fp8_gemv_bf16(w, x, y, 0, 0);
    for_rows(w.n, gemv_grain, [&](std::size_t a, std::size_t b) { dsv4::fp8_gemv_bf16(w, x, y, a, b); });
}
inline void fp8_grouped_gemv_bf16(const fp8_matrix& w, std::size_t groups, const bf16_block_rows& x,
                                  const gemv_out& y) {
    dsv4::fp8_grouped_gemv_bf16(w, groups, x, y, 0, 0);
    for_rows(w.n, gemv_grain, [&](std::size_t a, std::size_t b) { dsv4::fp8_grouped_gemv_bf16(w, groups, x, y, a, b); });
}
inline void fp8_grouped_gemv(const fp8_matrix& w, std::size_t groups, const f32_rows& x, const gemv_out& y) {
    dsv4::fp8_grouped_gemv(w, groups, x, y, 0, 0);
    for_rows(w.n, gemv_grain, [&](std::size_t a, std::size_t b) { dsv4::fp8_grouped_gemv(w, groups, x, y, a, b); });
}
inline void fp4_gemv(const fp4_matrix& w, const f32_rows& x, const gemv_out& y) {
    dsv4::fp4_gemv(w, x, y, 0, 0);
    for_rows(w.n, gemv_grain, [&](std::size_t a, std::size_t b) { dsv4::fp4_gemv(w, x, y, a, b); });
}
inline void fp4_gemv_q8(const fp4_matrix& w, const q8_rows& x, const gemv_out& y) {
    dsv4::fp4_gemv_q8(w, x, y, 0, 0);
    for_rows(w.n, gemv_grain, [&](std::size_t a, std::size_t b) { dsv4::fp4_gemv_q8(w, x, y, a, b); });
}
inline void fp4_gate_up(const fp4_matrix& w1, const fp4_matrix& w3, const f32_rows& x, const swiglu_epilogue& e,
                        const gemv_out& h) {
    dsv4::fp4_gate_up(w1, w3, x, e, h, 0, 0);
    for_rows(w1.n, gemv_grain, [&](std::size_t a, std::size_t b) { dsv4::fp4_gate_up(w1, w3, x, e, h, a, b); });
}
inline void fp4_gate_up_q8(const fp4_matrix& w1, const fp4_matrix& w3, const q8_rows& x, const swiglu_epilogue& e,
                           const gemv_out& h) {
    dsv4::fp4_gate_up_q8(w1, w3, x, e, h, 0, 0);
    for_rows(w1.n, gemv_grain, [&](std::size_t a, std::size_t b) { dsv4::fp4_gate_up_q8(w1, w3, x, e, h, a, b); });
}

}  // namespace par
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
