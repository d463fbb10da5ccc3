// tests/test_main.cpp - doctest main shared by every test binary.
//
// CTest runs each binary once per tier with DSV4_ISA set. A tier this CPU cannot run
// exits with 77, which CTest reports as skipped (never as passed).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <dsv4/kernel_table.hpp>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
    const char* want = std::getenv("DSV4_ISA");
    if (want && *want) {
        dsv4::tier t{};
        if (!dsv4::parse_tier(want, t)) {
            std::fprintf(stderr, "DSV4_ISA='%s' is not a tier\n", want);
            return 2;
        }
        if (!dsv4::tier_supported(t, dsv4::host_cpu())) {
            std::printf("SKIPPED: this CPU cannot run tier %s\n", want);
            return 77;
        }
    }
    try {
        std::printf("dsv4 tests on tier %s\n", std::string(dsv4::tier_name(dsv4::active_tier())).c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 2;
    }
    doctest::Context ctx(argc, argv);
    return ctx.run();
}

TEST_CASE("dispatch: the forced tier is the one whose code runs") {
    // compiled_for is written inside the tier's own translation unit from its
    // preprocessor macros, so this proves which object's code the table points to.
    const dsv4::tier running = dsv4::active_kernels().compiled_for;
    const char* want = std::getenv("DSV4_ISA");
    dsv4::tier expected = dsv4::best_tier(dsv4::host_cpu());
    if (want && *want) REQUIRE(dsv4::parse_tier(want, expected));
    CHECK(dsv4::tier_name(running) == dsv4::tier_name(expected));
    CHECK(dsv4::active_tier() == expected);
    for (dsv4::tier t : dsv4::all_tiers) {
        const auto* table = dsv4::kernels_for(t);
        CHECK((table != nullptr) == dsv4::tier_supported(t, dsv4::host_cpu()));
        if (table) CHECK(table->compiled_for == t);
    }
}
