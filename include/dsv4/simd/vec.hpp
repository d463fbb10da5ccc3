// dsv4/simd/vec.hpp - the per-ISA escape hatch for vector code.
//
// Kernel bodies are written once against xsimd batches (vf32<Arch>, vi32<Arch>); what
// xsimd 8.1 lacks - widening byte/short loads, narrowing stores, horizontal max - is
// here, one small overload per ISA family. vf32<A> may only be instantiated in a
// translation unit compiled for A (a batch type does not exist without its flags).
#pragma once

#include "../isa.hpp"

#include <xsimd/xsimd.hpp>
#if DSV4_X86
#  include <immintrin.h>
#endif

#include <type_traits>

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace simd {

template <class Arch> struct xsimd_arch_of { using type = void; };
template <> struct xsimd_arch_of<arch::avx2> { using type = xsimd::fma3<xsimd::avx2>; };
template <> struct xsimd_arch_of<arch::avx2_vnni> { using type = xsimd::fma3<xsimd::avx2>; };
template <> struct xsimd_arch_of<arch::avx512> { using type = xsimd::avx512bw; };
template <> struct xsimd_arch_of<arch::avx512_vnni> { using type = xsimd::avx512bw; };
template <> struct xsimd_arch_of<arch::avx512_bf16> { using type = xsimd::avx512bw; };

template <class Arch> using xarch = typename xsimd_arch_of<Arch>::type;
template <class Arch> using vf32 = xsimd::batch<float, xarch<Arch>>;
template <class Arch> using vi32 = xsimd::batch<int32_t, xarch<Arch>>;

template <class Arch> inline constexpr bool is_scalar = std::is_same_v<Arch, arch::scalar>;
template <class Arch> inline constexpr bool is_avx512 = std::is_base_of_v<arch::avx512, Arch>;
template <class Arch> inline constexpr bool has_vnni =
    std::is_same_v<Arch, arch::avx2_vnni> || std::is_base_of_v<arch::avx512_vnni, Arch>;

/// f32 lanes per vector: 1 for scalar, 8 for AVX2, 16 for AVX-512.
template <class Arch> constexpr std::size_t lanes() {
    if constexpr (is_scalar<Arch>) return 1;
    else if constexpr (is_avx512<Arch>) return 16;
    else return 8;
}


// Declared for every arch so kernel bodies can name them in `if constexpr` branches
// that the scalar instantiation discards; never callable for arch::scalar.
template <class A, class... T> requires is_scalar<A> void load_u8_as_i32(A, T...) = delete;
template <class A, class... T> requires is_scalar<A> void load_u16_as_i32(A, T...) = delete;
template <class A, class... T> requires is_scalar<A> void store_i32_as_u8(A, T...) = delete;
template <class A, class... T> requires is_scalar<A> void store_i32_as_u16(A, T...) = delete;
template <class A, class... T> requires is_scalar<A> void hmax(A, T...) = delete;

/// select() on int32 lanes. xsimd 8.1's AVX-512BW integer select names the byte and
/// word blends in branches GCC still type-checks at -O0, and fails to compile there.
template <class A>
DSV4_INLINE vi32<A> select_i(xsimd::batch_bool<int32_t, xarch<A>> c, vi32<A> a, vi32<A> b) noexcept {
#if defined(__AVX512F__)
    if constexpr (is_avx512<A>) return _mm512_mask_blend_epi32(static_cast<__mmask16>(c), b, a);
    else
#endif
        return xsimd::select(c, a, b);
}

/// select() on f32 lanes with an int32 lane mask (xsimd 8.1 has no batch_bool cast).
template <class A>
DSV4_INLINE vf32<A> select_f(xsimd::batch_bool<int32_t, xarch<A>> c, vf32<A> a, vf32<A> b) noexcept {
    return xsimd::bitwise_cast<vf32<A>>(select_i<A>(c, xsimd::bitwise_cast<vi32<A>>(a), xsimd::bitwise_cast<vi32<A>>(b)));
}

#if defined(__AVX2__)
// ------------------------------------------------------------------ AVX2 (ymm, 8 lanes)
DSV4_INLINE vi32<arch::avx2> load_u8_as_i32(arch::avx2, const uint8_t* p) noexcept {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
DSV4_INLINE vi32<arch::avx2> load_u16_as_i32(arch::avx2, const uint16_t* p) noexcept {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
/// Stores 8 lanes holding 0..255 as bytes.
DSV4_INLINE void store_i32_as_u8(arch::avx2, vi32<arch::avx2> v, uint8_t* p) noexcept {
    const __m256i r = v;
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(w, w));
}
/// Stores 8 lanes holding 0..65535 as uint16.
DSV4_INLINE void store_i32_as_u16(arch::avx2, vi32<arch::avx2> v, uint16_t* p) noexcept {
    const __m256i r = v;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
}
DSV4_INLINE int32_t hmax(arch::avx2, vi32<arch::avx2> v) noexcept {
    __m128i m = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0x4E));
    m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0xB1));
    return _mm_cvtsi128_si32(m);
}
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__)
// ------------------------------------------------------------------ AVX-512 (zmm, 16 lanes)
DSV4_INLINE vi32<arch::avx512> load_u8_as_i32(arch::avx512, const uint8_t* p) noexcept {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
DSV4_INLINE vi32<arch::avx512> load_u16_as_i32(arch::avx512, const uint16_t* p) noexcept {
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
DSV4_INLINE void store_i32_as_u8(arch::avx512, vi32<arch::avx512> v, uint8_t* p) noexcept {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(v));
}
DSV4_INLINE void store_i32_as_u16(arch::avx512, vi32<arch::avx512> v, uint16_t* p) noexcept {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(v));
}
DSV4_INLINE int32_t hmax(arch::avx512, vi32<arch::avx512> v) noexcept {
    return _mm512_reduce_max_epi32(v);
}
#endif

}  // namespace simd
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
