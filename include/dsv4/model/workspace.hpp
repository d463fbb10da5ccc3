// dsv4/model/workspace.hpp - the forward's working memory: one stack arena per sequence,
// sized when the sequence is made (model::workspace_bytes for the chunk size), so prefill,
// extend and decode of up to that many tokens allocate nothing.
//
// Buffers are taken in stack order (take / mark / release) and are 64-byte aligned. A call
// that needs more than the arena holds (a one-pass prefill longer than the chunk) still
// runs: the excess comes from side blocks, and at the end of the call the arena is re-made
// at the high-water mark (one allocation), so the next call of that size allocates nothing.
#pragma once

#include "../config.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace dsv4 {

class forward_workspace {
public:
    static constexpr std::size_t align = 64;

    /// Room for `bytes` (allocates when it is more than the arena holds now).
    void reserve(std::size_t bytes) {
        if (bytes <= cap_) return;
        main_.reset(new unsigned char[bytes + align]);
        cap_ = bytes;
        ++allocations_;
    }

    /// n elements of T (uninitialised), 64-byte aligned; valid until released or the call ends.
    template <class T> T* take(std::size_t n) {
        const std::size_t bytes = round_up(n * sizeof(T));
        unsigned char* p;
        if (used_ + bytes <= cap_) {
            p = base() + used_;
        } else {  // beyond the arena: a side block, kept until end_call
            side_.emplace_back(new unsigned char[bytes + align]);
            ++allocations_;
            p = aligned(side_.back().get());
        }
        used_ += bytes;
        if (used_ > high_) high_ = used_;
        return reinterpret_cast<T*>(p);
    }

    std::size_t mark() const noexcept { return used_; }
    void release(std::size_t m) noexcept { used_ = m; }

    /// Ends a forward call: everything is released; side blocks become one arena.
    void end_call() {
        used_ = 0;
        if (side_.empty()) return;
        side_.clear();
        reserve(high_);
    }

    std::size_t capacity() const noexcept { return cap_; }
    std::size_t high_water() const noexcept { return high_; }
    /// Blocks allocated so far (the arena and every side block): the allocation test reads it.
    uint64_t allocations() const noexcept { return allocations_; }

    static std::size_t round_up(std::size_t b) noexcept { return (b + align - 1) / align * align; }

private:
    std::unique_ptr<unsigned char[]> main_;
    std::vector<std::unique_ptr<unsigned char[]>> side_;
    std::size_t cap_ = 0, used_ = 0, high_ = 0;
    uint64_t allocations_ = 0;

    static unsigned char* aligned(unsigned char* p) noexcept {
        return p + (align - reinterpret_cast<uintptr_t>(p) % align) % align;
    }
    unsigned char* base() const noexcept { return aligned(main_.get()); }
};

/// Sizes of the buffers one call takes, in take order, so that a size can be computed
/// without running the call (model::workspace_bytes).
class workspace_sizer {
public:
    template <class T> void take(std::size_t n) {
        used_ += forward_workspace::round_up(n * sizeof(T));
        if (used_ > high_) high_ = used_;
    }
    std::size_t mark() const noexcept { return used_; }
    void release(std::size_t m) noexcept { used_ = m; }
    std::size_t high_water() const noexcept { return high_; }

private:
    std::size_t used_ = 0, high_ = 0;
};

}  // namespace dsv4
