// dsv4/io/expert_store.hpp - a checkpoint larger than RAM: the tensors that stay resident are
// copied once into memory the process owns, the rest (groups of tensors: a routed expert's
// six) are streamed from disk into a fixed set of cache slots under a byte budget.
//
//   make_resident(ck, keep)      every tensor keep(name) accepts is read (pread) into anonymous
//                                memory mapped over its own pages of the checkpoint's mapping:
//                                pointers into the mapping stay valid, the bytes no longer
//                                depend on the file (a shard truncated later cannot SIGBUS them)
//   expert_store(groups, o, n)    slots of max-group-span bytes, budget / span of them; a group
//                                is loaded by explicit reads (O_DIRECT where the file system
//                                takes it, else buffered with the page cache dropped behind),
//                                4 MiB pieces on a pool of I/O threads (queue depth = threads)
//   expert_cache_index           the bookkeeping only (slot of each key, pins, LRU or LFU
//                                eviction): the store runs it, and so does the trace replay of
//                                examples/dsv4_stream_bench.cpp, so a recorded routing trace
//                                can be evaluated for any policy and budget without the weights.
//
// The store is independent of the model: a group is just a list of tensors; the model side
// (model/expert_streaming.hpp) makes the groups (layer, expert) and points the expert views
// into the slots. Errors (a short read: a truncated shard; EIO; a missing file at open) are
// dsv4::error naming the file and the tensor, thrown by wait() in the thread that needs it;
// the failed slot is emptied, so the store stays usable (the next acquire reads it again).
// Reads go through one injection point, expert_store_options::read (a pread-shaped function,
// no global state), which the tests use to fail the k-th read with EIO or return short reads.
// Nothing allocates per read: the pieces queue in a ring sized at construction (every slot's
// pieces at once), the cache index is flat arrays over the key space.
// Nothing here is used unless forward_options::ram_budget asks for it.
#pragma once

#include "safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace dsv4 {

/// Which slot to give up on a miss.
enum class cache_policy : int {
    lru = 0,  ///< least recently used
    lfu = 1,  ///< fewest uses since the start (counted for evicted keys too), then least recent
};

inline const char* cache_policy_name(cache_policy p) { return p == cache_policy::lfu ? "lfu" : "lru"; }

/// Slot bookkeeping of a cache of `slots` entries keyed by integers below `key_space`: hits,
/// misses, pins and the eviction choice. No memory beyond the arrays sized here (nothing
/// allocated per acquire), no I/O, not thread-safe (the store locks around it).
class expert_cache_index {
public:
    static constexpr uint64_t none = ~uint64_t(0);

    expert_cache_index(std::size_t slots, cache_policy p, uint64_t key_space)
        : key_(slots, none), tick_(slots, 0), pins_(slots, 0), slot_of_(std::size_t(key_space), no_slot),
          freq_(p == cache_policy::lfu ? std::size_t(key_space) : 0, 0), p_(p) {}

    struct result {
        bool hit = false;
        uint32_t slot = 0;
    };

    /// Pins `key` in a slot: a hit, or a miss given the policy's victim among the unpinned
    /// slots (empty ones first). nullopt when every slot is pinned. Throws if key >= key_space.
    /// count = false (a prefetch): not a use (no hit, miss or LFU count), recency still set.
    std::optional<result> acquire(uint64_t key, bool count = true) {
        if (key >= slot_of_.size())
            throw error("dsv4::expert_cache_index: key " + std::to_string(key) + " is outside the key space (" +
                        std::to_string(slot_of_.size()) + ")");
        ++now_;
        if (p_ == cache_policy::lfu && count) ++freq_[key];
        if (const uint32_t s = slot_of_[key]; s != no_slot) {
            hits_ += count;
            tick_[s] = now_;
            ++pins_[s];
            return result{true, s};
        }
        std::size_t best = key_.size();
        for (std::size_t s = 0; s < key_.size(); ++s) {
            if (pins_[s]) continue;
            if (key_[s] == none) { best = s; break; }
            if (best == key_.size() || less(s, best)) best = s;
        }
        if (best == key_.size()) return std::nullopt;
        misses_ += count;
        if (key_[best] != none) slot_of_[key_[best]] = no_slot;
        key_[best] = key;
        slot_of_[key] = uint32_t(best);
        tick_[best] = now_;
        ++pins_[best];
        return result{false, uint32_t(best)};
    }
    void pin(uint32_t slot) { ++pins_[slot]; }
    void release(uint32_t slot) {
        if (pins_[slot]) --pins_[slot];
    }
    /// Empties a slot (a failed load): its key is no longer cached.
    void forget(uint32_t slot) {
        if (key_[slot] != none) slot_of_[key_[slot]] = no_slot;
        key_[slot] = none;
    }
    std::size_t slots() const { return key_.size(); }
    uint64_t key_space() const { return slot_of_.size(); }
    uint64_t hits() const { return hits_; }
    uint64_t misses() const { return misses_; }

private:
    static constexpr uint32_t no_slot = ~uint32_t(0);
    bool less(std::size_t a, std::size_t b) const {  // a is the better victim
        if (p_ == cache_policy::lfu) {
            const uint64_t fa = freq_[key_[a]], fb = freq_[key_[b]];
            if (fa != fb) return fa < fb;
        }
        return tick_[a] < tick_[b];
    }
    std::vector<uint64_t> key_, tick_;
    std::vector<uint32_t> pins_;
    std::vector<uint32_t> slot_of_;  ///< [key_space] slot holding the key, or no_slot
    std::vector<uint64_t> freq_;     ///< [key_space] uses so far (LFU only)
    uint64_t now_ = 0, hits_ = 0, misses_ = 0;
    cache_policy p_;
};

/// The read function of the streamed I/O (expert pieces and embedding rows), with pread's
/// contract: the bytes read (fewer than asked: a partial read, continued), 0 at the end of the
/// file, -1 with errno set. Empty: ::pread. This is the one injection point for tests
/// (tests/model/test_streaming.cpp fails the k-th read with EIO, shortens reads, ends the file
/// early); it is called concurrently from the I/O threads, so it must be thread-safe.
using io_read_fn = std::function<ssize_t(int fd, void* dst, std::size_t len, uint64_t off)>;

inline namespace DSV4_ISA_NS {

namespace detail {
inline constexpr uint64_t io_align = 4096;
inline uint64_t align_down(uint64_t x) { return x / io_align * io_align; }
inline uint64_t align_up(uint64_t x) { return (x + io_align - 1) / io_align * io_align; }

/// Reads [off, off + len) of fd into dst through `read` (null or empty: ::pread), partial
/// reads continued; returns the bytes read (short at end of file), throws nothing; errno_out
/// set on a read error.
inline uint64_t pread_full(int fd, unsigned char* dst, uint64_t len, uint64_t off, int& errno_out,
                           const io_read_fn* read = nullptr) {
    uint64_t got = 0;
    errno_out = 0;
    const bool hook = read && *read;
    while (got < len) {
        const ssize_t r = hook ? (*read)(fd, dst + got, std::size_t(len - got), off + got)
                               : ::pread(fd, dst + got, std::size_t(len - got), off_t(off + got));
        if (r < 0) {
            if (errno == EINTR) continue;
            errno_out = errno;
            break;
        }
        if (r == 0) break;
        got += uint64_t(r);
    }
    return got;
}
}  // namespace detail

/// Bytes copied by make_resident and how long it took.
struct resident_report {
    uint64_t bytes = 0;   ///< page-granular bytes now anonymous (owned) memory
    std::size_t tensors = 0;
    double seconds = 0;
    bool locked = false;  ///< mlock succeeded (when asked)
};

/// Replaces the pages of every tensor `keep(name)` accepts (rounded out to whole pages,
/// neighbours merged) in the checkpoint's read-only mapping by anonymous memory holding the
/// same bytes (read with pread, the page cache dropped behind). Pointers into the mapping
/// stay valid; those bytes no longer depend on the file. Throws dsv4::error naming the file
/// and a tensor on a short read or a read error.
inline resident_report make_resident(const checkpoint& ck, const std::function<bool(std::string_view)>& keep,
                                     bool lock = false) {
    const auto t0 = std::chrono::steady_clock::now();
    resident_report rep;
    rep.locked = lock;
    struct piece {
        uint64_t lo, hi;
        const tensor_view* t;
    };
    std::unordered_map<std::string_view, std::vector<piece>> per_file;
    for (const tensor_view& t : ck.tensors()) {
        if (!keep(t.name) || t.bytes == 0) continue;
        per_file[t.file].push_back({detail::align_down(t.file_offset), detail::align_up(t.file_offset + t.bytes), &t});
        ++rep.tensors;
    }
    for (auto& [file, ps] : per_file) {
        std::sort(ps.begin(), ps.end(), [](const piece& a, const piece& b) { return a.lo < b.lo; });
        const std::string path(file);
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) throw error(path + ": cannot open for reading: " + detail::errno_text(errno));
        struct stat st {};
        ::fstat(fd, &st);
        const uint64_t fsize = uint64_t(st.st_size);
        // base of the mapping: any tensor's data minus its file offset
        unsigned char* base = const_cast<unsigned char*>(ps.front().t->data) - ps.front().t->file_offset;
        for (std::size_t i = 0; i < ps.size();) {
            uint64_t lo = ps[i].lo, hi = ps[i].hi;
            std::size_t j = i + 1;
            while (j < ps.size() && ps[j].lo <= hi) hi = std::max(hi, ps[j++].hi);
            // the mapping ends at the page holding the file's last byte
            hi = std::min(hi, detail::align_up(fsize));
            void* a = ::mmap(base + lo, std::size_t(hi - lo), PROT_READ | PROT_WRITE,
                             MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (a == MAP_FAILED) {
                const int e = errno;
                ::close(fd);
                throw error(path + ": cannot map anonymous memory for tensor " + std::string(ps[i].t->name) + ": " +
                            detail::errno_text(e));
            }
            int err = 0;
            const uint64_t want = std::min(hi, fsize) - lo;
            const uint64_t got = detail::pread_full(fd, base + lo, want, lo, err);
            uint64_t need = 0;  // the kept tensors' bytes of this range must all be there
            for (std::size_t k = i; k < j; ++k) need = std::max(need, ps[k].t->file_offset + ps[k].t->bytes - lo);
            if (got < need) {
                const std::size_t k = std::size_t(std::find_if(ps.begin() + long(i), ps.begin() + long(j), [&](const piece& p) {
                                          return p.t->file_offset + p.t->bytes > lo + got;
                                      }) - ps.begin());
                ::close(fd);
                throw error(path + ": tensor " + std::string(ps[k].t->name) + ": " +
                            (err ? "read error: " + detail::errno_text(err)
                                 : "short read (" + std::to_string(got) + " of " + std::to_string(need) +
                                       " bytes at offset " + std::to_string(lo) + "): the file is truncated"));
            }
            ::posix_fadvise(fd, off_t(lo), off_t(hi - lo), POSIX_FADV_DONTNEED);
            ::mprotect(base + lo, std::size_t(hi - lo), PROT_READ);
            if (lock && ::mlock(base + lo, std::size_t(hi - lo)) != 0) rep.locked = false;
            rep.bytes += hi - lo;
            i = j;
        }
        ::close(fd);
    }
    rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return rep;
}

/// Options of an expert_store.
struct expert_store_options {
    uint64_t budget_bytes = 0;               ///< slot memory: budget / slot size slots
    cache_policy policy = cache_policy::lfu;
    unsigned io_threads = 8;                 ///< concurrent reads (the queue depth)
    bool direct = true;                      ///< O_DIRECT where the file system takes it
    uint64_t piece_bytes = uint64_t(4) << 20;  ///< reads are split into pieces of at most this
    std::string trace_path;                  ///< if set: one line per acquire (the keys), see below
    std::string trace_header;                ///< written after "# dsv4 expert trace" on the first line
    io_read_fn read;                         ///< test hook: replaces pread (see io_read_fn)
};

/// Counters of an expert_store (monotonic).
struct expert_store_stats {
    uint64_t hits = 0, misses = 0;
    uint64_t bytes_read = 0;   ///< bytes the reads returned (aligned spans)
    uint64_t reads = 0;        ///< pieces read
    double wait_seconds = 0;   ///< time callers spent blocked in wait()
    uint64_t prefetched = 0;       ///< groups loaded by prefetch()
    uint64_t prefetch_used = 0;    ///< of those, acquired before being evicted
};

/// Groups of tensors streamed into cache slots (see the top of this file). Thread-safe.
class expert_store {
public:
    /// groups[g]: the tensors of group g (views of an open checkpoint, read together into one
    /// slot). Throws if a file cannot be opened or the budget holds fewer than `min_slots` slots.
    expert_store(const std::vector<std::vector<const tensor_view*>>& groups,
                 const expert_store_options& o, std::size_t min_slots)
        : opt_(o) {
        // files: one buffered and (when possible) one O_DIRECT descriptor each
        std::unordered_map<std::string_view, uint32_t> file_no;
        groups_.resize(groups.size());
        std::size_t max_pieces = 1;
        for (std::size_t g = 0; g < groups.size(); ++g) {
            std::vector<const tensor_view*> ts = groups[g];
            std::sort(ts.begin(), ts.end(), [](const tensor_view* a, const tensor_view* b) {
                return a->file != b->file ? a->file < b->file : a->file_offset < b->file_offset;
            });
            group& G = groups_[g];
            uint64_t at = 0;
            std::size_t pieces = 0;
            for (std::size_t i = 0; i < ts.size();) {
                auto [it, fresh] = file_no.try_emplace(ts[i]->file, uint32_t(files_.size()));
                if (fresh) files_.push_back(open_file(std::string(ts[i]->file)));
                run r;
                r.file = it->second;
                r.off = detail::align_down(ts[i]->file_offset);
                uint64_t end = ts[i]->file_offset + ts[i]->bytes;
                std::size_t j = i + 1;
                // coalesce tensors of the same file less than 1 MiB apart
                for (; j < ts.size() && ts[j]->file == ts[i]->file && ts[j]->file_offset <= end + (1u << 20); ++j)
                    end = std::max(end, ts[j]->file_offset + ts[j]->bytes);
                r.need = end - r.off;
                r.len = detail::align_up(end) - r.off;
                r.slot_off = at;
                r.tensors.assign(ts.begin() + long(i), ts.begin() + long(j));
                for (std::size_t k = i; k < j; ++k)
                    G.tensor_off.emplace_back(ts[k], at + (ts[k]->file_offset - r.off));
                at += r.len;
                pieces += std::size_t((r.len + opt_.piece_bytes - 1) / opt_.piece_bytes);
                G.runs.push_back(std::move(r));
                i = j;
            }
            G.bytes = at;
            slot_bytes_ = std::max(slot_bytes_, at);
            max_pieces = std::max(max_pieces, pieces);
        }
        if (slot_bytes_ == 0) slot_bytes_ = detail::io_align;
        const std::size_t slots = std::size_t(o.budget_bytes / slot_bytes_);
        if (slots < min_slots) {
            cleanup();
            throw error("dsv4::expert_store: a budget of " + std::to_string(o.budget_bytes) + " bytes holds " +
                        std::to_string(slots) + " slots of " + std::to_string(slot_bytes_) + " bytes; at least " +
                        std::to_string(min_slots) + " are needed (" + std::to_string(min_slots * slot_bytes_) +
                        " bytes)");
        }
        index_.emplace(slots, o.policy, groups.size());
        mem_bytes_ = uint64_t(slots) * slot_bytes_;
        void* m = ::mmap(nullptr, std::size_t(mem_bytes_), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            const int e = errno;
            cleanup();
            throw error("dsv4::expert_store: cannot map " + std::to_string(mem_bytes_) + " bytes of slots: " +
                        detail::errno_text(e));
        }
        mem_ = static_cast<unsigned char*>(m);
        state_.assign(slots, slot_state{});
        // every slot loading at once is the most pieces ever queued: the queue never grows
        queue_.resize(slots * max_pieces);
        if (!o.trace_path.empty()) {
            trace_ = std::fopen(o.trace_path.c_str(), "w");
            if (!trace_) {
                const int e = errno;
                cleanup();
                throw error(o.trace_path + ": cannot write the trace: " + detail::errno_text(e));
            }
            std::fprintf(trace_, "# dsv4 expert trace %s slot_bytes %llu\n", o.trace_header.c_str(),
                         static_cast<unsigned long long>(slot_bytes_));
        }
        for (unsigned i = 0; i < std::max(1u, o.io_threads); ++i) workers_.emplace_back([this] { work(); });
    }
    expert_store(const expert_store&) = delete;
    expert_store& operator=(const expert_store&) = delete;
    ~expert_store() {
        {
            std::lock_guard<std::mutex> lk(mu_);
            stop_ = true;
        }
        cv_job_.notify_all();
        for (auto& t : workers_) t.join();
        cleanup();
    }

    /// One group of an acquire: its slot and whether it was a hit (ready now) or is loading.
    struct ticket {
        uint32_t group = 0, slot = 0;
        bool hit = false;
    };

    /// Pins groups[0..n) in slots (n <= slots()), issuing the reads of every miss at once
    /// (before returning). Release every ticket with release(), also after an error.
    void acquire(const uint32_t* groups, std::size_t n, ticket* out) {
        if (n > slots())
            throw error("dsv4::expert_store: " + std::to_string(n) + " groups at once, but only " +
                        std::to_string(slots()) + " slots");
        for (std::size_t i = 0; i < n; ++i)
            if (groups[i] >= groups_.size())
                throw error("dsv4::expert_store: group " + std::to_string(groups[i]) + " does not exist (" +
                            std::to_string(groups_.size()) + " groups)");
        std::unique_lock<std::mutex> lk(mu_);
        if (trace_) {
            for (std::size_t i = 0; i < n; ++i) std::fprintf(trace_, i ? " %u" : "%u", groups[i]);
            std::fputc('\n', trace_);
        }
        for (std::size_t i = 0; i < n; ++i) {
            std::optional<expert_cache_index::result> r;
            // every slot pinned (other callers' loads in flight): wait for one to be released
            while (!(r = index_->acquire(groups[i]))) cv_done_.wait(lk);
            slot_state& s = state_[r->slot];
            // a hit on a slot whose load failed (not yet emptied) loads it again
            const bool hit = r->hit && (s.ready || s.pending > 0);
            out[i] = ticket{groups[i], r->slot, hit};
            if (hit) {
                ++stats_.hits;
                if (s.prefetched) ++stats_.prefetch_used;
                s.prefetched = false;
                continue;
            }
            ++stats_.misses;
            start_load_locked(r->slot, groups[i]);
        }
        lk.unlock();
        cv_job_.notify_all();
    }

    /// Pins groups[0..n) like acquire and starts the reads of those not cached, without
    /// counting a use (no hit or miss, no LFU count, no trace line): a guess of what a later
    /// acquire will ask for. Release the tickets with release() (after that acquire, so
    /// that its misses cannot evict them first). Returns false (nothing pinned) if fewer than
    /// n slots are free of pins.
    bool prefetch(const uint32_t* groups, std::size_t n, ticket* out) {
        std::unique_lock<std::mutex> lk(mu_);
        std::size_t done = 0;
        for (; done < n; ++done) {
            if (groups[done] >= groups_.size()) break;
            const auto r = index_->acquire(groups[done], false);
            if (!r) break;  // never wait: a guess is not worth blocking for
            slot_state& s = state_[r->slot];
            const bool hit = r->hit && (s.ready || s.pending > 0);
            out[done] = ticket{groups[done], r->slot, hit};
            if (hit) continue;
            ++stats_.prefetched;
            start_load_locked(r->slot, groups[done]);
            s.prefetched = true;
        }
        if (done < n) {  // out of unpinned slots: give back what was taken
            for (std::size_t i = 0; i < done; ++i) index_->release(out[i].slot);
            return false;
        }
        lk.unlock();
        cv_job_.notify_all();
        return true;
    }

    /// Blocks until the ticket's group is in its slot; returns the slot's memory. Throws
    /// dsv4::error naming the file and the tensor if a read failed.
    const unsigned char* wait(const ticket& t) {
        std::unique_lock<std::mutex> lk(mu_);
        if (!state_[t.slot].ready) {  // a miss, or a hit on a load still in flight
            const auto t0 = std::chrono::steady_clock::now();
            cv_done_.wait(lk, [&] { return state_[t.slot].ready || state_[t.slot].pending == 0; });
            stats_.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (!state_[t.slot].ready) throw error(state_[t.slot].failed);
        }
        return mem_ + std::size_t(t.slot) * slot_bytes_;
    }

    /// Unpins tickets; a slot whose load failed is emptied.
    void release(const ticket* t, std::size_t n) {
        {
            std::lock_guard<std::mutex> lk(mu_);
            for (std::size_t i = 0; i < n; ++i) {
                index_->release(t[i].slot);
                if (!state_[t[i].slot].failed.empty() && state_[t[i].slot].pending == 0) index_->forget(t[i].slot);
            }
        }
        cv_done_.notify_all();
    }

    /// Byte offset of tensor `t` of group g inside a slot (t must be one of the group's).
    uint64_t offset_of(uint32_t g, const tensor_view* t) const {
        for (const auto& [tv, off] : groups_.at(g).tensor_off)
            if (tv == t) return off;
        throw error("dsv4::expert_store: tensor " + std::string(t->name) + " is not in group " + std::to_string(g));
    }

    std::size_t slots() const { return index_->slots(); }
    uint64_t slot_bytes() const { return slot_bytes_; }
    uint64_t memory_bytes() const { return mem_bytes_; }
    bool direct() const {
        for (const auto& f : files_)
            if (f.direct < 0) return false;
        return !files_.empty();
    }
    expert_store_stats stats() const {
        std::lock_guard<std::mutex> lk(mu_);
        return stats_;
    }

private:
    struct run {
        uint32_t file = 0;
        uint64_t off = 0, len = 0, need = 0;  ///< aligned file range; bytes that must be read
        uint64_t slot_off = 0;
        std::vector<const tensor_view*> tensors;  ///< in file order (errors name the one a read stopped in)
    };
    struct group {
        std::vector<run> runs;
        std::vector<std::pair<const tensor_view*, uint64_t>> tensor_off;
        uint64_t bytes = 0;
    };
    struct file {
        std::string path;
        int buffered = -1, direct = -1;
    };
    struct slot_state {
        uint32_t group = 0;
        unsigned pending = 0;
        bool ready = false;
        bool prefetched = false;  ///< loaded by prefetch(), not acquired since
        std::string failed;
    };
    struct job {
        uint32_t slot = 0;
        const run* r = nullptr;
        uint64_t at = 0, len = 0, need = 0;
    };

    file open_file(const std::string& path) {
        file f;
        f.path = path;
        f.buffered = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (f.buffered < 0) throw error(path + ": cannot open for reading: " + detail::errno_text(errno));
        if (opt_.direct) f.direct = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
        return f;
    }

    /// Queues the reads of group g into slot (under mu_); the reads pin the slot until done.
    void start_load_locked(uint32_t slot, uint32_t g) {
        slot_state& s = state_[slot];
        s.group = g;
        s.ready = false;
        s.prefetched = false;
        s.failed.clear();
        unsigned pieces = 0;
        for (const run& rr : groups_[g].runs)
            for (uint64_t p = 0; p < rr.len; p += opt_.piece_bytes) {
                const uint64_t len = std::min(opt_.piece_bytes, rr.len - p);
                const uint64_t need = rr.need > p ? std::min(len, rr.need - p) : 0;
                push(job{slot, &rr, p, len, need});
                ++pieces;
            }
        s.pending = pieces;
        index_->pin(slot);  // held by the reads until the last piece lands
        if (pieces == 0) {
            s.ready = true;
            index_->release(slot);
        }
    }

    // the queue of pieces not yet issued: a ring sized at construction (under mu_)
    void push(const job& j) {
        if (queued_ == queue_.size()) throw error("dsv4::expert_store: the read queue is full (a bug)");
        queue_[(head_ + queued_++) % queue_.size()] = j;
    }
    job pop() {
        const job j = queue_[head_];
        head_ = (head_ + 1) % queue_.size();
        --queued_;
        return j;
    }

    /// Accounts a finished piece (under mu_): got bytes of it read, err the read's errno.
    void finish_locked(const job& j, uint64_t got, int err) {
        slot_state& s = state_[j.slot];
        stats_.bytes_read += got;
        ++stats_.reads;
        if (got < j.need && s.failed.empty()) {  // name the tensor the read stopped in
            const uint64_t stop = j.r->off + j.at + got;
            const tensor_view* t = j.r->tensors.front();
            for (const tensor_view* v : j.r->tensors)
                if (v->file_offset + v->bytes > stop) {
                    t = v;
                    break;
                }
            s.failed = "dsv4::expert_store: " + files_[j.r->file].path + ": tensor " + std::string(t->name) + ": " +
                       (err ? "read error: " + detail::errno_text(err)
                            : "short read (" + std::to_string(got) + " of " + std::to_string(j.need) +
                                  " bytes at offset " + std::to_string(j.r->off + j.at) + "): the file is truncated");
        }
        if (--s.pending == 0) {
            s.ready = s.failed.empty();
            index_->release(j.slot);
        }
    }

    unsigned char* dst_of(const job& j) const { return mem_ + std::size_t(j.slot) * slot_bytes_ + j.r->slot_off + j.at; }

    void work() {
        const io_read_fn* rf = opt_.read ? &opt_.read : nullptr;
        for (;;) {
            job j;
            {
                std::unique_lock<std::mutex> lk(mu_);
                cv_job_.wait(lk, [&] { return stop_ || queued_ > 0; });
                if (queued_ == 0) return;
                j = pop();
            }
            const file& f = files_[j.r->file];
            unsigned char* dst = dst_of(j);
            const uint64_t off = j.r->off + j.at;
            int err = 0;
            uint64_t got = 0;
            bool direct = f.direct >= 0;
            if (direct) {
                got = detail::pread_full(f.direct, dst, j.len, off, err, rf);
                if (err == EINVAL) direct = false;  // the file system refused O_DIRECT here
            }
            if (!direct) {
                got = detail::pread_full(f.buffered, dst, j.len, off, err, rf);
                ::posix_fadvise(f.buffered, off_t(off), off_t(j.len), POSIX_FADV_DONTNEED);
            }
            {
                std::lock_guard<std::mutex> lk(mu_);
                finish_locked(j, got, err);
            }
            cv_done_.notify_all();
        }
    }


    void cleanup() {
        if (trace_) std::fclose(trace_);
        trace_ = nullptr;
        for (auto& f : files_) {
            if (f.buffered >= 0) ::close(f.buffered);
            if (f.direct >= 0) ::close(f.direct);
        }
        files_.clear();
        if (mem_) ::munmap(mem_, std::size_t(mem_bytes_));
        mem_ = nullptr;
    }

    expert_store_options opt_;
    std::vector<group> groups_;
    std::vector<file> files_;
    uint64_t slot_bytes_ = 0, mem_bytes_ = 0;
    unsigned char* mem_ = nullptr;
    std::optional<expert_cache_index> index_;
    std::vector<slot_state> state_;
    std::vector<job> queue_;  ///< ring of pieces not yet issued
    std::size_t head_ = 0, queued_ = 0;
    mutable std::mutex mu_;
    std::condition_variable cv_job_, cv_done_;
    std::vector<std::thread> workers_;
    bool stop_ = false;
    std::FILE* trace_ = nullptr;
    expert_store_stats stats_;
};

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
