// dsv4/kernels/codec.hpp - bulk codecs and activation quantisation (spec §1.4, §2.1-2.3).
//
// Each kernel body is written once for every arch: a vector loop over whole chunks
// of simd::lanes<Arch>() elements (xsimd batches), then the scalar codec from
// formats.hpp for the tail. For arch::scalar the vector loop is empty. All of them are
// exact operations, so every tier must give the scalar tier's bytes.
#pragma once

#include "../formats.hpp"
#include "../simd/vec.hpp"

namespace dsv4 {

/// Which official revision's in-place FP8 simulation to reproduce (spec §2.2, §10.1).
enum class fp8_sim_revision : int {
    current = 0,  ///< true e4m3 round trip (HF 60d8d707)
    initial = 1,  ///< the initial release's cast to bf16, which leaves x unchanged
};

inline namespace DSV4_ISA_NS {
namespace kernels {

// ------------------------------------------------------------------ vector codecs
// Bit-level twins of formats.hpp, on xsimd int32/f32 batches.
namespace vec {
template <class A> DSV4_INLINE simd::vf32<A> e4m3_to_f32(simd::vi32<A> c) noexcept {
    using vi = simd::vi32<A>;
    using vf = simd::vf32<A>;
    const vi sign = (c & vi(0x80)) << 24;
    const vi e = (c >> 3) & vi(0xF), m = c & vi(0x7);
    const vi normal = sign | ((e + vi(120)) << 23) | (m << 20);
    const vf sub = xsimd::to_float(m) * vf(0x1p-9f);
    const vf subs = xsimd::bitwise_cast<vf>(xsimd::bitwise_cast<vi>(sub) | sign);
    const vf nanv = xsimd::bitwise_cast<vf>(sign | vi(0x7FC00000));
    vf r = simd::select_f<A>(e == vi(0), subs, xsimd::bitwise_cast<vf>(normal));
    return simd::select_f<A>((c & vi(0x7F)) == vi(0x7F), nanv, r);
}

template <class A> DSV4_INLINE simd::vi32<A> f32_to_e4m3(simd::vf32<A> x) noexcept {
    using vi = simd::vi32<A>;
    using vf = simd::vf32<A>;
    const vi b = xsimd::bitwise_cast<vi>(x);
    const vi sign = (b >> 24) & vi(0x80);
    const vi a = b & vi(0x7FFFFFFF);
    const vi subq = xsimd::to_int(xsimd::nearbyint(xsimd::bitwise_cast<vf>(a) * vf(512.0f)));
    const vi r = (a + vi(0x7FFFF) + ((a >> 20) & vi(1))) & vi(~0xFFFFF);
    const vi norm = xsimd::min((r >> 20) - vi(120 << 3), vi(0x7E));
    vi code = simd::select_i<A>(a < vi(0x3C800000), subq, norm);
    code = simd::select_i<A>(a >= vi(0x43E00000), vi(0x7E), code);
    code = simd::select_i<A>(a > vi(0x7F800000), vi(0x7F), code);
    return code | sign;
}

template <class A> DSV4_INLINE simd::vi32<A> f32_to_e2m1(simd::vf32<A> x) noexcept {
    using vi = simd::vi32<A>;
    using vf = simd::vf32<A>;
    const vi b = xsimd::bitwise_cast<vi>(x);
    const vi sign = (b >> 28) & vi(0x8);
    const vi a = b & vi(0x7FFFFFFF);
    const vi subq = xsimd::to_int(xsimd::nearbyint(xsimd::bitwise_cast<vf>(a) * vf(2.0f)));
    const vi r = (a + vi(0x1FFFFF) + ((a >> 22) & vi(1))) & vi(~0x3FFFFF);
    const vi norm = xsimd::min((r >> 22) - vi(126 << 1), vi(7));
    vi code = simd::select_i<A>(a < vi(0x3F800000), subq, norm);
    code = simd::select_i<A>(a >= vi(0x40C00000), vi(7), code);
    return code | sign;
}

/// bf16 bits (widened to int32) -> f32.
template <class A> DSV4_INLINE simd::vf32<A> bf16_to_f32(simd::vi32<A> h) noexcept {
    return xsimd::bitwise_cast<simd::vf32<A>>(h << 16);
}

/// f32 -> bf16 bits in the low 16 bits of each lane (RNE, NaN -> quiet NaN with sign).
template <class A> DSV4_INLINE simd::vi32<A> f32_to_bf16(simd::vf32<A> x) noexcept {
    using vi = simd::vi32<A>;
    const vi b = xsimd::bitwise_cast<vi>(x);
    const vi r = ((b + vi(0x7FFF) + ((b >> 16) & vi(1))) >> 16) & vi(0xFFFF);
    const vi nan = ((b >> 16) & vi(0x8000)) | vi(0x7FC0);
    return simd::select_i<A>((b & vi(0x7FFFFFFF)) > vi(0x7F800000), nan, r);
}

/// |x| as int bits with NaN lanes zeroed: an integer max over it is the float amax
/// ignoring NaN (the scalar path does the same, so all tiers agree on NaN input).
template <class A> DSV4_INLINE simd::vi32<A> abs_bits_no_nan(simd::vi32<A> f32bits) noexcept {
    using vi = simd::vi32<A>;
    const vi a = f32bits & vi(0x7FFFFFFF);
    return simd::select_i<A>(a > vi(0x7F800000), vi(0), a);
}
}  // namespace vec

DSV4_INLINE uint32_t abs_bits_no_nan(uint32_t f32bits) noexcept {
    const uint32_t a = f32bits & 0x7FFFFFFFu;
    return a > 0x7F800000u ? 0u : a;
}

// ------------------------------------------------------------------ bulk decoders

template <class Arch> void decode_e4m3(const uint8_t* in, float* out, std::size_t n) noexcept {
    constexpr std::size_t W = simd::lanes<Arch>();
    std::size_t i = 0;
    if constexpr (!simd::is_scalar<Arch>)
        for (; i + W <= n; i += W)
            vec::e4m3_to_f32<Arch>(simd::load_u8_as_i32(Arch{}, in + i)).store_unaligned(out + i);
    for (; i < n; ++i) out[i] = e4m3_to_f32(in[i]);
}

template <class Arch> void decode_bf16(const uint16_t* in, float* out, std::size_t n) noexcept {
    constexpr std::size_t W = simd::lanes<Arch>();
    std::size_t i = 0;
    if constexpr (!simd::is_scalar<Arch>)
        for (; i + W <= n; i += W)
            vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, in + i)).store_unaligned(out + i);
    for (; i < n; ++i) out[i] = bf16_to_f32(in[i]);
}

template <class Arch> void encode_bf16(const float* in, uint16_t* out, std::size_t n) noexcept {
    constexpr std::size_t W = simd::lanes<Arch>();
    std::size_t i = 0;
    if constexpr (!simd::is_scalar<Arch>)
        for (; i + W <= n; i += W)
            simd::store_i32_as_u16(Arch{}, vec::f32_to_bf16<Arch>(simd::vf32<Arch>::load_unaligned(in + i)),
                                   out + i);
    for (; i < n; ++i) out[i] = f32_to_bf16(in[i]);
}

template <class Arch> void decode_fp16(const uint16_t* in, float* out, std::size_t n) noexcept {
    std::size_t i = 0;
#if defined(__F16C__)
    if constexpr (!simd::is_scalar<Arch>)
        for (; i + 8 <= n; i += 8)  // vcvtph2ps is exact, subnormals included
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
#endif
    for (; i < n; ++i) out[i] = fp16_to_f32(in[i]);
}

template <class Arch> void encode_e4m3(const float* in, uint8_t* out, std::size_t n) noexcept {
    constexpr std::size_t W = simd::lanes<Arch>();
    std::size_t i = 0;
    if constexpr (!simd::is_scalar<Arch>)
        for (; i + W <= n; i += W)
            simd::store_i32_as_u8(Arch{}, vec::f32_to_e4m3<Arch>(simd::vf32<Arch>::load_unaligned(in + i)),
                                  out + i);
    for (; i < n; ++i) out[i] = f32_to_e4m3(in[i]);
}

/// One e2m1 nibble per output byte (0..15).
template <class Arch> void encode_e2m1(const float* in, uint8_t* out, std::size_t n) noexcept {
    constexpr std::size_t W = simd::lanes<Arch>();
    std::size_t i = 0;
    if constexpr (!simd::is_scalar<Arch>)
        for (; i + W <= n; i += W)
            simd::store_i32_as_u8(Arch{}, vec::f32_to_e2m1<Arch>(simd::vf32<Arch>::load_unaligned(in + i)),
                                  out + i);
    for (; i < n; ++i) out[i] = f32_to_e2m1(in[i]);
}

// ------------------------------------------------------------------ activation quantisation

/// amax of |x| over a bf16 block as f32 bits, NaN ignored.
template <class Arch> DSV4_INLINE uint32_t bf16_block_amax_bits(const uint16_t* x, std::size_t n) noexcept {
    constexpr std::size_t W = simd::lanes<Arch>();
    uint32_t m = 0;
    std::size_t i = 0;
    if constexpr (!simd::is_scalar<Arch>) {
        if (n >= W) {
            using vi = simd::vi32<Arch>;
            vi acc(0);
            for (; i + W <= n; i += W)
                acc = xsimd::max(acc, vec::abs_bits_no_nan<Arch>(simd::load_u16_as_i32(Arch{}, x + i) << 16));
            m = uint32_t(simd::hmax(Arch{}, acc));
        }
    }
    for (; i < n; ++i) {
        const uint32_t a = abs_bits_no_nan(uint32_t(x[i]) << 16);
        m = a > m ? a : m;
    }
    return m;
}

/// Whether a bf16 block holds a NaN (bf16_block_amax_bits ignores them).
DSV4_INLINE bool bf16_block_has_nan(const uint16_t* x, std::size_t n) noexcept {
    bool nan = false;
    for (std::size_t i = 0; i < n; ++i) nan |= (x[i] & 0x7FFFu) > 0x7F80u;
    return nan;
}

/// Scale exponent e of a block (scale 2^e), per spec §2.1.
DSV4_INLINE int block_scale_exponent(uint32_t amax_bits, float qmax, float floor) noexcept {
    return pow2_scale_exponent(f32_from_bits(amax_bits), qmax, floor);
}
DSV4_INLINE uint8_t e8m0_of(int e) noexcept {
    const int b = e + 127;
    return uint8_t(b < 0 ? 0 : (b > 255 ? 255 : b));
}

/// FP8 act_quant, GEMM-input form, one row of n bf16 values (n % block == 0):
/// codes[j] = e4m3(x_j / s_b), scales[b] = E8M0 byte of s_b.
template <class Arch>
void act_quant_fp8_row(const uint16_t* x, std::size_t n, std::size_t block, uint8_t* codes,
                       uint8_t* scales) noexcept {
    constexpr std::size_t W = simd::lanes<Arch>();
    for (std::size_t b0 = 0, bi = 0; b0 < n; b0 += block, ++bi) {
        const int e = block_scale_exponent(bf16_block_amax_bits<Arch>(x + b0, block), fp8_max, fp8_amax_floor);
        scales[bi] = e8m0_of(e);
        const float inv = exp2i(-e);  // x / 2^e == x * 2^-e exactly
        std::size_t i = 0;
        if constexpr (!simd::is_scalar<Arch>)
            for (; i + W <= block; i += W) {
                const auto v = vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, x + b0 + i));
                simd::store_i32_as_u8(Arch{}, vec::f32_to_e4m3<Arch>(v * simd::vf32<Arch>(inv)), codes + b0 + i);
            }
        for (; i < block; ++i) codes[b0 + i] = f32_to_e4m3(bf16_to_f32(x[b0 + i]) * inv);
    }
}

/// FP8 act_quant, simulation form, in place on n bf16 values (n % block == 0):
/// x_j <- bf16(e4m3(x_j / s) * s) for the current revision; unchanged for the initial one.
template <class Arch>
void act_quant_fp8_sim_row(uint16_t* x, std::size_t n, std::size_t block, fp8_sim_revision rev) noexcept {
    if (rev == fp8_sim_revision::initial) return;  // the initial release's cast was a no-op
    constexpr std::size_t W = simd::lanes<Arch>();
    for (std::size_t b0 = 0; b0 < n; b0 += block) {
        const int e = block_scale_exponent(bf16_block_amax_bits<Arch>(x + b0, block), fp8_max, fp8_amax_floor);
        const float inv = exp2i(-e), s = exp2i(e);
        std::size_t i = 0;
        if constexpr (!simd::is_scalar<Arch>)
            for (; i + W <= block; i += W) {
                using vf = simd::vf32<Arch>;
                const vf v = vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, x + b0 + i));
                const vf q = vec::e4m3_to_f32<Arch>(vec::f32_to_e4m3<Arch>(v * vf(inv)));
                simd::store_i32_as_u16(Arch{}, vec::f32_to_bf16<Arch>(q * vf(s)), x + b0 + i);
            }
        for (; i < block; ++i)
            x[b0 + i] = f32_to_bf16(e4m3_to_f32(f32_to_e4m3(bf16_to_f32(x[b0 + i]) * inv)) * s);
    }
}

inline constexpr std::size_t fp4_block = 32;

/// FP4 act_quant, GEMM-input form, one row of n bf16 values (n % 32 == 0): packed
/// e2m1 codes (low nibble = even element) and one E8M0 scale per 32. e2m1 has no NaN: a
/// block holding a NaN gets the E8M0 NaN scale 0xFF (as an Inf's huge amax does), so the
/// NaN is not lost (the reference's NaN amax makes the whole block NaN).
template <class Arch>
void fp4_act_quant_row(const uint16_t* x, std::size_t n, uint8_t* packed, uint8_t* scales) noexcept {
    for (std::size_t b0 = 0, bi = 0; b0 < n; b0 += fp4_block, ++bi) {
        const int e = block_scale_exponent(bf16_block_amax_bits<Arch>(x + b0, fp4_block), fp4_max, fp4_amax_floor);
        scales[bi] = bf16_block_has_nan(x + b0, fp4_block) ? uint8_t(0xFF) : e8m0_of(e);
        const float inv = exp2i(-e);
        alignas(64) float q[fp4_block];
        decode_bf16<Arch>(x + b0, q, fp4_block);
        for (std::size_t i = 0; i < fp4_block; ++i) q[i] *= inv;
        alignas(64) uint8_t nib[fp4_block];
        encode_e2m1<Arch>(q, nib, fp4_block);
        for (std::size_t i = 0; i < fp4_block; i += 2)
            packed[(b0 + i) / 2] = uint8_t(nib[i] | (nib[i + 1] << 4));
    }
}

/// FP4 simulation in place: x <- bf16(e2m1(x / s) * s), blocks of 32. A block holding a
/// NaN becomes all NaN (the reference's amax is NaN there; e2m1 cannot carry it).
template <class Arch> void fp4_act_quant_sim_row(uint16_t* x, std::size_t n) noexcept {
    constexpr std::size_t W = simd::lanes<Arch>();
    for (std::size_t b0 = 0; b0 < n; b0 += fp4_block) {
        if (bf16_block_has_nan(x + b0, fp4_block)) {
            for (std::size_t i = 0; i < fp4_block; ++i) x[b0 + i] = 0x7FC0;
            continue;
        }
        const int e = block_scale_exponent(bf16_block_amax_bits<Arch>(x + b0, fp4_block), fp4_max, fp4_amax_floor);
        const float inv = exp2i(-e), s = exp2i(e);
        std::size_t i = 0;
        if constexpr (!simd::is_scalar<Arch>)
            for (; i + W <= fp4_block; i += W) {
                using vf = simd::vf32<Arch>;
                using vi = simd::vi32<Arch>;
                const vf v = vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, x + b0 + i));
                const vi c = vec::f32_to_e2m1<Arch>(v * vf(inv));
                // e2m1 value = magnitude table by code; rebuild it arithmetically:
                // codes 0..1 -> c*0.5, codes 2..7 -> (1 + m/2) * 2^(e-1)
                const vi mag = c & vi(7);
                const vi e2 = mag >> 1, m = mag & vi(1);
                const vf normal = xsimd::bitwise_cast<vf>(((e2 + vi(126)) << 23) | (m << 22));
                const vf sub = xsimd::to_float(m) * vf(0.5f);
                vf q = simd::select_f<Arch>(e2 == vi(0), sub, normal);
                q = xsimd::bitwise_cast<vf>(xsimd::bitwise_cast<vi>(q) | ((c & vi(8)) << 28));
                simd::store_i32_as_u16(Arch{}, vec::f32_to_bf16<Arch>(q * vf(s)), x + b0 + i);
            }
        for (; i < fp4_block; ++i)
            x[b0 + i] = f32_to_bf16(e2m1_to_f32(f32_to_e2m1(bf16_to_f32(x[b0 + i]) * inv)) * s);
    }
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
