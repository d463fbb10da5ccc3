// dsv4/text/regex.hpp - the pre-tokenizer's regular expressions: PCRE2 with UTF and Unicode
// properties (\p{L}, \p{N}, ...; std::regex has neither), JIT-compiled where the platform has
// PCRE2's JIT. Chosen over Oniguruma (the engine of Hugging Face `tokenizers`) by
// benchmarks/bench_tokenizer_regex.cpp: on DeepSeek-V4's three Split patterns PCRE2's JIT runs
// ~5x faster and splits the golden corpus identically. Matches are enumerated with the rules
// of the onig crate's find_iter (which `tokenizers` uses), empty matches included.
//
// Unicode version: \p{...} classes follow the Unicode tables of the PCRE2 in use (Debian 12's
// 10.42: Unicode 14). Characters assigned later (the newest emoji, e.g. U+1FABD) count as
// unassigned, where the Oniguruma bundled in `tokenizers` knows them: text with such
// characters can pre-tokenize differently. Debian's Oniguruma 6.9.8 (Unicode 15) differs too.
#pragma once

#include "../config.hpp"

#ifndef PCRE2_CODE_UNIT_WIDTH
#  define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <memory>
#include <string>
#include <string_view>

namespace dsv4::text {
inline namespace DSV4_ISA_NS {

class regex {
public:
    regex() = default;

    /// Compiles `pattern` (a regex, or with `literal` a plain string). A bad pattern is a
    /// dsv4::error that starts with `what` and gives PCRE2's message and the offset.
    regex(std::string_view pattern, bool literal, const std::string& what) {
        int err = 0;
        PCRE2_SIZE offset = 0;
        const uint32_t options = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);  // LITERAL refuses UCP
        pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &err,
                                         &offset, nullptr);
        if (!code) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            throw error(what + ": bad regex at offset " + std::to_string(offset) + ": " +
                        reinterpret_cast<const char*>(msg));
        }
        code_ = std::shared_ptr<pcre2_code>(code, code_deleter{});
        jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;  // without JIT: PCRE2's interpreter
    }

    explicit operator bool() const { return code_ != nullptr; }

    /// Calls on_match(begin, end) for every match in `s` (valid UTF-8), left to right.
    /// An empty match right where the previous match ended is skipped and the search moves one
    /// character on (the onig crate's find_iter), so an empty-matching pattern cannot loop.
    template <class OnMatch>
    void for_each_match(std::string_view s, OnMatch&& on_match) const {
        pcre2_match_data* md = scratch();
        const auto* subject = reinterpret_cast<PCRE2_SPTR>(s.data());
        std::size_t from = 0;
        bool have_last = false;
        std::size_t last_end = 0;
        while (from <= s.size()) {
            // pcre2_jit_match skips pcre2_match's option checks: a third of the cost on short pieces
            const int rc = jit_ ? pcre2_jit_match(code_.get(), subject, s.size(), from, PCRE2_NO_UTF_CHECK, md, nullptr)
                                : pcre2_match(code_.get(), subject, s.size(), from, PCRE2_NO_UTF_CHECK, md, nullptr);
            if (rc == PCRE2_ERROR_NOMATCH) return;
            if (rc < 0) throw error("regex: PCRE2 match error " + std::to_string(rc));
            const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
            const std::size_t b = ov[0], e = ov[1];
            if (b == e && have_last && last_end == e) {
                if (from >= s.size()) return;
                std::size_t step = 1;
                while (from + step < s.size() && (static_cast<unsigned char>(s[from + step]) & 0xC0) == 0x80) ++step;
                from += step;
                continue;
            }
            from = e;
            have_last = true;
            last_end = e;
            on_match(b, e);
        }
    }

private:
    struct code_deleter {
        void operator()(pcre2_code* c) const { pcre2_code_free(c); }
    };
    struct match_data_deleter {
        void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
    };

    // One match block per thread: only the whole match is read, so one pair suffices.
    static pcre2_match_data* scratch() {
        thread_local std::unique_ptr<pcre2_match_data, match_data_deleter> md(pcre2_match_data_create(1, nullptr));
        return md.get();
    }

    bool jit_ = false;
    std::shared_ptr<pcre2_code> code_;  // shared: compiled code is read-only, copies are cheap
};

}  // namespace DSV4_ISA_NS
}  // namespace dsv4::text
