// tests/fuzz/fuzz_text_targets.hpp - the libFuzzer target of dsv4::text (tests/fuzz/fuzz_tokenizer_json.cpp)
// and its regression replay in the text.tokenizer test: arbitrary bytes as tokenizer.json. A
// dsv4::error is the expected outcome of bad input; for an accepted file, encoding a few texts
// must give ids inside the vocabulary that decode without error.
#pragma once

#include <dsv4/text/tokenizer.hpp>

#include <cstdint>
#include <stdexcept>
#include <string_view>

namespace dsv4_fuzz {

struct text_invariant_failure : std::logic_error {
    using std::logic_error::logic_error;
};

inline void tokenizer_json(const uint8_t* data, std::size_t size) {
    try {
        const auto tok = dsv4::text::tokenizer::from_json(
            std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.tokenizer.json");
        for (std::string_view text : {"", "Hello world 123", "  <｜User｜>中文 🤖\n\n", "x<think>y</think>"}) {
            const auto ids = tok.encode(text);
            for (int32_t id : ids)
                if (id < 0 || std::size_t(id) >= tok.vocab_size()) throw text_invariant_failure("id outside the vocab");
            (void)tok.decode(ids);
            auto stream = tok.stream();
            for (int32_t id : ids) (void)stream.push(id);
            (void)stream.finish();
        }
    } catch (const dsv4::error&) {
    }
}

}  // namespace dsv4_fuzz
