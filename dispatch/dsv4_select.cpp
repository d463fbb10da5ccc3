// dsv4_select.cpp - runtime tier selection. Compiled without ISA flags.
#include <dsv4/kernel_table.hpp>

#include <cstdlib>
#include <string>

namespace dsv4 {

const cpu_features& host_cpu() noexcept {
    static const cpu_features f = detect_cpu_features();
    return f;
}

const kernel_table* kernels_for(tier t) noexcept {
    if (!tier_supported(t, host_cpu())) return nullptr;
    switch (t) {
        case tier::scalar: return &detail::kernel_table_scalar();
        case tier::avx2: return &detail::kernel_table_avx2();
        case tier::avx2_vnni: return &detail::kernel_table_avx2_vnni();
        case tier::avx512: return &detail::kernel_table_avx512();
        case tier::avx512_vnni: return &detail::kernel_table_avx512_vnni();
        case tier::avx512_bf16: return &detail::kernel_table_avx512_bf16();
    }
    return nullptr;
}

namespace {
tier resolve_tier() {
    const char* env = std::getenv("DSV4_ISA");
    if (!env || !*env) return best_tier(host_cpu());
    tier t{};
    if (!parse_tier(env, t))
        throw error(std::string("DSV4_ISA='") + env +
                    "' is not a tier; use one of scalar, avx2, avx2_vnni, avx512, avx512_vnni, avx512_bf16");
    if (!tier_supported(t, host_cpu()))
        throw error(std::string("DSV4_ISA='") + env + "': this CPU cannot run that tier (best: " +
                    std::string(tier_name(best_tier(host_cpu()))) + ")");
    return t;
}
}  // namespace

tier active_tier() {
    static const tier t = resolve_tier();  // a throw leaves it unresolved: retried next call
    return t;
}

const kernel_table& active_kernels() {
    static const kernel_table* const table = kernels_for(active_tier());
    return *table;
}

}  // namespace dsv4
