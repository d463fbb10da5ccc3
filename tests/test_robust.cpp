// tests/test_robust.cpp - robustness of the public kernel entry points (label: robust, run
// once per tier):
//   * non-finite activations (NaN, +-Inf) through every family: no crash, no read outside
//     the arguments (inputs and weights end right before a PROT_NONE page, and start right
//     after one), and the output is non-finite where the input made it so (propagation);
//     discrete choices (top-k, indexer selection, MoE routing, sampling) follow the
//     documented rule;
//   * preconditions: one table per family of bad calls, each a dsv4::error naming the
//     function and the argument.
#include "test_support.hpp"

#include <dsv4/attention.hpp>
#include <dsv4/codec.hpp>
#include <dsv4/compressor.hpp>
#include <dsv4/gemv.hpp>
#include <dsv4/hadamard.hpp>
#include <dsv4/indexer.hpp>
#include <dsv4/mhc.hpp>
#include <dsv4/moe.hpp>
#include <dsv4/norm.hpp>
#include <dsv4/rope.hpp>
#include <dsv4/model/sampling.hpp>
#include <dsv4/topk.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

using namespace dsv4_test;

namespace {

constexpr float qnan = std::numeric_limits<float>::quiet_NaN();
constexpr float inf = std::numeric_limits<float>::infinity();
constexpr uint16_t bf16_nan = 0x7FC0, bf16_neg_nan = 0xFFC0, bf16_inf = 0x7F80, bf16_neg_inf = 0xFF80;

/// n elements of T whose last byte is followed by a PROT_NONE page (and whose first byte is
/// preceded by one): any read past either end faults. Zero-filled.
template <class T> class guarded {
public:
    explicit guarded(std::size_t n) : n_(n) {
        const std::size_t page = std::size_t(::sysconf(_SC_PAGESIZE)), bytes = n * sizeof(T);
        const std::size_t body = (bytes + page - 1) / page * page;
        len_ = body + 2 * page;
        void* m = ::mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(m != MAP_FAILED);
        base_ = static_cast<unsigned char*>(m);
        REQUIRE(::mprotect(base_, page, PROT_NONE) == 0);
        REQUIRE(::mprotect(base_ + page + body, page, PROT_NONE) == 0);
        p_ = reinterpret_cast<T*>(base_ + page + body - bytes);  // ends at the guard page
    }
    guarded(const guarded&) = delete;
    guarded& operator=(const guarded&) = delete;
    ~guarded() { ::munmap(base_, len_); }
    T* data() { return p_; }
    const T* data() const { return p_; }
    T& operator[](std::size_t i) { return p_[i]; }
    std::size_t size() const { return n_; }

private:
    unsigned char* base_ = nullptr;
    std::size_t len_ = 0, n_ = 0;
    T* p_ = nullptr;
};

uint16_t bf16(float f) {
    uint16_t b = 0;
    dsv4::encode_bf16(&f, &b, 1);
    return b;
}
float f32(uint16_t b) {
    float f = 0;
    dsv4::decode_bf16(&b, &f, 1);
    return f;
}
bool finite_bf16(uint16_t b) { return (b & 0x7F80) != 0x7F80; }
template <class T> bool all_finite(const T* v, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        if constexpr (std::is_same_v<T, uint16_t>) {
            if (!finite_bf16(v[i])) return false;
        } else if (!std::isfinite(v[i])) {
            return false;
        }
    }
    return true;
}
template <class T> bool none_finite(const T* v, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        if constexpr (std::is_same_v<T, uint16_t>) {
            if (finite_bf16(v[i])) return false;
        } else if (std::isfinite(v[i])) {
            return false;
        }
    }
    return true;
}

void fill_bf16(uint16_t* x, std::size_t n, rng& r, float scale = 1.0f) {
    for (std::size_t i = 0; i < n; ++i) x[i] = bf16(r.normal() * scale);
}
void fill_f32(float* x, std::size_t n, rng& r, float scale = 1.0f) {
    for (std::size_t i = 0; i < n; ++i) x[i] = r.normal() * scale;
}
/// Random e4m3 codes without the NaN codes; E8M0 scales near 2^0.
void fill_e4m3(uint8_t* w, std::size_t n, rng& r) {
    for (std::size_t i = 0; i < n; ++i) {
        uint8_t c = uint8_t(r.next() & 0xFF);
        if ((c & 0x7F) == 0x7F) c = 0x38;
        w[i] = uint8_t(c & 0xBF);  // |value| <= 2^? small
    }
}
void fill_bytes(uint8_t* w, std::size_t n, rng& r) {
    for (std::size_t i = 0; i < n; ++i) w[i] = uint8_t(r.next() & 0xFF);
}
void fill_scales(uint8_t* s, std::size_t n, rng& r) {
    for (std::size_t i = 0; i < n; ++i) s[i] = uint8_t(120 + r.next() % 8);
}

/// Expects f to throw a dsv4::error whose message has every part.
void expect_error(const std::string& name, const std::function<void()>& f, std::initializer_list<std::string> parts) {
    CAPTURE(name);
    std::string msg;
    try {
        f();
    } catch (const dsv4::error& e) {
        msg = e.what();
    }
    REQUIRE_MESSAGE(!msg.empty(), name << ": no dsv4::error");
    for (const auto& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, "\"" << msg << "\" lacks \"" << p << "\"");
}

/// A null pointer the optimiser cannot see through (a literal null in a call whose check
/// throws before the memcpy still trips GCC's -Wnonnull).
template <class T> T* opaque_null() {
    T* p = nullptr;
    asm volatile("" : "+r"(p));
    return p;
}

struct bad_call {
    const char* name;
    std::function<void()> call;
    std::initializer_list<std::string> parts;
};
void run_table(const std::vector<bad_call>& table) {
    for (const auto& c : table) expect_error(c.name, c.call, c.parts);
}

}  // namespace

// ====================================================================== non-finite activations

TEST_CASE("robust: act_quant and quantize_q8 keep NaN/Inf visible, read nothing outside the row") {
    constexpr std::size_t K = 512;
    rng r(1);
    guarded<uint16_t> x(3 * K);
    fill_bf16(x.data(), 3 * K, r);
    x[5] = bf16_nan;            // row 0, block 0
    x[K + 200] = bf16_inf;      // row 1, block 1 (of 128)
    x[K + 300] = bf16_neg_inf;  // row 1, block 2
    x[K + 510] = bf16_neg_nan;  // row 1, block 3
    // FP8, GEMM-input form: the non-finite element dequantises to a non-finite value; blocks
    // without one stay finite.
    guarded<uint8_t> codes(3 * K), scales(3 * K / 128);
    dsv4::act_quant_fp8(x.data(), 3, K, K, 128, codes.data(), K, scales.data(), K / 128);
    guarded<float> xf(3 * K);
    dsv4::fp8_acts_to_f32(codes.data(), K, scales.data(), K / 128, 3, K, xf.data(), K);
    CHECK(!std::isfinite(xf[5]));
    CHECK(!std::isfinite(xf[K + 200]));
    CHECK(!std::isfinite(xf[K + 300]));
    CHECK(!std::isfinite(xf[K + 510]));
    CHECK(all_finite(xf.data() + 128, K - 128));  // row 0 blocks 1..3
    CHECK(all_finite(xf.data() + K, 128));        // row 1 block 0
    CHECK(all_finite(xf.data() + 2 * K, K));      // row 2
    // FP8 simulation (in place)
    {
        guarded<uint16_t> y(3 * K);
        std::memcpy(y.data(), x.data(), 3 * K * 2);
        dsv4::act_quant_fp8_sim(y.data(), 3, K, K, 64);
        for (std::size_t i : {std::size_t(5), K + 200, K + 300, K + 510}) CHECK(!finite_bf16(y[i]));
        CHECK(all_finite(y.data() + 2 * K, K));
    }
    // FP4 simulation and GEMM-input form
    {
        guarded<uint16_t> y(3 * K);
        std::memcpy(y.data(), x.data(), 3 * K * 2);
        dsv4::fp4_act_quant_sim(y.data(), 3, K, K);
        for (std::size_t i : {std::size_t(5), K + 200, K + 300, K + 510}) CHECK(!finite_bf16(y[i]));
        CHECK(all_finite(y.data() + 2 * K, K));
        guarded<uint8_t> packed(3 * K / 2), sc(3 * K / 32);
        dsv4::fp4_act_quant(x.data(), 3, K, K, packed.data(), K / 2, sc.data(), K / 32);
        // e2m1 has no NaN: the block's scale carries it (E8M0 0xFF)
        CHECK(sc[5 / 32] == 0xFF);
        CHECK(sc[(K + 200) / 32] == 0xFF);
        CHECK(sc[(K + 510) / 32] == 0xFF);
        for (std::size_t b = 0; b < K / 32; ++b) CHECK(sc[2 * K / 32 + b] != 0xFF);
    }
    // int8 per 32 (fast FP4 mode): the block scale becomes NaN
    guarded<int8_t> q(3 * K);
    guarded<float> d(3 * K / 32);
    guarded<int32_t> corr(3 * K / 32);
    dsv4::quantize_q8(x.data(), K, 3, K, q.data(), K, d.data(), K / 32, corr.data(), K / 32);
    CHECK(std::isnan(d[5 / 32]));
    CHECK(!std::isfinite(d[(K + 200) / 32]));
    CHECK(!std::isfinite(d[(K + 510) / 32]));
    CHECK(all_finite(d.data() + 2 * K / 32, K / 32));
}

TEST_CASE("robust: GEMV of every format propagates NaN/Inf activations row by row") {
    constexpr std::size_t N = 256, K = 512, M = 3;
    rng r(2);
    // x rows: 0 has a NaN, 1 has an Inf, 2 is finite
    guarded<uint16_t> xb(M * K);
    fill_bf16(xb.data(), M * K, r);
    xb[7] = bf16_nan;
    xb[K + 300] = bf16_inf;
    guarded<float> x(M * K);
    for (std::size_t i = 0; i < M * K; ++i) x[i] = f32(xb[i]);
    const dsv4::f32_rows xr{x.data(), K, M};
    auto check_rows = [&](const char* what, const float* y, std::size_t n, bool inf_row_nonfinite = true) {
        CAPTURE(what);
        CHECK(none_finite(y, n));                             // NaN row: every output NaN
        if (inf_row_nonfinite) CHECK(none_finite(y + n, n));  // Inf row
        CHECK(all_finite(y + 2 * n, n));                      // finite row
    };
    guarded<float> y(M * N);
    {
        guarded<float> w(N * K);
        fill_f32(w.data(), N * K, r, 0.05f);
        dsv4::f32_gemv(dsv4::f32_matrix{w.data(), K, N, K}, xr, dsv4::gemv_out{y.data(), nullptr, N});
        check_rows("f32", y.data(), N);
    }
    {
        guarded<uint16_t> w(N * K);
        fill_bf16(w.data(), N * K, r, 0.05f);
        dsv4::bf16_gemv(dsv4::bf16_matrix{w.data(), K, N, K}, xr, dsv4::gemv_out{y.data(), nullptr, N});
        check_rows("bf16", y.data(), N);
        guarded<uint16_t> yb(M * N);
        dsv4::bf16_gemv(dsv4::bf16_matrix{w.data(), K, N, K}, xr, dsv4::gemv_out{nullptr, yb.data(), N});
        CHECK(none_finite(yb.data(), N));
        CHECK(all_finite(yb.data() + 2 * N, N));
    }
    {
        guarded<uint8_t> w(N * K), s((N / 128) * (K / 128));
        fill_e4m3(w.data(), N * K, r);
        fill_scales(s.data(), s.size(), r);
        const dsv4::fp8_matrix m{w.data(), K, s.data(), K / 128, N, K};
        dsv4::fp8_gemv(m, xr, dsv4::gemv_out{y.data(), nullptr, N});
        check_rows("fp8", y.data(), N);
        // grouped (wo_a): 2 groups of 128 rows, each reading its own K columns
        guarded<float> xg(M * 2 * K);
        for (std::size_t t = 0; t < M; ++t)
            for (std::size_t g = 0; g < 2; ++g) std::memcpy(xg.data() + t * 2 * K + g * K, x.data() + t * K, K * 4);
        dsv4::fp8_grouped_gemv(m, 2, dsv4::f32_rows{xg.data(), 2 * K, M}, dsv4::gemv_out{y.data(), nullptr, N});
        check_rows("fp8 grouped", y.data(), N);
    }
    {
        guarded<uint8_t> w1(N * K / 2), w3(N * K / 2), s1(N * K / 32), s3(N * K / 32);
        fill_bytes(w1.data(), w1.size(), r);
        fill_bytes(w3.data(), w3.size(), r);
        fill_scales(s1.data(), s1.size(), r);
        fill_scales(s3.data(), s3.size(), r);
        const dsv4::fp4_matrix m1{w1.data(), K / 2, s1.data(), K / 32, N, K}, m3{w3.data(), K / 2, s3.data(), K / 32, N, K};
        dsv4::fp4_gemv(m1, xr, dsv4::gemv_out{y.data(), nullptr, N});
        check_rows("fp4 reference", y.data(), N);
        guarded<int8_t> q(M * K);
        guarded<float> d(M * K / 32);
        guarded<int32_t> c(M * K / 32);
        dsv4::quantize_q8(xb.data(), K, M, K, q.data(), K, d.data(), K / 32, c.data(), K / 32);
        const dsv4::q8_rows xq{q.data(), K, d.data(), K / 32, c.data(), K / 32, M};
        dsv4::fp4_gemv_q8(m1, xq, dsv4::gemv_out{y.data(), nullptr, N});
        check_rows("fp4 fast (q8)", y.data(), N);
        // gate+up with the SwiGLU clamp: NaN must survive min/clamp (an Inf may legitimately
        // be clamped to the limit, so the Inf row is not checked).
        guarded<uint16_t> h(M * N);
        guarded<float> rw(M);
        for (std::size_t t = 0; t < M; ++t) rw[t] = 0.5f;
        dsv4::fp4_gate_up(m1, m3, xr, dsv4::swiglu_epilogue{rw.data(), 10.0f}, dsv4::gemv_out{nullptr, h.data(), N});
        CHECK(none_finite(h.data(), N));
        CHECK(all_finite(h.data() + 2 * N, N));
        dsv4::fp4_gate_up_q8(m1, m3, xq, dsv4::swiglu_epilogue{nullptr, 10.0f}, dsv4::gemv_out{nullptr, h.data(), N});
        CHECK(none_finite(h.data(), N));
        CHECK(all_finite(h.data() + 2 * N, N));
    }
}

TEST_CASE("robust: norms and RoPE propagate NaN/Inf") {
    constexpr std::size_t n = 512;
    rng r(3);
    guarded<uint16_t> x(3 * n), y(3 * n), w(n);
    fill_bf16(x.data(), 3 * n, r);
    fill_bf16(w.data(), n, r);
    x[10] = bf16_nan;
    x[n + 20] = bf16_inf;
    dsv4::rmsnorm(x.data(), 3, n, n, w.data(), 1e-6f, y.data(), n);
    CHECK(none_finite(y.data(), n));  // mean(x^2) is NaN
    CHECK(!finite_bf16(y[n + 20]));   // Inf * rsqrt(Inf) = Inf * 0 = NaN
    CHECK(all_finite(y.data() + 2 * n, n));
    dsv4::q_head_norm(x.data(), 3, 4, 128, n, 1e-6f, y.data(), n);
    CHECK(none_finite(y.data(), 128));  // head 0 of token 0
    CHECK(all_finite(y.data() + 128, 3 * 128));
    CHECK(!finite_bf16(y[n + 20]));
    CHECK(all_finite(y.data() + 2 * n, n));
    // RoPE rotates pairs: a NaN reaches its partner, nothing else
    std::vector<float> freqs(32), rows(8 * 64);
    dsv4::rope_freqs(dsv4::rope_config_ratio0, freqs.data());
    dsv4::rope_table_fill(freqs.data(), 8, rows.data());
    guarded<int64_t> pos(3);
    pos[0] = 1, pos[1] = 2, pos[2] = 3;
    guarded<uint16_t> v(3 * 128);
    fill_bf16(v.data(), 3 * 128, r);
    v[128 - 64 + 3] = bf16_nan;  // token 0, rope pair 3
    dsv4::rope_apply(v.data(), 3, 1, 128, 128, pos.data(), dsv4::rope_table{freqs.data(), rows.data(), 8}, false);
    CHECK(!finite_bf16(v[128 - 64 + 3]));
    CHECK(all_finite(v.data() + 128, 2 * 128));
    // Hadamard mixes everything: a NaN poisons its whole vector only
    guarded<uint16_t> hv(2 * 128);
    fill_bf16(hv.data(), 2 * 128, r);
    hv[9] = bf16_nan;
    dsv4::hadamard_rotate(hv.data(), 2, 128, 128);
    CHECK(none_finite(hv.data(), 128));
    CHECK(all_finite(hv.data() + 128, 128));
}

TEST_CASE("robust: sparse attention propagates NaN in q and in attended KV rows only") {
    constexpr std::size_t T = 3, H = 8, D = 128, R = 64, L = 64;
    rng r(4);
    guarded<uint16_t> q(T * H * D), kv(R * D), out(T * H * D);
    guarded<int32_t> idx(T * L);
    guarded<float> sink(H);
    fill_bf16(q.data(), q.size(), r);
    fill_bf16(kv.data(), kv.size(), r);
    fill_f32(sink.data(), H, r);
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t j = 0; j < L; ++j) idx[t * L + j] = int32_t(j);
    q[2 * D + 5] = bf16_nan;  // token 0, head 2
    kv[40 * D + 7] = bf16_inf;  // row 40: attended by token 1 only (masked for the others)
    idx[40] = -1;
    idx[2 * L + 40] = -1;
    dsv4::sparse_attention_args a;
    a.q = q.data();
    a.q_stride = H * D;
    a.kv = kv.data();
    a.kv_rows = R;
    a.kv_stride = D;
    a.idx = idx.data();
    a.idx_len = L;
    a.idx_stride = L;
    a.sink = sink.data();
    a.out = out.data();
    a.out_stride = H * D;
    a.tokens = T;
    a.heads = H;
    a.dim = D;
    a.scale = 1.0f / std::sqrt(float(D));
    std::vector<unsigned char> ws(dsv4::sparse_attention_scratch_bytes(H, D));
    dsv4::sparse_attention(a, ws.data(), ws.size());
    CHECK(none_finite(out.data() + 2 * D, D));                  // token 0 head 2
    CHECK(all_finite(out.data(), 2 * D));                       // token 0 heads 0, 1
    CHECK(all_finite(out.data() + 3 * D, (H - 3) * D));         // token 0 heads 3..7
    CHECK(!all_finite(out.data() + H * D, H * D));              // token 1 attends the Inf row
    CHECK(all_finite(out.data() + 2 * H * D, H * D));           // token 2 has it masked
    // an Inf in q: scores of +-Inf, no crash; the head's output is non-finite
    q[2 * D + 5] = bf16_inf;
    dsv4::sparse_attention(a, ws.data(), ws.size());
    CHECK(!all_finite(out.data() + 2 * D, D));
}

TEST_CASE("robust: top-k and indexer selection rank NaN below -inf (documented rule)") {
    rng r(5);
    const float nnan = -qnan;
    guarded<float> s(8);
    const float vals[8] = {1.0f, qnan, 3.0f, -inf, nnan, 2.0f, inf, -0.0f};
    std::memcpy(s.data(), vals, sizeof vals);
    std::vector<unsigned char> ws(dsv4::topk_scratch_bytes(8, 8));
    std::vector<int32_t> out(8);
    dsv4::topk(s.data(), 1, 8, 8, 8, dsv4::topk_order::score, out.data(), 8, ws.data(), ws.size());
    CHECK(out == std::vector<int32_t>{6, 2, 5, 0, 7, 3, 1, 4});
    dsv4::topk(s.data(), 1, 8, 8, 5, dsv4::topk_order::score, out.data(), 8, ws.data(), ws.size());
    CHECK(std::vector<int32_t>(out.begin(), out.begin() + 5) == std::vector<int32_t>{6, 2, 5, 0, 7});
    // all NaN: the lowest indices, in index order
    for (std::size_t i = 0; i < 8; ++i) s[i] = qnan;
    dsv4::topk(s.data(), 1, 8, 8, 3, dsv4::topk_order::score, out.data(), 8, ws.data(), ws.size());
    CHECK(std::vector<int32_t>(out.begin(), out.begin() + 3) == std::vector<int32_t>{0, 1, 2});
    // a long row (the threshold path), NaN scattered: never picked while numbers remain
    constexpr std::size_t n = 5000, k = 512;
    guarded<float> big(n);
    fill_f32(big.data(), n, r);
    for (std::size_t i = 0; i < n; i += 3) big[i] = qnan;
    std::vector<unsigned char> ws2(dsv4::topk_scratch_bytes(n, k));
    std::vector<int32_t> o2(k);
    dsv4::topk(big.data(), 1, n, n, k, dsv4::topk_order::index, o2.data(), k, ws2.data(), ws2.size());
    for (int32_t i : o2) CHECK(!std::isnan(big[std::size_t(i)]));
    // indexer: NaN in q -> NaN scores; the selection is still in range
    constexpr std::size_t heads = 4, keys = 40;
    guarded<uint16_t> q(heads * 128), w(heads), kc(keys * 128);
    fill_bf16(q.data(), q.size(), r);
    fill_bf16(w.data(), heads, r);
    fill_bf16(kc.data(), kc.size(), r);
    q[3] = bf16_nan;
    kc[17 * 128 + 1] = bf16_inf;  // key 17
    guarded<float> sc(keys);
    std::vector<unsigned char> iws(dsv4::indexer_scores_scratch_bytes(heads, 1));
    dsv4::indexer_scores(q.data(), heads * 128, w.data(), heads, 1, heads, kc.data(), 128, keys, false, 0, sc.data(), keys,
                         iws.data(), iws.size());
    CHECK(none_finite(sc.data(), keys));
    q[3] = bf16(0.5f);
    dsv4::indexer_scores(q.data(), heads * 128, w.data(), heads, 1, heads, kc.data(), 128, keys, false, 0, sc.data(), keys,
                         iws.data(), iws.size());
    CHECK(!std::isfinite(sc[17]));
    CHECK(all_finite(sc.data(), 17));
    std::vector<unsigned char> sws(dsv4::indexer_select_scratch_bytes(8, keys));
    std::vector<int32_t> sel(8);
    sc[5] = qnan;
    dsv4::indexer_select(sc.data(), keys, 1, keys, false, 0, 8, 100, sel.data(), 8, sws.data(), sws.size());
    for (int32_t i : sel) {
        CHECK(i >= 100);
        CHECK(i < 100 + int32_t(keys));
        CHECK(i != 105);  // the NaN key is not picked over numbers
    }
}

TEST_CASE("robust: MoE routing on NaN scores stays in range and poisons the token's weights") {
    dsv4::moe_config c;
    c.dim = 128;
    c.inter = 128;
    c.n_experts = 16;
    c.topk = 4;
    rng r(6);
    guarded<uint16_t> gate(c.n_experts * c.dim), x(3 * c.dim);
    fill_bf16(gate.data(), gate.size(), r, 0.1f);
    fill_bf16(x.data(), x.size(), r);
    guarded<float> bias(c.n_experts);
    fill_f32(bias.data(), c.n_experts, r, 0.01f);
    dsv4::moe_gate_weights g{dsv4::bf16_matrix{gate.data(), c.dim, c.n_experts, c.dim}, bias.data(), nullptr, 0};
    std::vector<unsigned char> sbuf(dsv4::bytes_needed(c, 3));
    const dsv4::moe_scratch s{sbuf.data(), sbuf.size(), 3};
    std::vector<int32_t> idx(3 * c.topk);
    std::vector<float> wts(3 * c.topk), scores(3 * c.n_experts);
    x[3] = bf16_nan;               // token 0: every score NaN
    gate[9 * c.dim + 1] = bf16_nan;  // expert 9: NaN score for every token
    bias[12] = qnan;               // expert 12: NaN selection value
    dsv4::moe_route_tokens(c, g, x.data(), c.dim, nullptr, 3, dsv4::moe_routing_out{idx.data(), wts.data(), scores.data()}, s);
    for (int32_t i : idx) CHECK((i >= 0 && i < int32_t(c.n_experts)));
    // token 0: all NaN -> experts 0..3, NaN weights
    CHECK(std::vector<int32_t>(idx.begin(), idx.begin() + 4) == std::vector<int32_t>{0, 1, 2, 3});
    CHECK(none_finite(wts.data(), 4));
    // tokens 1, 2: experts 9 and 12 never picked over numbers, but the NaN must not vanish:
    // the weights are NaN so that the layer output shows it
    for (std::size_t t = 1; t < 3; ++t) {
        for (std::size_t j = 0; j < c.topk; ++j) CHECK((idx[t * c.topk + j] != 9 && idx[t * c.topk + j] != 12));
        CHECK(none_finite(wts.data() + t * c.topk, c.topk));
        CHECK(std::isnan(scores[t * c.n_experts + 9]));
    }
    // a clean gate: finite weights
    gate[9 * c.dim + 1] = bf16(0.01f);
    bias[12] = 0.0f;
    dsv4::moe_route_tokens(c, g, x.data() + c.dim, c.dim, nullptr, 2, dsv4::moe_routing_out{idx.data(), wts.data(), nullptr}, s);
    CHECK(all_finite(wts.data(), 2 * c.topk));
}

TEST_CASE("robust: mHC hc_pre / hc_post / hc_head propagate a NaN stream") {
    dsv4::hc_config c;
    c.dim = 128;
    c.sinkhorn_iters = 20;
    constexpr std::size_t T = 3, W = 4 * 128;
    rng r(7);
    guarded<float> fn(24 * W), scale(3), base(24), hfn(4 * W), hscale(1), hbase(4);
    fill_f32(fn.data(), fn.size(), r, 0.02f);
    fill_f32(scale.data(), 3, r, 0.1f);
    fill_f32(base.data(), 24, r, 0.1f);
    fill_f32(hfn.data(), hfn.size(), r, 0.02f);
    hscale[0] = 0.1f;
    fill_f32(hbase.data(), 4, r, 0.1f);
    guarded<uint16_t> H(T * W), y(T * c.dim), out(T * W);
    fill_bf16(H.data(), H.size(), r);
    H[2 * 128 + 5] = bf16_nan;  // token 0, stream 2
    H[W + 300] = bf16_inf;      // token 1
    guarded<float> post(T * 4), comb(T * 16);
    std::vector<unsigned char> sb(dsv4::bytes_needed(c, T));
    const dsv4::hc_scratch s{sb.data(), sb.size()};
    dsv4::hc_pre(c, dsv4::hc_pre_weights{fn.data(), scale.data(), base.data()}, H.data(), T,
                 dsv4::hc_pre_out{y.data(), post.data(), comb.data(), nullptr, nullptr}, s);
    CHECK(none_finite(y.data(), c.dim));
    CHECK(none_finite(post.data(), 4));
    CHECK(none_finite(comb.data(), 16));
    CHECK(!all_finite(y.data() + c.dim, c.dim));
    CHECK(all_finite(y.data() + 2 * c.dim, c.dim));
    CHECK(all_finite(comb.data() + 32, 16));
    dsv4::hc_post(c, y.data(), H.data(), post.data(), comb.data(), T, out.data());
    CHECK(none_finite(out.data(), W));
    CHECK(all_finite(out.data() + 2 * W, W));
    dsv4::hc_head(c, dsv4::hc_head_weights{hfn.data(), hscale.data(), hbase.data()}, H.data(), T,
                  dsv4::hc_head_out{y.data(), nullptr, nullptr}, s);
    CHECK(none_finite(y.data(), c.dim));
    CHECK(all_finite(y.data() + 2 * c.dim, c.dim));
}

TEST_CASE("robust: sampling refuses NaN logits and handles +-Inf deterministically") {
    std::vector<float> lg = {0.5f, 1.0f, qnan, 0.2f};
    dsv4::sampler greedy(4, {0.0f, 1.0f, 0});
    expect_error("NaN logit", [&] { (void)greedy.pick(lg.data(), 4); }, {"sampler", "logit 2 is NaN"});
    lg[2] = inf;
    CHECK(greedy.pick(lg.data(), 4) == 2);
    dsv4::sampler hot(4, {1.0f, 0.9f, 7});
    CHECK(hot.pick(lg.data(), 4) == 2);  // +Inf: certain
    lg = {-inf, -inf, 0.0f, -inf};
    CHECK(hot.pick(lg.data(), 4) == 2);
    lg = {-inf, -inf, -inf, -inf};
    CHECK(greedy.pick(lg.data(), 4) == 0);
    CHECK(hot.pick(lg.data(), 4) == 0);
}

// ====================================================================== preconditions

namespace {
// Small valid buffers the bad calls point into (each call breaks exactly one precondition).
struct bufs {
    std::vector<uint16_t> b16 = std::vector<uint16_t>(1 << 16, 0x3F80);
    std::vector<float> f = std::vector<float>(1 << 16, 1.0f);
    std::vector<uint8_t> u8 = std::vector<uint8_t>(1 << 16, 0x38);
    std::vector<int8_t> i8 = std::vector<int8_t>(1 << 16, 1);
    std::vector<int32_t> i32 = std::vector<int32_t>(1 << 16, 0);
    std::vector<int64_t> i64 = std::vector<int64_t>(1 << 12, 0);
    std::vector<unsigned char> scratch = std::vector<unsigned char>(1 << 22);
};
}  // namespace

TEST_CASE("robust: codec preconditions") {
    bufs b;
    run_table({
        {"decode_e4m3 null", [&] { dsv4::decode_e4m3(nullptr, b.f.data(), 4); }, {"dsv4::decode_e4m3", "null"}},
        {"encode_bf16 null", [&] { dsv4::encode_bf16(b.f.data(), nullptr, 4); }, {"dsv4::encode_bf16", "null"}},
        {"act_quant_fp8 cols % block", [&] { dsv4::act_quant_fp8(b.b16.data(), 1, 200, 200, 128, b.u8.data(), 200, b.u8.data(), 2); },
         {"dsv4::act_quant_fp8", "multiple of block"}},
        {"act_quant_fp8 block 0", [&] { dsv4::act_quant_fp8(b.b16.data(), 1, 128, 128, 0, b.u8.data(), 128, b.u8.data(), 1); },
         {"dsv4::act_quant_fp8", "block"}},
        {"act_quant_fp8 stride", [&] { dsv4::act_quant_fp8(b.b16.data(), 2, 256, 128, 128, b.u8.data(), 256, b.u8.data(), 2); },
         {"dsv4::act_quant_fp8", "stride"}},
        {"act_quant_fp8 null", [&] { dsv4::act_quant_fp8(b.b16.data(), 1, 128, 128, 128, nullptr, 128, b.u8.data(), 1); },
         {"dsv4::act_quant_fp8", "null"}},
        {"act_quant_fp8_sim", [&] { dsv4::act_quant_fp8_sim(b.b16.data(), 1, 100, 100, 64); }, {"dsv4::act_quant_fp8_sim", "multiple"}},
        {"fp4_act_quant cols", [&] { dsv4::fp4_act_quant(b.b16.data(), 1, 48, 48, b.u8.data(), 24, b.u8.data(), 2); },
         {"dsv4::fp4_act_quant", "multiple of 32"}},
        {"fp4_act_quant_sim stride", [&] { dsv4::fp4_act_quant_sim(b.b16.data(), 2, 64, 32); }, {"dsv4::fp4_act_quant_sim", "stride"}},
    });
}

TEST_CASE("robust: GEMV preconditions") {
    bufs b;
    const dsv4::f32_rows x{b.f.data(), 256, 1};
    const dsv4::gemv_out y{b.f.data() + 4096, nullptr, 256};
    const dsv4::fp8_matrix w8{b.u8.data(), 256, b.u8.data() + 32768, 2, 256, 256};
    const dsv4::fp4_matrix w4{b.u8.data(), 128, b.u8.data() + 32768, 8, 256, 256};
    const dsv4::bf16_matrix wb{b.b16.data(), 256, 256, 256};
    run_table({
        {"fp8 k % 128", [&] { auto w = w8; w.k = 200; dsv4::fp8_gemv(w, x, y); }, {"dsv4::fp8_gemv", "multiple of 128"}},
        {"fp8 null scale", [&] { auto w = w8; w.scale = nullptr; dsv4::fp8_gemv(w, x, y); }, {"dsv4::fp8_gemv", "null"}},
        {"fp8 w_stride", [&] { auto w = w8; w.w_stride = 128; dsv4::fp8_gemv(w, x, y); }, {"dsv4::fp8_gemv", "w_stride"}},
        {"fp8 rows", [&] { dsv4::fp8_gemv(w8, x, y, 10, 300); }, {"dsv4::fp8_gemv", "range"}},
        {"fp8 two outputs", [&] { dsv4::fp8_gemv(w8, x, dsv4::gemv_out{b.f.data(), b.b16.data(), 256}); },
         {"dsv4::fp8_gemv", "exactly one"}},
        {"fp8 out stride", [&] { dsv4::fp8_gemv(w8, dsv4::f32_rows{b.f.data(), 256, 2}, dsv4::gemv_out{b.f.data(), nullptr, 100}); },
         {"dsv4::fp8_gemv", "out.stride"}},
        {"fp8 x null", [&] { dsv4::fp8_gemv(w8, dsv4::f32_rows{nullptr, 256, 1}, y); }, {"dsv4::fp8_gemv", "x.x is null"}},
        {"fp8 x stride", [&] { dsv4::fp8_gemv(w8, dsv4::f32_rows{b.f.data(), 100, 2}, y); }, {"dsv4::fp8_gemv", "x.stride"}},
        {"grouped groups", [&] { dsv4::fp8_grouped_gemv(w8, 3, x, y); }, {"dsv4::fp8_grouped_gemv", "multiple of groups"}},
        {"grouped zero groups", [&] { dsv4::fp8_grouped_gemv(w8, 0, x, y); }, {"dsv4::fp8_grouped_gemv", "groups"}},
        {"fp4 k % 32", [&] { auto w = w4; w.k = 48; dsv4::fp4_gemv(w, x, y); }, {"dsv4::fp4_gemv", "multiple of 32"}},
        {"fp4 strides", [&] { auto w = w4; w.scale_stride = 2; dsv4::fp4_gemv(w, x, y); }, {"dsv4::fp4_gemv", "strides"}},
        {"fp4 q8 null", [&] { dsv4::fp4_gemv_q8(w4, dsv4::q8_rows{b.i8.data(), 256, nullptr, 8, b.i32.data(), 32, 1}, y); },
         {"dsv4::fp4_gemv_q8", "null"}},
        {"gate_up shapes", [&] { auto w3 = w4; w3.n = 128; dsv4::fp4_gate_up(w4, w3, x, {}, y); },
         {"dsv4::fp4_gate_up", "same shape"}},
        {"bf16 null", [&] { auto w = wb; w.w = nullptr; dsv4::bf16_gemv(w, x, y); }, {"dsv4::bf16_gemv", "null"}},
        {"f32 stride", [&] { dsv4::f32_gemv(dsv4::f32_matrix{b.f.data(), 10, 4, 256}, x, y); }, {"dsv4::f32_gemv", "w_stride"}},
        {"fp8_acts_to_f32 k", [&] { dsv4::fp8_acts_to_f32(b.u8.data(), 100, b.u8.data(), 1, 1, 100, b.f.data(), 100); },
         {"dsv4::fp8_acts_to_f32", "multiple of 128"}},
        {"fp8_acts_to_f32 stride", [&] { dsv4::fp8_acts_to_f32(b.u8.data(), 128, b.u8.data(), 2, 2, 256, b.f.data(), 256); },
         {"dsv4::fp8_acts_to_f32", "stride"}},
        {"quantize_q8 k", [&] { dsv4::quantize_q8(b.b16.data(), 40, 1, 40, b.i8.data(), 40, b.f.data(), 2, b.i32.data(), 5); },
         {"dsv4::quantize_q8", "multiple of 32"}},
        {"quantize_q8 stride", [&] { dsv4::quantize_q8(b.b16.data(), 64, 2, 64, b.i8.data(), 64, b.f.data(), 2, b.i32.data(), 1); },
         {"dsv4::quantize_q8", "stride"}},
    });
}

TEST_CASE("robust: norm, RoPE and Hadamard preconditions") {
    bufs b;
    std::vector<float> freqs(32, 0.5f);
    const dsv4::rope_table t{freqs.data(), nullptr, 0};
    std::vector<int64_t> neg = {-1};
    run_table({
        {"rmsnorm n 0", [&] { dsv4::rmsnorm(b.b16.data(), 1, 0, 0, nullptr, 1e-6f, b.b16.data(), 0); }, {"dsv4::rmsnorm", "positive"}},
        {"rmsnorm null", [&] { dsv4::rmsnorm(nullptr, 1, 64, 64, nullptr, 1e-6f, b.b16.data(), 64); }, {"dsv4::rmsnorm", "null"}},
        {"rmsnorm stride", [&] { dsv4::rmsnorm(b.b16.data(), 2, 64, 32, nullptr, 1e-6f, b.b16.data(), 64); }, {"dsv4::rmsnorm", "stride"}},
        {"rmsnorm eps", [&] { dsv4::rmsnorm(b.b16.data(), 1, 64, 64, nullptr, -1.0f, b.b16.data(), 64); }, {"dsv4::rmsnorm", "eps"}},
        {"q_head_norm stride", [&] { dsv4::q_head_norm(b.b16.data(), 1, 4, 64, 128, 1e-6f, b.b16.data(), 256); },
         {"dsv4::q_head_norm", "heads*dim"}},
        {"rope dim", [&] { dsv4::rope_apply(b.b16.data(), 1, 1, 32, 32, b.i64.data(), t, false); }, {"dsv4::rope_apply", "dim"}},
        {"rope position", [&] { dsv4::rope_apply(b.b16.data(), 1, 1, 64, 64, neg.data(), t, false); }, {"dsv4::rope_apply", "negative position"}},
        {"rope null table", [&] { dsv4::rope_apply(b.b16.data(), 1, 1, 64, 64, b.i64.data(), dsv4::rope_table{}, false); },
         {"dsv4::rope_apply", "null"}},
        {"rope rows no data", [&] { dsv4::rope_apply(b.b16.data(), 1, 1, 64, 64, b.i64.data(), dsv4::rope_table{freqs.data(), nullptr, 8}, false); },
         {"dsv4::rope_apply", "no data"}},
        {"rope base", [&] { dsv4::rope_freqs(dsv4::rope_config{1.0, 1.0, 0, 32, 1}, freqs.data()); }, {"dsv4::rope_freqs", "base"}},
        {"rope ratio", [&] { (void)dsv4::rope_config_for_ratio(8); }, {"dsv4::rope_config_for_ratio", "ratio"}},
        {"hadamard n", [&] { dsv4::hadamard_rotate(b.b16.data(), 1, 96, 96); }, {"dsv4::hadamard_rotate", "power of two"}},
        {"hadamard stride", [&] { dsv4::hadamard_rotate(b.b16.data(), 2, 64, 32); }, {"dsv4::hadamard_rotate", "stride"}},
    });
}

TEST_CASE("robust: attention preconditions") {
    bufs b;
    dsv4::sparse_attention_args a;
    a.q = b.b16.data();
    a.q_stride = 4 * 64;
    a.kv = b.b16.data();
    a.kv_rows = 8;
    a.kv_stride = 64;
    a.idx = b.i32.data();
    a.idx_len = 8;
    a.idx_stride = 8;
    a.sink = b.f.data();
    a.out = b.b16.data() + 8192;
    a.out_stride = 4 * 64;
    a.tokens = 2;
    a.heads = 4;
    a.dim = 64;
    a.scale = 0.125f;
    void* ws = b.scratch.data();
    const std::size_t wsb = b.scratch.size();
    auto with = [&](auto edit) {
        return [=]() mutable {
            dsv4::sparse_attention_args c = a;
            edit(c);
            dsv4::sparse_attention(c, ws, wsb);
        };
    };
    std::vector<int32_t> bad_idx(16, 0);
    bad_idx[9] = 8;  // == kv_rows
    run_table({
        {"dim", with([](auto& c) { c.dim = 96; }), {"dsv4::sparse_attention_rows", "multiple of 64"}},
        {"heads", with([](auto& c) { c.heads = 0; }), {"dsv4::sparse_attention_rows", "heads"}},
        {"null sink", with([](auto& c) { c.sink = nullptr; }), {"dsv4::sparse_attention_rows", "null"}},
        {"q stride", with([](auto& c) { c.q_stride = 64; }), {"dsv4::sparse_attention_rows", "q_stride"}},
        {"kv stride", with([](auto& c) { c.kv_stride = 32; }), {"dsv4::sparse_attention_rows", "kv_stride"}},
        {"idx stride", with([](auto& c) { c.idx_stride = 4; }), {"dsv4::sparse_attention_rows", "idx_stride"}},
        {"scale", with([](auto& c) { c.scale = inf; }), {"dsv4::sparse_attention_rows", "scale"}},
        {"index range", with([&](auto& c) { c.idx = bad_idx.data(); }), {"dsv4::sparse_attention_rows", "index outside"}},
        {"scratch", [&] { dsv4::sparse_attention(a, ws, 16); }, {"dsv4::sparse_attention_rows", "scratch"}},
        {"rows", [&] { dsv4::sparse_attention_rows(a, 1, 3, 0, 4, ws, wsb); }, {"dsv4::sparse_attention_rows", "row range"}},
        {"heads range", [&] { dsv4::sparse_attention_rows(a, 0, 1, 2, 2, ws, wsb); }, {"dsv4::sparse_attention_rows", "head range"}},
        {"parallel scratch", [&] { dsv4::sparse_attention_parallel(a, ws, 16); }, {"dsv4::sparse_attention_parallel", "scratch"}},
        {"window stride", [&] { dsv4::window_indices_prefill(4, b.i32.data(), 3); }, {"dsv4::window_indices_prefill", "idx_stride"}},
        {"window position", [&] { dsv4::window_indices_decode(-1, b.i32.data()); }, {"dsv4::window_indices_decode", "negative"}},
        {"compressed ratio", [&] { dsv4::compressed_indices_prefill(8, 0, 8, b.i32.data(), 8); },
         {"dsv4::compressed_indices_prefill", "ratio"}},
        {"indices ratio", [&] { (void)dsv4::attention_indices_decode(5, 4, b.i32.data()); }, {"dsv4::attention_indices_decode", "ratio"}},
        {"cache write null", [&] { dsv4::window_cache_write_decode(opaque_null<uint16_t>(), 64, b.b16.data(), 0, 64); },
         {"dsv4::window_cache_write_decode", "null"}},
    });
}

TEST_CASE("robust: top-k, indexer and compressor preconditions") {
    bufs b;
    void* ws = b.scratch.data();
    const std::size_t wsb = b.scratch.size();
    std::vector<float> freqs(32, 0.5f);
    dsv4::compressor_config cc{4, 128, true, dsv4::rope_table{freqs.data(), nullptr, 0}, 1e-6f, dsv4::fp8_sim_revision::current};
    dsv4::compressor_weights cw{dsv4::bf16_matrix{b.b16.data(), 128, 256, 128}, dsv4::bf16_matrix{b.b16.data(), 128, 256, 128},
                                b.f.data(), b.b16.data()};
    dsv4::compressor_state st;
    dsv4::compressor_state_init(st, cc);
    const dsv4::compressor_cache cache{b.b16.data() + 32768, 128, 4};
    run_table({
        {"topk k > n", [&] { dsv4::topk(b.f.data(), 1, 4, 4, 5, dsv4::topk_order::score, b.i32.data(), 5, ws, wsb); },
         {"dsv4::topk", "k larger than n"}},
        {"topk null", [&] { dsv4::topk(nullptr, 1, 4, 4, 2, dsv4::topk_order::score, b.i32.data(), 2, ws, wsb); }, {"dsv4::topk", "null"}},
        {"topk scratch", [&] { dsv4::topk(b.f.data(), 1, 4, 4, 2, dsv4::topk_order::score, b.i32.data(), 2, ws, 8); },
         {"dsv4::topk", "scratch"}},
        {"topk stride", [&] { dsv4::topk(b.f.data(), 2, 8, 4, 2, dsv4::topk_order::score, b.i32.data(), 2, ws, wsb); },
         {"dsv4::topk", "stride"}},
        {"indexer_scores heads", [&] {
             dsv4::indexer_scores(b.b16.data(), 128, b.b16.data(), 1, 1, 0, b.b16.data(), 128, 4, false, 0, b.f.data(), 4, ws, wsb);
         }, {"dsv4::indexer_scores", "heads"}},
        {"indexer_scores keys null", [&] {
             dsv4::indexer_scores(b.b16.data(), 128, b.b16.data(), 1, 1, 1, nullptr, 128, 4, false, 0, b.f.data(), 4, ws, wsb);
         }, {"dsv4::indexer_scores", "keys is null"}},
        {"indexer_select offset", [&] {
             dsv4::indexer_select(b.f.data(), 4, 1, 4, false, 0, 2, -1, b.i32.data(), 2, ws, wsb);
         }, {"dsv4::indexer_select", "offset"}},
        {"indexer_select causal", [&] {
             dsv4::indexer_select(b.f.data(), 4, 1, 4, true, -4, 2, 0, b.i32.data(), 2, ws, wsb);
         }, {"dsv4::indexer_select", "first_pos"}},
        {"compressor head_dim", [&] { auto c = cc; c.head_dim = 100; (void)dsv4::compressor_prefill(st, cw, c, b.b16.data(), 128, 4, cache, ws, wsb); },
         {"dsv4::compressor_prefill", "head_dim"}},
        {"compressor state", [&] {
             dsv4::compressor_state other;
             (void)dsv4::compressor_prefill(other, cw, cc, b.b16.data(), 128, 4, cache, ws, wsb);
         }, {"dsv4::compressor_prefill", "state not initialised"}},
        {"compressor weights", [&] { auto w = cw; w.ape = nullptr; (void)dsv4::compressor_prefill(st, w, cc, b.b16.data(), 128, 4, cache, ws, wsb); },
         {"dsv4::compressor_prefill", "null"}},
        {"compressor cache", [&] {
             (void)dsv4::compressor_prefill(st, cw, cc, b.b16.data(), 128, 40, dsv4::compressor_cache{b.b16.data(), 128, 4}, ws, wsb);
         }, {"dsv4::compressor_prefill", "capacity"}},
        {"compressor decode order", [&] { (void)dsv4::compressor_decode(st, cw, cc, b.b16.data(), 7, cache, ws, wsb); },
         {"dsv4::compressor_decode", "next position"}},
        {"compressor scratch", [&] { (void)dsv4::compressor_prefill(st, cw, cc, b.b16.data(), 128, 4, cache, ws, 64); },
         {"dsv4::compressor_prefill", "scratch"}},
    });
}

TEST_CASE("robust: mHC, MoE and sampling preconditions") {
    bufs b;
    dsv4::hc_config hc;
    hc.dim = 64;
    const dsv4::hc_pre_weights hw{b.f.data(), b.f.data(), b.f.data()};
    const dsv4::hc_pre_out ho{b.b16.data() + 4096, b.f.data() + 4096, b.f.data() + 8192, nullptr, nullptr};
    const dsv4::hc_scratch hs{b.scratch.data(), b.scratch.size()};
    dsv4::moe_config mc;
    mc.dim = 128;
    mc.inter = 128;
    mc.n_experts = 8;
    mc.topk = 2;
    const dsv4::moe_gate_weights g{dsv4::bf16_matrix{b.b16.data(), 128, 8, 128}, nullptr, nullptr, 0};
    const dsv4::moe_scratch ms{b.scratch.data(), b.scratch.size(), 4};
    std::vector<int32_t> idx(8);
    std::vector<float> wts(8);
    const dsv4::moe_routing_out mo{idx.data(), wts.data(), nullptr};
    std::vector<int64_t> tid(16 * 2, 0);
    for (std::size_t i = 0; i < tid.size(); ++i) tid[i] = int64_t(i % 2);
    const std::vector<int64_t> ids = {3, 16};
    std::vector<float> lg(4, 0.0f);
    run_table({
        {"hc dim", [&] { auto c = hc; c.dim = 0; dsv4::hc_pre(c, hw, b.b16.data(), 1, ho, hs); }, {"dsv4::hc_pre", "dim"}},
        {"hc sinkhorn", [&] { auto c = hc; c.sinkhorn_iters = 0; dsv4::hc_pre(c, hw, b.b16.data(), 1, ho, hs); },
         {"dsv4::hc_pre", "sinkhorn_iters"}},
        {"hc range", [&] { dsv4::hc_pre(hc, hw, b.b16.data(), 2, ho, hs, 1, 3); }, {"dsv4::hc_pre", "token range"}},
        {"hc scratch", [&] { dsv4::hc_pre(hc, hw, b.b16.data(), 1, ho, dsv4::hc_scratch{b.scratch.data(), 16}); },
         {"dsv4::hc_pre_norm", "scratch"}},
        {"hc null H", [&] { dsv4::hc_pre(hc, hw, nullptr, 1, ho, hs); }, {"dsv4::hc_pre_norm", "H is null"}},
        {"hc null fn", [&] { dsv4::hc_pre(hc, dsv4::hc_pre_weights{nullptr, b.f.data(), b.f.data()}, b.b16.data(), 1, ho, hs); },
         {"dsv4::hc_pre_mix", "fn is null"}},
        {"hc_post null", [&] { dsv4::hc_post(hc, b.b16.data(), b.b16.data(), nullptr, b.f.data(), 1, b.b16.data()); },
         {"dsv4::hc_post", "null"}},
        {"hc_head null", [&] { dsv4::hc_head(hc, dsv4::hc_head_weights{}, b.b16.data(), 1, dsv4::hc_head_out{b.b16.data(), nullptr, nullptr}, hs); },
         {"dsv4::hc_head", "null"}},
        {"moe dim", [&] { auto c = mc; c.dim = 100; dsv4::moe_route_tokens(c, g, b.b16.data(), 128, nullptr, 1, mo, ms); },
         {"dsv4::moe_route_tokens", "multiple of 128"}},
        {"moe topk", [&] { auto c = mc; c.topk = 9; dsv4::moe_route_tokens(c, g, b.b16.data(), 128, nullptr, 1, mo, ms); },
         {"dsv4::moe_route_tokens", "topk"}},
        {"moe gate shape", [&] { auto gg = g; gg.gate.n = 4; dsv4::moe_route_tokens(mc, gg, b.b16.data(), 128, nullptr, 1, mo, ms); },
         {"dsv4::moe_route_tokens", "gate weight"}},
        {"moe x null", [&] { dsv4::moe_route_tokens(mc, g, nullptr, 128, nullptr, 1, mo, ms); }, {"dsv4::moe_route_tokens", "x is null"}},
        {"moe scratch", [&] { dsv4::moe_route_tokens(mc, g, b.b16.data(), 128, nullptr, 1, mo, dsv4::moe_scratch{b.scratch.data(), 64, 4}); },
         {"dsv4::moe_route_tokens", "scratch"}},
        {"moe out null", [&] { dsv4::moe_route_tokens(mc, g, b.b16.data(), 128, nullptr, 1, dsv4::moe_routing_out{}, ms); },
         {"dsv4::moe_route_tokens", "null"}},
        {"moe hash id", [&] {
             auto gg = g;
             gg.tid2eid = tid.data();
             gg.vocab = 16;
             dsv4::moe_route_tokens(mc, gg, b.b16.data(), 128, ids.data(), 2, mo, ms);
         }, {"dsv4::moe_route_tokens", "token id 16 (token 1) outside the vocabulary [0, 16)"}},
        {"moe hash bias", [&] {
             auto gg = g;
             gg.tid2eid = tid.data();
             gg.vocab = 16;
             gg.bias = b.f.data();
             dsv4::moe_route_tokens(mc, gg, b.b16.data(), 128, ids.data(), 1, mo, ms);
         }, {"dsv4::moe_route_tokens", "bias"}},
        {"moe forward experts", [&] {
             const dsv4::moe_weights w{g, nullptr, {}};
             dsv4::moe_forward(mc, w, b.b16.data(), 128, nullptr, 1, b.b16.data() + 8192, 128, ms);
         }, {"dsv4::moe_begin", "experts is null"}},
        {"moe phase without begin", [&] { dsv4::moe_gate_rows(dsv4::moe_run{}); }, {"dsv4::moe_gate_rows", "moe_begin"}},
        {"moe route without begin", [&] { dsv4::moe_run r; dsv4::moe_route(r); }, {"dsv4::moe_route", "moe_begin"}},
        {"moe down without begin", [&] { dsv4::moe_down(dsv4::moe_run{}); }, {"dsv4::moe_down", "moe_begin"}},
        {"moe down by expert without begin", [&] { dsv4::moe_down_experts(dsv4::moe_run{}); },
         {"dsv4::moe_down_experts", "moe_begin"}},
        {"sampler temperature", [&] { dsv4::sampler s(4, {-1.0f, 1.0f, 0}); }, {"sampler", "temperature"}},
        {"sampler top_p", [&] { dsv4::sampler s(4, {1.0f, 0.0f, 0}); }, {"sampler", "top_p"}},
        {"sampler vocab 0", [&] { dsv4::sampler s(0, {}); }, {"sampler", "vocab"}},
        {"sampler null", [&] { dsv4::sampler s(4, {}); (void)s.pick(nullptr, 4); }, {"sampler", "null"}},
        {"sampler vocab change", [&] { dsv4::sampler s(4, {}); (void)s.pick(lg.data(), 3); }, {"sampler", "vocab"}},
    });
}
