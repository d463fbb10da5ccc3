// dsv4-info: prints the CPU's features, which dsv4 tiers it can run, and the active
// tier (DSV4_ISA forces one; an unknown or unsupported name is an error, exit 1).
#include <dsv4/kernel_table.hpp>

#include <cstdio>
#include <string>

int main() {
    const dsv4::cpu_features& f = dsv4::host_cpu();
    std::printf("cpu:      %s (%s)\n", f.brand, f.vendor);
    std::printf("os state: avx %s, avx512 %s\n", f.os_avx ? "yes" : "no", f.os_avx512 ? "yes" : "no");
    struct { const char* name; bool on; } flags[] = {
        {"sse2", f.sse2}, {"ssse3", f.ssse3}, {"sse4.1", f.sse41}, {"avx", f.avx}, {"avx2", f.avx2},
        {"fma", f.fma}, {"f16c", f.f16c}, {"bmi2", f.bmi2}, {"avx_vnni", f.avx_vnni},
        {"avx_vnni_int8", f.avx_vnni_int8}, {"avx512f", f.avx512f}, {"avx512bw", f.avx512bw},
        {"avx512dq", f.avx512dq}, {"avx512vl", f.avx512vl}, {"avx512cd", f.avx512cd},
        {"avx512_vnni", f.avx512_vnni}, {"avx512_bf16", f.avx512_bf16}};
    std::printf("features:");
    for (auto& fl : flags)
        if (fl.on) std::printf(" %s", fl.name);
    std::printf("\ntiers:   ");
    for (dsv4::tier t : dsv4::all_tiers)
        std::printf(" %s=%s", std::string(dsv4::tier_name(t)).c_str(),
                    dsv4::tier_supported(t, f) ? "yes" : "no");
    std::printf("\n");
    try {
        const dsv4::tier t = dsv4::active_tier();
        std::printf("active:   %s (code compiled for %s)\n", std::string(dsv4::tier_name(t)).c_str(),
                    std::string(dsv4::tier_name(dsv4::active_kernels().compiled_for)).c_str());
    } catch (const dsv4::error& e) {
        std::fprintf(stderr, "dsv4-info: %s\n", e.what());
        return 1;
    }
    return 0;
}
