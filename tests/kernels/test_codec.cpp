// tests/test_codec.cpp - number formats and activation quantisation (label: codec).
// Every tier against the NumPy goldens, and bit for bit against the scalar tier.
#include "test_support.hpp"

#include <dsv4/codec.hpp>

#include <algorithm>
#include <limits>

using namespace dsv4_test;

TEST_CASE("codec: e4m3 decode, all 256 codes") {
    golden g("codec", "e4m3_decode");
    const auto codes = g.get<uint8_t>("codes");
    const auto want = g.get<float>("values");
    REQUIRE(codes.size() == 256);
    std::vector<float> got(256);
    dsv4::decode_e4m3(codes.data(), got.data(), codes.size());
    for (size_t i = 0; i < 256; ++i) {
        CAPTURE(i);
        CHECK(same_float(got[i], want[i]));
        CHECK(same_float(dsv4::e4m3_to_f32(codes[i]), want[i]));
    }
    CHECK(dsv4::e4m3_to_f32(0x7E) == 448.0f);
    CHECK(dsv4::e4m3_to_f32(0x01) == 0x1p-9f);
}

TEST_CASE("codec: e2m1 and e8m0 decode, every code") {
    golden g2("codec", "e2m1_decode");
    const auto c2 = g2.get<uint8_t>("codes");
    const auto v2 = g2.get<float>("values");
    REQUIRE(c2.size() == 16);
    for (size_t i = 0; i < 16; ++i) CHECK(same_float(dsv4::e2m1_to_f32(c2[i]), v2[i]));
    golden g8("codec", "e8m0_decode");
    const auto c8 = g8.get<uint8_t>("codes");
    const auto v8 = g8.get<float>("values");
    REQUIRE(c8.size() == 256);
    for (size_t i = 0; i < 256; ++i) {
        CAPTURE(i);
        CHECK(same_float(dsv4::e8m0_to_f32(c8[i]), v8[i]));
    }
    CHECK(dsv4::e8m0_to_f32(0) == 0x1p-127f);  // subnormal, not flushed
}

TEST_CASE("codec: bf16 and fp16 decode, all 65536 patterns") {
    for (const char* name : {"bf16_decode", "fp16_decode"}) {
        golden g("codec", name);
        const auto codes = g.get<uint16_t>("codes");
        const auto want = g.get<float>("values");
        REQUIRE(codes.size() == 65536);
        std::vector<float> got(codes.size());
        if (std::string(name) == "bf16_decode") dsv4::decode_bf16(codes.data(), got.data(), codes.size());
        else dsv4::decode_fp16(codes.data(), got.data(), codes.size());
        size_t bad = 0;
        for (size_t i = 0; i < codes.size(); ++i) bad += !same_float(got[i], want[i]);
        CAPTURE(name);
        CHECK(bad == 0);
    }
}

namespace {
template <class Code, class Fn>
void check_encode(const char* case_name, Fn&& encode) {
    golden g("codec", case_name);
    const auto x = g.get<float>("x");
    const auto want = g.get<Code>("codes");
    REQUIRE(x.size() == want.size());
    std::vector<Code> got(x.size());
    encode(x.data(), got.data(), x.size());
    size_t bad = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        if (got[i] != want[i] && bad++ < 10)
            MESSAGE(case_name << ": x=" << x[i] << " got " << int(got[i]) << " want " << int(want[i]));
    }
    CHECK(bad == 0);
}
}  // namespace

TEST_CASE("codec: encoders against the goldens (bf16 RNE, e4m3 and e2m1 RNE + saturation)") {
    // bf16: a NaN input may come back as any NaN; the goldens use 0x7FC0 like torch.
    golden g("codec", "bf16_encode");
    const auto x = g.get<float>("x");
    const auto want = g.get<uint16_t>("codes");
    std::vector<uint16_t> got(x.size());
    dsv4::encode_bf16(x.data(), got.data(), x.size());
    size_t bad = 0;
    for (size_t i = 0; i < x.size(); ++i) {
        const bool ok = std::isnan(x[i]) ? std::isnan(dsv4::bf16_to_f32(got[i])) : got[i] == want[i];
        if (!ok && bad++ < 10) MESSAGE("bf16: x=" << x[i] << " got " << got[i] << " want " << want[i]);
    }
    CHECK(bad == 0);
    check_encode<uint8_t>("e4m3_encode", [](const float* in, uint8_t* out, size_t n) { dsv4::encode_e4m3(in, out, n); });
    check_encode<uint8_t>("e2m1_encode", [](const float* in, uint8_t* out, size_t n) { dsv4::encode_e2m1(in, out, n); });
}

TEST_CASE("codec: encoders round-trip every finite code") {
    for (int c = 0; c < 256; ++c) {
        if ((c & 0x7F) == 0x7F) continue;
        CAPTURE(c);
        CHECK(dsv4::f32_to_e4m3(dsv4::e4m3_to_f32(uint8_t(c))) == c);
    }
    for (int c = 0; c < 16; ++c) CHECK(dsv4::f32_to_e2m1(dsv4::e2m1_to_f32(uint8_t(c))) == c);
    // ties to even on the e2m1 grid (spec §2.3)
    const float ties[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
    const float even[] = {0.0f, 1.0f, 1.0f, 2.0f, 2.0f, 4.0f, 4.0f};
    for (int i = 0; i < 7; ++i) CHECK(dsv4::e2m1_to_f32(dsv4::f32_to_e2m1(ties[i])) == even[i]);
}

TEST_CASE("codec: every tier is bit-identical to scalar on random and special inputs") {
    rng r(1234);
    std::vector<float> x;
    for (int i = 0; i < 20000; ++i) {
        switch (i % 4) {
            case 0: x.push_back(std::bit_cast<float>(r.u32())); break;  // any pattern
            case 1: x.push_back(r.normal() * std::ldexp(1.0f, int(r.u32() % 40) - 20)); break;
            case 2: x.push_back(float(int(r.u32() % 2000) - 1000) / 8.0f); break;  // grid points, ties
            default: x.push_back(std::bit_cast<float>(r.u32() & 0x807FFFFFu)); break;  // subnormals
        }
    }
    const auto& act = active();
    const auto& ref = scalar_table();
    for (size_t n : {size_t(1), size_t(7), size_t(8), size_t(15), size_t(17), size_t(33), x.size()}) {
        CAPTURE(n);
        std::vector<uint16_t> b1(n), b2(n);
        act.encode_bf16(x.data(), b1.data(), n);
        ref.encode_bf16(x.data(), b2.data(), n);
        CHECK(b1 == b2);
        std::vector<uint8_t> e1(n), e2(n);
        act.encode_e4m3(x.data(), e1.data(), n);
        ref.encode_e4m3(x.data(), e2.data(), n);
        CHECK(e1 == e2);
        act.encode_e2m1(x.data(), e1.data(), n);
        ref.encode_e2m1(x.data(), e2.data(), n);
        CHECK(e1 == e2);
    }
}

namespace {
void check_act_quant_case(const std::string& name) {
    golden g("codec", name);
    const auto xs = g.shape("x");
    REQUIRE(xs.size() == 2);
    const size_t rows = xs[0], cols = xs[1];
    const size_t block = size_t(g.scalar_i64("block"));
    const bool fp4 = name.rfind("fp4_", 0) == 0;
    const auto x = g.get<uint16_t>("x");
    const auto want_codes = g.get<uint8_t>("codes");
    const auto want_scales = g.get<uint8_t>("scales");
    const auto want_sim = g.get<uint16_t>("sim");
    CAPTURE(name);
    std::vector<uint8_t> codes(want_codes.size()), scales(want_scales.size());
    std::vector<uint16_t> sim = x;
    if (fp4) {
        REQUIRE(block == 32);
        dsv4::fp4_act_quant(x.data(), rows, cols, cols, codes.data(), cols / 2, scales.data(), cols / 32);
        dsv4::fp4_act_quant_sim(sim.data(), rows, cols, cols);
    } else {
        dsv4::act_quant_fp8(x.data(), rows, cols, cols, block, codes.data(), cols, scales.data(), cols / block);
        dsv4::act_quant_fp8_sim(sim.data(), rows, cols, cols, block);
        // the initial revision's simulation leaves x untouched (spec §2.2)
        std::vector<uint16_t> init = x;
        dsv4::act_quant_fp8_sim(init.data(), rows, cols, cols, block, dsv4::fp8_sim_revision::initial);
        CHECK(init == x);
    }
    size_t bad_scale = 0, bad_code = 0, bad_sim = 0;
    for (size_t i = 0; i < scales.size(); ++i) bad_scale += scales[i] != want_scales[i];
    for (size_t i = 0; i < codes.size(); ++i) bad_code += codes[i] != want_codes[i];
    for (size_t i = 0; i < sim.size(); ++i) bad_sim += sim[i] != want_sim[i];
    CHECK(bad_scale == 0);
    CHECK(bad_code == 0);
    CHECK(bad_sim == 0);
}
}  // namespace

TEST_CASE("codec: act_quant (FP8, blocks 128/64) and fp4_act_quant against the goldens") {
    size_t n = 0;
    for (const auto& name : golden_cases("codec")) {
        if (name.rfind("act_quant_", 0) == 0 || name.rfind("fp4_act_quant_", 0) == 0) {
            check_act_quant_case(name);
            ++n;
        }
    }
    CHECK(n >= 6);
}

TEST_CASE("codec: act_quant on every tier equals scalar, odd sizes and strides") {
    rng r(99);
    const size_t rows = 5, cols = 384, stride = 400;
    std::vector<uint16_t> x(rows * stride, 0xFFC0);  // NaN-poisoned padding must not be read
    for (size_t i = 0; i < rows; ++i)
        for (size_t j = 0; j < cols; ++j)
            x[i * stride + j] = dsv4::f32_to_bf16(r.normal() * std::ldexp(1.0f, int(i * 7) - 14));
    for (size_t block : {size_t(64), size_t(128)}) {
        std::vector<uint8_t> c1(rows * cols), c2(rows * cols), s1(rows * cols / block), s2(s1.size());
        for (size_t i = 0; i < rows; ++i) {
            active().act_quant_fp8_row(&x[i * stride], cols, block, &c1[i * cols], &s1[i * cols / block]);
            scalar_table().act_quant_fp8_row(&x[i * stride], cols, block, &c2[i * cols], &s2[i * cols / block]);
        }
        CHECK(c1 == c2);
        CHECK(s1 == s2);
        std::vector<uint16_t> y1 = x, y2 = x;
        dsv4::act_quant_fp8_sim(y1.data(), rows, cols, stride, block);
        for (size_t i = 0; i < rows; ++i)
            scalar_table().act_quant_fp8_sim_row(&y2[i * stride], cols, block, dsv4::fp8_sim_revision::current);
        CHECK(y1 == y2);
        for (size_t i = 0; i < rows; ++i)
            for (size_t j = cols; j < stride; ++j) CHECK(y1[i * stride + j] == 0xFFC0);
    }
    std::vector<uint8_t> p1(rows * cols / 2), p2(p1.size()), s1(rows * cols / 32), s2(s1.size());
    dsv4::fp4_act_quant(x.data(), rows, cols, stride, p1.data(), cols / 2, s1.data(), cols / 32);
    for (size_t i = 0; i < rows; ++i)
        scalar_table().fp4_act_quant_row(&x[i * stride], cols, &p2[i * cols / 2], &s2[i * cols / 32]);
    CHECK(p1 == p2);
    CHECK(s1 == s2);
}

TEST_CASE("codec: preconditions are checked at the public entry points") {
    std::vector<uint16_t> x(256);
    std::vector<uint8_t> c(256), s(4);
    CHECK_THROWS_AS(dsv4::act_quant_fp8(x.data(), 1, 200, 200, 128, c.data(), 200, s.data(), 2), dsv4::error);
    CHECK_THROWS_AS(dsv4::act_quant_fp8(nullptr, 1, 128, 128, 128, c.data(), 128, s.data(), 1), dsv4::error);
    CHECK_THROWS_AS(dsv4::act_quant_fp8(x.data(), 2, 128, 100, 128, c.data(), 128, s.data(), 1), dsv4::error);
    CHECK_THROWS_AS(dsv4::fp4_act_quant(x.data(), 1, 48, 48, c.data(), 24, s.data(), 2), dsv4::error);
    CHECK_THROWS_AS(dsv4::act_quant_fp8(x.data(), 1, 128, 128, 0, c.data(), 128, s.data(), 1), dsv4::error);
    CHECK_NOTHROW(dsv4::act_quant_fp8(x.data(), 0, 128, 128, 128, nullptr, 128, nullptr, 1));
}

TEST_CASE("dispatch: tiers are composed from feature bits and the OS state check") {
    dsv4::cpu_features f;
    CHECK(dsv4::best_tier(f) == dsv4::tier::scalar);
    f.avx2 = f.fma = true;  // F16C missing: not the avx2 tier
    CHECK_FALSE(dsv4::tier_supported(dsv4::tier::avx2, f));
    f.f16c = true;
    CHECK(dsv4::best_tier(f) == dsv4::tier::avx2);
    f.avx_vnni = true;  // Core Ultra: AVX-VNNI without AVX-512
    CHECK(dsv4::best_tier(f) == dsv4::tier::avx2_vnni);
    f.avx512f = f.avx512bw = f.avx512dq = f.avx512vl = true;  // CD missing
    CHECK_FALSE(dsv4::tier_supported(dsv4::tier::avx512, f));
    f.avx512cd = true;
    CHECK(dsv4::best_tier(f) == dsv4::tier::avx512);
    f.avx512_vnni = true;
    CHECK(dsv4::best_tier(f) == dsv4::tier::avx512_vnni);
    f.avx512_bf16 = true;
    CHECK(dsv4::best_tier(f) == dsv4::tier::avx512_bf16);
    dsv4::tier t{};
    CHECK(dsv4::parse_tier("avx2_vnni", t));
    CHECK(t == dsv4::tier::avx2_vnni);
    CHECK_FALSE(dsv4::parse_tier("avx512vnni", t));
    // detection agrees with itself and the OS bits gate the AVX-512 features
    const auto host = dsv4::detect_cpu_features();
    if (!host.os_avx512) CHECK_FALSE(host.avx512f);
    if (!host.os_avx) CHECK_FALSE(host.avx2);
}
