// libFuzzer target: see fuzz_text_targets.hpp. Built with -DDSV4_FUZZ=ON (clang), run by scripts/fuzz.sh.
#include "fuzz_text_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
    dsv4_fuzz::tokenizer_json(data, size);
    return 0;
}
