// dsv4/hybrid.hpp - placing row-parallel work by core type on hybrid CPUs (Intel P-/E-cores).
//
// A GEMV row range costs the same bytes on every core, but an E-core streams them slower
// than a P-core: split evenly, the P-cores wait for the E-cores. detect_core_classes groups
// the CPUs this process may run on by their CPUID leaf 0x1A core type (read on a thread
// pinned to each CPU; Linux). hybrid_placement keeps one oneTBB task_arena per class, whose
// threads a task_scheduler_observer pins to the class's CPUs while they work there, and
// splits [0, n) between the classes in proportion to cores * per-core rate, rates given or
// measured (calibrate). Within a class the rows go in dynamic chunks, as par::for_rows does.
// (oneTBB's own tbb::info::core_types() / constraints::set_core_type are a preview in the
// Debian 12 oneTBB 2021.8, behind a macro that changes the layout of task_arena: a header
// library cannot switch it on, so the types come from CPUID and the pinning from an observer.)
//
//   auto p = dsv4::hybrid_placement(dsv4::detect_core_classes());
//   p.calibrate([&] { /* one hot GEMV on the calling thread */ });
//   { dsv4::par::placement_scope s(p); model.forward(...); }   // par:: GEMVs go by core type
//
// Results never depend on the placement (rows are computed independently). On a CPU with
// one core type (or without tbbbind) there is one class and placement changes nothing.
// The split itself (proportional_bounds) is plain arithmetic, testable on synthetic tables.
#pragma once

#include "config.hpp"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>
#include <oneapi/tbb/task_scheduler_observer.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#  include <cpuid.h>
#endif
#if defined(__linux__)
#  include <pthread.h>
#  include <sched.h>
#  define DSV4_HYBRID_PIN 1
#else
#  define DSV4_HYBRID_PIN 0
#endif

namespace dsv4 {

/// One class of cores: its CPUID 0x1A core type (0x40 P-core, 0x20 E-core, 0 unknown or
/// not hybrid), the CPUs it pins its threads to (empty: no pinning, e.g. synthetic tables),
/// how many threads it runs (cores), its per-core rate relative to the others (any unit;
/// rows are split in proportion to cores * rate) and a label ("P", "E", "any").
struct core_class {
    unsigned type_id = 0;
    std::vector<int> cpus;
    std::size_t cores = 1;
    double rate = 1.0;
    std::string label = "any";
};

inline namespace DSV4_ISA_NS {

/// CPUID leaf 0x1A core type of the core running the calling thread: 0x40 Intel Core
/// (P-core), 0x20 Intel Atom (E-core), 0 when the CPU is not hybrid or does not say (AMD,
/// older Intel). Meaningful only on a thread pinned to one core type (inside a constrained
/// arena).
inline unsigned cpuid_core_type() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_max(0, nullptr) < 0x1A) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(d & (1u << 15))) return 0;  // CPUID.7.0:EDX[15] = hybrid
    __cpuid_count(0x1A, 0, a, b, c, d);
    return a >> 24;
#else
    return 0;
#endif
}

/// The CPUs this process may run on, grouped by CPUID 0x1A core type (read on a thread
/// pinned to each CPU in turn): P-cores first, then E-cores, then any other type. One class
/// ("any", no pinning) when there is a single type, or off Linux.
inline std::vector<core_class> detect_core_classes() {
    std::vector<core_class> out;
#if DSV4_HYBRID_PIN
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) {
        std::map<unsigned, std::vector<int>> by_type;
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
            if (!CPU_ISSET(cpu, &allowed)) continue;
            unsigned t = 0;
            std::thread th([&] {
                cpu_set_t one;
                CPU_ZERO(&one);
                CPU_SET(cpu, &one);
                if (pthread_setaffinity_np(pthread_self(), sizeof one, &one) == 0) t = cpuid_core_type();
            });
            th.join();
            by_type[t].push_back(cpu);
        }
        if (by_type.size() >= 2) {
            for (unsigned t : {0x40u, 0x20u})
                if (by_type.count(t)) {
                    core_class c;
                    c.type_id = t;
                    c.cpus = by_type[t];
                    c.cores = c.cpus.size();
                    c.label = t == 0x40 ? "P" : "E";
                    out.push_back(c);
                    by_type.erase(t);
                }
            for (auto& [t, cpus] : by_type) {
                core_class c;
                c.type_id = t;
                c.cpus = cpus;
                c.cores = cpus.size();
                c.label = "type" + std::to_string(t);
                out.push_back(c);
            }
            return out;
        }
    }
#endif
    core_class c;
    c.cores = std::size_t(std::max(1, tbb::info::default_concurrency()));
    out.push_back(c);
    return out;
}

namespace detail {
/// Pins the threads that enter one arena to a set of CPUs and gives them back their own
/// affinity when they leave (workers move between arenas).
class pin_observer : public tbb::task_scheduler_observer {
public:
    pin_observer(tbb::task_arena& a, const std::vector<int>& cpus) : tbb::task_scheduler_observer(a) {
#if DSV4_HYBRID_PIN
        CPU_ZERO(&set_);
        for (int c : cpus) CPU_SET(c, &set_);
#endif
        pin_ = !cpus.empty();
        if (pin_) observe(true);
    }
    ~pin_observer() override {
        if (pin_) observe(false);
    }
    void on_scheduler_entry(bool) override {
#if DSV4_HYBRID_PIN
        saved_ok() = pthread_getaffinity_np(pthread_self(), sizeof(cpu_set_t), &saved()) == 0;
        pthread_setaffinity_np(pthread_self(), sizeof set_, &set_);
#endif
    }
    void on_scheduler_exit(bool) override {
#if DSV4_HYBRID_PIN
        if (saved_ok()) pthread_setaffinity_np(pthread_self(), sizeof(cpu_set_t), &saved());
#endif
    }

private:
#if DSV4_HYBRID_PIN
    static cpu_set_t& saved() {
        static thread_local cpu_set_t s;
        return s;
    }
    static bool& saved_ok() {
        static thread_local bool ok = false;
        return ok;
    }
    cpu_set_t set_;
#endif
    bool pin_ = false;
};
}  // namespace detail

/// Splits [0, n) into one contiguous range per class, sized in proportion to cores * rate:
/// bounds[i]..bounds[i+1] (classes.size() + 1 entries, bounds[0] = 0, back() = n). Sizes
/// are multiples of `grain` (the last nonempty range takes the remainder of n), rounded
/// by largest remainder (ties: the earlier class); classes of weight <= 0 get nothing;
/// if all weights are <= 0 the split is by cores. Deterministic.
inline std::vector<std::size_t> proportional_bounds(std::size_t n, const std::vector<core_class>& classes,
                                                    std::size_t grain) {
    const std::size_t k = classes.size();
    std::vector<std::size_t> b(k + 1, 0);
    if (k == 0) return b;
    grain = grain ? grain : 1;
    const std::size_t units = (n + grain - 1) / grain;
    std::vector<double> wt(k);
    double total = 0;
    for (std::size_t i = 0; i < k; ++i) total += wt[i] = classes[i].rate > 0 ? double(classes[i].cores) * classes[i].rate : 0.0;
    if (!(total > 0)) {
        total = 0;
        for (std::size_t i = 0; i < k; ++i) total += wt[i] = double(classes[i].cores);
    }
    std::vector<std::size_t> u(k, 0);
    std::vector<double> frac(k, 0.0);
    std::size_t given = 0;
    for (std::size_t i = 0; i < k; ++i) {
        const double q = total > 0 ? double(units) * wt[i] / total : 0.0;
        u[i] = std::min(units, std::size_t(q));
        frac[i] = q - double(u[i]);
        given += u[i];
    }
    while (given < units) {  // largest remainder first, earlier class on ties
        std::size_t best = k;
        for (std::size_t i = 0; i < k; ++i)
            if (wt[i] > 0 && (best == k || frac[i] > frac[best])) best = i;
        if (best == k) best = 0;
        ++u[best];
        frac[best] = -1.0;
        ++given;
    }
    for (std::size_t i = 0; i < k; ++i) b[i + 1] = std::min(n, b[i] + u[i] * grain);
    b[k] = n;
    return b;
}

/// One task_arena per core class; for_rows runs each class's share of the rows in its arena,
/// all classes at once. Not copyable (it owns the arenas).
class hybrid_placement {
public:
    explicit hybrid_placement(std::vector<core_class> classes) : classes_(std::move(classes)) {
        if (classes_.empty()) classes_.push_back(core_class{});
        for (auto& c : classes_) {
            c.cores = std::max<std::size_t>(1, c.cores);
            // no slot reserved for the caller: the workers run every class at once
            arenas_.push_back(std::make_unique<tbb::task_arena>(int(c.cores), 0));
            probe_.push_back(std::make_unique<tbb::task_arena>(1, 1));
            pins_.push_back(std::make_unique<detail::pin_observer>(*arenas_.back(), c.cpus));
            pins_.push_back(std::make_unique<detail::pin_observer>(*probe_.back(), c.cpus));
        }
    }
    ~hybrid_placement() {
        pins_.clear();  // stop observing before the arenas go
    }
    hybrid_placement(const hybrid_placement&) = delete;
    hybrid_placement& operator=(const hybrid_placement&) = delete;

    const std::vector<core_class>& classes() const noexcept { return classes_; }
    void set_rate(std::size_t i, double r) { classes_.at(i).rate = r; }
    /// The row ranges for_rows gives each class.
    std::vector<std::size_t> bounds(std::size_t n, std::size_t grain) const {
        return proportional_bounds(n, classes_, grain);
    }

    /// Calls f(r0, r1) on disjoint ranges covering [0, n): class i gets bounds(n, grain)[i..i+1]
    /// on its own arena, in dynamic chunks of at least `grain` rows. Returns when all are done.
    template <class F> void for_rows(std::size_t n, std::size_t grain, F&& f) const {
        if (n == 0) return;
        grain = grain ? grain : 1;
        const auto b = bounds(n, grain);
        const std::size_t k = classes_.size();
        if (k == 1) {
            arenas_[0]->execute([&] { run_range(0, n, grain, f); });
            return;
        }
        std::vector<std::unique_ptr<tbb::task_group>> g(k);
        for (std::size_t i = 0; i < k; ++i) {
            if (b[i] == b[i + 1]) continue;
            g[i] = std::make_unique<tbb::task_group>();
            arenas_[i]->execute([&, i] { g[i]->run([&, i] { run_range(b[i], b[i + 1], grain, f); }); });
        }
        for (std::size_t i = 0; i < k; ++i)
            if (g[i]) arenas_[i]->execute([&, i] { g[i]->wait(); });
    }

    /// Runs f() on the calling thread, pinned to class i's CPUs for the call.
    template <class F> void run_on(std::size_t i, F&& f) const { probe_.at(i)->execute(f); }

    /// Seconds that f() takes on one thread of class i (median of `reps` runs, after one warm-up).
    template <class F> double time_on(std::size_t i, F&& f, int reps = 5) const {
        std::vector<double> t;
        run_on(i, [&] {
            f();
            for (int r = 0; r < reps; ++r) {
                const auto t0 = std::chrono::steady_clock::now();
                f();
                t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
            }
        });
        std::sort(t.begin(), t.end());
        return t[t.size() / 2];
    }

    /// Sets every class's rate to 1 / time_on(i, probe): the probe should be the work to be
    /// split (e.g. one hot GEMV), as the classes' rates differ per format.
    template <class F> void calibrate(F&& probe, int reps = 5) {
        for (std::size_t i = 0; i < classes_.size(); ++i) {
            const double s = time_on(i, probe, reps);
            classes_[i].rate = s > 0 ? 1.0 / s : 1.0;
        }
    }

private:
    template <class F> static void run_range(std::size_t r0, std::size_t r1, std::size_t grain, F& f) {
        tbb::parallel_for(tbb::blocked_range<std::size_t>(r0, r1, grain),
                          [&](const tbb::blocked_range<std::size_t>& r) { f(r.begin(), r.end()); });
    }

    std::vector<core_class> classes_;
    std::vector<std::unique_ptr<tbb::task_arena>> arenas_, probe_;
    std::vector<std::unique_ptr<detail::pin_observer>> pins_;
};

namespace par {
namespace placement_state {  // not `detail`: par:: code elsewhere names dsv4::detail
inline thread_local const hybrid_placement* current_placement = nullptr;
}
/// While alive, par:: entry points called from this thread split their rows by core class
/// through `p` (nested scopes restore the outer one).
class placement_scope {
public:
    explicit placement_scope(const hybrid_placement& p) noexcept : prev_(placement_state::current_placement) {
        placement_state::current_placement = &p;
    }
    ~placement_scope() { placement_state::current_placement = prev_; }
    placement_scope(const placement_scope&) = delete;
    placement_scope& operator=(const placement_scope&) = delete;

private:
    const hybrid_placement* prev_;
};
/// The placement of the innermost placement_scope on this thread, or null.
inline const hybrid_placement* current_placement() noexcept { return placement_state::current_placement; }
}  // namespace par

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
