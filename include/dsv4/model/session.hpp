// dsv4/model/session.hpp - a sequence's whole state in a file: save it after a long system
// prompt or a conversation, load it later and continue with extend/decode as if the
// tokens had just been run (no re-prefill).
//
// File (little-endian): "DSV4SESS", u32 format version, u64 model fingerprint (tensor names,
// dtypes and shapes, plus the bytes of every norm weight: another checkpoint or another
// set of weights does not match), u32 KV FP8 revision, u32 window, u64 max_context, i64
// position, u32 layers; per layer: u32 ratio, the ring (window rows), the compressed entries
// and indexer keys completed so far (only those: the file grows with the position, not the
// capacity), both compressor states; then u64 history length and the token ids, and u64 +
// bytes of the caller's own data (the generator keeps its conversation there). Every read
// is checked: a short file, another model, another version or a state that does not fit
// this model's sequences is a dsv4::error naming the file and the field.
#pragma once

#include "forward.hpp"

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4 {

inline constexpr char session_magic[8] = {'D', 'S', 'V', '4', 'S', 'E', 'S', 'S'};
inline constexpr uint32_t session_version = 1;

namespace session_io {

struct file_closer {
    void operator()(std::FILE* f) const noexcept { std::fclose(f); }
};
using file_ptr = std::unique_ptr<std::FILE, file_closer>;

class session_writer {
public:
    explicit session_writer(const std::string& path) : path_(path), f_(std::fopen(path.c_str(), "wb")) {
        if (!f_) throw error("dsv4::save_session: cannot create " + path + ": " + std::strerror(errno));
    }
    template <class T> void put(const T& v) { bytes(&v, sizeof v); }
    template <class T> void array(const T* p, std::size_t n) { bytes(p, n * sizeof(T)); }
    void bytes(const void* p, std::size_t n) {
        if (n && std::fwrite(p, 1, n, f_.get()) != n)
            throw error("dsv4::save_session: writing " + path_ + " failed: " + std::strerror(errno));
    }
    void close() {
        std::FILE* f = f_.release();
        if (std::fclose(f) != 0) throw error("dsv4::save_session: closing " + path_ + " failed: " + std::strerror(errno));
    }

private:
    std::string path_;
    file_ptr f_;
};

class session_reader {
public:
    explicit session_reader(const std::string& path) : path_(path), f_(std::fopen(path.c_str(), "rb")) {
        if (!f_) throw error("dsv4::load_session: cannot open " + path + ": " + std::strerror(errno));
    }
    template <class T> T get(const char* field) {
        T v{};
        bytes(&v, sizeof v, field);
        return v;
    }
    template <class T> void array(T* p, std::size_t n, const char* field) { bytes(p, n * sizeof(T), field); }
    void bytes(void* p, std::size_t n, const char* field) {
        if (n && std::fread(p, 1, n, f_.get()) != n)
            fail(std::string("ends early (reading ") + field + ")");
    }
    [[noreturn]] void fail(const std::string& what) const {
        throw error("dsv4::load_session: " + path_ + ": " + what);
    }
    bool at_end() { return std::fgetc(f_.get()) == EOF; }

private:
    std::string path_;
    file_ptr f_;
};

}  // namespace session_io

inline namespace DSV4_ISA_NS {

/// Writes s (and the token ids that produced it) to `path`.
inline void save_session(const model& m, const sequence_state& s, const std::vector<int64_t>& history,
                         const std::string& path, std::string_view app_data = {}) {
    detail::require(s.owner != 0 && s.layers.size() == m.config().num_hidden_layers, "save_session",
                    "sequence state was not made by this model's new_sequence()");
    if (history.size() != std::size_t(s.pos))
        throw error("dsv4::save_session: history must hold exactly the sequence's " + std::to_string(s.pos) +
                    " tokens, not " + std::to_string(history.size()));
    const std::size_t hd = m.config().head_dim, W = m.config().sliding_window, ihd = m.config().index_head_dim;
    session_io::session_writer w(path);
    w.bytes(session_magic, sizeof session_magic);
    w.put(session_version);
    w.put(m.fingerprint());
    w.put(uint32_t(m.options().kv_fp8));
    w.put(uint32_t(W));
    w.put(uint64_t(s.max_context));
    w.put(int64_t(s.pos));
    w.put(uint32_t(s.layers.size()));
    for (const layer_state& L : s.layers) {
        w.put(L.ratio);
        const std::size_t entries = L.ratio ? std::size_t(s.pos) / L.ratio : 0;
        w.array(L.cache.data(), (W + entries) * hd);
        for (const compressor_state* c : {&L.comp, &L.index_comp}) {
            w.put(uint64_t(c->kv.size()));
            w.array(c->kv.data(), c->kv.size());
            w.array(c->score.data(), c->score.size());
            w.put(c->next_pos);
        }
        if (L.ratio == 4) w.array(L.keys.data(), std::size_t(s.pos) / 4 * ihd);
    }
    w.put(uint64_t(history.size()));
    w.array(history.data(), history.size());
    w.put(uint64_t(app_data.size()));
    w.bytes(app_data.data(), app_data.size());
    w.close();
}

/// Restores a state saved by save_session into s (made by m.new_sequence()); returns the
/// token ids (and the caller's data in *app_data when given). Refuses a file from another model, another format version or KV revision, or
/// a position beyond s's capacity.
inline std::vector<int64_t> load_session(const model& m, sequence_state& s, const std::string& path,
                                         std::string* app_data = nullptr) {
    detail::require(s.owner != 0 && s.layers.size() == m.config().num_hidden_layers, "load_session",
                    "sequence state was not made by this model's new_sequence()");
    const std::size_t hd = m.config().head_dim, W = m.config().sliding_window, ihd = m.config().index_head_dim;
    session_io::session_reader r(path);
    char magic[8];
    r.bytes(magic, sizeof magic, "magic");
    if (std::memcmp(magic, session_magic, sizeof magic) != 0) r.fail("not a dsv4 session file (bad magic)");
    if (const auto v = r.get<uint32_t>("version"); v != session_version)
        r.fail("format version " + std::to_string(v) + ", this build reads version " + std::to_string(session_version));
    if (r.get<uint64_t>("model fingerprint") != m.fingerprint())
        r.fail("saved by another model (fingerprint differs: other tensors or weights)");
    if (r.get<uint32_t>("kv revision") != uint32_t(m.options().kv_fp8))
        r.fail("saved with another KV FP8 revision (--revision)");
    if (r.get<uint32_t>("window") != W) r.fail("window differs from the model's sliding_window");
    r.get<uint64_t>("max_context");  // the saving sequence's capacity: only the position matters here
    const int64_t pos = r.get<int64_t>("position");
    if (pos < 0 || std::size_t(pos) > s.max_context)
        r.fail("position " + std::to_string(pos) + " exceeds this sequence's capacity " + std::to_string(s.max_context) +
               " (--max-context)");
    if (r.get<uint32_t>("layers") != s.layers.size()) r.fail("layer count differs");
    s.pos = 0;  // until every field is in: a failed load leaves a sequence that must start over
    for (layer_state& L : s.layers) {
        if (r.get<uint32_t>("layer ratio") != L.ratio) r.fail("a layer's compress ratio differs");
        const std::size_t entries = L.ratio ? std::size_t(pos) / L.ratio : 0;
        r.array(L.cache.data(), (W + entries) * hd, "attention cache");
        for (compressor_state* c : {&L.comp, &L.index_comp}) {
            if (r.get<uint64_t>("compressor state size") != c->kv.size()) r.fail("compressor state size differs");
            r.array(c->kv.data(), c->kv.size(), "compressor kv");
            r.array(c->score.data(), c->score.size(), "compressor score");
            c->next_pos = r.get<int64_t>("compressor position");
        }
        if (L.ratio == 4) r.array(L.keys.data(), std::size_t(pos) / 4 * ihd, "indexer keys");
    }
    const uint64_t n = r.get<uint64_t>("history length");
    if (n != uint64_t(pos)) r.fail("history length differs from the position");
    std::vector<int64_t> history(n);
    r.array(history.data(), n, "history");
    const uint64_t extra = r.get<uint64_t>("caller data length");
    if (extra > (uint64_t(1) << 30)) r.fail("caller data length " + std::to_string(extra) + " is implausible");
    std::string data(extra, '\0');
    r.bytes(data.data(), extra, "caller data");
    if (!r.at_end()) r.fail("trailing bytes after the caller data");
    check_token_ids(std::span<const int64_t>(history), m.config().vocab_size);
    s.pos = pos;
    if (app_data) *app_data = std::move(data);
    return history;
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
