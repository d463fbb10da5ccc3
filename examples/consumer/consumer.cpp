// Quantises a row and prints the tier that ran: checks the installed package works.
#include <dsv4/codec.hpp>

#include <cstdio>
#include <string>
#include <vector>

int main() {
    std::vector<uint16_t> x(128);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = dsv4::f32_to_bf16(float(i) - 64.0f);
    std::vector<uint8_t> codes(128), scale(1);
    dsv4::act_quant_fp8(x.data(), 1, 128, 128, 128, codes.data(), 128, scale.data(), 1);
#if DSV4_RUNTIME_DISPATCH
    const std::string tier(dsv4::tier_name(dsv4::active_tier()));
#else
    const std::string tier(dsv4::tier_name(dsv4::compiled_tier));
#endif
    // amax 64 -> scale 2^ceil(log2(64/448)) = 2^-2; -64 / 0.25 = -256 -> e4m3 0xF8
    const bool ok = scale[0] == 125 && codes[0] == 0xF8;
    std::printf("consumer: tier %s, scale byte %d, code[0] 0x%02X: %s\n", tier.c_str(), scale[0], codes[0],
                ok ? "ok" : "WRONG");
    return ok ? 0 : 1;
}
