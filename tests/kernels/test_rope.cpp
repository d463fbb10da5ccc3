// tests/kernels/test_rope.cpp - RoPE/YaRN tables, rotation and output de-rotation (label: attention): goldens, every tier == scalar.
#include "attention_support.hpp"

#include <dsv4/attention.hpp>
#include <dsv4/norm.hpp>
#include <dsv4/rope.hpp>
#include <oneapi/tbb/global_control.h>
#include <algorithm>
#include <cstdio>
#include <limits>
#include <numeric>

using namespace dsv4_test;
using namespace attention_test;

// ---------------------------------------------------------------------------------- RoPE

TEST_CASE("rope: frequency tables against the goldens and the spec's test vectors") {
    float fc[32], f0[32];
    dsv4::rope_freqs(dsv4::rope_config_compressed, fc);
    dsv4::rope_freqs(dsv4::rope_config_ratio0, f0);
    const auto gc = golden("attention", "rope_freqs_compressed").get<float>("freqs");
    const auto g0 = golden("attention", "rope_freqs_ratio0").get<float>("freqs");
    for (int i = 0; i < 32; ++i) {
        CAPTURE(i);
        CHECK(same_float(fc[i], gc[i]));
        CHECK(same_float(f0[i], g0[i]));
    }
    // spec §3.2 (printed to 8 significant digits)
    auto near = [](float a, double b) { return std::fabs(double(a) - b) <= 1e-7 * std::fabs(b); };
    CHECK(fc[0] == 1.0f);
    CHECK(near(fc[1], 0.68765604));
    CHECK(near(fc[15], 0.0036355385));
    CHECK(near(fc[16], 0.0022656249));
    CHECK(near(fc[25], 5.3723124e-06));
    CHECK(near(fc[31], 5.6805294e-07));
    CHECK(near(f0[1], 0.74989420));
    CHECK(near(f0[16], 0.0099999998));
    CHECK(near(f0[31], 1.3335215e-04));
    CHECK(&dsv4::rope_config_for_ratio(0) == &dsv4::rope_config_ratio0);
    CHECK(&dsv4::rope_config_for_ratio(128) == &dsv4::rope_config_compressed);
    CHECK_THROWS_AS(dsv4::rope_config_for_ratio(3), dsv4::error);
}

TEST_CASE("rope: forward and inverse against the goldens, from a table and on the fly") {
    for (const char* tab : {"ratio0", "compressed"})
        for (int D : {512, 128})
            for (const char* dir : {"fwd", "inv"}) {
                const std::string name = "rope_apply_D" + std::to_string(D) + "_" + tab + "_" + dir;
                golden g("attention", name);
                const auto x = g.get<uint16_t>("x"), want = g.get<uint16_t>("y");
                const auto pos = g.get<int64_t>("positions");
                const auto freqs = g.get<float>("freqs");
                const bool inv = g.scalar_i64("inverse") != 0;
                const std::size_t P = pos.size();
                // a 4096-row table: some positions from it, the rest on the fly
                std::vector<float> rows(4096 * dsv4::rope_row_floats);
                dsv4::rope_table_fill(freqs.data(), 4096, rows.data());
                for (std::size_t n_rows : {std::size_t(0), std::size_t(4096)}) {
                    const dsv4::rope_table t{freqs.data(), rows.data(), n_rows};
                    std::vector<uint16_t> y = x;
                    dsv4::rope_apply(y.data(), P, 1, std::size_t(D), std::size_t(D), pos.data(), t, inv);
                    CAPTURE(name);
                    CAPTURE(n_rows);
                    const auto st = compare(y, want);
                    CHECK(st.max == 0);  // same products, same sum, same cos/sin: exact
                }
            }
}

TEST_CASE("rope: output de-rotation (spec §4 step 9) against the goldens; rotate then de-rotate") {
    for (const char* name : {"output_derope", "output_derope_ratio0"}) {
        golden g("attention", name);
        const auto o = g.get<uint16_t>("o"), want = g.get<uint16_t>("y");
        const auto pos = g.get<int64_t>("positions");
        const auto freqs = g.get<float>("freqs");
        const auto os = g.shape("o");
        std::vector<uint16_t> y = o;
        dsv4::output_derope(y.data(), os[0], os[1], os[2], os[1] * os[2], pos.data(), dsv4::rope_table{freqs.data()});
        CAPTURE(name);
        CHECK(compare(y, want).max == 0);
        // forward after inverse returns each pair within a bf16 rounding of its magnitude
        std::vector<uint16_t> z = y;
        dsv4::rope_apply(z.data(), os[0], os[1], os[2], os[1] * os[2], pos.data(), dsv4::rope_table{freqs.data()}, false);
        for (std::size_t i = 0; i < o.size(); i += 2) {
            const double re = dsv4::bf16_to_f32(o[i]), im = dsv4::bf16_to_f32(o[i + 1]);
            const double mag = std::sqrt(re * re + im * im);
            CHECK(std::fabs(dsv4::bf16_to_f32(z[i]) - re) <= mag * 0x1p-7);
            CHECK(std::fabs(dsv4::bf16_to_f32(z[i + 1]) - im) <= mag * 0x1p-7);
        }
    }
}

TEST_CASE("rope: every tier equals scalar bit for bit") {
    rng r(11);
    float freqs[32];
    dsv4::rope_freqs(dsv4::rope_config_compressed, freqs);
    std::vector<uint16_t> x(64 * 512);
    for (auto& v : x) v = rand_bf16(r, 3.0f);
    for (int64_t p : {int64_t(0), int64_t(5), int64_t(65537), int64_t(1048575)}) {
        float cs[64];
        dsv4::rope_cos_sin(freqs, p, cs);
        for (bool inv : {false, true}) {
            std::vector<uint16_t> a = x, b = x;
            active().rope_rows(a.data() + 448, 64, 512, cs, inv);
            scalar_table().rope_rows(b.data() + 448, 64, 512, cs, inv);
            CHECK(a == b);
            for (std::size_t h = 0; h < 64; ++h)
                CHECK(std::equal(a.begin() + long(h * 512), a.begin() + long(h * 512 + 448), x.begin() + long(h * 512)));
        }
    }
}
