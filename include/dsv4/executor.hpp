// dsv4/executor.hpp - how multi-stage entry points (compressor, indexer) split their work.
//
// An executor is any callable ex(n, grain, f) that calls f(r0, r1) on disjoint ranges
// covering [0, n) - in any order, on any threads - and returns when all calls are done;
// `grain` is a hint (ranges of at least that many items are efficient). dsv4 ships the
// serial one and a oneTBB one; a foreign thread pool plugs in the same way. Every
// range is computed independently, so results never depend on the executor.
#pragma once

#include "config.hpp"
#include "regions.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

namespace dsv4 {

/// Weight rows per work item of a projection split over an executor (as par::gemv_grain).
inline constexpr std::size_t exec_row_grain = 32;

inline namespace DSV4_ISA_NS {

/// Runs everything on the calling thread: f(0, n).
struct serial_executor {
    template <class F> void operator()(std::size_t n, std::size_t /*grain*/, F&& f) const {
        if (n) f(std::size_t(0), n);
    }
};

namespace par {
/// oneTBB in the current task arena, dynamic chunks of at least `grain` items; n <= grain
/// (one chunk) runs on the calling thread without a region.
struct tbb_executor {
    template <class F> void operator()(std::size_t n, std::size_t grain, F&& f) const {
        if (n == 0) return;
        if (n <= grain) {  // one range: the calling thread's work, no fork-join
            f(std::size_t(0), n);
            return;
        }
        parallel_region([&] {
            tbb::parallel_for(tbb::blocked_range<std::size_t>(0, n, grain ? grain : 1),
                              [&](const tbb::blocked_range<std::size_t>& r) { f(r.begin(), r.end()); });
        });
    }
};
}  // namespace par

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
