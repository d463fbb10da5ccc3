// dsv4-stream-bench: the numbers behind docs/streaming.md (routed experts streamed from disk).
//
//   dsv4-stream-bench disk DIR|FILE [--bytes N=2G] [--block B=13.4M] [--repeat R=1]
//       the disk's own read bandwidth over the files given (all *.safetensors of DIR): one
//       sequential stream of 4 MiB reads, then random reads of B bytes (4 KiB aligned) at
//       queue depths 1, 2, 4, 8, 16 (that many threads issuing pread), O_DIRECT and buffered
//       (the page cache dropped behind every read), R passes each (median and range printed).
//       Drop the page cache before running.
//   dsv4-stream-bench memory [--bytes N=1G] [--threads T=all]
//       DRAM read bandwidth (a buffer of N bytes summed by T threads, best of 5 passes)
//   dsv4-stream-bench replay TRACE --budget B[,B...] [--policy lru,lfu,belady] [--skip N]
//       replays a routing trace (dsv4-generate --trace) against each policy and budget (slots =
//       budget / the trace's slot bytes, or --slot-bytes): hit rate, and bytes missed per
//       acquire line. The same bookkeeping as the live cache (expert_cache_index); belady is the
//       offline optimum (evict the expert used furthest in the future). --skip N ignores the
//       first N lines in the counts (the cache still warms up on them).
#include <dsv4/io/expert_store.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
double since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

uint64_t bytes_arg(std::string v) {
    double mul = 1;
    if (!v.empty() && (v.back() == 'K' || v.back() == 'M' || v.back() == 'G')) {
        mul = v.back() == 'K' ? 1024.0 : v.back() == 'M' ? 1048576.0 : 1073741824.0;
        v.pop_back();
    }
    char* end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    if (v.empty() || *end || d <= 0) throw dsv4::error("bad byte count '" + v + "'");
    return uint64_t(d * mul);
}

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    for (std::string x; std::getline(in, x, ',');)
        if (!x.empty()) out.push_back(x);
    return out;
}

// ---------------------------------------------------------------------------------- disk

struct disk_file {
    std::string path;
    uint64_t size = 0;
    int fd_buffered = -1, fd_direct = -1;
};

double read_random(const std::vector<disk_file>& files, bool direct, unsigned qd, uint64_t block, uint64_t total) {
    const uint64_t n_reads = std::max<uint64_t>(qd, total / block);
    std::atomic<uint64_t> next{0};
    std::atomic<bool> failed{false};
    const auto t0 = clock_type::now();
    std::vector<std::thread> th;
    for (unsigned q = 0; q < qd; ++q)
        th.emplace_back([&, q] {
            void* buf = nullptr;
            if (posix_memalign(&buf, 4096, dsv4::detail::align_up(block)) != 0) {
                failed = true;
                return;
            }
            std::mt19937_64 rng(12345 + q);
            for (uint64_t i; (i = next.fetch_add(1)) < n_reads;) {
                const disk_file& f = files[rng() % files.size()];
                const uint64_t span = f.size > block + 4096 ? f.size - block - 4096 : 0;
                const uint64_t off = dsv4::detail::align_down(span ? rng() % span : 0);
                const uint64_t len = dsv4::detail::align_up(block);
                int err = 0;
                const int fd = direct ? f.fd_direct : f.fd_buffered;
                (void)dsv4::detail::pread_full(fd, static_cast<unsigned char*>(buf), len, off, err);
                if (err) failed = true;
                if (!direct) ::posix_fadvise(fd, off_t(off), off_t(len), POSIX_FADV_DONTNEED);
            }
            std::free(buf);
        });
    for (auto& t : th) t.join();
    const double s = since(t0);
    if (failed) throw dsv4::error("a read failed (O_DIRECT not supported here?)");
    return double(n_reads * dsv4::detail::align_up(block)) / s;
}

double read_sequential(const disk_file& f, bool direct, uint64_t total) {
    const uint64_t piece = uint64_t(4) << 20;
    void* buf = nullptr;
    if (posix_memalign(&buf, 4096, piece) != 0) throw dsv4::error("out of memory");
    const int fd = direct ? f.fd_direct : f.fd_buffered;
    uint64_t done = 0;
    const auto t0 = clock_type::now();
    for (uint64_t off = 0; done < total && off + piece <= f.size; off += piece) {
        int err = 0;
        done += dsv4::detail::pread_full(fd, static_cast<unsigned char*>(buf), piece, off, err);
        if (err) throw dsv4::error(f.path + ": read error");
        if (!direct) ::posix_fadvise(fd, off_t(off), off_t(piece), POSIX_FADV_DONTNEED);
    }
    const double s = since(t0);
    std::free(buf);
    return double(done) / s;
}

int disk(int argc, char** argv) {
    if (argc < 3) throw dsv4::error("disk: give a directory or file");
    uint64_t total = uint64_t(2) << 30, block = uint64_t(13.4e6);
    unsigned repeat = 1;
    for (int i = 3; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--bytes") total = bytes_arg(argv[i + 1]);
        else if (a == "--repeat") repeat = std::max(1u, unsigned(std::stoul(argv[i + 1])));
        else if (a == "--block") block = bytes_arg(argv[i + 1]);
        else throw dsv4::error("disk: unknown option " + a);
    }
    std::vector<disk_file> files;
    const std::string p = argv[2];
    std::vector<std::string> paths;
    if (std::filesystem::is_directory(p)) {
        for (const auto& e : std::filesystem::directory_iterator(p))
            if (e.path().extension() == ".safetensors") paths.push_back(e.path().string());
        std::sort(paths.begin(), paths.end());
    } else {
        paths.push_back(p);
    }
    if (paths.empty()) throw dsv4::error(p + ": no *.safetensors files");
    for (const auto& path : paths) {
        disk_file f;
        f.path = path;
        f.fd_buffered = ::open(path.c_str(), O_RDONLY);
        f.fd_direct = ::open(path.c_str(), O_RDONLY | O_DIRECT);
        if (f.fd_buffered < 0) throw dsv4::error(path + ": cannot open");
        struct stat st {};
        ::fstat(f.fd_buffered, &st);
        f.size = uint64_t(st.st_size);
        files.push_back(f);
    }
    uint64_t all = 0;
    for (const auto& f : files) all += f.size;
    std::printf("disk: %zu files, %.2f GB; %.2f GB per measurement\n", files.size(), double(all) * 1e-9,
                double(total) * 1e-9);
    const disk_file& big = *std::max_element(files.begin(), files.end(),
                                             [](const disk_file& a, const disk_file& b) { return a.size < b.size; });
    for (bool direct : {true, false}) {
        if (direct && big.fd_direct < 0) {
            std::printf("O_DIRECT: not supported on this file system\n");
            continue;
        }
        std::printf("%-9s sequential 4 MiB reads: %.2f GB/s\n", direct ? "O_DIRECT" : "buffered",
                    read_sequential(big, direct, total) * 1e-9);
        std::fflush(stdout);
        for (unsigned qd : {1u, 2u, 4u, 8u, 16u}) {
            // `repeat` passes: median (min-max) in GB/s
            std::vector<double> th;
            for (unsigned r = 0; r < repeat; ++r) th.push_back(read_random(files, direct, qd, block, total) * 1e-9);
            auto show = [](std::vector<double> v) {
                std::sort(v.begin(), v.end());
                char b[64];
                std::snprintf(b, sizeof b, "%.2f GB/s (%.2f-%.2f)", v[v.size() / 2], v.front(), v.back());
                return std::string(b);
            };
            std::printf("%-9s random %.1f MB reads, queue depth %2u: %s\n", direct ? "O_DIRECT" : "buffered",
                        double(block) * 1e-6, qd, show(th).c_str());
            std::fflush(stdout);
        }
    }
    for (auto& f : files) {
        ::close(f.fd_buffered);
        if (f.fd_direct >= 0) ::close(f.fd_direct);
    }
    return 0;
}

// ---------------------------------------------------------------------------------- memory

int memory(int argc, char** argv) {
    uint64_t bytes = uint64_t(1) << 30;
    unsigned threads = std::max(1u, std::thread::hardware_concurrency());
    for (int i = 2; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--bytes") bytes = bytes_arg(argv[i + 1]);
        else if (a == "--threads") threads = unsigned(std::stoul(argv[i + 1]));
        else throw dsv4::error("memory: unknown option " + a);
    }
    const std::size_t n = bytes / 8;
    std::vector<uint64_t> buf(n);
    for (std::size_t i = 0; i < n; ++i) buf[i] = i;
    double best = 0;
    std::atomic<uint64_t> sink{0};
    for (int pass = 0; pass < 5; ++pass) {
        const auto t0 = clock_type::now();
        std::vector<std::thread> th;
        for (unsigned t = 0; t < threads; ++t)
            th.emplace_back([&, t] {
                const std::size_t a = n * t / threads, b = n * (t + 1) / threads;
                uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                for (std::size_t i = a; i + 4 <= b; i += 4) {
                    s0 += buf[i];
                    s1 += buf[i + 1];
                    s2 += buf[i + 2];
                    s3 += buf[i + 3];
                }
                sink += s0 + s1 + s2 + s3;
            });
        for (auto& x : th) x.join();
        best = std::max(best, double(bytes) / since(t0));
    }
    std::printf("memory: %.2f GB/s reading %.2f GB with %u threads (best of 5; checksum %llu)\n", best * 1e-9,
                double(bytes) * 1e-9, threads, (unsigned long long)(sink.load() & 0xff));
    return 0;
}

// ---------------------------------------------------------------------------------- replay

struct trace {
    std::vector<std::vector<uint64_t>> lines;
    uint64_t slot_bytes = 0;
    std::string header;
};

trace read_trace(const std::string& path) {
    std::ifstream f(path);
    if (!f) throw dsv4::error(path + ": cannot open the trace");
    trace t;
    for (std::string line; std::getline(f, line);) {
        if (line.rfind("#", 0) == 0) {
            t.header = line;
            const auto p = line.find("slot_bytes ");
            if (p != std::string::npos) t.slot_bytes = std::stoull(line.substr(p + 11));
            continue;
        }
        std::istringstream in(line);
        std::vector<uint64_t> keys;
        for (uint64_t k; in >> k;) keys.push_back(k);
        if (!keys.empty()) t.lines.push_back(std::move(keys));
    }
    return t;
}

struct replay_result {
    uint64_t hits = 0, misses = 0;
};

replay_result replay_index(const trace& t, std::size_t slots, dsv4::cache_policy p, std::size_t skip) {
    uint64_t keys = 0;  // the key space: the largest key + 1
    for (const auto& l : t.lines)
        for (uint64_t k : l) keys = std::max(keys, k + 1);
    dsv4::expert_cache_index idx(slots, p, keys);
    replay_result r;
    std::vector<uint32_t> pinned;
    for (std::size_t i = 0; i < t.lines.size(); ++i) {
        pinned.clear();
        for (uint64_t k : t.lines[i]) {
            const auto a = idx.acquire(k);
            if (!a) throw dsv4::error("replay: a line has more experts than the cache has slots");
            pinned.push_back(a->slot);
            if (i >= skip) ++(a->hit ? r.hits : r.misses);
        }
        for (uint32_t s : pinned) idx.release(s);
    }
    return r;
}

/// Belady's MIN: on a miss, evict the cached expert whose next use is furthest away (never
/// one of the current line's).
replay_result replay_belady(const trace& t, std::size_t slots, std::size_t skip) {
    // next use of each (line, position)
    std::vector<std::vector<uint64_t>> next(t.lines.size());
    std::map<uint64_t, uint64_t> upcoming;
    for (std::size_t i = t.lines.size(); i-- > 0;) {
        next[i].resize(t.lines[i].size());
        for (std::size_t j = 0; j < t.lines[i].size(); ++j) {
            const auto it = upcoming.find(t.lines[i][j]);
            next[i][j] = it == upcoming.end() ? UINT64_MAX : it->second;
        }
        for (uint64_t k : t.lines[i]) upcoming[k] = i;
    }
    std::map<uint64_t, uint64_t> cached;               // key -> its next use
    std::set<std::pair<uint64_t, uint64_t>> by_next;   // (next use, key)
    replay_result r;
    for (std::size_t i = 0; i < t.lines.size(); ++i) {
        std::set<uint64_t> line(t.lines[i].begin(), t.lines[i].end());
        for (std::size_t j = 0; j < t.lines[i].size(); ++j) {
            const uint64_t k = t.lines[i][j];
            const auto it = cached.find(k);
            if (it != cached.end()) {
                if (i >= skip) ++r.hits;
                by_next.erase({it->second, k});
            } else {
                if (i >= skip) ++r.misses;
                if (cached.size() >= slots) {
                    // furthest next use not in the current line
                    for (auto v = by_next.rbegin(); v != by_next.rend(); ++v)
                        if (!line.count(v->second)) {
                            cached.erase(v->second);
                            by_next.erase(std::next(v).base());
                            break;
                        }
                }
            }
            cached[k] = next[i][j];
            by_next.insert({next[i][j], k});
        }
    }
    return r;
}

int replay(int argc, char** argv) {
    if (argc < 3) throw dsv4::error("replay: give a trace file");
    std::vector<std::string> budgets, policies{"lru", "lfu", "belady"};
    uint64_t slot_bytes = 0;
    std::size_t skip = 0;
    for (int i = 3; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--budget") budgets = split(argv[i + 1]);
        else if (a == "--policy") policies = split(argv[i + 1]);
        else if (a == "--slot-bytes") slot_bytes = bytes_arg(argv[i + 1]);
        else if (a == "--skip") skip = std::size_t(std::stoull(argv[i + 1]));
        else throw dsv4::error("replay: unknown option " + a);
    }
    const trace t = read_trace(argv[2]);
    if (!slot_bytes) slot_bytes = t.slot_bytes;
    if (!slot_bytes) throw dsv4::error("replay: the trace has no slot_bytes: give --slot-bytes");
    if (budgets.empty()) throw dsv4::error("replay: give --budget B[,B...]");
    uint64_t accesses = 0;
    for (const auto& l : t.lines) accesses += l.size();
    std::printf("trace %s: %zu lines, %llu expert uses; %s\n", argv[2], t.lines.size(), (unsigned long long)accesses,
                t.header.c_str());
    std::printf("| budget | slots | policy | hit rate | MB missed per line |\n|---|---|---|---|---|\n");
    for (const auto& b : budgets) {
        const uint64_t bytes = bytes_arg(b);
        const std::size_t slots = std::size_t(bytes / slot_bytes);
        for (const auto& p : policies) {
            replay_result r;
            if (p == "belady") r = replay_belady(t, slots, skip);
            else if (p == "lru" || p == "lfu") r = replay_index(t, slots, p == "lfu" ? dsv4::cache_policy::lfu : dsv4::cache_policy::lru, skip);
            else throw dsv4::error("replay: unknown policy " + p);
            const double n = double(r.hits + r.misses);
            const double lines = double(t.lines.size() > skip ? t.lines.size() - skip : 0);
            std::printf("| %s | %zu | %s | %.1f %% | %.1f |\n", b.c_str(), slots, p.c_str(), n ? 100.0 * double(r.hits) / n : 0.0,
                        lines ? double(r.misses) * double(slot_bytes) * 1e-6 / lines : 0.0);
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const std::string cmd = argc > 1 ? argv[1] : "";
        if (cmd == "disk") return disk(argc, argv);
        if (cmd == "memory") return memory(argc, argv);
        if (cmd == "replay") return replay(argc, argv);
        std::fprintf(stderr,
                     "usage: dsv4-stream-bench disk DIR|FILE [--bytes N] [--block B] [--repeat R]\n"
                     "       dsv4-stream-bench memory [--bytes N] [--threads T]\n"
                     "       dsv4-stream-bench replay TRACE --budget B[,B...] [--policy lru,lfu,belady] [--skip N]"
                     " [--slot-bytes B]\n");
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "dsv4-stream-bench: %s\n", e.what());
        return 1;
    }
}
