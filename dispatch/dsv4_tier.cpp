// dsv4_tier.cpp - the kernel table of one ISA tier. Compiled once per tier, with
// DSV4_TIER_NAME set to the tier and that tier's -m flags on this file only
// (cmake/dsv4Dispatch.cmake). Headers put everything compiled here into the inline
// namespace of the tier's ISA, so nothing collides with the other tiers' copies.
#include <dsv4/dispatch.hpp>

#ifndef DSV4_TIER_NAME
#  error "compile with -DDSV4_TIER_NAME=<scalar|avx2|avx2_vnni|avx512|avx512_vnni|avx512_bf16>"
#endif

#define DSV4_CAT2(a, b) a##b
#define DSV4_CAT(a, b) DSV4_CAT2(a, b)

namespace dsv4::detail {

// The compile flags must give exactly the tier this file is built for; a mismatch is a
// build-system bug, caught here rather than as a wrong path at run time.
static_assert(static_cast<int>(::dsv4::compiled_tier) ==
                  static_cast<int>(::dsv4::tier::DSV4_TIER_NAME),
              "dsv4_tier.cpp compiled with flags for another tier");

const kernel_table& DSV4_CAT(kernel_table_, DSV4_TIER_NAME)() noexcept {
    static constexpr kernel_table table =
        make_kernel_table<::dsv4::arch::DSV4_TIER_NAME>(::dsv4::compiled_tier);
    return table;
}

}  // namespace dsv4::detail
