// dsv4/text/unicode.hpp - the UTF-8 and Unicode pieces the tokenizer needs: strict validation
// (with the offset of the first bad byte), lossy decoding like Rust's String::from_utf8_lossy
// (what Hugging Face's ByteLevel decoder returns), NFC through ICU, and the two character
// classes of Rust's `char` that added-token matching uses (is_whitespace, is_alphanumeric).
#pragma once

#include "../config.hpp"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4::text {
inline namespace DSV4_ISA_NS {

/// One step of UTF-8 decoding at s[i]: `len` bytes form a valid character (valid = true), or
/// are the maximal prefix of one that is invalid (valid = false, len >= 1; Unicode's
/// "maximal subpart", the unit that from_utf8_lossy replaces by one U+FFFD), or are a valid
/// but incomplete prefix cut by the end of `s` (incomplete = true).
struct utf8_step {
    std::size_t len;
    bool valid;
    bool incomplete;
};

inline utf8_step utf8_next(std::string_view s, std::size_t i) {
    const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = b(i);
    if (c < 0x80) return {1, true, false};
    std::size_t need;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;  // no surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
        return {1, false, false};
    }
    for (std::size_t k = 1; k <= need; ++k) {
        if (i + k >= s.size()) return {k, false, true};
        const unsigned char x = b(i + k);
        const bool ok = k == 1 ? (x >= lo && x <= hi) : (x >= 0x80 && x <= 0xBF);
        if (!ok) return {k, false, false};
    }
    return {need + 1, true, false};
}

/// Byte offset of the first byte that is not part of valid UTF-8, or npos.
inline std::size_t first_invalid_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        // ASCII runs eight bytes at a time: most text is mostly ASCII
        while (i + 8 <= s.size()) {
            uint64_t w;
            std::memcpy(&w, s.data() + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= s.size()) break;
        const utf8_step st = utf8_next(s, i);
        if (!st.valid) return i;
        i += st.len;
    }
    return std::string_view::npos;
}

/// `s` with every maximal invalid subpart replaced by U+FFFD (Rust's from_utf8_lossy).
inline std::string utf8_lossy(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
        const utf8_step st = utf8_next(s, i);
        if (st.valid) out.append(s.substr(i, st.len));
        else out += "\xEF\xBF\xBD";
        i += st.len;
    }
    return out;
}

/// Code point of the valid character at s[i] (its length in `len`).
inline char32_t decode_utf8(std::string_view s, std::size_t i, std::size_t& len) {
    const auto b = [&](std::size_t k) { return char32_t(static_cast<unsigned char>(s[i + k])); };
    const char32_t c = b(0);
    if (c < 0x80) { len = 1; return c; }
    if (c < 0xE0) { len = 2; return ((c & 0x1F) << 6) | (b(1) & 0x3F); }
    if (c < 0xF0) { len = 3; return ((c & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F); }
    len = 4;
    return ((c & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
}

/// Start of the character that ends at s[end) (s valid UTF-8, end > 0).
inline std::size_t previous_char_start(std::string_view s, std::size_t end) {
    std::size_t i = end - 1;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
    return i;
}

/// Rust's char::is_whitespace: the White_Space property.
inline bool is_whitespace(char32_t c) { return u_isUWhiteSpace(UChar32(c)); }

/// Rust's char::is_alphanumeric: Alphabetic, or general category Nd / Nl / No.
inline bool is_alphanumeric(char32_t c) {
    if (u_hasBinaryProperty(UChar32(c), UCHAR_ALPHABETIC)) return true;
    const int8_t t = u_charType(UChar32(c));
    return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

/// NFC of valid UTF-8 `s` (ICU). ASCII is its own NFC and skips ICU.
inline std::string nfc(std::string_view s) {
    bool ascii = true;
    for (char c : s) ascii &= static_cast<unsigned char>(c) < 0x80;
    if (ascii) return std::string(s);
    UErrorCode err = U_ZERO_ERROR;
    const UNormalizer2* n = unorm2_getNFCInstance(&err);
    if (U_FAILURE(err)) throw error("NFC: ICU has no NFC data: " + std::string(u_errorName(err)));
    std::vector<UChar> in(s.size() + 1), out;
    int32_t in_len = 0;
    u_strFromUTF8(in.data(), int32_t(in.size()), &in_len, s.data(), int32_t(s.size()), &err);
    // NFC of UTF-16 text is at most 3x longer; one retry with the size ICU asks for
    out.resize(std::size_t(in_len) * 3 + 16);
    int32_t out_len = unorm2_normalize(n, in.data(), in_len, out.data(), int32_t(out.size()), &err);
    if (err == U_BUFFER_OVERFLOW_ERROR) {
        err = U_ZERO_ERROR;
        out.resize(std::size_t(out_len));
        out_len = unorm2_normalize(n, in.data(), in_len, out.data(), int32_t(out.size()), &err);
    }
    std::string result(std::size_t(out_len) * 3, '\0');
    int32_t bytes = 0;
    if (U_SUCCESS(err)) u_strToUTF8(result.data(), int32_t(result.size()), &bytes, out.data(), out_len, &err);
    if (U_FAILURE(err)) throw error("NFC: ICU failed: " + std::string(u_errorName(err)));
    result.resize(std::size_t(bytes));
    return result;
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4::text
