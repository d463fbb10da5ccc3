// dsv4/kernels/mhc.hpp - mHC hyper-connection kernels (spec §7, §10.3 1-2); the public
// entry points and layouts are in mhc.hpp.
//
// hc_pre of one token is: v = f32(flatten(H)) [4d], r = rsqrt(mean(v^2) + norm_eps) (the
// norm kernel below), dot = fn . v (f32_gemv, kernels/gemv.hpp), mix = dot * r, the split
// into pre / post / comb with the Sinkhorn normalisation (split kernel, 4x4 in registers,
// simd/mat4.hpp), and y = bf16(sum_j pre_j H_j) (combine kernel). hc_post and hc_head reuse
// the same pieces. Everything here is batched over tokens: token t of every array sits at
// t * stride (see the parameters).
//
// Precision: f32 throughout, one IEEE rounding per operation, written with simd/fmath.hpp:
// simd::rounded where the reference rounds twice, f32(f32(a b) + c) (no FMA contraction),
// simd::fmadd for explicit FMAs (fused on every tier), simd::exp_f32 (the same bits on every
// tier). sigmoid(z) = 1/(1+e) or e/(1+e) with e = exp(-|z|), which saturates to exactly
// 0 / 1. The split (and so the Sinkhorn), the stream combination and hc_post are
// bit-identical on every tier; the sums of squares and the mix GEMV are f32 sums whose order
// depends on the vector width.
#pragma once

#include "gemv.hpp"
#include "../simd/fmath.hpp"
#include "../simd/mat4.hpp"

#include <cmath>
#include <limits>

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace kernels {

namespace hc_detail {

/// sigmoid(z) = 1/(1+e) or e/(1+e) with e = exp(-|z|) (simd::exp_f32: the same bits on
/// every tier); saturates to exactly 0 / 1, never overflows.
DSV4_INLINE float sigmoid_f32(float z) noexcept {
    const float e = simd::exp_f32(-std::fabs(z)), d = 1.0f + e;
    return z >= 0.0f ? 1.0f / d : e / d;
}
template <class A> DSV4_INLINE simd::vf32<A> sigmoid_vec(simd::vf32<A> z) noexcept {
    using vf = simd::vf32<A>;
    const vf e = simd::exp_f32(-xsimd::abs(z)), d = vf(1.0f) + e;
    return xsimd::select(z >= vf(0.0f), vf(1.0f) / d, e / d);
}

/// Sinkhorn normalisation of the comb logits in registers (spec §7 step 3): row softmax
/// (max-subtracted) + eps, column step, then iters-1 row/column rounds; eps always added to
/// the denominators. iters >= 1.
template <class A> DSV4_INLINE void sinkhorn4(simd::m44<A>& c, int iters, float eps) noexcept {
    using M = simd::m44<A>;
    using part = typename M::part;
    constexpr int P = M::parts;
    const part e(eps);
    M s = simd::row_max4(c);
    for (int i = 0; i < P; ++i) c.p[i] = simd::exp_f32(c.p[i] - s.p[i]);
    s = simd::row_sum4(c);
    for (int i = 0; i < P; ++i) c.p[i] = c.p[i] / s.p[i] + e;
    s = simd::col_sum4(c);
    for (int i = 0; i < P; ++i) c.p[i] = c.p[i] / (s.p[i] + e);
    for (int it = 1; it < iters; ++it) {
        s = simd::row_sum4(c);
        for (int i = 0; i < P; ++i) c.p[i] = c.p[i] / (s.p[i] + e);
        s = simd::col_sum4(c);
        for (int i = 0; i < P; ++i) c.p[i] = c.p[i] / (s.p[i] + e);
    }
}

}  // namespace hc_detail

/// bf16 streams -> f32 and the RMS factor, per token: v[t] = f32(h[t, 0..width)),
/// rms[t] = 1 / sqrt(sum(v^2) / width + eps) (eps inside the sqrt, spec §10.3-1).
template <class Arch>
void hc_norm_rows(const uint16_t* h, std::size_t h_stride, std::size_t width, std::size_t tokens, float eps, float* v,
                  std::size_t v_stride, float* rms) noexcept {
    for (std::size_t t = 0; t < tokens; ++t) {
        const uint16_t* x = h + t * h_stride;
        float* out = v + t * v_stride;
        std::size_t i = 0;
        float ss = 0.0f;
        if constexpr (!simd::is_scalar<Arch>) {
            using vf = simd::vf32<Arch>;
            constexpr std::size_t W = simd::lanes<Arch>();
            vf a0(0.0f), a1(0.0f);
            for (; i + 2 * W <= width; i += 2 * W) {
                const vf x0 = vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, x + i));
                const vf x1 = vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, x + i + W));
                x0.store_unaligned(out + i);
                x1.store_unaligned(out + i + W);
                a0 = simd::fmadd(x0, x0, a0);  // squares of bf16 values are exact in f32
                a1 = simd::fmadd(x1, x1, a1);
            }
            ss = xsimd::hadd(a0 + a1);
        }
        for (; i < width; ++i) {
            const float xi = bf16_to_f32(x[i]);
            out[i] = xi;
            ss = std::fma(xi, xi, ss);
        }
        const float mean = ss / float(width);
        rms[t] = 1.0f / std::sqrt(mean + eps);
    }
}

/// hc_split_sinkhorn (spec §7 step 3) per token: mix = dot[t] * rms[t] (24 values),
/// pre_j = sigmoid(mix_j s0 + base_j) + eps, post_j = 2 sigmoid(mix_{4+j} s1 + base_{4+j}),
/// comb = sinkhorn(mix_{8..24} s2 + base_{8..24}) as [4][4] (row j = first index).
/// dot and mix rows are 24 floats apart; pre/post 4, comb 16. mix may be null.
template <class Arch>
void hc_split_rows(const float* dot, const float* rms, std::size_t tokens, const float* scale, const float* base,
                   int iters, float eps, float* mix_out, float* pre, float* post, float* comb) noexcept {
    constexpr std::size_t NM = 24;
    for (std::size_t t = 0; t < tokens; ++t) {
        alignas(64) float mix[NM];
        for (std::size_t i = 0; i < NM; ++i) mix[i] = dot[t * NM + i] * rms[t];
        if (mix_out)
            for (std::size_t i = 0; i < NM; ++i) mix_out[t * NM + i] = mix[i];
        float* pr = pre + 4 * t;
        float* po = post + 4 * t;
        if constexpr (simd::is_scalar<Arch>) {
            for (int j = 0; j < 4; ++j) {
                pr[j] = hc_detail::sigmoid_f32(simd::rounded(mix[j] * scale[0]) + base[j]) + eps;
                po[j] = 2.0f * hc_detail::sigmoid_f32(simd::rounded(mix[4 + j] * scale[1]) + base[4 + j]);
            }
        } else {
            // pre and post in one vector (lanes 0-3, 4-7); the AVX-512 lanes 8-15 are unused
            using vf = simd::vf32<Arch>;
            constexpr std::size_t W = simd::lanes<Arch>();
            alignas(64) float sc[W], a[W], b[W];
            for (std::size_t i = 0; i < W; ++i) sc[i] = scale[i < 4 ? 0 : (i < 8 ? 1 : 2)];
            const vf s = hc_detail::sigmoid_vec<Arch>(simd::rounded(vf::load_aligned(mix) * vf::load_aligned(sc)) +
                                                      vf::load_unaligned(base));
            (s + vf(eps)).store_aligned(a);
            (s * vf(2.0f)).store_aligned(b);
            for (int j = 0; j < 4; ++j) {
                pr[j] = a[j];
                po[j] = b[4 + j];
            }
        }
        using M = simd::m44<Arch>;
        M c = simd::m44_load<Arch>(mix + 8);
        const M bc = simd::m44_load<Arch>(base + 8);
        const typename M::part s2(scale[2]);
        for (int i = 0; i < M::parts; ++i) c.p[i] = simd::rounded(c.p[i] * s2) + bc.p[i];
        hc_detail::sinkhorn4<Arch>(c, iters, eps);
        simd::m44_store<Arch>(c, comb + 16 * t);
    }
}

/// hc_head's pre (spec §7): mix = dot[t] * rms[t] (4 values), pre_j = sigmoid(mix_j s + base_j)
/// + eps. dot, mix and pre rows are 4 floats apart; mix may be null.
template <class Arch>
void hc_head_pre_rows(const float* dot, const float* rms, std::size_t tokens, float scale, const float* base,
                      float eps, float* mix_out, float* pre) noexcept {
    for (std::size_t t = 0; t < tokens; ++t)
        for (std::size_t j = 0; j < 4; ++j) {
            const float m = dot[4 * t + j] * rms[t];
            if (mix_out) mix_out[4 * t + j] = m;
            pre[4 * t + j] = hc_detail::sigmoid_f32(simd::rounded(m * scale) + base[j]) + eps;
        }
}

/// y[t] = bf16( sum_j pre[t][j] * f32(h[t][j]) ) over the 4 streams (h[t] is [4, dim]).
template <class Arch>
void hc_combine_rows(const uint16_t* h, std::size_t h_stride, std::size_t dim, std::size_t tokens, const float* pre,
                     uint16_t* y, std::size_t y_stride) noexcept {
    for (std::size_t t = 0; t < tokens; ++t) {
        const uint16_t* x = h + t * h_stride;
        const float* p = pre + 4 * t;
        uint16_t* out = y + t * y_stride;
        std::size_t i = 0;
        if constexpr (!simd::is_scalar<Arch>) {
            using vf = simd::vf32<Arch>;
            constexpr std::size_t W = simd::lanes<Arch>();
            const vf p0(p[0]), p1(p[1]), p2(p[2]), p3(p[3]);
            for (; i + W <= dim; i += W) {
                vf acc = vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, x + i)) * p0;
                acc = simd::fmadd(vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, x + dim + i)), p1, acc);
                acc = simd::fmadd(vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, x + 2 * dim + i)), p2, acc);
                acc = simd::fmadd(vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, x + 3 * dim + i)), p3, acc);
                simd::store_i32_as_u16(Arch{}, vec::f32_to_bf16<Arch>(acc), out + i);
            }
        }
        for (; i < dim; ++i) {
            float acc = bf16_to_f32(x[i]) * p[0];
            acc = std::fma(bf16_to_f32(x[dim + i]), p[1], acc);
            acc = std::fma(bf16_to_f32(x[2 * dim + i]), p[2], acc);
            acc = std::fma(bf16_to_f32(x[3 * dim + i]), p[3], acc);
            out[i] = f32_to_bf16(acc);
        }
    }
}

/// hc_post (spec §7): out[t][k] = bf16( post[t][k] f32(y[t]) + sum_j comb[t][j][k] f32(h[t][j]) ),
/// the contraction over the FIRST comb index. Every output element reads only the same
/// column of y and h, which are all loaded before it is stored: out may alias h.
template <class Arch>
void hc_post_rows(const uint16_t* y, std::size_t y_stride, const uint16_t* h, std::size_t h_stride, const float* post,
                  const float* comb, std::size_t dim, std::size_t tokens, uint16_t* out, std::size_t out_stride) noexcept {
    for (std::size_t t = 0; t < tokens; ++t) {
        const uint16_t* yt = y + t * y_stride;
        const uint16_t* x = h + t * h_stride;
        const float* po = post + 4 * t;
        const float* c = comb + 16 * t;
        uint16_t* o = out + t * out_stride;
        std::size_t i = 0;
        if constexpr (!simd::is_scalar<Arch>) {
            using vf = simd::vf32<Arch>;
            constexpr std::size_t W = simd::lanes<Arch>();
            for (; i + W <= dim; i += W) {
                const vf yv = vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, yt + i));
                vf hv[4];
                for (std::size_t j = 0; j < 4; ++j)
                    hv[j] = vec::bf16_to_f32<Arch>(simd::load_u16_as_i32(Arch{}, x + j * dim + i));
                for (std::size_t k = 0; k < 4; ++k) {
                    vf acc = yv * vf(po[k]);
                    for (std::size_t j = 0; j < 4; ++j) acc = simd::fmadd(hv[j], vf(c[4 * j + k]), acc);
                    simd::store_i32_as_u16(Arch{}, vec::f32_to_bf16<Arch>(acc), o + k * dim + i);
                }
            }
        }
        for (; i < dim; ++i) {
            const float yv = bf16_to_f32(yt[i]);
            float hv[4];
            for (std::size_t j = 0; j < 4; ++j) hv[j] = bf16_to_f32(x[j * dim + i]);
            for (std::size_t k = 0; k < 4; ++k) {
                float acc = yv * po[k];
                for (std::size_t j = 0; j < 4; ++j) acc = std::fma(hv[j], c[4 * j + k], acc);
                o[k * dim + i] = f32_to_bf16(acc);
            }
        }
    }
}

}  // namespace kernels
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
