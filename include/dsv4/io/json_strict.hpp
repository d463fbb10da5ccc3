// dsv4/io/json_strict.hpp - strict JSON parsing and error-message helpers for the loader
// (safetensors headers, model.safetensors.index.json, config.json).
//
// JSON comes from untrusted files. parse_json_strict() builds an nlohmann::json value
// through the SAX interface so that it can refuse what nlohmann's DOM parser accepts
// silently: duplicate object keys (the DOM parser keeps the last one) and nesting deeper
// than a small limit. Every failure is a dsv4::error that starts with the caller's
// `what` (normally the file name). Malformed UTF-8, trailing garbage, numbers that
// overflow a double and comments are rejected by nlohmann itself.
#pragma once

#include "../config.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace dsv4 {
inline namespace DSV4_ISA_NS {
namespace detail {

/// `s` in double quotes for an error message: control bytes, quotes and backslashes
/// escaped, cut after `max_len` bytes (hostile names can be long or contain newlines).
inline std::string quote(std::string_view s, std::size_t max_len = 160) {
    static const char hex[] = "0123456789abcdef";
    std::string out = "'";
    const std::size_t n = s.size() < max_len ? s.size() : max_len;
    for (std::size_t i = 0; i < n; ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '\'' || c == '\\') {
            out += '\\';
            out += char(c);
        } else if (c < 0x20 || c == 0x7F) {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += char(c);
        }
    }
    if (n < s.size()) out += "...(" + std::to_string(s.size()) + " bytes)";
    out += '\'';
    return out;
}

/// SAX handler that builds a DOM like nlohmann's own, but throws on a duplicate key or on
/// nesting deeper than `max_depth`. (nlohmann's callback parser cannot be used for this:
/// it rescans the parent container at every object end, quadratic on hostile input.)
class strict_dom_builder {
public:
    using json = nlohmann::json;

    strict_dom_builder(json& root, std::string_view what, std::size_t max_depth)
        : root_(root), what_(what), max_depth_(max_depth) {}

    bool null() { put(nullptr); return true; }
    bool boolean(bool v) { put(v); return true; }
    bool number_integer(json::number_integer_t v) { put(v); return true; }
    bool number_unsigned(json::number_unsigned_t v) { put(v); return true; }
    bool number_float(json::number_float_t v, const json::string_t&) { put(v); return true; }
    bool string(json::string_t& v) { put(std::move(v)); return true; }
    bool binary(json::binary_t&) { fail("binary values are not JSON"); return false; }
    bool start_object(std::size_t) { open(json::object()); return true; }
    bool start_array(std::size_t) { open(json::array()); return true; }
    bool end_object() { stack_.pop_back(); return true; }
    bool end_array() { stack_.pop_back(); return true; }
    bool key(json::string_t& k) {
        json& obj = *stack_.back();
        if (obj.contains(k)) fail("duplicate key " + quote(k));
        slot_ = &obj[k];
        return true;
    }
    template <class Exception> bool parse_error(std::size_t, const std::string&, const Exception& ex) {
        fail(std::string("invalid JSON: ") + ex.what());
        return false;
    }

private:
    [[noreturn]] void fail(const std::string& why) const { throw error(std::string(what_) + ": " + why); }
    template <class V> json* put(V&& v) {
        if (stack_.empty()) {
            root_ = json(std::forward<V>(v));
            return &root_;
        }
        json& top = *stack_.back();
        if (top.is_array()) {
            top.push_back(json(std::forward<V>(v)));
            return &top.back();
        }
        *slot_ = json(std::forward<V>(v));
        return slot_;
    }
    void open(json&& container) {
        if (stack_.size() >= max_depth_)
            fail("JSON nested deeper than " + std::to_string(max_depth_) + " levels");
        stack_.push_back(put(std::move(container)));
    }

    json& root_;
    std::string_view what_;
    std::size_t max_depth_;
    std::vector<json*> stack_;
    json* slot_ = nullptr;
};

/// Parses `text` as one JSON value (strict RFC 8259, UTF-8, no NUL byte, nothing after it
/// but whitespace). Throws dsv4::error("<what>: ...") on any problem, including duplicate keys
/// and nesting deeper than `max_depth`.
inline nlohmann::json parse_json_strict(std::string_view text, std::string_view what, std::size_t max_depth = 16) {
    // nlohmann's lexer takes a NUL byte for the end of the input and would ignore what
    // follows; JSON text never contains a raw NUL.
    if (const auto nul = text.find('\0'); nul != std::string_view::npos)
        throw error(std::string(what) + ": invalid JSON: NUL byte at offset " + std::to_string(nul));
    nlohmann::json root;
    strict_dom_builder sax(root, what, max_depth);
    try {
        nlohmann::json::sax_parse(text.begin(), text.end(), &sax, nlohmann::json::input_format_t::json,
                                  /*strict=*/true, /*ignore_comments=*/false);
    } catch (const nlohmann::json::exception& e) {
        throw error(std::string(what) + ": invalid JSON: " + e.what());
    }
    return root;
}

/// Name of a JSON value's type for error messages.
inline const char* json_type_name(const nlohmann::json& v) {
    if (v.is_number_integer()) return "an integer";
    if (v.is_number_float()) return "a floating-point number";
    if (v.is_string()) return "a string";
    if (v.is_boolean()) return "a boolean";
    if (v.is_null()) return "null";
    if (v.is_array()) return "an array";
    if (v.is_object()) return "an object";
    return "an unexpected value";
}

/// A non-negative JSON integer that fits uint64_t, or false (floats, negatives, others).
inline bool json_u64(const nlohmann::json& v, uint64_t& out) {
    if (v.is_number_unsigned()) {
        out = v.get<uint64_t>();
        return true;
    }
    if (v.is_number_integer()) {
        const int64_t s = v.get<int64_t>();
        if (s < 0) return false;
        out = uint64_t(s);
        return true;
    }
    return false;
}

}  // namespace detail
}  // namespace DSV4_ISA_NS
}  // namespace dsv4
