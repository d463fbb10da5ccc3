// benchmarks/bench_tokenizer_regex.cpp - Oniguruma vs PCRE2 (JIT) on DeepSeek-V4's pre-tokenizer.
//
//   dsv4-bench-regex <goldens.jsonl> [repeats]
//
// Runs the three Isolated regex Splits of the V4 tokenizer.json (the pre-tokenizer's whole
// regex work) over the "text" of every line of a golden file written by
// reference/make_tokenizer.py, with each engine, on one core; prints MB/s of input and how many
// pieces differ between the engines (Hugging Face `tokenizers` itself runs Oniguruma). PCRE2 runs
// with PCRE2_UTF | PCRE2_UCP and its JIT. Times are the thread's CPU time.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <nlohmann/json.hpp>
#include <oniguruma.h>
#include <pcre2.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

const char* const patterns[] = {
    "\\p{N}{1,3}",
    "[一-龥\u3040-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
};

using span = std::pair<std::size_t, std::size_t>;

// Isolated split of every piece by `find` (start offset -> next match or none).
template <class Find>
std::vector<span> split_isolated(const std::string& text, const std::vector<span>& pieces, Find&& find) {
    std::vector<span> out;
    for (auto [b, e] : pieces) {
        std::size_t prev = b, at = b;
        while (at <= e) {
            span m;
            if (!find(text, b, e, at, m)) break;
            if (m.first != prev) out.emplace_back(prev, m.first);
            if (m.second != m.first) out.push_back(m);
            prev = m.second;
            at = m.second > m.first ? m.second : m.second + 1;
        }
        if (prev != e) out.emplace_back(prev, e);
    }
    return out;
}

struct onig_engine {
    std::vector<OnigRegex> re;
    OnigRegion* region = onig_region_new();
    onig_engine() {
        OnigEncoding enc = ONIG_ENCODING_UTF8;
        onig_initialize(&enc, 1);
        for (const char* p : patterns) {
            OnigRegex r;
            OnigErrorInfo info;
            const auto* s = reinterpret_cast<const OnigUChar*>(p);
            if (onig_new(&r, s, s + std::char_traits<char>::length(p), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                         ONIG_SYNTAX_RUBY, &info) != ONIG_NORMAL)
                throw std::runtime_error("onig_new failed");
            re.push_back(r);
        }
    }
    std::vector<span> run(const std::string& text) {
        std::vector<span> pieces{{0, text.size()}};
        for (OnigRegex r : re) {
            pieces = split_isolated(text, pieces, [&](const std::string& t, std::size_t b, std::size_t e, std::size_t at,
                                                      span& m) {
                const auto* base = reinterpret_cast<const OnigUChar*>(t.data());
                const int rc = onig_search(r, base + b, base + e, base + at, base + e, region, ONIG_OPTION_NONE);
                if (rc < 0) return false;
                m = {b + std::size_t(region->beg[0]), b + std::size_t(region->end[0])};
                return true;
            });
        }
        return pieces;
    }
};

struct pcre2_engine {
    std::vector<pcre2_code*> re;
    pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
    pcre2_engine() {
        for (const char* p : patterns) {
            int err;
            PCRE2_SIZE off;
            pcre2_code* c = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                          &err, &off, nullptr);
            if (!c || pcre2_jit_compile(c, PCRE2_JIT_COMPLETE) != 0) throw std::runtime_error("pcre2 compile failed");
            re.push_back(c);
        }
    }
    std::vector<span> run(const std::string& text) {
        std::vector<span> pieces{{0, text.size()}};
        for (pcre2_code* c : re) {
            pieces = split_isolated(text, pieces, [&](const std::string& t, std::size_t b, std::size_t e, std::size_t at,
                                                      span& m) {
                const int rc = pcre2_jit_match(c, reinterpret_cast<PCRE2_SPTR>(t.data() + b), e - b, at - b,
                                               PCRE2_NO_UTF_CHECK, md, nullptr);
                if (rc < 0) return false;
                const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
                m = {b + ov[0], b + ov[1]};
                return true;
            });
        }
        return pieces;
    }
};

// CPU time of this thread: on a shared machine wall time also counts the waits for a core.
inline double cpu_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s <goldens.jsonl> [repeats]\n", argv[0]);
        return 2;
    }
    const int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
    std::vector<std::string> lines;
    std::size_t bytes = 0;
    std::ifstream in(argv[1]);
    for (std::string l; std::getline(in, l);) {
        lines.push_back(nlohmann::json::parse(l).at("text").get<std::string>());
        bytes += lines.back().size();
    }
    if (lines.empty()) {
        std::fprintf(stderr, "%s: no lines\n", argv[1]);
        return 2;
    }
    onig_engine onig;
    pcre2_engine pcre;
    std::size_t differing = 0, pieces = 0;
    for (const auto& l : lines) {
        const auto a = onig.run(l), b = pcre.run(l);
        pieces += a.size();
        differing += a != b;
    }
    auto time = [&](auto& engine) {
        double best = 1e30;
        for (int r = 0; r < repeats; ++r) {
            const double t0 = cpu_seconds();
            std::size_t n = 0;
            for (const auto& l : lines) n += engine.run(l).size();
            const double s = cpu_seconds() - t0;
            if (n != pieces) throw std::runtime_error("piece count changed between runs");
            best = std::min(best, s);
        }
        return double(bytes) / best / 1e6;
    };
    const double onig_mbs = time(onig), pcre_mbs = time(pcre);
    std::printf("%zu lines, %zu bytes, %zu pieces; lines where the engines' pieces differ: %zu\n", lines.size(), bytes,
                pieces, differing);
    std::printf("oniguruma %s: %.1f MB/s\npcre2 %d.%d (JIT): %.1f MB/s\n", onig_version(), onig_mbs, PCRE2_MAJOR,
                PCRE2_MINOR, pcre_mbs);
    return 0;
}
