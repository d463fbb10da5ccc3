// dsv4/gemv.hpp - checked public entry points of the GEMV family (kernels and layouts:
// kernels/gemv.hpp and gemv_types.hpp).
//
// Every GEMV takes a row range [r0, r1) of the weight matrix (default: all rows) so any
// thread pool can split the work; results do not depend on the split. dsv4::par::...
// (parallel.hpp) are oneTBB conveniences over the same entry points. Nothing allocates:
// the f32 / int8 activation buffers are the caller's (fp8_acts_to_f32, quantize_q8).
//
// Preconditions (dsv4::error otherwise): non-null pointers where rows exist; strides at
// least the row; FP4 k % 32 == 0, FP8 k % 128 == 0; r0 <= r1 <= n; exactly one output.
// Weights may sit anywhere (no alignment needed); kernels read exactly the bytes of
// the rows they compute and of the activation rows, never past them.
#pragma once

#include "codec.hpp"

namespace dsv4 {

inline constexpr std::size_t all_rows = std::size_t(-1);

inline namespace DSV4_ISA_NS {

namespace detail {
inline void check_out(const gemv_out& o, std::size_t m, std::size_t n, const char* fn) {
    require((o.f32 == nullptr) != (o.bf16 == nullptr) || m == 0, fn, "set exactly one of out.f32 / out.bf16");
    require(m <= 1 || o.stride >= n, fn, "out.stride smaller than n");
}
/// Resolves r1 == all_rows to n and checks 0 <= r0 <= r1 <= n (rows, tokens or units).
inline void check_rows(std::size_t& r0, std::size_t& r1, std::size_t n, const char* fn) {
    if (r1 == all_rows) r1 = n;
    require(r0 <= r1 && r1 <= n, fn, "range [r0, r1) outside [0, n)");
}
inline void check_x(const f32_rows& x, std::size_t k, const char* fn) {
    require(x.m == 0 || x.x != nullptr, fn, "x.x is null");
    require(x.m <= 1 || x.stride >= k, fn, "x.stride smaller than k");
}
inline void check_q8(const q8_rows& x, std::size_t k, const char* fn) {
    require(x.m == 0 || (x.q && x.scales && x.corr), fn, "q8 activations are null");
    require(x.m <= 1 || (x.q_stride >= k && x.scales_stride >= k / 32 && x.corr_stride >= k / 32), fn,
            "q8 strides smaller than the row");
}
inline void check_fp4(const fp4_matrix& w, const char* fn) {
    require(w.k % 32 == 0, fn, "FP4 k must be a multiple of 32");
    require(w.n == 0 || (w.w && w.scale), fn, "FP4 weight or scale pointer is null");
    require(w.n <= 1 || (w.w_stride >= w.k / 2 && w.scale_stride >= w.k / 32), fn, "FP4 strides smaller than the row");
}
inline void check_fp8(const fp8_matrix& w, const char* fn) {
    require(w.k % 128 == 0, fn, "FP8 k must be a multiple of 128");
    require(w.n == 0 || (w.w && w.scale), fn, "FP8 weight or scale pointer is null");
    require(w.n <= 1 || w.w_stride >= w.k, fn, "FP8 w_stride smaller than k");
    require(w.n <= 128 || w.scale_stride >= w.k / 128, fn, "FP8 scale_stride smaller than k/128");
}
}  // namespace detail

/// Dequantises FP8 activations (act_quant GEMM-input form, blocks of 128) to f32 rows:
/// the exact inputs of reference-mode GEMVs. codes [m, k], scales [m, k/128], out [m, k].
inline void fp8_acts_to_f32(const uint8_t* codes, std::size_t codes_stride, const uint8_t* scales,
                            std::size_t scales_stride, std::size_t m, std::size_t k, float* out, std::size_t out_stride) {
    detail::require(k % 128 == 0, "fp8_acts_to_f32", "k must be a multiple of 128");
    detail::require(m == 0 || (codes && scales && out), "fp8_acts_to_f32", "null pointer");
    detail::require(m <= 1 || (codes_stride >= k && scales_stride >= k / 128 && out_stride >= k), "fp8_acts_to_f32",
                    "stride smaller than the row");
    const auto fn = DSV4_KERNEL(fp8_acts_to_f32);
    for (std::size_t r = 0; r < m; ++r) fn(codes + r * codes_stride, scales + r * scales_stride, k, out + r * out_stride);
}

/// Fast FP8 mode activations: f32 a [m, k] -> bf16 x [m, k] and int32 shift [m, k/128]
/// (bf16_block_rows; exact for FP8-dequantised or bf16-valued activations).
inline void to_bf16_blocks(const float* a, std::size_t a_stride, std::size_t m, std::size_t k, uint16_t* x,
                           std::size_t x_stride, int32_t* shift, std::size_t shift_stride) {
    detail::require(k % 128 == 0, "to_bf16_blocks", "k must be a multiple of 128");
    detail::require(m == 0 || (a && x && shift), "to_bf16_blocks", "null pointer");
    detail::require(m <= 1 || (a_stride >= k && x_stride >= k && shift_stride >= k / 128), "to_bf16_blocks",
                    "stride smaller than the row");
    const auto fn = DSV4_KERNEL(to_bf16_blocks_row);
    for (std::size_t r = 0; r < m; ++r) fn(a + r * a_stride, k, x + r * x_stride, shift + r * shift_stride);
}

/// Fast FP4 mode activations: bf16 x [m, k] -> int8 q [m, k] (group layout), f32 scales
/// d [m, k/32] and the per-block correction terms corr [m, k/32] (see q8_rows).
inline void quantize_q8(const uint16_t* x, std::size_t x_stride, std::size_t m, std::size_t k, int8_t* q,
                        std::size_t q_stride, float* d, std::size_t d_stride, int32_t* corr, std::size_t corr_stride) {
    detail::require(k % 32 == 0, "quantize_q8", "k must be a multiple of 32");
    detail::require(m == 0 || (x && q && d && corr), "quantize_q8", "null pointer");
    detail::require(m <= 1 || (x_stride >= k && q_stride >= k && d_stride >= k / 32 && corr_stride >= k / 32),
                    "quantize_q8", "stride smaller than the row");
    const auto fn = DSV4_KERNEL(quantize_q8_row);
    for (std::size_t r = 0; r < m; ++r) fn(x + r * x_stride, k, q + r * q_stride, d + r * d_stride, corr + r * corr_stride);
}

/// y = x * w^T for F32 weights (hc_*_fn, ...).
inline void f32_gemv(const f32_matrix& w, const f32_rows& x, const gemv_out& y, std::size_t r0 = 0,
                     std::size_t r1 = all_rows) {
    detail::require(w.n == 0 || w.w, "f32_gemv", "weight pointer is null");
    detail::require(w.n <= 1 || w.w_stride >= w.k, "f32_gemv", "w_stride smaller than k");
    detail::check_x(x, w.k, "f32_gemv");
    detail::check_out(y, x.m, w.n, "f32_gemv");
    detail::check_rows(r0, r1, w.n, "f32_gemv");
    DSV4_KERNEL(f32_gemv_rows)(w, x, y, r0, r1);
}

/// y = x * w^T for BF16 weights (gate, head, compressor, weights_proj), f32 math.
inline void bf16_gemv(const bf16_matrix& w, const f32_rows& x, const gemv_out& y, std::size_t r0 = 0,
                      std::size_t r1 = all_rows) {
    detail::require(w.n == 0 || w.w, "bf16_gemv", "weight pointer is null");
    detail::require(w.n <= 1 || w.w_stride >= w.k, "bf16_gemv", "w_stride smaller than k");
    detail::check_x(x, w.k, "bf16_gemv");
    detail::check_out(y, x.m, w.n, "bf16_gemv");
    detail::check_rows(r0, r1, w.n, "bf16_gemv");
    DSV4_KERNEL(bf16_gemv_rows)(w, x, y, r0, r1);
}

/// y = x * w^T for BF16 weights and bf16 activations (the head: its input, the final norm's
/// output, is bf16): exact products, f32 sums; on avx512_bf16 through vdpbf16ps
/// (kernels/gemv.hpp, dot_bf16_bf16_row). Same result as bf16_gemv on the widened x up to
/// the order of the f32 sums.
inline void bf16_gemv_bf16(const bf16_matrix& w, const bf16_rows& x, const gemv_out& y, std::size_t r0 = 0,
                           std::size_t r1 = all_rows) {
    detail::require(w.n == 0 || w.w, "bf16_gemv_bf16", "weight pointer is null");
    detail::require(w.n <= 1 || w.w_stride >= w.k, "bf16_gemv_bf16", "w_stride smaller than k");
    detail::require(x.m == 0 || x.x != nullptr, "bf16_gemv_bf16", "x.x is null");
    detail::require(x.m <= 1 || x.stride >= w.k, "bf16_gemv_bf16", "x.stride smaller than k");
    detail::check_out(y, x.m, w.n, "bf16_gemv_bf16");
    detail::check_rows(r0, r1, w.n, "bf16_gemv_bf16");
    DSV4_KERNEL(bf16_gemv_bf16_rows)(w, x, y, r0, r1);
}

/// y = x * w^T for FP8 weights with 128x128 block scales (reference mode: x is the
/// dequantised FP8 activation; or plain bf16 activations, as for wo_a).
inline void fp8_gemv(const fp8_matrix& w, const f32_rows& x, const gemv_out& y, std::size_t r0 = 0,
                     std::size_t r1 = all_rows) {
    detail::check_fp8(w, "fp8_gemv");
    detail::check_x(x, w.k, "fp8_gemv");
    detail::check_out(y, x.m, w.n, "fp8_gemv");
    detail::check_rows(r0, r1, w.n, "fp8_gemv");
    DSV4_KERNEL(fp8_gemv_rows)(w, x, y, r0, r1);
}

namespace detail {
inline void check_bf16_blocks(const bf16_block_rows& x, std::size_t k, const char* fn) {
    require(x.m == 0 || (x.x && x.shift), fn, "bf16 block activations are null");
    require(x.m <= 1 || (x.x_stride >= k && x.shift_stride >= k / 128), fn, "activation strides smaller than the row");
}
/// The grouped projection's weight: FP8, n = groups * ng, ng whole scale blocks.
inline void check_grouped_fp8(const fp8_matrix& w, std::size_t groups, const char* fn) {
    check_fp8(w, fn);
    require(groups > 0 && w.n % groups == 0, fn, "n must be a multiple of groups");
    require((w.n / groups) % 128 == 0 || groups == 1, fn, "rows per group must be a multiple of 128 (scale blocks)");
}
}  // namespace detail

namespace detail {
/// The tier of the kernels in use (runtime dispatch: active_kernels(); else the compiled one).
inline tier tier_in_use() {
#if DSV4_RUNTIME_DISPATCH
    return active_kernels().compiled_for;
#else
    return compiled_tier;
#endif
}
}  // namespace detail

/// Fewest rows from which fp8_gemv_bf16 (the small-M GEMM) beats fp8_gemv on the AVX2 tiers:
/// there the reference path's f32 row kernel is fast (45-60 GFLOP/s per Zen 4 core), and the
/// GEMM's per-block panel decode pays off from ~12 rows (bench_gemm: 0.72-1.05x at 5-8 rows,
/// 1.04-1.4x at 12, 1.3-1.8x at 32-64; docs/kernels/gemm.md).
inline constexpr std::size_t fp8_bf16_min_m_avx2 = 12;

/// Whether fp8_gemv_bf16 beats fp8_gemv for m activation rows on the kernels in use: on
/// avx512_bf16 always (vdpbf16ps, 1.6x the hot rate); on AVX-512 without BF16 from
/// kernels::fp8_gemm_min_m rows (the small-M GEMM of kernels/gemm_fp8.hpp on f32 FMAs:
/// 1.1-1.8x the reference row kernel at 5-8 rows, 2-3x at 16-64 on Zen 4); on the AVX2 tiers
/// from fp8_bf16_min_m_avx2 rows (the same GEMM) and for m = 1 (integer decode and
/// parity-split f32 FMAs, no F16C: 1.15-1.2x the reference path's hot rate on Zen 4; at
/// m = 2..4 widening the bf16 activations once per weight row costs more than the reference
/// path's f32 loads); never on the scalar tier.
inline bool fp8_bf16_preferred(std::size_t m = 1) {
    const tier t = detail::tier_in_use();
    if (t == tier::scalar) return false;
    if (t == tier::avx2 || t == tier::avx2_vnni) return m == 1 || m >= fp8_bf16_min_m_avx2;
    return t >= tier::avx512_bf16 || m >= kernels::fp8_gemm_min_m;
}

/// Whether fp8_bf16_preferred(m) holds for some m: callers that size buffers once for any
/// row count.
inline bool fp8_bf16_possible() { return detail::tier_in_use() != tier::scalar; }

/// y = x * w^T for FP8 weights, fast mode (x: to_bf16_blocks output). The fastest FP8 path
/// on avx512_bf16 (vdpbf16ps) and, for one token, on the AVX2 tiers; other tiers compute
/// the same through f32 FMAs (see fp8_bf16_preferred). Error bound: kernels/gemv.hpp,
/// dot_fp8_bf16_row.
inline void fp8_gemv_bf16(const fp8_matrix& w, const bf16_block_rows& x, const gemv_out& y, std::size_t r0 = 0,
                          std::size_t r1 = all_rows) {
    detail::check_fp8(w, "fp8_gemv_bf16");
    detail::check_bf16_blocks(x, w.k, "fp8_gemv_bf16");
    detail::check_out(y, x.m, w.n, "fp8_gemv_bf16");
    detail::check_rows(r0, r1, w.n, "fp8_gemv_bf16");
    DSV4_KERNEL(fp8_gemv_bf16_rows)(w, x, y, r0, r1);
}

/// Grouped FP8 projection, fast mode.
inline void fp8_grouped_gemv_bf16(const fp8_matrix& w, std::size_t groups, const bf16_block_rows& x,
                                  const gemv_out& y, std::size_t r0 = 0, std::size_t r1 = all_rows) {
    detail::check_grouped_fp8(w, groups, "fp8_grouped_gemv_bf16");
    detail::check_bf16_blocks(x, groups * w.k, "fp8_grouped_gemv_bf16");
    detail::check_out(y, x.m, w.n, "fp8_grouped_gemv_bf16");
    detail::check_rows(r0, r1, w.n, "fp8_grouped_gemv_bf16");
    DSV4_KERNEL(fp8_grouped_gemv_bf16_rows)(w, groups, x, y, r0, r1);
}

/// Grouped FP8 projection (wo_a): w is [groups * ng, k]; output row r of group
/// g = r / ng reads activation columns [g*k, (g+1)*k). x rows are groups * k wide.
inline void fp8_grouped_gemv(const fp8_matrix& w, std::size_t groups, const f32_rows& x, const gemv_out& y,
                             std::size_t r0 = 0, std::size_t r1 = all_rows) {
    detail::check_grouped_fp8(w, groups, "fp8_grouped_gemv");
    detail::check_x(x, groups * w.k, "fp8_grouped_gemv");
    detail::check_out(y, x.m, w.n, "fp8_grouped_gemv");
    detail::check_rows(r0, r1, w.n, "fp8_grouped_gemv");
    DSV4_KERNEL(fp8_grouped_gemv_rows)(w, groups, x, y, r0, r1);
}

/// y = x * w^T for FP4 weights, reference mode (x: dequantised FP8 activations).
inline void fp4_gemv(const fp4_matrix& w, const f32_rows& x, const gemv_out& y, std::size_t r0 = 0,
                     std::size_t r1 = all_rows) {
    detail::check_fp4(w, "fp4_gemv");
    detail::check_x(x, w.k, "fp4_gemv");
    detail::check_out(y, x.m, w.n, "fp4_gemv");
    detail::check_rows(r0, r1, w.n, "fp4_gemv");
    DSV4_KERNEL(fp4_gemv_rows)(w, x, y, r0, r1);
}

/// y = x * w^T for FP4 weights, fast mode (x: quantize_q8 output).
inline void fp4_gemv_q8(const fp4_matrix& w, const q8_rows& x, const gemv_out& y, std::size_t r0 = 0,
                        std::size_t r1 = all_rows) {
    detail::check_fp4(w, "fp4_gemv_q8");
    detail::check_q8(x, w.k, "fp4_gemv_q8");
    detail::check_out(y, x.m, w.n, "fp4_gemv_q8");
    detail::check_rows(r0, r1, w.n, "fp4_gemv_q8");
    DSV4_KERNEL(fp4_gemv_q8_rows)(w, x, y, r0, r1);
}

namespace detail {
inline void check_gate_up(const fp4_matrix& w1, const fp4_matrix& w3, const char* fn) {
    check_fp4(w1, fn);
    check_fp4(w3, fn);
    require(w1.n == w3.n && w1.k == w3.k, fn, "w1 and w3 must have the same shape");
}
}  // namespace detail

/// Fused routed-expert gate+up with the SwiGLU epilogue (spec §8.2), reference mode.
inline void fp4_gate_up(const fp4_matrix& w1, const fp4_matrix& w3, const f32_rows& x, const swiglu_epilogue& e,
                        const gemv_out& h, std::size_t r0 = 0, std::size_t r1 = all_rows) {
    detail::check_gate_up(w1, w3, "fp4_gate_up");
    detail::check_x(x, w1.k, "fp4_gate_up");
    detail::check_out(h, x.m, w1.n, "fp4_gate_up");
    detail::check_rows(r0, r1, w1.n, "fp4_gate_up");
    DSV4_KERNEL(fp4_gate_up_rows)(w1, w3, x, e, h, r0, r1);
}

/// Fused gate+up, fast mode.
inline void fp4_gate_up_q8(const fp4_matrix& w1, const fp4_matrix& w3, const q8_rows& x, const swiglu_epilogue& e,
                           const gemv_out& h, std::size_t r0 = 0, std::size_t r1 = all_rows) {
    detail::check_gate_up(w1, w3, "fp4_gate_up_q8");
    detail::check_q8(x, w1.k, "fp4_gate_up_q8");
    detail::check_out(h, x.m, w1.n, "fp4_gate_up_q8");
    detail::check_rows(r0, r1, w1.n, "fp4_gate_up_q8");
    DSV4_KERNEL(fp4_gate_up_q8_rows)(w1, w3, x, e, h, r0, r1);
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
