// tests/npy.hpp - a small, bounds-checked reader of NumPy .npy files (format 1.0-3.0,
// little-endian, C order). Every malformed input is a dsv4::error naming the file.
#pragma once

#include <dsv4/config.hpp>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace npy {

struct array {
    std::string path;
    std::string dtype;  // numpy descr without byte order: "u1", "u2", "f4", "f8", "i4", "i8", "b1"
    std::vector<std::size_t> shape;
    std::vector<unsigned char> bytes;

    std::size_t size() const {
        std::size_t n = 1;
        for (auto d : shape) n *= d;
        return n;
    }
    template <class T> static constexpr const char* code() {
        if constexpr (std::is_same_v<T, uint8_t>) return "u1";
        else if constexpr (std::is_same_v<T, uint16_t>) return "u2";
        else if constexpr (std::is_same_v<T, float>) return "f4";
        else if constexpr (std::is_same_v<T, double>) return "f8";
        else if constexpr (std::is_same_v<T, int32_t>) return "i4";
        else if constexpr (std::is_same_v<T, int64_t>) return "i8";
        else return "?";
    }
    /// The elements as T; throws if the dtype is not exactly T.
    template <class T> std::vector<T> as() const {
        if (dtype != code<T>())
            throw dsv4::error(path + ": dtype " + dtype + ", expected " + code<T>());
        std::vector<T> out(size());
        if (!out.empty()) std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
        return out;
    }
};

/// Parses .npy bytes (the fuzzable core of load()).
inline array parse(std::string_view data, const std::string& path) {
    auto fail = [&](const std::string& why) -> array { throw dsv4::error(path + ": " + why); };
    if (data.size() < 10 || std::memcmp(data.data(), "\x93NUMPY", 6) != 0) return fail("not a .npy file");
    const unsigned major = static_cast<unsigned char>(data[6]);
    std::size_t hlen = 0, hstart = 0;
    if (major == 1) {
        hlen = static_cast<unsigned char>(data[8]) | (std::size_t(static_cast<unsigned char>(data[9])) << 8);
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (data.size() < 12) return fail("truncated header");
        hlen = 0;
        for (int i = 0; i < 4; ++i) hlen |= std::size_t(static_cast<unsigned char>(data[8 + i])) << (8 * i);
        hstart = 12;
    } else {
        return fail("unsupported .npy version " + std::to_string(major));
    }
    if (hlen > data.size() - hstart) return fail("header longer than the file");
    const std::string_view h = data.substr(hstart, hlen);
    auto field = [&](std::string_view key) -> std::string_view {
        const auto k = h.find(key);
        if (k == std::string_view::npos) fail("header lacks " + std::string(key));
        auto v = h.substr(k + key.size());
        const auto colon = v.find(':');
        if (colon == std::string_view::npos) fail("malformed header");
        v = v.substr(colon + 1);
        while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
        return v;
    };
    array a;
    a.path = path;
    {
        auto v = field("'descr'");
        if (v.size() < 2 || (v[0] != '\'' && v[0] != '"')) return fail("malformed descr");
        const auto end = v.find(v[0], 1);
        if (end == std::string_view::npos || end < 2) return fail("malformed descr");
        const std::string d(v.substr(1, end - 1));
        if (d.size() != 3 || (d[0] != '<' && d[0] != '|')) return fail("unsupported dtype '" + d + "'");
        a.dtype = d.substr(1);
    }
    if (field("'fortran_order'").substr(0, 5) != "False") return fail("fortran order is not supported");
    {
        auto v = field("'shape'");
        if (v.empty() || v[0] != '(') return fail("malformed shape");
        const auto end = v.find(')');
        if (end == std::string_view::npos) return fail("malformed shape");
        auto s = v.substr(1, end - 1);
        while (!s.empty()) {
            while (!s.empty() && (s.front() == ' ' || s.front() == ',')) s.remove_prefix(1);
            if (s.empty()) break;
            std::size_t d = 0, digits = 0;
            while (!s.empty() && s.front() >= '0' && s.front() <= '9') {
                if (d > (std::size_t(1) << 40)) return fail("dimension too large");
                d = d * 10 + std::size_t(s.front() - '0');
                s.remove_prefix(1);
                ++digits;
            }
            if (digits == 0) return fail("malformed shape");
            a.shape.push_back(d);
        }
    }
    static const std::pair<const char*, std::size_t> sizes[] = {
        {"u1", 1}, {"i1", 1}, {"b1", 1}, {"u2", 2}, {"i2", 2}, {"f2", 2}, {"u4", 4},
        {"i4", 4}, {"f4", 4}, {"u8", 8}, {"i8", 8}, {"f8", 8}};
    std::size_t esize = 0;
    for (auto& [n, s] : sizes)
        if (a.dtype == n) esize = s;
    if (!esize) return fail("unsupported dtype '" + a.dtype + "'");
    std::size_t n = 1;
    for (auto d : a.shape) {
        if (d != 0 && n > (std::size_t(1) << 40) / d) return fail("array too large");
        n *= d;
    }
    const std::size_t want = n * esize, have = data.size() - hstart - hlen;
    if (have != want)
        return fail("data is " + std::to_string(have) + " bytes, shape needs " + std::to_string(want));
    a.bytes.assign(data.begin() + std::ptrdiff_t(hstart + hlen), data.end());
    return a;
}

inline array load(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw dsv4::error(path + ": cannot open");
    std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return parse(data, path);
}

}  // namespace npy
