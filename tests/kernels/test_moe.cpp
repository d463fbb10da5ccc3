// tests/test_moe.cpp - the MoE layer (label: moe), spec §8.
//
// Reference mode against the NumPy goldens with a derived per-element interval: the test
// re-runs the spec pipeline in double from the golden's own bytes and, at every bf16 or e4m3
// rounding, keeps every value the kernel may legitimately produce given its f32 accumulation
// bound. The bound follows the GEMV's documented block structure (kernels/gemv.hpp): FP4
// rows sum exact per-32-block partials, FP8 rows per-128-block partials, so
//   |f32 dot - exact| <= (32 + K/32 + 8) 2^-24 sum|terms|   (FP4)
//   |f32 dot - exact| <= (128 + K/128 + 8) 2^-24 sum|terms| (FP8)
// on every tier (the scalar tier's sequential in-block sums are the worst case). The
// SwiGLU value h = g silu(a) b is evaluated in f32 by the kernel: allowed 16 f32 ulps
// before its bf16 rounding. Where no rounding is ambiguous the interval is a single bf16
// value. The golden y itself must lie in the interval too (a check of the mirror), and at
// least 99% of the kernel's y must be bit-identical to the golden (100% measured on the
// vector tiers). Routing: idx exactly, weights to 2e-6 relative.
#include "test_support.hpp"

#include <dsv4/moe.hpp>

#include <algorithm>
#include <cstdio>
#include <numeric>

using namespace dsv4_test;

namespace {

constexpr double u24 = 0x1p-24;

std::vector<std::string> cases(const char* prefix) {
    std::vector<std::string> out;
    for (const auto& c : golden_cases("moe"))
        if (c.rfind(prefix, 0) == 0) out.push_back(c);
    return out;
}

struct moe_case {
    std::string name;
    std::size_t T = 0, D = 0, I = 0, E = 0, V = 0;
    std::vector<uint16_t> x, gate_w;
    std::vector<int64_t> token_ids, tid2eid;
    std::vector<float> bias;
    std::vector<uint8_t> w1, w1s, w3, w3s, w2, w2s, sw1, sw1s, sw3, sw3s, sw2, sw2s;
    bool shared_clamp = true;
    float route_scale = 1.5f, limit = 10.0f;
    std::vector<dsv4::moe_expert_weights> experts;

    explicit moe_case(const std::string& n) : name(n) {
        golden g("moe", n);
        x = g.get<uint16_t>("x");
        T = g.shape("x")[0];
        D = g.shape("x")[1];
        gate_w = g.get<uint16_t>("gate_w");
        E = g.shape("gate_w")[0];
        if (g.has("token_ids")) token_ids = g.get<int64_t>("token_ids");
        if (g.has("tid2eid")) {
            tid2eid = g.get<int64_t>("tid2eid");
            V = g.shape("tid2eid")[0];
        }
        if (g.has("bias")) bias = g.get<float>("bias");
        route_scale = g.get<float>("route_scale")[0];
        if (!g.has("w1")) return;  // gate-only case
        I = g.shape("w1")[1];
        w1 = g.get<uint8_t>("w1"), w1s = g.get<uint8_t>("w1_scale");
        w3 = g.get<uint8_t>("w3"), w3s = g.get<uint8_t>("w3_scale");
        w2 = g.get<uint8_t>("w2"), w2s = g.get<uint8_t>("w2_scale");
        sw1 = g.get<uint8_t>("sw1"), sw1s = g.get<uint8_t>("sw1_scale");
        sw3 = g.get<uint8_t>("sw3"), sw3s = g.get<uint8_t>("sw3_scale");
        sw2 = g.get<uint8_t>("sw2"), sw2s = g.get<uint8_t>("sw2_scale");
        shared_clamp = g.scalar_i64("shared_clamp") != 0;
        limit = g.get<float>("limit")[0];
        for (std::size_t e = 0; e < E; ++e) {
            dsv4::moe_expert_weights w;
            w.w1 = {w1.data() + e * I * (D / 2), D / 2, w1s.data() + e * I * (D / 32), D / 32, I, D};
            w.w3 = {w3.data() + e * I * (D / 2), D / 2, w3s.data() + e * I * (D / 32), D / 32, I, D};
            w.w2 = {w2.data() + e * D * (I / 2), I / 2, w2s.data() + e * D * (I / 32), I / 32, D, I};
            experts.push_back(w);
        }
    }
    dsv4::moe_config config(dsv4::moe_numerics num = dsv4::moe_numerics::reference) const {
        dsv4::moe_config c;
        c.dim = D;
        c.inter = I ? I : 128;
        c.n_experts = E;
        c.topk = 6;
        c.route_scale = route_scale;
        c.swiglu_limit = limit;
        c.shared_clamp = shared_clamp;
        c.numerics = num;
        return c;
    }
    dsv4::moe_gate_weights gate() const {
        dsv4::moe_gate_weights g;
        g.gate = {gate_w.data(), D, E, D};
        g.bias = bias.empty() ? nullptr : bias.data();
        g.tid2eid = tid2eid.empty() ? nullptr : tid2eid.data();
        g.vocab = V;
        return g;
    }
    dsv4::moe_weights weights() const {
        dsv4::moe_weights w;
        w.gate = gate();
        w.experts = experts.data();
        w.shared.w1 = {sw1.data(), D, sw1s.data(), D / 128, I, D};
        w.shared.w3 = {sw3.data(), D, sw3s.data(), D / 128, I, D};
        w.shared.w2 = {sw2.data(), I, sw2s.data(), I / 128, D, I};
        return w;
    }
};

struct scratch_buf {
    std::vector<unsigned char> mem;
    dsv4::moe_scratch s;
    scratch_buf(const dsv4::moe_config& c, std::size_t max_tokens) {
        mem.resize(dsv4::bytes_needed(c, max_tokens));
        s = {mem.data(), mem.size(), max_tokens};
    }
};

/// Runs the layer; parallel: dsv4::par::moe_forward.
std::vector<uint16_t> run_moe(const moe_case& mc, dsv4::moe_numerics num, std::size_t max_tokens,
                              bool parallel = false, bool shared_clamp_override = false, bool clamp_value = true) {
    auto c = mc.config(num);
    if (shared_clamp_override) c.shared_clamp = clamp_value;
    const auto w = mc.weights();
    scratch_buf sb(c, max_tokens);
    std::vector<uint16_t> y(mc.T * mc.D, 0xFFFF);
    const int64_t* ids = mc.token_ids.empty() ? nullptr : mc.token_ids.data();
    if (parallel) dsv4::par::moe_forward(c, w, mc.x.data(), mc.D, ids, mc.T, y.data(), mc.D, sb.s);
    else dsv4::moe_forward(c, w, mc.x.data(), mc.D, ids, mc.T, y.data(), mc.D, sb.s);
    return y;
}

// ------------------------------------------------------------------ the interval mirror

float bf16v(double v) { return dsv4::round_bf16(float(v)); }
/// bf16 value one step up / down (towards +inf / -inf).
float bf16_next(float v, int dir) {
    const uint16_t b = dsv4::f32_to_bf16(v);
    uint16_t r;
    if (v == 0.0f) r = dir > 0 ? 0x0001 : 0x8001;
    else if ((v > 0) == (dir > 0)) r = uint16_t(b + 1);
    else r = uint16_t(b - 1);
    return dsv4::bf16_to_f32(r);
}
double silu_d(double a) { return a / (1.0 + std::exp(-a)); }

/// [lo, hi] of the bf16 h = bf16(g silu(min(A, L)) clamp(B, -L, L)) for A in [alo, ahi], B in
/// [blo, bhi] (interval arithmetic: silu decreases below its minimum at -1.27846, increases
/// above), widened by 16 f32 ulps for the kernel's own f32 evaluation of h.
void swiglu_interval(double alo, double ahi, double blo, double bhi, double g, double limit, float& lo, float& hi) {
    if (limit > 0) {
        alo = std::min(alo, limit);
        ahi = std::min(ahi, limit);
        blo = std::clamp(blo, -limit, limit);
        bhi = std::clamp(bhi, -limit, limit);
    }
    const double s1 = silu_d(alo), s2 = silu_d(ahi), xm = -1.2784645427610738;
    double smin = std::min(s1, s2);
    const double smax = std::max(s1, s2);
    if (alo < xm && xm < ahi) smin = std::min(smin, silu_d(xm));
    const double p[4] = {smin * blo, smin * bhi, smax * blo, smax * bhi};
    const double hl = g * *std::min_element(p, p + 4), hh = g * *std::max_element(p, p + 4);
    lo = bf16v(hl - 16 * u24 * std::fabs(hl));
    hi = bf16v(hh + 16 * u24 * std::fabs(hh));
}

/// Quantisation of a 128-block of h candidates (act_quant, §2.2): per element [qlo, qhi] of
/// e4m3(h / s) s over every h in [hlo, hhi] and every scale the block amax allows.
void quant_block_interval(const float* hlo, const float* hhi, std::size_t n, double* qlo, double* qhi) {
    float amin = 0, amax = 0;  // range of the block's amax
    for (std::size_t i = 0; i < n; ++i) {
        const float a0 = std::fabs(hlo[i]), a1 = std::fabs(hhi[i]);
        const float mx = std::max(a0, a1);
        const float mn = (hlo[i] <= 0 && hhi[i] >= 0) ? 0.0f : std::min(a0, a1);
        amin = std::max(amin, mn);
        amax = std::max(amax, mx);
    }
    const int e0 = dsv4::pow2_scale_exponent(amin, 448.0f, 1e-4f), e1 = dsv4::pow2_scale_exponent(amax, 448.0f, 1e-4f);
    for (std::size_t i = 0; i < n; ++i) {
        qlo[i] = INFINITY;
        qhi[i] = -INFINITY;
        for (int e = e0; e <= e1; ++e) {
            const float inv = dsv4::exp2i(-e), s = dsv4::exp2i(e);
            for (float h : {hlo[i], hhi[i]}) {
                const double q = double(dsv4::e4m3_to_f32(dsv4::f32_to_e4m3(h * inv))) * s;
                qlo[i] = std::min(qlo[i], q);
                qhi[i] = std::max(qhi[i], q);
            }
        }
    }
}

/// Exact dequantised FP8 activations of one bf16 row (act_quant block 128).
std::vector<double> act_fp8(const uint16_t* x, std::size_t n) {
    std::vector<uint8_t> codes(n), sc(n / 128);
    dsv4::act_quant_fp8(x, 1, n, n, 128, codes.data(), n, sc.data(), n / 128);
    std::vector<double> out(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = double(dsv4::e4m3_to_f32(codes[i])) * dsv4::e8m0_to_f32(sc[i / 128]);
    return out;
}

struct expert_mats {  // dequantised (exact in f32)
    std::vector<float> w1, w3, w2;  // [I, D], [I, D], [D, I]
};

expert_mats dequant_routed(const moe_case& mc, std::size_t e) {
    const std::size_t D = mc.D, I = mc.I;
    expert_mats m;
    m.w1.resize(I * D);
    m.w3.resize(I * D);
    m.w2.resize(D * I);
    auto fp4 = [](const uint8_t* w, const uint8_t* s, std::size_t K, std::size_t n, std::size_t k) {
        const uint8_t b = w[n * (K / 2) + k / 2];
        return dsv4::e2m1_to_f32((k & 1) ? b >> 4 : b & 0xF) * dsv4::e8m0_to_f32(s[n * (K / 32) + k / 32]);
    };
    const uint8_t *p1 = mc.w1.data() + e * I * (D / 2), *s1 = mc.w1s.data() + e * I * (D / 32);
    const uint8_t *p3 = mc.w3.data() + e * I * (D / 2), *s3 = mc.w3s.data() + e * I * (D / 32);
    const uint8_t *p2 = mc.w2.data() + e * D * (I / 2), *s2 = mc.w2s.data() + e * D * (I / 32);
    for (std::size_t n = 0; n < I; ++n)
        for (std::size_t k = 0; k < D; ++k) {
            m.w1[n * D + k] = fp4(p1, s1, D, n, k);
            m.w3[n * D + k] = fp4(p3, s3, D, n, k);
        }
    for (std::size_t n = 0; n < D; ++n)
        for (std::size_t k = 0; k < I; ++k) m.w2[n * I + k] = fp4(p2, s2, I, n, k);
    return m;
}

expert_mats dequant_shared(const moe_case& mc) {
    const std::size_t D = mc.D, I = mc.I;
    auto fp8 = [](const std::vector<uint8_t>& w, const std::vector<uint8_t>& s, std::size_t K, std::size_t n,
                  std::size_t k) {
        return dsv4::e4m3_to_f32(w[n * K + k]) * dsv4::e8m0_to_f32(s[(n / 128) * (K / 128) + k / 128]);
    };
    expert_mats m;
    m.w1.resize(I * D);
    m.w3.resize(I * D);
    m.w2.resize(D * I);
    for (std::size_t n = 0; n < I; ++n)
        for (std::size_t k = 0; k < D; ++k) {
            m.w1[n * D + k] = fp8(mc.sw1, mc.sw1s, D, n, k);
            m.w3[n * D + k] = fp8(mc.sw3, mc.sw3s, D, n, k);
        }
    for (std::size_t n = 0; n < D; ++n)
        for (std::size_t k = 0; k < I; ++k) m.w2[n * I + k] = fp8(mc.sw2, mc.sw2s, I, n, k);
    return m;
}

/// [lo, hi] (bf16 values) of one expert's output row for one token: a, b, h, act_quant(h), w2.
void expert_interval(const expert_mats& m, std::size_t D, std::size_t I, const std::vector<double>& xa, double g,
                     double limit, bool fp8, float* out_lo, float* out_hi, std::size_t* ambiguous_h) {
    const double kin = fp8 ? (128.0 + double(D) / 128 + 8) : (32.0 + double(D) / 32 + 8);
    const double kout = fp8 ? (128.0 + double(I) / 128 + 8) : (32.0 + double(I) / 32 + 8);
    std::vector<float> hlo(I), hhi(I);
    for (std::size_t j = 0; j < I; ++j) {
        double a = 0, aa = 0, b = 0, ba = 0;
        for (std::size_t k = 0; k < D; ++k) {
            a += xa[k] * m.w1[j * D + k];
            aa += std::fabs(xa[k] * m.w1[j * D + k]);
            b += xa[k] * m.w3[j * D + k];
            ba += std::fabs(xa[k] * m.w3[j * D + k]);
        }
        const double da = kin * u24 * aa + 1e-300, db = kin * u24 * ba + 1e-300;
        // the kernel's bf16(a), bf16(b): anywhere in [bf16(a - da), bf16(a + da)] (RNE is monotone)
        swiglu_interval(bf16v(a - da), bf16v(a + da), bf16v(b - db), bf16v(b + db), g, limit, hlo[j], hhi[j]);
        *ambiguous_h += hlo[j] != hhi[j];
    }
    std::vector<double> qlo(I), qhi(I);
    for (std::size_t b0 = 0; b0 < I; b0 += 128) quant_block_interval(&hlo[b0], &hhi[b0], 128, &qlo[b0], &qhi[b0]);
    for (std::size_t n = 0; n < D; ++n) {
        double lo = 0, hi = 0, abs_sum = 0;
        for (std::size_t j = 0; j < I; ++j) {
            const double w = m.w2[n * I + j];
            lo += std::min(qlo[j] * w, qhi[j] * w);
            hi += std::max(qlo[j] * w, qhi[j] * w);
            abs_sum += std::max(std::fabs(qlo[j] * w), std::fabs(qhi[j] * w));
        }
        const double acc = kout * u24 * abs_sum + 1e-300;
        out_lo[n] = bf16v(lo - acc);
        out_hi[n] = bf16v(hi + acc);
    }
}

struct mirror_result {
    std::vector<float> y_lo, y_hi;  // bf16 values
    std::size_t ambiguous_h = 0, total_h = 0;
};

/// The interval of every y element, from the golden routing (idx, weights).
mirror_result mirror(const moe_case& mc, const std::vector<int32_t>& idx, const std::vector<float>& wts,
                     bool shared_clamp) {
    const std::size_t T = mc.T, D = mc.D, I = mc.I, K = 6;
    std::vector<std::vector<double>> xa(T);
    for (std::size_t t = 0; t < T; ++t) xa[t] = act_fp8(mc.x.data() + t * D, D);
    // parts[t] = list of (lo, hi) rows in combine order
    std::vector<std::vector<std::vector<float>>> plo(T), phi(T);
    mirror_result r;
    std::vector<float> lo(D), hi(D);
    for (std::size_t e = 0; e < mc.E; ++e) {
        bool used = false;
        for (std::size_t i = 0; i < T * K; ++i) used |= std::size_t(idx[i]) == e;
        if (!used) continue;
        const auto m = dequant_routed(mc, e);
        for (std::size_t t = 0; t < T; ++t)
            for (std::size_t j = 0; j < K; ++j)
                if (std::size_t(idx[t * K + j]) == e) {
                    expert_interval(m, D, I, xa[t], wts[t * K + j], mc.limit, false, lo.data(), hi.data(), &r.ambiguous_h);
                    r.total_h += I;
                    plo[t].push_back(lo);
                    phi[t].push_back(hi);
                }
    }
    const auto ms = dequant_shared(mc);
    r.y_lo.resize(T * D);
    r.y_hi.resize(T * D);
    for (std::size_t t = 0; t < T; ++t) {
        expert_interval(ms, D, I, xa[t], 1.0, shared_clamp ? mc.limit : 0.0, true, lo.data(), hi.data(), &r.ambiguous_h);
        r.total_h += I;
        plo[t].push_back(lo);
        phi[t].push_back(hi);
        for (std::size_t n = 0; n < D; ++n) {
            double l = 0, h = 0, a = 0;
            for (std::size_t p = 0; p < plo[t].size(); ++p) {
                l += plo[t][p][n];
                h += phi[t][p][n];
                a += std::max(std::fabs(plo[t][p][n]), std::fabs(phi[t][p][n]));
            }
            const double rho = double(plo[t].size()) * u24 * a;  // f32 combine roundings
            r.y_lo[t * D + n] = bf16v(l - rho);
            r.y_hi[t * D + n] = bf16v(h + rho);
        }
    }
    return r;
}

}  // namespace

TEST_CASE("moe: gate and routing against the goldens (scores, top-6 with ties, hash, weights)") {
    std::size_t count = 0;
    for (const auto& name : cases("gate_")) {
        const moe_case mc(name);
        golden g("moe", name);
        CAPTURE(name);
        const auto c = mc.config();
        scratch_buf sb(c, 3);  // several chunks
        std::vector<int32_t> idx(mc.T * 6);
        std::vector<float> wts(mc.T * 6), scores(mc.T * mc.E);
        dsv4::moe_route_tokens(c, mc.gate(), mc.x.data(), mc.D, mc.token_ids.empty() ? nullptr : mc.token_ids.data(),
                               mc.T, {idx.data(), wts.data(), scores.data()}, sb.s);
        CHECK(idx == g.get<int32_t>("idx"));
        const auto wg = g.get<float>("weights"), sg = g.get<float>("scores");
        double worst_w = 0, worst_s = 0;
        std::size_t exact_w = 0;
        for (std::size_t i = 0; i < wg.size(); ++i) {
            const double rel = std::fabs(wts[i] - wg[i]) / std::fabs(wg[i]);
            worst_w = std::max(worst_w, rel);
            exact_w += wts[i] == wg[i];
            CHECK(rel <= 2e-6);
        }
        // scores: logits within the f32 GEMV bound, moved through sqrt(softplus) (slope <= s/2 + 1/(2s))
        for (std::size_t t = 0; t < mc.T; ++t)
            for (std::size_t e = 0; e < mc.E; ++e) {
                double abs_sum = 0;
                for (std::size_t k = 0; k < mc.D; ++k)
                    abs_sum += std::fabs(double(dsv4::bf16_to_f32(mc.x[t * mc.D + k])) * dsv4::bf16_to_f32(mc.gate_w[e * mc.D + k]));
                const double s = sg[t * mc.E + e];
                const double tol = double(mc.D) * u24 * abs_sum * (0.5 * s + 0.5 / s) + 4 * u24 * s;
                const double err = std::fabs(scores[t * mc.E + e] - s);
                worst_s = std::max(worst_s, err / tol);
                CHECK(err <= tol);
            }
        MESSAGE(name << ": idx identical; weights " << exact_w << "/" << wg.size() << " bit-identical (worst rel "
                     << worst_w << "); scores worst err/bound " << worst_s);
        ++count;
    }
    CHECK(count == 6);
}

TEST_CASE("moe: reference mode against the goldens, every case, within the derived interval") {
    std::size_t count = 0;
    for (const auto& name : cases("moe_")) {
        const moe_case mc(name);
        golden g("moe", name);
        CAPTURE(name);
        const auto yk = run_moe(mc, dsv4::moe_numerics::reference, 64);
        const auto yg = g.get<uint16_t>("y");
        // routing of the layer = the golden's
        {
            const auto c = mc.config();
            scratch_buf sb(c, mc.T);
            std::vector<int32_t> idx(mc.T * 6);
            std::vector<float> wts(mc.T * 6);
            dsv4::moe_route_tokens(c, mc.gate(), mc.x.data(), mc.D, mc.token_ids.data(), mc.T, {idx.data(), wts.data()},
                                   sb.s);
            CHECK(idx == g.get<int32_t>("idx"));
            const auto wg = g.get<float>("weights");
            for (std::size_t i = 0; i < wg.size(); ++i) CHECK(std::fabs(wts[i] - wg[i]) <= 2e-6 * std::fabs(wg[i]));
        }
        const auto m = mirror(mc, g.get<int32_t>("idx"), g.get<float>("weights"), mc.shared_clamp);
        std::size_t outside = 0, golden_outside = 0, exact = 0, tight = 0, within1 = 0;
        std::vector<int> widths;
        for (std::size_t i = 0; i < yk.size(); ++i) {
            const float v = dsv4::bf16_to_f32(yk[i]), vg = dsv4::bf16_to_f32(yg[i]);
            outside += !(v >= m.y_lo[i] && v <= m.y_hi[i]);
            golden_outside += !(vg >= m.y_lo[i] && vg <= m.y_hi[i]);
            exact += yk[i] == yg[i];
            tight += m.y_lo[i] == m.y_hi[i];
            within1 += v == vg || bf16_next(vg, 1) == v || bf16_next(vg, -1) == v;
            // width in bf16 steps at the interval's larger end
            const double big = std::max(std::fabs(m.y_lo[i]), std::fabs(m.y_hi[i]));
            const double step = std::ldexp(1.0, std::max(std::ilogb(big + 1e-38), -126) - 7);
            widths.push_back(int(std::lround((double(m.y_hi[i]) - m.y_lo[i]) / step)));
        }
        std::sort(widths.begin(), widths.end());
        CHECK(outside == 0);         // every element inside its derived interval
        CHECK(golden_outside == 0);  // the mirror admits the golden itself
        CHECK(exact * 100 >= yk.size() * 99);  // and the same bits as NumPy almost everywhere
        MESSAGE(name << ": y " << exact << "/" << yk.size() << " bit-identical to the golden, " << within1
                     << " within 1 bf16 ulp; interval width (bf16 steps) median " << widths[widths.size() / 2]
                     << ", 99th pct " << widths[widths.size() * 99 / 100] << ", max " << widths.back()
                     << "; single value for " << tight << "; ambiguous h " << m.ambiguous_h << "/" << m.total_h);
        for (uint16_t v : yk) CHECK((v & 0x7F80) != 0x7F80);
        ++count;
    }
    CHECK(count == 8);
}

TEST_CASE("moe: decode, chunked prefill, threads and foreign-pool phase splits give the same bits") {
    const moe_case mc("moe_chunk");
    for (auto num : {dsv4::moe_numerics::reference, dsv4::moe_numerics::fast}) {
        CAPTURE(int(num));
        const auto whole = run_moe(mc, num, 64);
        CHECK(run_moe(mc, num, 1) == whole);   // token by token: the decode path
        CHECK(run_moe(mc, num, 7) == whole);   // chunks of 7 (+ a chunk of 1)
        CHECK(run_moe(mc, num, 64, true) == whole);  // oneTBB
        // phases called by hand in odd splits and orders
        const auto c = mc.config(num);
        const auto w = mc.weights();
        scratch_buf sb(c, 64);
        std::vector<uint16_t> y(mc.T * mc.D);
        dsv4::moe_run r = dsv4::moe_begin(c, w, mc.x.data(), mc.D, nullptr, mc.T, y.data(), mc.D, sb.s);
        dsv4::moe_gate_rows(r, 9, 16);
        dsv4::moe_gate_rows(r, 0, 9);
        dsv4::moe_route(r);
        for (std::size_t t = mc.T; t-- > 0;) dsv4::moe_prepare(r, t, t + 1);
        for (std::size_t u = dsv4::moe_up_units(r); u-- > 0;) dsv4::moe_up(r, u, u + 1);
        for (std::size_t r0 = 0; r0 < mc.D; r0 += 37) dsv4::moe_down(r, r0, std::min(mc.D, r0 + 37));
        CHECK(y == whole);
        // phase 5 by expert (what the drivers do in prefill): every routed unit (the default
        // range), then the shared expert and the combine without them
        CHECK(dsv4::moe_down_by_expert(r));  // 64 tokens x top-6 over at most 16 experts
        std::fill(y.begin(), y.end(), uint16_t(0xFFFF));
        dsv4::moe_down_experts(r);
        for (std::size_t r0 = 0; r0 < mc.D; r0 += 37) dsv4::moe_down(r, r0, std::min(mc.D, r0 + 37), false);
        CHECK(y == whole);
        // a foreign executor: ranges of 3 items, run back to front
        auto odd_pool = [](std::size_t n, std::size_t, auto&& f) {
            for (std::size_t a = (n + 2) / 3 * 3; a > 0; a -= 3) {
                const std::size_t lo = a - 3;
                if (lo < n) f(lo, std::min(n, a));
            }
        };
        std::vector<uint16_t> y2(mc.T * mc.D);
        dsv4::moe_forward_on(odd_pool, c, w, mc.x.data(), mc.D, nullptr, mc.T, y2.data(), mc.D, sb.s);
        CHECK(y2 == whole);
        // y may be x itself
        std::vector<uint16_t> xy = mc.x;
        scratch_buf sb2(c, 64);
        dsv4::moe_forward(c, w, xy.data(), mc.D, nullptr, mc.T, xy.data(), mc.D, sb2.s);
        CHECK(xy == whole);
    }
}

TEST_CASE("moe: phase 5 by expert over several row chunks (D = 4096) gives the same bits") {
    const moe_case mc("moe_d4096");
    for (auto num : {dsv4::moe_numerics::reference, dsv4::moe_numerics::fast}) {
        CAPTURE(int(num));
        const auto whole = run_moe(mc, num, 64);
        const auto c = mc.config(num);
        const auto w = mc.weights();
        scratch_buf sb(c, 64);
        std::vector<uint16_t> y(mc.T * mc.D, 0xFFFF);
        dsv4::moe_run r = dsv4::moe_begin(c, w, mc.x.data(), mc.D, nullptr, mc.T, y.data(), mc.D, sb.s);
        dsv4::moe_gate_rows(r);
        dsv4::moe_route(r);
        dsv4::moe_prepare(r);
        dsv4::moe_up(r);
        // 4 tokens x top-6 over 8 experts: too few rows per expert for the split, callable all the same
        CHECK_FALSE(dsv4::moe_down_by_expert(r));
        const std::size_t nch = mc.D / dsv4::moe_down_rows;
        REQUIRE(nch == 4);
        REQUIRE(dsv4::moe_down_units(r) == r.n_active * nch);
        // the odd units back to front, then the even ones
        const std::size_t U = dsv4::moe_down_units(r);
        for (std::size_t u = U; u-- > 0;)
            if (u % 2) dsv4::moe_down_experts(r, u, u + 1);
        for (std::size_t u = 0; u < U; u += 2) dsv4::moe_down_experts(r, u, u + 1);
        dsv4::moe_down(r, 0, 1000, false);
        dsv4::moe_down(r, 1000, mc.D, false);
        CHECK(y == whole);
        CHECK_THROWS_AS(dsv4::moe_down_experts(r, 0, U + 1), dsv4::error);
    }
}

TEST_CASE("moe: all tokens routed to the same experts; ties; hash layers") {
    {
        const moe_case mc("moe_all_same_experts");
        const auto c = mc.config();
        const auto w = mc.weights();
        scratch_buf sb(c, 64);
        std::vector<uint16_t> y(mc.T * mc.D);
        dsv4::moe_run r = dsv4::moe_begin(c, w, mc.x.data(), mc.D, nullptr, mc.T, y.data(), mc.D, sb.s);
        dsv4::moe_gate_rows(r);
        dsv4::moe_route(r);
        CHECK(r.n_active == 6);
        for (uint32_t e = 0; e < 6; ++e) {
            CHECK(r.active[e] == e);
            CHECK(r.count[e] == mc.T);
        }
        CHECK(dsv4::moe_up_units(r) == 7 * (mc.I / 128));
    }
    {
        // ties: experts e and e + 4k share a gate row and a bias; the lower ids win
        const moe_case mc("moe_ties");
        golden g("moe", "moe_ties");
        const auto idx = g.get<int32_t>("idx");
        const auto c = mc.config();
        scratch_buf sb(c, mc.T);
        std::vector<int32_t> got(mc.T * 6);
        std::vector<float> wts(mc.T * 6);
        dsv4::moe_route_tokens(c, mc.gate(), mc.x.data(), mc.D, nullptr, mc.T, {got.data(), wts.data()}, sb.s);
        CHECK(got == idx);
        for (std::size_t t = 0; t < mc.T; ++t) {
            int groups[4] = {};
            for (std::size_t j = 0; j < 6; ++j) ++groups[got[t * 6 + j] % 4];
            // a whole group of 4 + the two lowest ids of another one
            CHECK(std::count(groups, groups + 4, 4) == 1);
            CHECK(std::count(groups, groups + 4, 2) == 1);
        }
    }
    {
        // hash: idx = sorted tid2eid[token]; repeated ids route identically; no bias allowed
        const moe_case mc("moe_hash");
        const auto c = mc.config();
        scratch_buf sb(c, mc.T);
        std::vector<int32_t> got(mc.T * 6);
        std::vector<float> wts(mc.T * 6);
        dsv4::moe_route_tokens(c, mc.gate(), mc.x.data(), mc.D, mc.token_ids.data(), mc.T, {got.data(), wts.data()}, sb.s);
        for (std::size_t t = 0; t < mc.T; ++t) {
            std::vector<int32_t> want(mc.tid2eid.begin() + std::ptrdiff_t(mc.token_ids[t] * 6),
                                      mc.tid2eid.begin() + std::ptrdiff_t(mc.token_ids[t] * 6 + 6));
            std::sort(want.begin(), want.end());
            CHECK(std::equal(want.begin(), want.end(), got.begin() + std::ptrdiff_t(t * 6)));
            double sum = 0;
            for (std::size_t j = 0; j < 6; ++j) sum += wts[t * 6 + j];
            CHECK(std::fabs(sum - 1.5) <= 1e-5);
        }
        CHECK(std::equal(got.begin() + 12, got.begin() + 18, got.begin() + 36));  // tokens 2 and 6 share an id
    }
}

TEST_CASE("moe: shared-expert clamp switch (both official revisions)") {
    const moe_case off("moe_shared_noclamp"), on("moe_shared_clamp");
    CHECK_FALSE(off.shared_clamp);
    CHECK(on.shared_clamp);
    CHECK(off.x == on.x);
    const auto y_off = run_moe(off, dsv4::moe_numerics::reference, 8);
    const auto y_on = run_moe(off, dsv4::moe_numerics::reference, 8, false, true, true);
    CHECK(y_on == run_moe(on, dsv4::moe_numerics::reference, 8));
    CHECK(y_off != y_on);  // the shared gate/up values beyond +-10 matter
}

TEST_CASE("moe: fast mode (int8 activations) vs reference mode") {
    // Reference mode rounds every expert input to e4m3 (3 mantissa bits: up to 2^-4 relative
    // per element); fast mode to int8 per 32 (d = amax/127), far finer. Their distance is the
    // FP8 rounding of x and of h, carried through two GEMVs: measured ~2-3% relative L2 on these
    // cases; the stated tolerance is 6% relative L2 and 25% of max|y| for any single element.
    for (const char* name : {"moe_decode", "moe_chunk", "moe_hash", "moe_d4096"}) {
        const moe_case mc(name);
        CAPTURE(name);
        const auto yr = run_moe(mc, dsv4::moe_numerics::reference, 64);
        const auto yf = run_moe(mc, dsv4::moe_numerics::fast, 64);
        double num = 0, den = 0, max_d = 0, max_y = 0;
        for (std::size_t i = 0; i < yr.size(); ++i) {
            const double a = dsv4::bf16_to_f32(yr[i]), b = dsv4::bf16_to_f32(yf[i]);
            num += (a - b) * (a - b);
            den += a * a;
            max_d = std::max(max_d, std::fabs(a - b));
            max_y = std::max(max_y, std::fabs(a));
        }
        const double rel = std::sqrt(num / den);
        MESSAGE(std::string(name) << ": fast vs reference relative L2 " << rel << ", max |diff| / max |y| " << max_d / max_y);
        CHECK(rel < 0.06);
        CHECK(max_d < 0.25 * max_y);
        CHECK(rel > 0);  // the modes really differ
    }
}

TEST_CASE("moe: preconditions are checked (token id outside the vocabulary, tid2eid, shapes, scratch)") {
    const moe_case mc("moe_hash");
    const auto c = mc.config();
    const auto w = mc.weights();
    scratch_buf sb(c, mc.T);
    std::vector<uint16_t> y(mc.T * mc.D);
    std::vector<int64_t> ids = mc.token_ids;
    CHECK_NOTHROW(dsv4::moe_forward(c, w, mc.x.data(), mc.D, ids.data(), mc.T, y.data(), mc.D, sb.s));
    ids[3] = int64_t(mc.V);
    try {
        dsv4::moe_forward(c, w, mc.x.data(), mc.D, ids.data(), mc.T, y.data(), mc.D, sb.s);
        FAIL("no error for a token id outside the vocabulary");
    } catch (const dsv4::error& e) {
        const std::string m = e.what();
        MESSAGE(m);
        CHECK(m.find("token id 64") != std::string::npos);
        CHECK(m.find("vocabulary") != std::string::npos);
    }
    ids[3] = -1;
    CHECK_THROWS_AS(dsv4::moe_forward(c, w, mc.x.data(), mc.D, ids.data(), mc.T, y.data(), mc.D, sb.s), dsv4::error);
    CHECK_THROWS_AS(dsv4::moe_forward(c, w, mc.x.data(), mc.D, nullptr, mc.T, y.data(), mc.D, sb.s), dsv4::error);
    // a tid2eid row naming an expert twice, or one outside [0, E)
    moe_case bad = mc;
    bad.tid2eid[mc.token_ids[0] * 6 + 1] = bad.tid2eid[mc.token_ids[0] * 6];
    auto wb = bad.weights();
    CHECK_THROWS_AS(dsv4::moe_forward(c, wb, mc.x.data(), mc.D, mc.token_ids.data(), mc.T, y.data(), mc.D, sb.s),
                    dsv4::error);
    bad.tid2eid[mc.token_ids[0] * 6 + 1] = 16;
    wb = bad.weights();
    CHECK_THROWS_AS(dsv4::moe_forward(c, wb, mc.x.data(), mc.D, mc.token_ids.data(), mc.T, y.data(), mc.D, sb.s),
                    dsv4::error);
    // hash layer with a bias too
    std::vector<float> bias(mc.E);
    auto w2 = w;
    w2.gate.bias = bias.data();
    CHECK_THROWS_AS(dsv4::moe_forward(c, w2, mc.x.data(), mc.D, mc.token_ids.data(), mc.T, y.data(), mc.D, sb.s),
                    dsv4::error);
    // shapes and sizes
    auto cb = c;
    cb.inter = 192;
    CHECK_THROWS_AS(dsv4::moe_forward(cb, w, mc.x.data(), mc.D, mc.token_ids.data(), mc.T, y.data(), mc.D, sb.s),
                    dsv4::error);
    cb = c;
    cb.topk = 17;
    CHECK_THROWS_AS(dsv4::moe_forward(cb, w, mc.x.data(), mc.D, mc.token_ids.data(), mc.T, y.data(), mc.D, sb.s),
                    dsv4::error);
    std::vector<dsv4::moe_expert_weights> ex = mc.experts;
    ex[5].w2.n = 128;
    auto w3 = w;
    w3.experts = ex.data();
    CHECK_THROWS_AS(dsv4::moe_forward(c, w3, mc.x.data(), mc.D, mc.token_ids.data(), mc.T, y.data(), mc.D, sb.s),
                    dsv4::error);
    dsv4::moe_scratch small = sb.s;
    small.bytes -= 1000;
    CHECK_THROWS_AS(dsv4::moe_forward(c, w, mc.x.data(), mc.D, mc.token_ids.data(), mc.T, y.data(), mc.D, small),
                    dsv4::error);
    auto cf = c;
    cf.numerics = dsv4::moe_numerics::fast;  // fast mode needs less scratch; reference more than fast
    CHECK(dsv4::bytes_needed(cf, 64) < dsv4::bytes_needed(c, 64));
    dsv4::moe_run r = dsv4::moe_begin(c, w, mc.x.data(), mc.D, mc.token_ids.data(), mc.T, y.data(), mc.D, sb.s);
    CHECK_THROWS_AS(dsv4::moe_gate_rows(r, 3, 17), dsv4::error);
    CHECK_THROWS_AS(dsv4::moe_down(r, 0, mc.D + 1), dsv4::error);
}
