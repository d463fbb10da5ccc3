// dsv4/io/safetensors.hpp - memory-mapped, zero-copy reader of safetensors checkpoints
// (one file, or shards resolved through model.safetensors.index.json), spec §1.
//
// File format (https://huggingface.co/docs/safetensors): 8-byte little-endian header
// length N, N bytes of UTF-8 JSON `{name: {"dtype", "shape", "data_offsets": [b, e]}, ...,
// "__metadata__": {str: str}}`, then the data; offsets are relative to the end of the
// header. The files are untrusted input: everything is checked before a byte of tensor
// data is handed out, with overflow-safe arithmetic, and every problem is a dsv4::error
// naming the file and, where there is one, the tensor:
//   * the header length fits in the file and is at most max_safetensors_header_bytes;
//   * the header is strict JSON (no duplicate keys), an object; `__metadata__` is an
//     object of strings; each tensor is an object with exactly dtype/shape/data_offsets;
//   * dtype is one of F8_E4M3 F8_E8M0 I8 U8 BOOL BF16 F16 F32 I32 I64; shape is at most
//     max_tensor_rank non-negative integers; data_offsets are two integers b <= e;
//   * numel(shape) * dtype size == e - b (no overflow), [b, e) lies inside the file,
//     and no two non-empty tensors overlap;
//   * sharded: every index entry names a plain file next to the index that opens, and
//     the tensor is in that shard; every tensor of a shard is listed for that shard.
// Holes between tensors and trailing bytes are allowed (they are harmless); the official
// writer leaves none.
//
// Lifetime: tensor_view pointers and names point into the checkpoint object's mappings and
// tables; they stay valid while that checkpoint (or a checkpoint moved from it) lives.
// Like every dsv4 function body, mapped_file and checkpoint live in the ISA inline namespace
// (dsv4::isa_<tier>::checkpoint): hand a checkpoint only to code built with the same ISA
// flags; the plain-data views (tensor_view, tensor_shape) may cross freely.
// The files must not be truncated while mapped (reading a page past the new end raises
// SIGBUS; nothing in user space can prevent that).
//
// verify_checkpoint(ck) is the optional byte-level pass (dsv4-generate --verify): it reads
// every tensor's bytes with pread (never through the mapping, so an I/O error or a file cut
// short is a reported problem naming the file and tensor, not a SIGBUS) and reports FP8 e4m3
// NaN codes (0x7F, 0xFF), E8M0 NaN scales (0xFF) and non-finite BF16 / F16 / F32 values, per
// tensor with the count and the first element. FP4 (I8), integer and BOOL tensors have no
// invalid bit patterns and are only read.
#pragma once

#include "../config.hpp"
#include "json_strict.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static_assert(sizeof(std::size_t) == 8, "the dsv4 loader maps whole files and needs a 64-bit size_t");

namespace dsv4 {

/// Element types of a safetensors file. FP4 (e2m1, two per byte) has no dtype string of
/// its own: the official checkpoint stores it as I8 (spec §1.2).
enum class dtype : uint8_t { f8_e4m3, f8_e8m0, i8, u8, boolean, bf16, f16, f32, i32, i64 };

inline constexpr std::size_t max_tensor_rank = 8;
/// Upper bound on a shard's JSON header (the same 100 MB bound as the reference reader).
inline constexpr uint64_t max_safetensors_header_bytes = uint64_t(100) << 20;
/// Upper bound on model.safetensors.index.json (the V4-Flash index is about 5.4 MB).
inline constexpr uint64_t max_safetensors_index_bytes = uint64_t(256) << 20;

/// A tensor shape: `rank` dimensions in dims[0..rank), row-major (last is contiguous).
struct tensor_shape {
    uint32_t rank = 0;
    std::array<uint64_t, max_tensor_rank> dims{};
};

/// A zero-copy view of one tensor inside a mapped file.
struct tensor_view {
    std::string_view name;          ///< tensor name, e.g. "layers.0.attn.wq_a.weight"
    std::string_view file;          ///< path of the file that holds it
    dtype type = dtype::u8;
    tensor_shape shape;
    const unsigned char* data = nullptr;  ///< first byte (may be unaligned, see tensor_data)
    uint64_t bytes = 0;             ///< numel(shape) * dtype_size(type)
    uint64_t file_offset = 0;       ///< absolute offset of `data` in the file
};

/// One tensor of a parsed header; begin/end are relative to the start of the data.
struct safetensors_entry {
    std::string name;
    dtype type = dtype::u8;
    tensor_shape shape;
    uint64_t begin = 0, end = 0;
};

/// A validated safetensors header (see the checks at the top of this file).
struct safetensors_header {
    uint64_t header_bytes = 0;  ///< N, the JSON length
    uint64_t data_start = 0;    ///< 8 + N
    std::vector<safetensors_entry> tensors;                       ///< sorted by name
    std::vector<std::pair<std::string, std::string>> metadata;    ///< "__metadata__", sorted
};

/// A validated model.safetensors.index.json.
struct safetensors_index {
    std::vector<std::pair<std::string, std::string>> weight_map;  ///< (tensor, shard), sorted by tensor
    std::vector<std::string> shards;                              ///< distinct shard names, sorted
    std::optional<uint64_t> total_size;                           ///< "metadata.total_size" if present
};

/// Memory use of a checkpoint's mappings.
struct memory_report {
    std::size_t files = 0;
    uint64_t bytes_mapped = 0;    ///< total size of the mapped files
    uint64_t bytes_resident = 0;  ///< of those, in the page cache now (mincore), whoever read them
    /// Bytes of the mappings this process has faulted in (Rss of the mappings in
    /// /proc/self/smaps), page-granular and including the kernel's fault-around of pages
    /// already cached next to a touched one (up to 64 KiB per fault by default). Empty if
    /// /proc is not readable.
    std::optional<uint64_t> bytes_touched;
};

/// One tensor that failed verify_checkpoint.
struct verify_problem {
    std::string tensor;     ///< tensor name
    std::string file;       ///< the file that holds it
    std::string what;       ///< e.g. "3 FP8 e4m3 NaN codes (0x7F/0xFF), first at element 17"
    uint64_t count = 0;     ///< bad elements (0 for a read error)
    uint64_t first = 0;     ///< index of the first bad element (row-major, in elements)
    bool read_error = false;  ///< the bytes could not be read (I/O error, file shorter than its header says)
};

/// Result of verify_checkpoint.
struct verify_report {
    std::size_t files = 0, tensors = 0;
    uint64_t bytes = 0;    ///< tensor bytes read and checked
    double seconds = 0;    ///< wall time of the pass
    unsigned threads = 0;  ///< reader threads used
    std::vector<verify_problem> problems;  ///< sorted by tensor name; empty if everything is fine
    bool ok() const noexcept { return problems.empty(); }
    double gb_per_s() const noexcept { return seconds > 0 ? double(bytes) / seconds * 1e-9 : 0.0; }
};

/// Options of verify_checkpoint.
struct verify_options {
    unsigned threads = 0;               ///< reader threads; 0: std::thread::hardware_concurrency()
    std::size_t chunk_bytes = 8u << 20;  ///< bytes per pread (rounded up to a multiple of 64)
};

inline namespace DSV4_ISA_NS {

// ------------------------------------------------------------------------------ dtypes

/// The safetensors dtype string ("F8_E4M3", "BF16", ...).
inline std::string_view dtype_name(dtype t) {
    switch (t) {
        case dtype::f8_e4m3: return "F8_E4M3";
        case dtype::f8_e8m0: return "F8_E8M0";
        case dtype::i8: return "I8";
        case dtype::u8: return "U8";
        case dtype::boolean: return "BOOL";
        case dtype::bf16: return "BF16";
        case dtype::f16: return "F16";
        case dtype::f32: return "F32";
        case dtype::i32: return "I32";
        case dtype::i64: return "I64";
    }
    return "?";
}

/// Bytes per element.
inline std::size_t dtype_size(dtype t) {
    switch (t) {
        case dtype::f8_e4m3: case dtype::f8_e8m0: case dtype::i8: case dtype::u8: case dtype::boolean: return 1;
        case dtype::bf16: case dtype::f16: return 2;
        case dtype::f32: case dtype::i32: return 4;
        case dtype::i64: return 8;
    }
    return 0;
}

/// Parses a dtype string; empty if it is not one dsv4 reads.
inline std::optional<dtype> parse_dtype(std::string_view s) {
    static constexpr dtype all[] = {dtype::f8_e4m3, dtype::f8_e8m0, dtype::i8, dtype::u8, dtype::boolean,
                                    dtype::bf16, dtype::f16, dtype::f32, dtype::i32, dtype::i64};
    for (dtype t : all)
        if (dtype_name(t) == s) return t;
    return std::nullopt;
}

// ------------------------------------------------------------------------------ shapes

/// Builds a shape from a list of dimensions (at most max_tensor_rank).
inline tensor_shape make_shape(std::initializer_list<uint64_t> dims) {
    if (dims.size() > max_tensor_rank) throw error("dsv4::make_shape: rank > max_tensor_rank");
    tensor_shape s;
    s.rank = uint32_t(dims.size());
    std::copy(dims.begin(), dims.end(), s.dims.begin());
    return s;
}

/// The dimensions as a span of `rank` values.
inline std::span<const uint64_t> dims_of(const tensor_shape& s) { return {s.dims.data(), s.rank}; }

inline bool same_shape(const tensor_shape& a, const tensor_shape& b) {
    return a.rank == b.rank && std::equal(a.dims.begin(), a.dims.begin() + a.rank, b.dims.begin());
}

/// Number of elements; false if it overflows uint64_t.
inline bool checked_numel(const tensor_shape& s, uint64_t& n) {
    n = 1;
    for (uint32_t i = 0; i < s.rank; ++i)
        if (__builtin_mul_overflow(n, s.dims[i], &n)) return false;
    return true;
}

/// Number of elements (shapes of parsed tensors never overflow).
inline uint64_t numel(const tensor_shape& s) {
    uint64_t n = 0;
    if (!checked_numel(s, n)) throw error("dsv4::numel: element count overflows");
    return n;
}

/// "[129280, 4096]"
inline std::string to_string(const tensor_shape& s) {
    std::string out = "[";
    for (uint32_t i = 0; i < s.rank; ++i) out += (i ? ", " : "") + std::to_string(s.dims[i]);
    return out + "]";
}

namespace detail {
template <class T> constexpr bool dtype_holds(dtype t) {
    if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, std::byte> || std::is_same_v<T, unsigned char>)
        return dtype_size(t) == 1;  // codes, scales, packed FP4 (I8), bytes
    else if constexpr (std::is_same_v<T, int8_t>) return t == dtype::i8;
    else if constexpr (std::is_same_v<T, uint16_t>) return t == dtype::bf16 || t == dtype::f16;  // bit patterns
    else if constexpr (std::is_same_v<T, float>) return t == dtype::f32;
    else if constexpr (std::is_same_v<T, int32_t>) return t == dtype::i32;
    else if constexpr (std::is_same_v<T, int64_t>) return t == dtype::i64;
    else return false;
}
}  // namespace detail

/// The view's elements as `const T*`. T must match the dtype: uint8_t for any 1-byte
/// dtype (e4m3/E8M0 codes, packed FP4 in I8, U8, BOOL), int8_t for I8, uint16_t for
/// BF16/F16 bit patterns, float for F32, int32_t for I32, int64_t for I64. Throws
/// dsv4::error naming the file and tensor on a dtype mismatch or if the data is not
/// aligned for T (the official writer aligns every tensor; a hand-made file may not).
template <class T> const T* tensor_data(const tensor_view& v) {
    if (!detail::dtype_holds<T>(v.type))
        throw error(std::string(v.file) + ": tensor " + detail::quote(v.name) + " is " +
                    std::string(dtype_name(v.type)) + ", which cannot be read as a " + std::to_string(sizeof(T)) +
                    "-byte element type of this kind");
    if (reinterpret_cast<std::uintptr_t>(v.data) % alignof(T) != 0)
        throw error(std::string(v.file) + ": tensor " + detail::quote(v.name) + " data at file offset " +
                    std::to_string(v.file_offset) + " is not aligned to " + std::to_string(alignof(T)) + " bytes");
    return reinterpret_cast<const T*>(v.data);
}

// ------------------------------------------------------------------------------ parsing

/// Parses and validates the header of a safetensors file whose complete contents are
/// `file` (normally a mapping; only the header is read, the data only bounds-checked).
/// `path` names the file in errors. Pure function: the fuzzable core of the reader.
inline safetensors_header parse_safetensors_header(std::span<const unsigned char> file, std::string_view path) {
    const std::string p(path);
    auto fail = [&](const std::string& why) -> void { throw error(p + ": " + why); };
    if (file.size() < 8)
        fail("file is " + std::to_string(file.size()) + " bytes, too short for a safetensors header length");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | file[std::size_t(i)];
    if (n > file.size() - 8)
        fail("header length " + std::to_string(n) + " exceeds the file size " + std::to_string(file.size()) +
             " (truncated or not a safetensors file)");
    if (n > max_safetensors_header_bytes)
        fail("header length " + std::to_string(n) + " exceeds the limit of " +
             std::to_string(max_safetensors_header_bytes) + " bytes");
    if (n < 2) fail("header of " + std::to_string(n) + " bytes cannot hold a JSON object");

    safetensors_header h;
    h.header_bytes = n;
    h.data_start = 8 + n;
    const uint64_t data_size = file.size() - h.data_start;
    const std::string_view text(reinterpret_cast<const char*>(file.data()) + 8, std::size_t(n));
    const nlohmann::json j = detail::parse_json_strict(text, p + ": header");
    if (!j.is_object()) fail(std::string("header is ") + detail::json_type_name(j) + ", not a JSON object");

    h.tensors.reserve(j.size());
    for (const auto& [name, v] : j.items()) {
        if (name == "__metadata__") {
            if (!v.is_object()) fail(std::string("__metadata__ is ") + detail::json_type_name(v) + ", not an object");
            for (const auto& [k, mv] : v.items()) {
                if (!mv.is_string())
                    fail("__metadata__ value " + detail::quote(k) + " is " + detail::json_type_name(mv) +
                         ", not a string");
                h.metadata.emplace_back(k, mv.get<std::string>());
            }
            continue;
        }
        const std::string t = "tensor " + detail::quote(name);
        if (name.empty()) fail("a tensor has an empty name");
        if (!v.is_object()) fail(t + " is described by " + detail::json_type_name(v) + ", not an object");
        for (const auto& [k, unused] : v.items()) {
            (void)unused;
            if (k != "dtype" && k != "shape" && k != "data_offsets") fail(t + ": unknown field " + detail::quote(k));
        }
        safetensors_entry e;
        e.name = name;
        const auto dt = v.find("dtype");
        if (dt == v.end() || !dt->is_string()) fail(t + ": missing or non-string dtype");
        const auto parsed = parse_dtype(dt->get_ref<const std::string&>());
        if (!parsed) fail(t + ": unknown dtype " + detail::quote(dt->get_ref<const std::string&>()));
        e.type = *parsed;
        const auto sh = v.find("shape");
        if (sh == v.end() || !sh->is_array()) fail(t + ": missing shape, or shape is not an array");
        if (sh->size() > max_tensor_rank)
            fail(t + ": rank " + std::to_string(sh->size()) + " exceeds " + std::to_string(max_tensor_rank));
        e.shape.rank = uint32_t(sh->size());
        for (std::size_t i = 0; i < sh->size(); ++i)
            if (!detail::json_u64((*sh)[i], e.shape.dims[i]))
                fail(t + ": shape[" + std::to_string(i) + "] is not a non-negative integer");
        const auto off = v.find("data_offsets");
        if (off == v.end() || !off->is_array() || off->size() != 2)
            fail(t + ": data_offsets must be an array of two integers");
        if (!detail::json_u64((*off)[0], e.begin) || !detail::json_u64((*off)[1], e.end))
            fail(t + ": data_offsets must be non-negative integers");
        if (e.begin > e.end)
            fail(t + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + ") are reversed");
        uint64_t count = 0, bytes = 0;
        if (!checked_numel(e.shape, count) || __builtin_mul_overflow(count, dtype_size(e.type), &bytes))
            fail(t + ": shape " + to_string(e.shape) + " overflows the byte count");
        if (bytes != e.end - e.begin)
            fail(t + ": shape " + to_string(e.shape) + " x " + std::string(dtype_name(e.type)) + " is " +
                 std::to_string(bytes) + " bytes but data_offsets span " + std::to_string(e.end - e.begin));
        if (e.end > data_size)
            fail(t + ": data [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + ") ends beyond the " +
                 std::to_string(data_size) + " data bytes of the file (truncated file?)");
        h.tensors.push_back(std::move(e));
    }

    // Overlaps: sort the non-empty ranges by start; each must end before the next starts.
    std::vector<const safetensors_entry*> by_offset;
    by_offset.reserve(h.tensors.size());
    for (const auto& e : h.tensors)
        if (e.end > e.begin) by_offset.push_back(&e);
    std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) {
        return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
    });
    for (std::size_t i = 1; i < by_offset.size(); ++i) {
        const auto* a = by_offset[i - 1];
        const auto* b = by_offset[i];
        if (b->begin < a->end)
            fail("tensor " + detail::quote(a->name) + " [" + std::to_string(a->begin) + ", " + std::to_string(a->end) +
                 ") overlaps tensor " + detail::quote(b->name) + " [" + std::to_string(b->begin) + ", " +
                 std::to_string(b->end) + ")");
    }
    // nlohmann objects iterate in key order, so tensors and metadata are sorted already.
    return h;
}

/// Parses and validates a model.safetensors.index.json: an object whose "weight_map" is
/// an object of tensor name -> shard file name (a plain name in the index's directory:
/// no '/', '\\', NUL, "." or ".."); an optional "metadata" object whose "total_size",
/// if present, is a non-negative integer. Other top-level keys are ignored.
inline safetensors_index parse_safetensors_index(std::string_view json_text, std::string_view path) {
    const std::string p(path);
    auto fail = [&](const std::string& why) -> void { throw error(p + ": " + why); };
    const nlohmann::json j = detail::parse_json_strict(json_text, p);
    if (!j.is_object()) fail(std::string("index is ") + detail::json_type_name(j) + ", not a JSON object");
    safetensors_index idx;
    if (const auto m = j.find("metadata"); m != j.end() && !m->is_null()) {
        if (!m->is_object()) fail("metadata is not an object");
        if (const auto ts = m->find("total_size"); ts != m->end()) {
            uint64_t v = 0;
            if (!detail::json_u64(*ts, v)) fail("metadata.total_size is not a non-negative integer");
            idx.total_size = v;
        }
    }
    const auto wm = j.find("weight_map");
    if (wm == j.end()) fail("no weight_map");
    if (!wm->is_object()) fail(std::string("weight_map is ") + detail::json_type_name(*wm) + ", not an object");
    if (wm->empty()) fail("weight_map lists no tensors");
    idx.weight_map.reserve(wm->size());
    for (const auto& [name, v] : wm->items()) {
        const std::string t = "weight_map entry " + detail::quote(name);
        if (name.empty()) fail("weight_map has an empty tensor name");
        if (!v.is_string()) fail(t + " is " + detail::json_type_name(v) + ", not a shard file name");
        const std::string& shard = v.get_ref<const std::string&>();
        if (shard.empty() || shard == "." || shard == ".." || shard.size() > 255 ||
            shard.find_first_of(std::string_view("/\\\0", 3)) != std::string::npos)
            fail(t + " names shard " + detail::quote(shard) + ", which is not a plain file name");
        idx.weight_map.emplace_back(name, shard);
        idx.shards.push_back(shard);
    }
    std::sort(idx.shards.begin(), idx.shards.end());
    idx.shards.erase(std::unique(idx.shards.begin(), idx.shards.end()), idx.shards.end());
    return idx;
}

// ------------------------------------------------------------------------------ files

namespace detail {
inline std::string errno_text(int e) { return std::system_category().message(e); }

/// Opens a regular file read-only without blocking (a FIFO in a hostile directory would
/// otherwise block open()); returns the fd and its size.
inline int open_regular(const std::string& path, uint64_t& size, const char* what) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) throw error(path + ": cannot open " + what + ": " + errno_text(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int e = errno;
        ::close(fd);
        throw error(path + ": cannot stat " + what + ": " + errno_text(e));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        throw error(path + ": " + what + " is not a regular file");
    }
    size = uint64_t(st.st_size);
    return fd;
}

/// Reads a whole (small) file; refuses files larger than `limit` bytes.
inline std::string read_file_limited(const std::string& path, uint64_t limit, const char* what) {
    uint64_t size = 0;
    const int fd = open_regular(path, size, what);
    if (size > limit) {
        ::close(fd);
        throw error(path + ": " + what + " is " + std::to_string(size) + " bytes, more than the limit of " +
                    std::to_string(limit));
    }
    std::string out(std::size_t(size), '\0');
    std::size_t got = 0;
    while (got < out.size()) {
        const ssize_t r = ::read(fd, out.data() + got, out.size() - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            const int e = errno;
            ::close(fd);
            throw error(path + ": cannot read " + what + (r < 0 ? ": " + errno_text(e) : ": file shrank"));
        }
        got += std::size_t(r);
    }
    ::close(fd);
    return out;
}

inline bool is_directory(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
inline bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}
inline std::string parent_dir(const std::string& path) {
    const auto slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : path.substr(0, slash);
}
inline std::string join(const std::string& dir, const std::string& name) {
    return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}
}  // namespace detail

/// A read-only private mapping of a whole regular file (RAII, move-only).
class mapped_file {
public:
    mapped_file() = default;
    /// Maps `path`; throws dsv4::error naming the file if it cannot be opened, is not a
    /// regular file or cannot be mapped. An empty file gives an empty mapping.
    static mapped_file open(const std::string& path) {
        mapped_file m;
        m.path_ = path;
        uint64_t size = 0;
        const int fd = detail::open_regular(path, size, "file");
        if (size > 0) {
            void* a = ::mmap(nullptr, std::size_t(size), PROT_READ, MAP_PRIVATE, fd, 0);
            if (a == MAP_FAILED) {
                const int e = errno;
                ::close(fd);
                throw error(path + ": cannot map: " + detail::errno_text(e));
            }
            m.addr_ = a;
            m.size_ = std::size_t(size);
        }
        ::close(fd);
        return m;
    }
    mapped_file(mapped_file&& o) noexcept
        : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)), path_(std::move(o.path_)) {}
    mapped_file& operator=(mapped_file&& o) noexcept {
        if (this != &o) {
            unmap();
            addr_ = std::exchange(o.addr_, nullptr);
            size_ = std::exchange(o.size_, 0);
            path_ = std::move(o.path_);
        }
        return *this;
    }
    mapped_file(const mapped_file&) = delete;
    mapped_file& operator=(const mapped_file&) = delete;
    ~mapped_file() { unmap(); }

    std::span<const unsigned char> bytes() const { return {static_cast<const unsigned char*>(addr_), size_}; }
    const std::string& path() const { return path_; }
    const void* address() const { return addr_; }
    std::size_t size() const { return size_; }

    /// Maps every page of the file into this process now (MADV_POPULATE_READ, Linux 5.14+),
    /// reading from disk what the page cache lacks, so that later reads through the mapping
    /// take no page fault (a decode step otherwise faults in each routed expert's pages the
    /// first time it is picked). Returns false, having asked only for readahead
    /// (MADV_WILLNEED), where the kernel lacks it. Throws dsv4::error naming the file on an
    /// I/O error or a file cut short since it was mapped (EFAULT), not a SIGBUS.
    bool populate() const {
        if (!addr_) return true;
#ifdef MADV_POPULATE_READ
        constexpr std::size_t step = std::size_t(1) << 30;  // EINTR resumes at the last step
        bool supported = true;
        for (std::size_t at = 0; at < size_ && supported;) {
            const std::size_t n = std::min(step, size_ - at);
            if (::madvise(static_cast<char*>(addr_) + at, n, MADV_POPULATE_READ) == 0) {
                at += n;
                continue;
            }
            const int e = errno;
            if (e == EINTR || e == EAGAIN) continue;
            if (e == EINVAL && at == 0) {  // kernel < 5.14: no MADV_POPULATE_READ
                supported = false;
                continue;
            }
            throw error(path_ + ": cannot populate the mapping (bytes " + std::to_string(at) + ".." +
                        std::to_string(at + n) + "): " +
                        (e == EFAULT ? std::string("the file is shorter than when it was mapped")
                                     : detail::errno_text(e)));
        }
        if (supported) return true;
#endif
        ::madvise(addr_, size_, MADV_WILLNEED);  // advice only: its failure changes nothing
        return false;
    }

    /// Bytes of [offset, offset+len) of the mapping that are in the page cache (mincore),
    /// page-granular; the range is clamped to the file.
    uint64_t resident_bytes(uint64_t offset = 0, uint64_t len = UINT64_MAX) const {
        if (!addr_ || offset >= size_) return 0;
        len = std::min<uint64_t>(len, size_ - offset);
        const std::size_t page = std::size_t(::sysconf(_SC_PAGESIZE));
        const std::size_t first = std::size_t(offset) / page * page;
        const std::size_t last = std::size_t(offset + len);  // exclusive
        const std::size_t chunk_pages = 16384;                // 64 MiB of 4 KiB pages per call
        std::vector<unsigned char> vec(chunk_pages);
        uint64_t resident = 0;
        for (std::size_t at = first; at < last;) {
            const std::size_t n = std::min(chunk_pages * page, last - at);
            const std::size_t pages = (n + page - 1) / page;
            auto* p = static_cast<unsigned char*>(addr_) + at;
            if (::mincore(p, n, vec.data()) != 0)
                throw error(path_ + ": mincore failed: " + detail::errno_text(errno));
            for (std::size_t i = 0; i < pages; ++i) {
                if (!(vec[i] & 1)) continue;
                const std::size_t lo = std::max<std::size_t>(at + i * page, std::size_t(offset));
                const std::size_t hi = std::min<std::size_t>(at + (i + 1) * page, last);
                resident += hi - lo;
            }
            at += n;
        }
        return resident;
    }

private:
    void unmap() noexcept {
        if (addr_) ::munmap(addr_, size_);
        addr_ = nullptr;
        size_ = 0;
    }
    void* addr_ = nullptr;
    std::size_t size_ = 0;
    std::string path_;
};

namespace detail {
/// For each [lo, hi) range, the summed Rss of the /proc/self/smaps VMAs inside it (a
/// mapping splits into several VMAs once parts of it get different madvise flags).
inline std::optional<std::vector<uint64_t>> smaps_rss(const std::vector<std::pair<uintptr_t, uintptr_t>>& ranges) {
    std::ifstream f("/proc/self/smaps");
    if (!f) return std::nullopt;
    std::vector<uint64_t> rss(ranges.size(), 0);
    std::ptrdiff_t current = -1;
    for (std::string line; std::getline(f, line);) {
        unsigned long long lo = 0, hi = 0, kb = 0;
        char dash = 0;
        if (std::sscanf(line.c_str(), "%llx%c%llx", &lo, &dash, &hi) == 3 && dash == '-') {
            current = -1;
            for (std::size_t i = 0; i < ranges.size(); ++i)
                if (lo < hi && lo >= ranges[i].first && hi <= ranges[i].second) current = std::ptrdiff_t(i);
        } else if (current >= 0 && std::sscanf(line.c_str(), "Rss: %llu kB", &kb) == 1) {
            rss[std::size_t(current)] += uint64_t(kb) * 1024;
        }
    }
    return rss;
}
}  // namespace detail

// ------------------------------------------------------------------------------ checkpoint

/// A safetensors checkpoint: one file, or the shards of a model.safetensors.index.json,
/// mapped read-only. Tensors are looked up by name; views are zero-copy.
class checkpoint {
public:
    /// Opens `path`, which is one of
    ///   * a directory holding model.safetensors.index.json (preferred) or model.safetensors;
    ///   * a *.json index file (shards are resolved next to it);
    ///   * a single .safetensors file.
    /// Maps every file, validates every header and the index against the shards (see the
    /// top of this file). Throws dsv4::error naming the file and tensor on any problem.
    static checkpoint open(const std::string& path) {
        checkpoint c;
        c.s_ = std::make_unique<state>();
        state& s = *c.s_;
        s.path = path;
        std::string index_path, single_path;
        if (detail::is_directory(path)) {
            const std::string idx = detail::join(path, "model.safetensors.index.json");
            const std::string one = detail::join(path, "model.safetensors");
            if (detail::exists(idx)) index_path = idx;
            else if (detail::exists(one)) single_path = one;
            else throw error(path + ": directory has neither model.safetensors.index.json nor model.safetensors");
        } else if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
            index_path = path;
        } else {
            single_path = path;
        }

        // Views point into s.files (paths, header names): build them only once every file
        // is in place, never push to s.files afterwards.
        if (!single_path.empty()) {
            s.files.push_back(load_file(single_path));
            for (const auto& e : s.files[0].header.tensors) s.views.push_back(view_of(s.files[0], e));
            return c;
        }

        s.index_path = index_path;
        const std::string dir = detail::parent_dir(index_path);
        const safetensors_index idx =
            parse_safetensors_index(detail::read_file_limited(index_path, max_safetensors_index_bytes, "index"),
                                    index_path);
        s.total_size = idx.total_size;
        s.files.reserve(idx.shards.size());
        for (const auto& shard : idx.shards) {
            try {
                s.files.push_back(load_file(detail::join(dir, shard)));
            } catch (const error& e) {
                // Name the index and one tensor it maps to this shard, then the cause.
                std::string example;
                for (const auto& [t, f] : idx.weight_map)
                    if (f == shard) { example = t; break; }
                throw error(index_path + ": shard " + detail::quote(shard) + " (holding tensor " +
                            detail::quote(example) + ") failed to load: " + e.what());
            }
        }
        auto file_of = [&](const std::string& shard) -> const loaded_file& {
            const auto it = std::lower_bound(idx.shards.begin(), idx.shards.end(), shard);
            return s.files[std::size_t(it - idx.shards.begin())];
        };
        s.views.reserve(idx.weight_map.size());
        for (const auto& [name, shard] : idx.weight_map) {
            const loaded_file& f = file_of(shard);
            const safetensors_entry* e = find_entry(f.header, name);
            if (!e)
                throw error(index_path + ": tensor " + detail::quote(name) + " is mapped to shard " +
                            detail::quote(shard) + ", which has no such tensor");
            s.views.push_back(view_of(f, *e));
        }
        for (std::size_t i = 0; i < s.files.size(); ++i) {
            for (const auto& e : s.files[i].header.tensors) {
                const auto it = std::lower_bound(
                    idx.weight_map.begin(), idx.weight_map.end(), e.name,
                    [](const auto& entry, const std::string& n) { return entry.first < n; });
                if (it == idx.weight_map.end() || it->first != e.name)
                    throw error(s.files[i].map.path() + ": tensor " + detail::quote(e.name) +
                                " is not listed in " + index_path);
                if (it->second != idx.shards[i])
                    throw error(s.files[i].map.path() + ": tensor " + detail::quote(e.name) +
                                " is also in this shard, but " + index_path + " maps it to " +
                                detail::quote(it->second));
            }
        }
        return c;
    }

    checkpoint() = default;
    checkpoint(checkpoint&&) noexcept = default;
    checkpoint& operator=(checkpoint&&) noexcept = default;

    /// Every tensor, sorted by name.
    std::span<const tensor_view> tensors() const { return s_ ? std::span<const tensor_view>(s_->views) : std::span<const tensor_view>(); }
    std::size_t size() const { return s_ ? s_->views.size() : 0; }
    /// The tensor called `name`, or nullptr.
    const tensor_view* find(std::string_view name) const {
        const auto v = tensors();
        const auto it = std::lower_bound(v.begin(), v.end(), name,
                                         [](const tensor_view& t, std::string_view n) { return t.name < n; });
        return it != v.end() && it->name == name ? &*it : nullptr;
    }
    /// The tensor called `name`; throws dsv4::error naming the checkpoint if absent.
    const tensor_view& at(std::string_view name) const {
        if (const tensor_view* t = find(name)) return *t;
        throw error(path() + ": no tensor " + detail::quote(name));
    }
    /// Whether any tensor name starts with `prefix`.
    bool has_prefix(std::string_view prefix) const {
        const auto v = tensors();
        const auto it = std::lower_bound(v.begin(), v.end(), prefix,
                                         [](const tensor_view& t, std::string_view n) { return t.name < n; });
        return it != v.end() && it->name.substr(0, prefix.size()) == prefix;
    }
    /// The path given to open().
    std::string path() const { return s_ ? s_->path : std::string(); }
    /// The index file, empty for a single-file checkpoint.
    std::string index_path() const { return s_ ? s_->index_path : std::string(); }
    /// The mapped files (shards in name order).
    std::vector<std::string> files() const {
        std::vector<std::string> out;
        if (s_)
            for (const auto& f : s_->files) out.push_back(f.map.path());
        return out;
    }
    /// The index's metadata.total_size, if it has one (not checked: writers disagree on it).
    std::optional<uint64_t> index_total_size() const { return s_ ? s_->total_size : std::nullopt; }
    /// "__metadata__" of the file holding `t`.
    const std::vector<std::pair<std::string, std::string>>& file_metadata(const tensor_view& t) const {
        return file_for(t).header.metadata;
    }

    /// Mapped, resident and touched bytes over all files (see memory_report).
    memory_report memory() const {
        memory_report r;
        if (!s_) return r;
        std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
        for (const auto& f : s_->files) {
            ++r.files;
            r.bytes_mapped += f.map.size();
            r.bytes_resident += f.map.resident_bytes();
            const auto a = reinterpret_cast<uintptr_t>(f.map.address());
            const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
            if (a) ranges.emplace_back(a, a + (f.map.size() + page - 1) / page * page);
        }
        if (const auto rss = detail::smaps_rss(ranges)) {
            uint64_t sum = 0;
            for (uint64_t b : *rss) sum += b;
            r.bytes_touched = sum;
        }
        return r;
    }
    /// Maps every page of every file now (mapped_file::populate): no page faults later.
    /// Returns false where the kernel lacks MADV_POPULATE_READ (readahead asked instead).
    bool populate() const {
        bool all = true;
        if (s_)
            for (const auto& f : s_->files) all = f.map.populate() && all;
        return all;
    }
    /// Bytes of `t` in the page cache now (mincore; partial pages counted by overlap).
    uint64_t resident_bytes(const tensor_view& t) const {
        return file_for(t).map.resident_bytes(t.file_offset, t.bytes);
    }

private:
    struct loaded_file {
        mapped_file map;
        safetensors_header header;
    };
    struct state {
        std::string path, index_path;
        std::optional<uint64_t> total_size;
        std::vector<loaded_file> files;
        std::vector<tensor_view> views;  // sorted by name
    };

    static loaded_file load_file(const std::string& path) {
        loaded_file f;
        f.map = mapped_file::open(path);
        f.header = parse_safetensors_header(f.map.bytes(), path);
        return f;
    }
    static const safetensors_entry* find_entry(const safetensors_header& h, const std::string& name) {
        const auto it = std::lower_bound(h.tensors.begin(), h.tensors.end(), name,
                                         [](const safetensors_entry& e, const std::string& n) { return e.name < n; });
        return it != h.tensors.end() && it->name == name ? &*it : nullptr;
    }
    static tensor_view view_of(const loaded_file& f, const safetensors_entry& e) {
        tensor_view v;
        v.name = e.name;
        v.file = f.map.path();
        v.type = e.type;
        v.shape = e.shape;
        v.bytes = e.end - e.begin;
        v.file_offset = f.header.data_start + e.begin;
        v.data = f.map.bytes().data() + v.file_offset;
        return v;
    }
    const loaded_file& file_for(const tensor_view& t) const {
        if (s_)
            for (const auto& f : s_->files)
                if (t.file.data() == f.map.path().data()) return f;
        throw error(path() + ": tensor " + detail::quote(t.name) + " is not from this checkpoint");
    }

    // Behind a pointer: views point into these strings and mappings, and a move must not
    // relocate them.
    std::unique_ptr<state> s_;
};

// ------------------------------------------------------------------------------ verification

namespace detail {
/// Bad elements of one chunk: count and the first one (index within the chunk).
struct verify_scan {
    uint64_t count = 0;
    uint64_t first = UINT64_MAX;
};
template <class T, class Bad> verify_scan scan_elements(const T* v, std::size_t n, Bad&& bad) noexcept {
    verify_scan r;
    for (std::size_t i = 0; i < n; ++i) r.count += bad(v[i]) ? 1u : 0u;  // branch-free: vectorizes
    if (r.count)
        for (std::size_t i = 0; i < n; ++i)
            if (bad(v[i])) {
                r.first = i;
                break;
            }
    return r;
}
/// Invalid bit patterns of `t` in n_bytes bytes at p (aligned to 8, whole elements).
inline verify_scan scan_invalid(dtype t, const unsigned char* p, std::size_t n_bytes) noexcept {
    switch (t) {
        case dtype::f8_e4m3: return scan_elements(p, n_bytes, [](uint8_t b) { return (b & 0x7F) == 0x7F; });
        case dtype::f8_e8m0: return scan_elements(p, n_bytes, [](uint8_t b) { return b == 0xFF; });
        case dtype::bf16:
            return scan_elements(reinterpret_cast<const uint16_t*>(p), n_bytes / 2,
                                 [](uint16_t v) { return (v & 0x7F80) == 0x7F80; });
        case dtype::f16:
            return scan_elements(reinterpret_cast<const uint16_t*>(p), n_bytes / 2,
                                 [](uint16_t v) { return (v & 0x7C00) == 0x7C00; });
        case dtype::f32:
            return scan_elements(reinterpret_cast<const uint32_t*>(p), n_bytes / 4,
                                 [](uint32_t v) { return (v & 0x7F800000u) == 0x7F800000u; });
        default: return {};  // FP4 in I8, integers, BOOL: every pattern is valid
    }
}
inline const char* invalid_kind(dtype t, bool plural) {
    switch (t) {
        case dtype::f8_e4m3: return plural ? "FP8 e4m3 NaN codes (0x7F/0xFF)" : "FP8 e4m3 NaN code (0x7F/0xFF)";
        case dtype::f8_e8m0: return plural ? "E8M0 NaN scales (0xFF)" : "E8M0 NaN scale (0xFF)";
        default: return plural ? "non-finite values (NaN/Inf)" : "non-finite value (NaN/Inf)";
    }
}
}  // namespace detail

/// Reads every byte of every tensor of `ck` with pread (not through the mapping) and checks
/// the bit patterns: FP8 e4m3 NaN codes (0x7F, 0xFF), E8M0 NaN scales (0xFF), NaN/Inf in BF16,
/// F16 and F32 tensors. Read errors and short reads (a file cut after it was opened) are
/// problems of the tensor being read. Never throws for what it finds: every problem is in
/// the report (one entry per tensor, sorted by name). Chunks of opt.chunk_bytes are spread
/// over opt.threads reader threads in file order (sequential reads per file stay close).
/// Throws dsv4::error only for bad options.
inline verify_report verify_checkpoint(const checkpoint& ck, const verify_options& opt = {}) {
    const auto t0 = std::chrono::steady_clock::now();
    if (opt.chunk_bytes == 0) throw error("dsv4::verify_checkpoint: chunk_bytes must be positive");
    const std::size_t chunk = (opt.chunk_bytes + 63) / 64 * 64;
    verify_report rep;
    const std::vector<std::string> files = ck.files();
    const auto views = ck.tensors();
    rep.files = files.size();
    rep.tensors = views.size();

    // Tensors in file order (file, then offset) so that the chunks of one file are read
    // front to back.
    struct item {
        const tensor_view* t;
        std::size_t file;
    };
    std::vector<item> order;
    order.reserve(views.size());
    for (const auto& v : views) {
        std::size_t f = 0;
        while (f < files.size() && files[f] != v.file) ++f;
        order.push_back({&v, f});
    }
    std::sort(order.begin(), order.end(), [](const item& a, const item& b) {
        return a.file != b.file ? a.file < b.file : a.t->file_offset < b.t->file_offset;
    });

    // One descriptor per file (pread is safe from any thread); a file that no longer opens
    // is a read error of each of its tensors.
    std::vector<int> fds(files.size(), -1);
    std::vector<std::string> open_err(files.size());
    for (std::size_t f = 0; f < files.size(); ++f) {
        try {
            uint64_t size = 0;
            fds[f] = detail::open_regular(files[f], size, "file");
            (void)::posix_fadvise(fds[f], 0, 0, POSIX_FADV_SEQUENTIAL);
        } catch (const error& e) {
            open_err[f] = e.what();
        }
    }

    struct piece {
        std::size_t item;
        uint64_t offset, bytes;  // within the tensor
    };
    struct result {
        detail::verify_scan scan;
        int err = 0;              // errno of a failed pread
        bool short_read = false;  // the file ended early
        uint64_t at = 0;          // file offset of the failure
    };
    std::vector<piece> pieces;
    for (std::size_t i = 0; i < order.size(); ++i)
        if (fds[order[i].file] >= 0)
            for (uint64_t o = 0; o < order[i].t->bytes; o += chunk)
                pieces.push_back({i, o, std::min<uint64_t>(chunk, order[i].t->bytes - o)});
    std::vector<result> results(pieces.size());

    unsigned n_threads = opt.threads ? opt.threads : std::max(1u, std::thread::hardware_concurrency());
    n_threads = unsigned(std::max<std::size_t>(1, std::min<std::size_t>(n_threads, pieces.size())));
    rep.threads = n_threads;
    std::atomic<std::size_t> next{0};
    std::atomic<uint64_t> bytes_read{0};
    auto worker = [&]() {
        std::unique_ptr<uint64_t[]> buf(new uint64_t[chunk / 8]);
        unsigned char* b = reinterpret_cast<unsigned char*>(buf.get());
        for (std::size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < pieces.size();) {
            const piece& pc = pieces[i];
            const item& it = order[pc.item];
            result& r = results[i];
            const uint64_t base = it.t->file_offset + pc.offset;
            uint64_t got = 0;
            while (got < pc.bytes) {
                const ssize_t n = ::pread(fds[it.file], b + got, std::size_t(pc.bytes - got), off_t(base + got));
                if (n < 0 && errno == EINTR) continue;
                if (n <= 0) {
                    if (n < 0) r.err = errno;
                    else r.short_read = true;
                    r.at = base + got;
                    break;
                }
                got += uint64_t(n);
            }
            bytes_read.fetch_add(got, std::memory_order_relaxed);
            if (got == pc.bytes) r.scan = detail::scan_invalid(it.t->type, b, std::size_t(pc.bytes));
        }
    };
    if (!pieces.empty()) {
        std::vector<std::thread> pool;
        try {
            for (unsigned k = 1; k < n_threads; ++k) pool.emplace_back(worker);
        } catch (const std::system_error&) {  // fewer threads than asked: the others share the work
        }
        worker();
        for (auto& th : pool) th.join();
    }
    for (int fd : fds)
        if (fd >= 0) ::close(fd);

    // Merge the pieces of each tensor (pieces are in item order).
    std::size_t p = 0;
    for (std::size_t i = 0; i < order.size(); ++i) {
        const tensor_view& t = *order[i].t;
        verify_problem pr;
        pr.tensor = std::string(t.name);
        pr.file = std::string(t.file);
        const std::string& oe = open_err[order[i].file];
        if (!oe.empty()) {
            pr.read_error = true;
            pr.what = "not read: " + oe;
            rep.problems.push_back(std::move(pr));
            continue;
        }
        uint64_t count = 0, first = UINT64_MAX;
        const result* failed = nullptr;
        const std::size_t es = dtype_size(t.type);
        for (; p < pieces.size() && pieces[p].item == i; ++p) {
            const result& r = results[p];
            if ((r.err || r.short_read) && !failed) failed = &r;
            count += r.scan.count;
            if (r.scan.count && first == UINT64_MAX) first = pieces[p].offset / es + r.scan.first;
        }
        if (failed) {
            pr.read_error = true;
            pr.what = failed->short_read ? "short read: the file ends at byte " + std::to_string(failed->at) +
                                               ", inside the tensor's data [" + std::to_string(t.file_offset) + ", " +
                                               std::to_string(t.file_offset + t.bytes) + ")"
                                         : "read error at file offset " + std::to_string(failed->at) + ": " +
                                               detail::errno_text(failed->err);
        } else if (count) {
            pr.count = count;
            pr.first = first;
            pr.what = std::to_string(count) + " " + detail::invalid_kind(t.type, count > 1) + ", first at element " +
                      std::to_string(first) + " of " + std::string(dtype_name(t.type)) + " " + to_string(t.shape);
        } else {
            continue;
        }
        rep.problems.push_back(std::move(pr));
    }
    std::sort(rep.problems.begin(), rep.problems.end(),
              [](const verify_problem& a, const verify_problem& b) { return a.tensor < b.tensor; });
    rep.bytes = bytes_read.load();
    rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return rep;
}

/// One line for a problem: "FILE: tensor 'NAME': WHAT".
inline std::string to_string(const verify_problem& p) {
    return p.file + ": tensor " + detail::quote(p.tensor) + ": " + p.what;
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4
