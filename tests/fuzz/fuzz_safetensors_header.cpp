// libFuzzer target: see fuzz_targets.hpp. Built with -DDSV4_FUZZ=ON (clang), run by scripts/fuzz.sh.
#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
    dsv4_fuzz::safetensors_header(data, size);
    return 0;
}
