// dsv4/config.hpp - compile-time configuration shared by every header.
//
// Every function body in dsv4 lives in the inline namespace DSV4_ISA_NS, named after
// the instruction set the including translation unit is compiled for. Per-ISA
// translation units (runtime dispatch) therefore never emit two different bodies
// under one mangled name: without this, the linker may keep the AVX-512 copy of an
// inline helper for the scalar path and the program dies with SIGILL on an AVX2 CPU.
// Types that cross translation units (views, tables, dsv4::error) stay outside it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && \
    defined(__AVX512VL__) && defined(__AVX512CD__) && defined(__FMA__) && defined(__F16C__)
#  if defined(__AVX512VNNI__) && defined(__AVX512BF16__)
#    define DSV4_ISA_NS isa_avx512_bf16
#    define DSV4_NATIVE_TIER_ID 5
#  elif defined(__AVX512VNNI__)
#    define DSV4_ISA_NS isa_avx512_vnni
#    define DSV4_NATIVE_TIER_ID 4
#  else
#    define DSV4_ISA_NS isa_avx512
#    define DSV4_NATIVE_TIER_ID 3
#  endif
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#  if defined(__AVXVNNI__)
#    define DSV4_ISA_NS isa_avx2_vnni
#    define DSV4_NATIVE_TIER_ID 2
#  else
#    define DSV4_ISA_NS isa_avx2
#    define DSV4_NATIVE_TIER_ID 1
#  endif
#else
#  define DSV4_ISA_NS isa_scalar
#  define DSV4_NATIVE_TIER_ID 0
#endif

// DSV4_RUNTIME_DISPATCH=1: public entry points call through the table chosen at run
// time (needs the per-ISA objects that dsv4_enable_runtime_dispatch() adds to a target).
// Otherwise they call the kernels instantiated for the compile-time ISA (headers only).
#ifndef DSV4_RUNTIME_DISPATCH
#  define DSV4_RUNTIME_DISPATCH 0
#endif

#if defined(__GNUC__)
#  define DSV4_INLINE inline __attribute__((always_inline))
#  define DSV4_RESTRICT __restrict__
#else
#  define DSV4_INLINE inline
#  define DSV4_RESTRICT
#endif

// Fully unrolls the next loop (fixed small trip counts over arrays of vector registers):
// without it GCC at -O2 keeps such arrays in memory, a 1.5x slowdown of the FP4 kernels.
#if defined(__clang__)
#  define DSV4_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#  define DSV4_UNROLL _Pragma("GCC unroll 16")
#else
#  define DSV4_UNROLL
#endif

namespace dsv4 {

/// Every error dsv4 reports: bad arguments at a public entry point, a bad DSV4_ISA,
/// malformed files. Kernels on their unchecked row-range paths never throw.
class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace dsv4
