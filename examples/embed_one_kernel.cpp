// The smallest embedding of a dsv4 kernel: headers only, no dispatch library. The
// kernel is instantiated for this file's own compile flags (dsv4::native_arch).
// Here: quantise one activation row to FP8 e4m3 with E8M0 block scales (spec §2.2),
// exactly what the checkpoint's FP8 GEMMs take as input.
#include <dsv4/codec.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
    const std::size_t cols = 256, block = 128;
    std::vector<uint16_t> x(cols);
    for (std::size_t i = 0; i < cols; ++i)
        x[i] = dsv4::f32_to_bf16(std::sin(0.1f * float(i)) * (i < block ? 1.0f : 300.0f));
    std::vector<uint8_t> codes(cols), scales(cols / block);
    dsv4::act_quant_fp8(x.data(), 1, cols, cols, block, codes.data(), cols, scales.data(), cols / block);
    std::printf("compiled for tier %s\n", std::string(dsv4::tier_name(dsv4::compiled_tier)).c_str());
    for (std::size_t b = 0; b < cols / block; ++b) {
        const float s = dsv4::e8m0_to_f32(scales[b]);
        double err = 0;
        for (std::size_t i = b * block; i < (b + 1) * block; ++i)
            err = std::fmax(err, std::fabs(dsv4::e4m3_to_f32(codes[i]) * s - dsv4::bf16_to_f32(x[i])));
        std::printf("block %zu: scale 2^%d, max abs error %.3g\n", b, int(scales[b]) - 127, err);
    }
    return 0;
}
