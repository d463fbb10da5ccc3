// dsv4/regions.hpp - opt-in counting of the parallel regions (fork-join points) a caller's
// work launches, and of the wall time spent inside them.
//
//   dsv4::region_stats st;
//   { dsv4::region_count_scope scope(st); model.decode(s, id, logits); }
//   // st.regions, st.region_ns; or set sequence_state::profile = &st (the forward opens the
//   // scope itself and adds forward_ns, calls and tokens)
//
// Every region the library launches goes through par::region (par::for_rows, tbb_executor,
// par::topk, sparse_attention_parallel). Without an open scope that costs one thread-local
// load and a branch per region (nothing inside the region's work); with one, two clock reads.
// Counted: the outermost regions launched by the thread that opened the scope (the forward's
// thread, where every fork-join of the forward starts; a region nested in one is part of it). The time inside a region is its wall time
// on that thread, fork to join; the rest of a forward call (forward_ns - region_ns) is the
// serial part: norms, RoPE, quantisation of activations, index lists, routing, checks.
#pragma once

#include <chrono>
#include <cstdint>

namespace dsv4 {

/// Counters of the regions launched while a region_count_scope is open (not thread-safe:
/// one scope, one thread).
struct region_stats {
    uint64_t regions = 0;     ///< parallel regions launched (each a fork and a join)
    uint64_t region_ns = 0;   ///< wall time inside them, fork to join, on the launching thread
    uint64_t calls = 0;       ///< forward calls counted (sequence_state::profile)
    uint64_t tokens = 0;      ///< tokens of those calls
    uint64_t forward_ns = 0;  ///< wall time of those calls
};

// Outside the ISA namespace (one counter pointer for every tier's code in a binary), so not
// in par:: (which lives in it).
namespace region_state {  // not `detail`: code elsewhere names dsv4::detail
inline thread_local region_stats* current = nullptr;
}

/// While alive, the regions launched from this thread are counted in `st` (nested scopes
/// count in the innermost one and restore the outer one).
class region_count_scope {
public:
    explicit region_count_scope(region_stats& st) noexcept : prev_(region_state::current) {
        region_state::current = &st;
    }
    ~region_count_scope() { region_state::current = prev_; }
    region_count_scope(const region_count_scope&) = delete;
    region_count_scope& operator=(const region_count_scope&) = delete;

private:
    region_stats* prev_;
};

/// Runs f() - one fork-join region - counting it when a scope is open on this thread.
template <class F> void parallel_region(F&& f) {
    region_stats* st = region_state::current;
    if (!st) {
        f();
        return;
    }
    struct restore {  // also when f throws
        region_stats* st;
        ~restore() { region_state::current = st; }
    } r{st};
    region_state::current = nullptr;  // a region nested in f counts as part of this one
    const auto t0 = std::chrono::steady_clock::now();
    f();
    st->region_ns += uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
    ++st->regions;
}
}  // namespace dsv4
