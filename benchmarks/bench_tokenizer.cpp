// benchmarks/bench_tokenizer.cpp - dsv4::text::tokenizer encode/decode speed on one core.
//
//   dsv4-bench-tokenizer <tokenizer.json or dir> <goldens.jsonl> [repeats]
//
// Encodes the "text" of every line of a golden file (reference/make_tokenizer.py --goldens)
// line by line: once with an empty word cache (cold: a fresh tokenizer), then `repeats` times
// with the cache filled (warm, best run). MB/s of UTF-8 input per second of the thread's CPU time.
#include <dsv4/text/tokenizer.hpp>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

// CPU time of this thread: on a shared machine wall time also counts the waits for a core.
inline double cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s <tokenizer.json or dir> <goldens.jsonl> [repeats]\n", argv[0]);
        return 2;
    }
    try {
        const int repeats = argc > 3 ? std::atoi(argv[3]) : 5;
        std::vector<std::string> lines;
        std::size_t bytes = 0;
        std::ifstream in(argv[2]);
        for (std::string l; std::getline(in, l);) {
            lines.push_back(nlohmann::json::parse(l).at("text").get<std::string>());
            bytes += lines.back().size();
        }
        const double t0 = cpu_seconds();
        const auto tok = dsv4::text::tokenizer::load(argv[1]);
        const double load_s = cpu_seconds() - t0;
        std::vector<std::vector<int32_t>> ids(lines.size());
        auto encode_all = [&] {
            const double start = cpu_seconds();
            for (std::size_t i = 0; i < lines.size(); ++i) ids[i] = tok.encode(lines[i]);
            return cpu_seconds() - start;
        };
        const double cold = encode_all();
        double warm = 1e30, dec = 1e30;
        std::size_t n_ids = 0;
        for (auto& v : ids) n_ids += v.size();
        for (int r = 0; r < repeats; ++r) {
            warm = std::min(warm, encode_all());
            const double start = cpu_seconds();
            std::size_t out = 0;
            for (auto& v : ids) out += tok.decode(v).size();
            dec = std::min(dec, cpu_seconds() - start);
            if (out != bytes) std::fprintf(stderr, "decode gave %zu bytes, not %zu\n", out, bytes);
        }
        std::printf("load %.2f s; %zu lines, %.2f MB, %zu ids\n", load_s, lines.size(), bytes / 1e6, n_ids);
        std::printf("encode cold cache: %.1f MB/s\nencode warm cache: %.1f MB/s\ndecode: %.1f MB/s\n",
                    bytes / cold / 1e6, bytes / warm / 1e6, bytes / dec / 1e6);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    return 0;
}
