// tests/test_support.hpp - goldens, tier tables and comparison helpers shared by tests.
#pragma once

#include "npy.hpp"

#include <dsv4/kernel_table.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace dsv4_test {

/// Root of the goldens written by reference/make_goldens.py (env DSV4_GOLDENS).
inline std::string goldens_root() {
    const char* g = std::getenv("DSV4_GOLDENS");
    if (!g || !*g) throw dsv4::error("DSV4_GOLDENS is not set (ctest sets it)");
    return g;
}

/// Case names of a golden family, in the order the reference wrote them.
inline std::vector<std::string> golden_cases(const std::string& family) {
    const std::string path = goldens_root() + "/" + family + "/cases.txt";
    std::ifstream f(path);
    if (!f) throw dsv4::error(path + ": missing (did the goldens fixture run?)");
    std::vector<std::string> out;
    for (std::string line; std::getline(f, line);)
        if (!line.empty()) out.push_back(line);
    return out;
}

/// One golden case: arrays loaded lazily by name.
struct golden {
    std::string dir;
    golden(const std::string& family, const std::string& name) : dir(goldens_root() + "/" + family + "/" + name) {}
    npy::array raw(const std::string& key) const { return npy::load(dir + "/" + key + ".npy"); }
    template <class T> std::vector<T> get(const std::string& key) const { return raw(key).template as<T>(); }
    std::vector<std::size_t> shape(const std::string& key) const { return raw(key).shape; }
    bool has(const std::string& key) const { return std::ifstream(dir + "/" + key + ".npy").good(); }
    int64_t scalar_i64(const std::string& key) const { return get<int64_t>(key).at(0); }
};

inline const dsv4::kernel_table& active() { return dsv4::active_kernels(); }
inline const dsv4::kernel_table& scalar_table() { return *dsv4::kernels_for(dsv4::tier::scalar); }

/// Bitwise float equality that treats every NaN as equal to every NaN.
inline bool same_float(float a, float b) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    uint32_t x, y;
    std::memcpy(&x, &a, 4);
    std::memcpy(&y, &b, 4);
    return x == y;
}

/// Deterministic pseudo-random generator (splitmix64) for property tests.
struct rng {
    uint64_t s;
    explicit rng(uint64_t seed) : s(seed) {}
    uint64_t next() {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    uint32_t u32() { return uint32_t(next() >> 32); }
    float uniform() { return float(next() >> 40) * 0x1p-24f; }  // [0, 1)
    float normal() {
        const float u1 = uniform() + 0x1p-25f, u2 = uniform();
        return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853f * u2);
    }
};

/// A random FP4 matrix (scales 2^-9..2^2) with `pad` bytes after each weight and scale row;
/// the padding holds NaN codes and NaN scales (0xFF), which no kernel may read.
struct fp4_weights {
    std::size_t n, k, pad;
    std::vector<uint8_t> w, s;
    fp4_weights(std::size_t n_, std::size_t k_, std::size_t pad_, rng& r) : n(n_), k(k_), pad(pad_) {
        w.assign(n * (k / 2 + pad), 0xFF);
        s.assign(n * (k / 32 + pad), 0xFF);  // NaN scales in the padding: never read
        for (std::size_t i = 0; i < n; ++i) {
            for (std::size_t j = 0; j < k / 2; ++j) w[i * (k / 2 + pad) + j] = uint8_t(r.u32());
            for (std::size_t j = 0; j < k / 32; ++j) s[i * (k / 32 + pad) + j] = uint8_t(118 + r.u32() % 12);
        }
    }
    dsv4::fp4_matrix view() const { return {w.data(), k / 2 + pad, s.data(), k / 32 + pad, n, k}; }
};

/// same_float over two vectors of the same length.
inline bool same_floats(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (!same_float(a[i], b[i])) return false;
    return true;
}

/// Runs fn(r0, r1) over [0, n) in pieces of random length (1..70): a row split that aligns
/// with no tile or block.
template <class Fn> void in_pieces(std::size_t n, rng& r, Fn&& fn) {
    for (std::size_t a = 0; a < n;) {
        const std::size_t b = std::min(n, a + 1 + r.u32() % 70);
        fn(a, b);
        a = b;
    }
}

}  // namespace dsv4_test
