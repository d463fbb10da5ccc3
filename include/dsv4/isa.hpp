// dsv4/isa.hpp - instruction-set tiers, arch tags and CPU feature detection.
//
// Tiers are composed from feature bits (oneDNN style) and checked against the OS
// state-save mask XCR0: a CPU flag alone does not mean the OS saves zmm registers.
#pragma once

#include "config.hpp"

#include <array>
#include <cstring>
#include <string_view>

#if defined(__x86_64__) || defined(__i386__)
#  include <cpuid.h>
#  define DSV4_X86 1
#else
#  define DSV4_X86 0
#endif

namespace dsv4 {

/// Instruction-set tiers, lowest first. Numeric values are stable.
enum class tier : int {
    scalar = 0,       ///< portable C++, the reference path
    avx2 = 1,         ///< AVX2 + FMA + F16C
    avx2_vnni = 2,    ///< + AVX-VNNI (vpdpbusd on ymm; Intel Core Ultra)
    avx512 = 3,       ///< AVX-512 F + BW + DQ + VL + CD (+ AVX2/FMA/F16C)
    avx512_vnni = 4,  ///< + AVX512-VNNI
    avx512_bf16 = 5,  ///< + AVX512-BF16 (vdpbf16ps: Zen 4/5, Sapphire Rapids and later)
};
inline constexpr int tier_count = 6;
inline constexpr std::array<tier, tier_count> all_tiers = {
    tier::scalar, tier::avx2, tier::avx2_vnni, tier::avx512, tier::avx512_vnni, tier::avx512_bf16};

/// Arch tags: kernels are templates on these. Derivation lets a helper written for
/// avx2 serve avx2_vnni unless a more specific overload exists.
namespace arch {
struct scalar { static constexpr tier id = tier::scalar; };
struct avx2 { static constexpr tier id = tier::avx2; };
struct avx2_vnni : avx2 { static constexpr tier id = tier::avx2_vnni; };
struct avx512 { static constexpr tier id = tier::avx512; };
struct avx512_vnni : avx512 { static constexpr tier id = tier::avx512_vnni; };
struct avx512_bf16 : avx512_vnni { static constexpr tier id = tier::avx512_bf16; };
}  // namespace arch

/// What the CPU and OS support (each flag already includes the XCR0 check).
struct cpu_features {
    bool sse2 = false, ssse3 = false, sse41 = false, avx = false, avx2 = false, fma = false,
         f16c = false, bmi2 = false, avx512f = false, avx512bw = false, avx512dq = false,
         avx512vl = false, avx512cd = false, avx512_vnni = false, avx512_bf16 = false,
         avx_vnni = false, avx_vnni_int8 = false;
    bool os_avx = false;     ///< XCR0 enables xmm+ymm state
    bool os_avx512 = false;  ///< XCR0 enables opmask + zmm state
    char vendor[13] = {};
    char brand[49] = {};
};

inline namespace DSV4_ISA_NS {

inline constexpr std::string_view tier_name(tier t) noexcept {
    switch (t) {
        case tier::scalar: return "scalar";
        case tier::avx2: return "avx2";
        case tier::avx2_vnni: return "avx2_vnni";
        case tier::avx512: return "avx512";
        case tier::avx512_vnni: return "avx512_vnni";
        case tier::avx512_bf16: return "avx512_bf16";
    }
    return "unknown";
}

/// Parses a tier name as DSV4_ISA spells it; false if unknown.
inline bool parse_tier(std::string_view name, tier& out) noexcept {
    for (tier t : all_tiers)
        if (tier_name(t) == name) { out = t; return true; }
    return false;
}

/// Reads CPUID and XCR0. Cheap, but callers should cache (dsv4::host_cpu() does).
inline cpu_features detect_cpu_features() noexcept {
    cpu_features f;
#if DSV4_X86
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
    const unsigned max_leaf = a;
    std::memcpy(f.vendor + 0, &b, 4);
    std::memcpy(f.vendor + 4, &d, 4);
    std::memcpy(f.vendor + 8, &c, 4);
    __get_cpuid(1, &a, &b, &c, &d);
    f.sse2 = (d >> 26) & 1;
    f.ssse3 = (c >> 9) & 1;
    f.sse41 = (c >> 19) & 1;
    const bool fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1,
               f16c = (c >> 29) & 1;
    unsigned long long xcr0 = 0;
    if (osxsave) {
        unsigned lo = 0, hi = 0;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
    }
    f.os_avx = (xcr0 & 0x6) == 0x6;
    f.os_avx512 = f.os_avx && (xcr0 & 0xE0) == 0xE0;
    f.avx = avx && f.os_avx;
    f.fma = fma && f.os_avx;
    f.f16c = f16c && f.os_avx;
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        const unsigned max_sub = a;
        f.avx2 = ((b >> 5) & 1) && f.os_avx;
        f.bmi2 = (b >> 8) & 1;
        f.avx512f = ((b >> 16) & 1) && f.os_avx512;
        f.avx512dq = ((b >> 17) & 1) && f.os_avx512;
        f.avx512cd = ((b >> 28) & 1) && f.os_avx512;
        f.avx512bw = ((b >> 30) & 1) && f.os_avx512;
        f.avx512vl = ((b >> 31) & 1) && f.os_avx512;
        f.avx512_vnni = ((c >> 11) & 1) && f.os_avx512;
        if (max_sub >= 1) {
            __cpuid_count(7, 1, a, b, c, d);
            f.avx_vnni = ((a >> 4) & 1) && f.os_avx;
            f.avx512_bf16 = ((a >> 5) & 1) && f.os_avx512;
            f.avx_vnni_int8 = ((d >> 4) & 1) && f.os_avx;
        }
    }
    __get_cpuid(0x80000000u, &a, &b, &c, &d);
    if (a >= 0x80000004u) {
        unsigned regs[12];
        for (unsigned i = 0; i < 3; ++i)
            __get_cpuid(0x80000002u + i, &regs[4 * i], &regs[4 * i + 1], &regs[4 * i + 2],
                        &regs[4 * i + 3]);
        std::memcpy(f.brand, regs, 48);
    }
#endif
    return f;
}

/// True if the CPU (and OS) can run code compiled for tier t.
inline constexpr bool tier_supported(tier t, const cpu_features& f) noexcept {
    const bool avx2 = f.avx2 && f.fma && f.f16c;
    const bool avx512 = avx2 && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl && f.avx512cd;
    switch (t) {
        case tier::scalar: return true;
        case tier::avx2: return avx2;
        case tier::avx2_vnni: return avx2 && f.avx_vnni;
        case tier::avx512: return avx512;
        case tier::avx512_vnni: return avx512 && f.avx512_vnni;
        case tier::avx512_bf16: return avx512 && f.avx512_vnni && f.avx512_bf16;
    }
    return false;
}

/// The best tier the CPU supports.
inline constexpr tier best_tier(const cpu_features& f) noexcept {
    tier best = tier::scalar;
    for (tier t : all_tiers)
        if (tier_supported(t, f)) best = t;
    return best;
}

}  // namespace DSV4_ISA_NS

/// The tier this translation unit is compiled for (static dispatch without DSV4_RUNTIME_DISPATCH).
inline constexpr tier compiled_tier = static_cast<tier>(DSV4_NATIVE_TIER_ID);

}  // namespace dsv4

namespace dsv4 {
template <tier T> struct arch_of;
template <> struct arch_of<tier::scalar> { using type = arch::scalar; };
template <> struct arch_of<tier::avx2> { using type = arch::avx2; };
template <> struct arch_of<tier::avx2_vnni> { using type = arch::avx2_vnni; };
template <> struct arch_of<tier::avx512> { using type = arch::avx512; };
template <> struct arch_of<tier::avx512_vnni> { using type = arch::avx512_vnni; };
template <> struct arch_of<tier::avx512_bf16> { using type = arch::avx512_bf16; };
/// Arch tag of this translation unit's compile flags (what headers-only users get).
using native_arch = typename arch_of<compiled_tier>::type;
}  // namespace dsv4
