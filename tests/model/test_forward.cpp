// tests/test_forward.cpp - the whole-model forward on the toy checkpoint against the NumPy
// reference (reference/make_forward_goldens.py), plus state properties.
//
// Tolerances (the reference author's, make_forward_goldens.py / forward.py "Sensitivity"):
//   1- and 7-token prompts (and greedy_S7): max |Δlogit| <= 0.05, identical argmax where the
//   golden's top1-top2 margin > 0.1;
//   130/300-token prompts and decode rows: relative RMS per row = ||Δ|| / ||golden||: median
//   <= 0.07, >= 90 % of rows <= 0.10, every row <= 0.4.
#include "npy.hpp"
#include "test_support.hpp"

#include <dsv4/model/forward.hpp>
#include <dsv4/model/session.hpp>

#include <unistd.h>

#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <cmath>
#include <cstdio>
#include <exception>
#include <latch>
#include <thread>

// Every operator new of this binary is counted: the forward must not allocate per call.
// ThreadSanitizer's runtime defines operator new itself (a replacement does not link), so the
// counting test is skipped in TSan builds, which run only the two-threads case anyway.
#if defined(__SANITIZE_THREAD__)
#define DSV4_TEST_COUNTS_NEW 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DSV4_TEST_COUNTS_NEW 0
#endif
#endif
#ifndef DSV4_TEST_COUNTS_NEW
#define DSV4_TEST_COUNTS_NEW 1
#endif
namespace {
std::atomic<uint64_t> g_operator_new{0};
}  // namespace
#if DSV4_TEST_COUNTS_NEW
void* operator new(std::size_t n) {
    g_operator_new.fetch_add(1, std::memory_order_relaxed);
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // these deletes pair with the malloc above
#endif
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

using namespace dsv4_test;

namespace {

std::string toy_dir() {
    const char* p = std::getenv("DSV4_TOY_MODEL");
    if (!p || !*p) throw dsv4::error("DSV4_TOY_MODEL is not set (ctest sets it)");
    return p;
}

const dsv4::model& toy(dsv4::model_revision r = dsv4::model_revision::current) {
    static dsv4::model cur = dsv4::model::open(toy_dir(), dsv4::forward_options::for_revision(dsv4::model_revision::current));
    static dsv4::model ini = dsv4::model::open(toy_dir(), dsv4::forward_options::for_revision(dsv4::model_revision::initial));
    return r == dsv4::model_revision::current ? cur : ini;
}

double rel_rms(const float* a, const float* g, std::size_t n) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const double d = double(a[i]) - double(g[i]);
        num += d * d;
        den += double(g[i]) * double(g[i]);
    }
    return std::sqrt(num / std::max(den, 1e-30));
}
double max_abs(const float* a, const float* g, std::size_t n) {
    double m = 0;
    for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(a[i]) - double(g[i])));
    return m;
}
std::size_t argmax(const float* v, std::size_t n) { return std::size_t(std::max_element(v, v + n) - v); }

/// Row statistics of the long cases.
struct row_stats {
    std::vector<double> r;
    void add(double x) { r.push_back(x); }
    void report(const std::string& what) const {
        std::vector<double> s = r;
        std::sort(s.begin(), s.end());
        MESSAGE(what << ": rows " << s.size() << ", rel RMS median " << s[s.size() / 2] << ", worst " << s.back());
    }
    void check(const std::string& what) const {
        std::vector<double> s = r;
        std::sort(s.begin(), s.end());
        const double med = s[s.size() / 2], worst = s.back();
        const std::size_t ok = std::size_t(std::count_if(s.begin(), s.end(), [](double x) { return x <= 0.10; }));
        MESSAGE(what << ": rows " << s.size() << ", rel RMS median " << med << ", worst " << worst << ", "
                     << ok << " rows <= 0.10");
        CHECK(med <= 0.07);
        CHECK(double(ok) >= 0.9 * double(s.size()));
        CHECK(worst <= 0.4);
    }
};

}  // namespace

TEST_CASE("forward: prefill logits of 1 and 7 tokens match the reference closely") {
    const auto& m = toy();
    const std::size_t V = m.vocab();
    std::vector<float> lg(V);
    for (const char* name : {"prefill_S1", "prefill_S7"}) {
        golden g("forward", name);
        const auto ids = g.get<int64_t>("ids");
        const auto ref = g.get<float>("logits");
        const float margin = g.get<float>("margin").at(0);
        auto s = m.new_sequence();
        m.prefill(s, ids.data(), ids.size(), lg.data());
        const double d = max_abs(lg.data(), ref.data(), V);
        MESSAGE(std::string(name) << ": max |dlogit| " << d << ", rel RMS " << rel_rms(lg.data(), ref.data(), V) << ", margin " << margin);
        CHECK(d <= 0.05);
        if (margin > 0.1f) CHECK(argmax(lg.data(), V) == argmax(ref.data(), V));
    }
}

TEST_CASE("forward: fast numerics (int8 routed experts, bf16-block FP8 on avx512_bf16) stay near the reference") {
    // Fast mode changes the routed experts' activation rounding (int8 per 32 instead of FP8
    // per 128) and, on avx512_bf16, sums the FP8 projections in another order and without
    // the subnormal weight codes. The toy model (random weights) amplifies
    // the int8 rounding: measured rel RMS 0.063 (S1) / 0.238 (S7), max |dlogit| 0.22 / 0.87, the
    // same on the scalar tier (reference FP8 path) as on avx512_bf16 (bf16 FP8 path) to 1e-3.
    // A guard against a broken fast path (wrong scale, lost block: rel RMS ~1), not a tight bound.
    dsv4::forward_options o;
    o.numerics = dsv4::moe_numerics::fast;
    const dsv4::model m = dsv4::model::open(toy_dir(), o);
    const std::size_t V = m.vocab();
    std::vector<float> lg(V), lr(V);
    for (const char* name : {"prefill_S1", "prefill_S7"}) {
        golden g("forward", name);
        const auto ids = g.get<int64_t>("ids");
        const auto ref = g.get<float>("logits");
        auto s = m.new_sequence();
        m.prefill(s, ids.data(), ids.size(), lg.data());
        auto sr = toy().new_sequence();
        toy().prefill(sr, ids.data(), ids.size(), lr.data());
        const double d = max_abs(lg.data(), ref.data(), V);
        MESSAGE(std::string(name) << " fast: max |dlogit| vs golden " << d << " (reference mode "
                                  << max_abs(lr.data(), ref.data(), V) << "), rel RMS " << rel_rms(lg.data(), ref.data(), V));
        CHECK(d <= 2.0);
        CHECK(rel_rms(lg.data(), ref.data(), V) <= 0.5);
    }
}

TEST_CASE("forward: 130/300-token prefills, the initial revision and 64 teacher-forced decode steps") {
    // The long-context rows are pooled (3 prefill rows + 64 decode rows): median, 90 % and
    // worst-row bounds as the reference author recommends.
    const std::size_t V = toy().vocab();
    std::vector<float> lg(V);
    row_stats all, dec;
    for (const char* name : {"prefill_S130", "prefill_S300", "prefill_S130_initial"}) {
        golden g("forward", name);
        const bool initial = g.scalar_i64("revision") == 0;
        const auto& m = toy(initial ? dsv4::model_revision::initial : dsv4::model_revision::current);
        const auto ids = g.get<int64_t>("ids");
        const auto ref = g.get<float>("logits");
        auto s = m.new_sequence();
        m.prefill(s, ids.data(), ids.size(), lg.data());
        const double r = rel_rms(lg.data(), ref.data(), V);
        MESSAGE(std::string(name) << ": rel RMS " << r << ", max |dlogit| " << max_abs(lg.data(), ref.data(), V));
        all.add(r);
    }
    const auto& m = toy();
    golden g("forward", "decode_S300_steps64");
    const auto ids = g.get<int64_t>("ids");
    const auto ref = g.get<float>("logits");
    const auto pre = g.get<float>("prefill_logits");
    const std::size_t P = std::size_t(g.scalar_i64("prompt_len")), steps = ref.size() / V;
    REQUIRE(steps == 64);
    auto s = m.new_sequence();
    m.prefill(s, ids.data(), P, lg.data());
    CHECK(rel_rms(lg.data(), pre.data(), V) <= 0.4);
    for (std::size_t j = 0; j < steps; ++j) {
        m.decode(s, ids[P + j], lg.data());
        const double r = rel_rms(lg.data(), ref.data() + j * V, V);
        all.add(r);
        dec.add(r);
    }
    dec.report("decode_S300_steps64");
    all.check("prefill 130/300 + decode rows");
}

TEST_CASE("forward: greedy continuations agree where the golden's margin is comfortable") {
    // "Comfortable": > 0.1 after the 7-token prompt (logits agree to ~1e-6 there); > 0.3 after
    // the 300-token prompt, where f32 summation orders move logits by up to ~0.2 (rel RMS ~0.05).
    const auto& m = toy();
    const std::size_t V = m.vocab();
    for (const char* name : {"greedy_S7_steps16", "greedy_S300_steps8"}) {
        const float comfortable = std::string(name) == "greedy_S7_steps16" ? 0.1f : 0.3f;
        golden g("forward", name);
        const auto ids = g.get<int64_t>("ids");
        const auto toks = g.get<int64_t>("tokens");
        const auto ref = g.get<float>("logits");
        const auto margin = g.get<float>("margin");
        std::vector<float> lg(V);
        auto s = m.new_sequence();
        m.prefill(s, ids.data(), ids.size(), lg.data());
        std::size_t compared = 0;
        for (std::size_t j = 0; j < toks.size(); ++j) {
            if (j) m.decode(s, toks[j - 1], lg.data());  // teacher-forced by the golden's tokens
            if (margin[j] > comfortable) {
                INFO(std::string(name) << " step " << j << ": golden margin " << margin[j] << ", rel RMS "
                          << rel_rms(lg.data(), ref.data() + j * V, V) << ", logit of golden token "
                          << lg[std::size_t(toks[j])] << " vs top " << lg[argmax(lg.data(), V)]);
                CHECK(int64_t(argmax(lg.data(), V)) == toks[j]);
                ++compared;
            }
        }
        MESSAGE(std::string(name) << ": " << compared << " of " << toks.size() << " tokens with margin > " << comfortable << " compared");
    }
}

TEST_CASE("forward: prefill(N) + decode(k) == prefill(N + k) at the last position") {
    const auto& m = toy();
    const std::size_t V = m.vocab();
    golden g("forward", "decode_S300_steps64");
    const auto ids = g.get<int64_t>("ids");
    std::vector<float> a(V), b(V);
    for (std::size_t N : {std::size_t(5), std::size_t(126), std::size_t(200)}) {
        const std::size_t k = 7;
        auto s = m.new_sequence();
        m.prefill(s, ids.data(), N, a.data());
        for (std::size_t j = 0; j < k; ++j) m.decode(s, ids[N + j], a.data());
        auto s2 = m.new_sequence();
        m.prefill(s2, ids.data(), N + k, b.data());
        const double r = rel_rms(a.data(), b.data(), V);
        MESSAGE("prefill(" << N << ") + decode(" << k << ") vs prefill(" << N + k << "): rel RMS " << r
                           << ", max |d| " << max_abs(a.data(), b.data(), V));
        CHECK(r <= 0.1);
    }
}

TEST_CASE("forward: extend and prefill_chunked equal token-by-token decode, bit for bit") {
    // 300 tokens cross the window (128), ratio-4 boundaries, both ratio-128 boundaries (128,
    // 256), and the indexer's top-8 beyond its width. (Best tier only, as ctest forward.extend:
    // the kernels' tiers are the family tests' business; this checks the orchestration.) Each extend call must give exactly the
    // logits of the decode step at its last position; prefill_chunked(c) exactly those of
    // prefill(first c) + decode of the rest (spec §10.3 item 12: chunked prefill vs decode).
    const auto& m = toy();
    const std::size_t V = m.vocab(), N = 300, P0 = 5;
    std::vector<int64_t> ids(N);
    uint64_t z = 12345;
    for (auto& id : ids) {
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        id = int64_t((z >> 33) % V);
    }
    auto decode_all = [&](std::size_t first) {  // prefill(first) + decode: logits at every position
        std::vector<float> lg(N * V);
        auto s = m.new_sequence();
        m.prefill(s, ids.data(), first, lg.data() + (first - 1) * V);
        for (std::size_t p = first; p < N; ++p) m.decode(s, ids[p], lg.data() + p * V);
        return lg;
    };
    const auto ref = decode_all(P0);
    std::vector<float> lg(V), after(V), next(V);
    {  // the decoded sequence's next step, to compare the state each extend run leaves
        auto t = m.new_sequence();
        m.prefill(t, ids.data(), P0, lg.data());
        for (std::size_t p = P0; p < N; ++p) m.decode(t, ids[p], lg.data());
        m.decode(t, 3, after.data());
    }
    for (std::size_t c : {1, 3, 64, 127, 128, 129, 512}) {
        CAPTURE(c);
        auto s = m.new_sequence();
        m.prefill(s, ids.data(), P0, lg.data());
        std::size_t bad = 0;
        for (std::size_t a = P0; a < N; a += c) {
            const std::size_t len = std::min(c, N - a);
            m.extend(s, ids.data() + a, len, lg.data());
            REQUIRE(s.pos == int64_t(a + len));
            bad += !std::equal(lg.begin(), lg.end(), ref.begin() + std::ptrdiff_t((a + len - 1) * V),
                               [](float x, float y) { return same_float(x, y); });
        }
        CHECK(bad == 0);
        // and the sequence goes on decoding exactly as the decoded one
        m.decode(s, 3, next.data());
        CHECK(std::equal(next.begin(), next.end(), after.begin(), [](float x, float y) { return same_float(x, y); }));
    }
    for (std::size_t c : {64, 129}) {
        CAPTURE(c);
        const auto want = decode_all(c);
        auto s = m.new_sequence();
        m.prefill_chunked(s, ids.data(), N, c, lg.data());
        CHECK(s.pos == int64_t(N));
        CHECK(std::equal(lg.begin(), lg.end(), want.begin() + std::ptrdiff_t((N - 1) * V),
                         [](float x, float y) { return same_float(x, y); }));
    }
    // extend on a fresh sequence is prefill; bad calls are errors that name the call
    auto s = m.new_sequence();
    std::vector<float> a(V), b(V);
    m.extend(s, ids.data(), 7, a.data());
    auto s2 = m.new_sequence();
    m.prefill(s2, ids.data(), 7, b.data());
    CHECK(std::equal(a.begin(), a.end(), b.begin(), [](float x, float y) { return same_float(x, y); }));
    CHECK_THROWS_WITH_AS(m.extend(s, ids.data(), 0, a.data()), doctest::Contains("dsv4::model::extend"), dsv4::error);
    CHECK_THROWS_WITH_AS(m.prefill_chunked(s, ids.data(), 9, 0, a.data()), doctest::Contains("chunk"), dsv4::error);
    auto small = dsv4::model::open(toy_dir(), [] { dsv4::forward_options o; o.max_context = 16; return o; }());
    auto ss = small.new_sequence();
    small.prefill(ss, ids.data(), 10, a.data());
    CHECK_THROWS_WITH_AS(small.extend(ss, ids.data(), 7, a.data()), doctest::Contains("capacity"), dsv4::error);
}

TEST_CASE("forward: prefill, extend and decode allocate nothing once the sequence exists" *
          doctest::skip(!DSV4_TEST_COUNTS_NEW)) {
    const auto& m = toy();
    const std::size_t V = m.vocab(), N = 300;
    std::vector<int64_t> ids(N);
    for (std::size_t i = 0; i < N; ++i) ids[i] = int64_t((i * 37 + 11) % V);
    std::vector<float> lg(V), every(64 * V);
    std::vector<uint16_t> streams(64 * 4 * m.config().hidden_size);
    auto s = m.new_sequence();
    const uint64_t arena = s.ws.allocations();
    CHECK(arena == 1);
    const uint64_t before = g_operator_new.load();
    m.prefill(s, ids.data(), 100, lg.data());
    m.extend(s, ids.data() + 100, 64, lg.data());
    for (std::size_t p = 164; p < 200; ++p) m.decode(s, ids[p], lg.data());
    m.extend(s, ids.data() + 200, 64, dsv4::forward_outputs{every.data(), true, streams.data()});
    m.prefill_chunked(s, ids.data(), N, 128, lg.data());
    const uint64_t news = g_operator_new.load() - before;
    CHECK_MESSAGE(news == 0, news << " operator new calls during the forward");
    CHECK(s.ws.allocations() == arena);
    MESSAGE("workspace " << s.ws.capacity() / 1024 << " KiB (chunk " << m.options().chunk << "), high water "
                         << s.ws.high_water() / 1024 << " KiB");
    // every_position: row j is the logits of position 200 + j, as decoding would give them
    auto t = m.new_sequence();
    m.prefill(t, ids.data(), 100, lg.data());
    m.extend(t, ids.data() + 100, 64, lg.data());
    for (std::size_t p = 164; p < 264; ++p) {
        m.decode(t, ids[p], lg.data());
        if (p >= 200) {
            const float* row = every.data() + (p - 200) * V;
            REQUIRE(std::equal(lg.begin(), lg.end(), row, [](float x, float y) { return same_float(x, y); }));
        }
    }
    // beyond the chunk a one-pass prefill grows the workspace once, then allocates no more
    dsv4::forward_options o;
    o.chunk = 8;
    o.max_context = 320;
    const dsv4::model small = dsv4::model::open(toy_dir(), o);
    auto u = small.new_sequence();
    const std::size_t cap0 = u.ws.capacity();
    small.prefill(u, ids.data(), 300, lg.data());
    const uint64_t grown = u.ws.allocations();
    CHECK(grown > 1);
    CHECK(u.ws.capacity() > cap0);
    const uint64_t before2 = g_operator_new.load();
    small.prefill(u, ids.data(), 300, lg.data());
    CHECK(g_operator_new.load() - before2 == 0);
    CHECK(u.ws.allocations() == grown);
}

TEST_CASE("forward: a streamed decode (experts read from disk) allocates nothing per call" *
          doctest::skip(!DSV4_TEST_COUNTS_NEW)) {
    // every routed expert read from disk into a cache of topk + 1 slots (docs/streaming.md):
    // the read queue, the cache index and the embedding rows allocate nothing per read
    uint64_t slot = 0;
    {
        dsv4::forward_options o;
        o.ram_budget = dsv4::routed_expert_bytes(toy().weights()) / 2;
        slot = dsv4::model::open(toy_dir(), o).streamer()->store->slot_bytes();
    }
    {
        dsv4::forward_options o;
        o.ram_budget = slot * (toy().config().num_experts_per_tok + 1);
        const dsv4::model m = dsv4::model::open(toy_dir(), o);
        REQUIRE(m.streamer() != nullptr);
        const std::size_t V = m.vocab();
        std::vector<float> lg(V);
        std::vector<int64_t> ids(40);
        for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t((i * 37 + 11) % V);
        auto s = m.new_sequence();
        m.prefill(s, ids.data(), 8, lg.data());  // the first call may set up the thread pools
        const auto st0 = m.streamer()->store->stats();
        const uint64_t before = g_operator_new.load();
        m.prefill(s, ids.data(), 16, lg.data());
        for (std::size_t p = 16; p < ids.size(); ++p) m.decode(s, ids[p], lg.data());
        const uint64_t news = g_operator_new.load() - before;
        const auto st = m.streamer()->store->stats();
        CHECK_MESSAGE(news == 0, news << " operator new calls during a streamed forward");
        CHECK(st.misses - st0.misses > 24);  // reads did happen
        const uint64_t misses = st.misses - st0.misses, pieces = st.reads - st0.reads;
        MESSAGE(misses << " expert reads (" << pieces << " pieces), " << news << " allocations");
    }
}

TEST_CASE("forward: sequences do not share or leak state") {
    const auto& m = toy();
    const std::size_t V = m.vocab();
    golden g("forward", "decode_S300_steps64");
    const auto ids = g.get<int64_t>("ids");
    std::vector<float> first(V), again(V), other(V);
    auto s = m.new_sequence();
    m.prefill(s, ids.data() + 50, 9, first.data());
    m.decode(s, ids[59], first.data());
    // the same state object re-used for a long, different sequence, then the first again
    m.prefill(s, ids.data(), 300, other.data());
    for (int j = 0; j < 3; ++j) m.decode(s, ids[300 + j], other.data());
    m.prefill(s, ids.data() + 50, 9, again.data());
    m.decode(s, ids[59], again.data());
    for (std::size_t i = 0; i < V; ++i) REQUIRE(same_float(first[i], again[i]));
    // two live states interleaved
    auto s1 = m.new_sequence(), s2 = m.new_sequence();
    m.prefill(s1, ids.data() + 50, 9, other.data());
    m.prefill(s2, ids.data(), 200, other.data());
    m.decode(s1, ids[59], again.data());
    for (std::size_t i = 0; i < V; ++i) REQUIRE(same_float(first[i], again[i]));
}

namespace {

// ThreadSanitizer cannot see oneTBB's synchronisation (libtbb is not instrumented): a
// worker writing rows that the calling thread reads after parallel_for would be reported
// as a race. The forward has no executor option (every stage is a par:: entry point in
// the current task arena), so under TSan each run gets its own single-slot arena: no
// worker threads, every stage on the calling thread, and what TSan checks is exactly what
// this test is about, two threads sharing one model. Other builds use TBB as callers do.
#if defined(__SANITIZE_THREAD__)
#define DSV4_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DSV4_TEST_TSAN 1
#endif
#endif

template <class F> void run_in_own_arena_under_tsan(F&& f) {
#ifdef DSV4_TEST_TSAN
    tbb::task_arena arena(1);
    arena.execute(f);
#else
    f();
#endif
}

/// Prefill + `steps` greedy decode steps; the logits of every call, and the tokens chosen.
struct greedy_run {
    std::vector<int64_t> tokens;
    std::vector<float> logits;  ///< [1 + steps, vocab]
};
greedy_run run_greedy(const dsv4::model& m, const std::vector<int64_t>& prompt, std::size_t steps) {
    const std::size_t V = m.vocab();
    greedy_run r;
    r.logits.assign((1 + steps) * V, 0.0f);
    auto s = m.new_sequence();
    m.prefill(s, prompt.data(), prompt.size(), r.logits.data());
    for (std::size_t j = 0; j < steps; ++j) {
        r.tokens.push_back(int64_t(argmax(r.logits.data() + j * V, V)));
        m.decode(s, r.tokens.back(), r.logits.data() + (j + 1) * V);
    }
    r.tokens.push_back(int64_t(argmax(r.logits.data() + steps * V, V)));
    return r;
}

std::size_t logits_differing(const greedy_run& a, const greedy_run& b) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < a.logits.size(); ++i) n += !same_float(a.logits[i], b.logits[i]);
    return n;
}

}  // namespace

TEST_CASE("forward: two sequences decoded concurrently on two threads give what each gives alone") {
    // One shared model, one sequence_state per thread, different prompts: A (45 tokens:
    // the ratio-4 indexer selects 8 of 11 entries) and B (140 tokens: past the 128-slot
    // window, a ratio-128 entry), then 12 greedy decode steps each. Every logit of every
    // call must be bit-identical to the run alone (results never depend on threads), so
    // any state shared between sequences or torn by the other thread shows up here.
    const auto& m = toy();
    const std::size_t V = m.vocab();
    constexpr std::size_t steps = 12;
    auto prompt = [&](std::size_t n, uint64_t salt) {
        std::vector<int64_t> ids(n);
        for (std::size_t i = 0; i < n; ++i) ids[i] = int64_t((i * 2654435761u + salt) % V);
        return ids;
    };
    const std::vector<int64_t> pa = prompt(45, 11), pb = prompt(140, 977);
    greedy_run alone_a, alone_b;
    run_in_own_arena_under_tsan([&] { alone_a = run_greedy(m, pa, steps); });
    run_in_own_arena_under_tsan([&] { alone_b = run_greedy(m, pb, steps); });
    REQUIRE(logits_differing(alone_a, alone_b) > 0);  // the comparison below can tell them apart
    for (int round = 0; round < 2; ++round) {
        greedy_run par_a, par_b;
        std::exception_ptr err_a, err_b;
        std::latch go(2);
        auto worker = [&](const std::vector<int64_t>& p, greedy_run& out, std::exception_ptr& err) {
            return std::thread([&go, &m, pp = &p, o = &out, e = &err] {
                go.arrive_and_wait();
                try {
                    run_in_own_arena_under_tsan([&] { *o = run_greedy(m, *pp, steps); });
                } catch (...) {
                    *e = std::current_exception();
                }
            });
        };
        std::thread ta = worker(pa, par_a, err_a), tb = worker(pb, par_b, err_b);
        ta.join();
        tb.join();
        if (err_a) std::rethrow_exception(err_a);
        if (err_b) std::rethrow_exception(err_b);
        INFO("round " << round);
        CHECK(par_a.tokens == alone_a.tokens);
        CHECK(par_b.tokens == alone_b.tokens);
        CHECK(logits_differing(par_a, alone_a) == 0);
        CHECK(logits_differing(par_b, alone_b) == 0);
        CHECK(par_a.logits.size() == (1 + steps) * V);
    }
    MESSAGE("A tokens from 45-token prompt, B from 140-token prompt, " << steps << " greedy steps each, 2 concurrent rounds");
}

TEST_CASE("forward: a saved session continues exactly where it stopped; foreign files are refused") {
    const auto& m = toy();
    const std::size_t V = m.vocab(), N = 270;  // past the window, 67 ratio-4 and 2 ratio-128 entries
    std::vector<int64_t> ids(N);
    for (std::size_t i = 0; i < N; ++i) ids[i] = int64_t((i * 53 + 7) % V);
    const char* tmp = std::getenv("TMPDIR");
    const std::string dir = tmp ? tmp : "/tmp";
    const std::string path = dir + "/dsv4-session-" + std::to_string(getpid()) + ".bin";  // tiers run in parallel
    std::vector<float> a(V), b(V);
    auto s = m.new_sequence();
    m.prefill(s, ids.data(), N - 3, a.data());
    m.decode(s, ids[N - 3], a.data());
    const std::vector<int64_t> hist(ids.begin(), ids.begin() + std::ptrdiff_t(N - 2));
    dsv4::save_session(m, s, hist, path);
    m.extend(s, ids.data() + N - 2, 2, a.data());
    auto t = m.new_sequence();
    CHECK(dsv4::load_session(m, t, path) == hist);
    CHECK(t.pos == int64_t(N - 2));
    m.extend(t, ids.data() + N - 2, 2, b.data());
    CHECK(std::equal(a.begin(), a.end(), b.begin(), [](float x, float y) { return same_float(x, y); }));
    auto expect = [&](auto&& f, const std::string& part) {
        std::string msg;
        try {
            f();
        } catch (const dsv4::error& e) {
            msg = e.what();
        }
        CHECK_MESSAGE(msg.find(part) != std::string::npos, "\"" << msg << "\" lacks \"" << part << "\"");
    };
    // another revision's model, a short file, a wrong history
    const auto& init = toy(dsv4::model_revision::initial);
    auto u = init.new_sequence();
    expect([&] { dsv4::load_session(init, u, path); }, "another KV FP8 revision");
    {
        std::FILE* f = std::fopen(path.c_str(), "r+b");
        REQUIRE(f);
        std::fseek(f, 0, SEEK_END);
        const long size = std::ftell(f);
        std::fclose(f);
        REQUIRE(truncate(path.c_str(), size - 100) == 0);
    }
    expect([&] { dsv4::load_session(m, t, path); }, "ends early");
    CHECK(t.pos == 0);  // a failed load leaves a sequence that must start over
    expect([&] { dsv4::load_session(m, t, dir + "/no-such-session.bin"); }, "cannot open");
    expect([&] { dsv4::save_session(m, s, hist, path); }, "history must hold");
    {
        std::FILE* f = std::fopen(path.c_str(), "wb");
        std::fputs("DSV4SESS\x07", f);
        std::fclose(f);
    }
    expect([&] { dsv4::load_session(m, t, path); }, "ends early");
    std::remove(path.c_str());
}

TEST_CASE("forward: a sliding window of 64 and no MTP field (accepted by the official code) against the reference") {
    const char* dir = std::getenv("DSV4_W64_MODEL");
    const char* gold = std::getenv("DSV4_W64_GOLDENS");
    REQUIRE_MESSAGE((dir && gold), "DSV4_W64_MODEL / DSV4_W64_GOLDENS are not set (ctest sets them)");
    const dsv4::model m = dsv4::model::open(dir);
    REQUIRE(m.config().sliding_window == 64);
    CHECK(m.config().num_nextn_predict_layers == 0);
    const std::size_t V = m.vocab();
    auto load = [&](const std::string& c, const std::string& key) {
        return npy::load(std::string(gold) + "/forward/" + c + "/" + key + ".npy");
    };
    std::vector<float> lg(V);
    for (const char* name : {"prefill_S1", "prefill_S7", "prefill_S130", "prefill_S300"}) {
        const auto ids = load(name, "ids").as<int64_t>();
        const auto want = load(name, "logits").as<float>();
        auto s = m.new_sequence();
        m.prefill(s, ids.data(), ids.size(), lg.data());
        const double d = max_abs(lg.data(), want.data(), V), r = rel_rms(lg.data(), want.data(), V);
        MESSAGE(std::string(name) << " (window 64): max |dlogit| " << d << ", rel RMS " << r);
        if (ids.size() <= 7) CHECK(d <= 0.05);
        else CHECK(r <= 0.4);
    }
    // teacher-forced decode: the ring of 64 slots, decode lists of 64 columns
    const auto ids = load("decode_S300_steps64", "ids").as<int64_t>();
    const auto want = load("decode_S300_steps64", "logits").as<float>();
    auto s = m.new_sequence();
    m.prefill(s, ids.data(), 300, lg.data());
    row_stats st;
    for (std::size_t j = 0; j < 64; ++j) {
        m.decode(s, ids[300 + j], lg.data());
        st.add(rel_rms(lg.data(), want.data() + j * V, V));
    }
    st.check("decode_S300_steps64 (window 64)");
    // extend == decode with this window too
    auto a = m.new_sequence(), b = m.new_sequence();
    std::vector<float> la(V), lb(V);
    m.prefill(a, ids.data(), 5, la.data());
    m.prefill(b, ids.data(), 5, lb.data());
    m.extend(a, ids.data() + 5, 150, la.data());
    for (std::size_t p = 5; p < 155; ++p) m.decode(b, ids[p], lb.data());
    CHECK(std::equal(la.begin(), la.end(), lb.begin(), [](float x, float y) { return same_float(x, y); }));
}

namespace {

/// Parallel regions of one decode step at position p with `threads` threads, as the code
/// implies (mhc.hpp hc_*_on, context.hpp fp8_linear_pair / fp8_project, indexer.hpp
/// indexer_decode_on, compressor.hpp compressor_decode_on, attention.hpp
/// sparse_attention_parallel, moe.hpp moe_forward_on, forward.hpp's head), from the config
/// alone: a change to the forward's fork-join structure must show here. A split of n items
/// in chunks of at least `grain` is a region only when it has more than one chunk.
std::size_t decode_regions(const dsv4::model_config& c, int64_t p, std::size_t threads) {
    auto split = [](std::size_t n, std::size_t grain) -> std::size_t { return n > std::max<std::size_t>(grain, 1); };
    const std::size_t rows = 32;  // par::gemv_grain = exec_row_grain
    const std::size_t D = c.hidden_size, hd = c.head_dim, H = c.num_attention_heads;
    const std::size_t hc_pre = split(dsv4::hc_mixes, 6);  // one token: norm and split on the caller, mix rows split
    std::size_t n = 0;
    for (uint32_t l = 0; l < c.num_hidden_layers; ++l) {
        const uint32_t r = c.compress_ratios[l];
        n += hc_pre;                                            // attention sub-block (hc_post: one token)
        n += split(c.q_lora_rank + hd, rows) + split(H * hd, rows);  // wq_a with wkv, wq_b
        if (r == 4) {                                           // indexer: query, its compressor
            const std::size_t T = std::size_t(p + 1) / 4, ih = c.index_n_heads;
            n += split(ih * dsv4::index_head_dim, rows) + split(2 * 2 * dsv4::index_head_dim, rows);
            if (T) n += split(ih, 8) + split(std::min<std::size_t>(dsv4::indexer_score_pieces, (T + 47) / 48), 1);
        }
        if (r) n += split(2 * (r == 4 ? 2 : 1) * hd, rows);    // main compressor projection
        const std::size_t hg = dsv4::sparse_attention_head_group(1, H, threads);
        n += threads > 1 && (H + hg - 1) / hg > 1;              // sparse attention (head groups)
        n += split(std::size_t(c.o_groups) * c.o_lora_rank, rows) + split(D, rows);  // wo_a, wo_b
        const std::size_t up = (c.num_experts_per_tok + 1) * (c.moe_intermediate_size / 128);
        n += hc_pre + split(c.n_routed_experts, dsv4::moe_gate_grain) + split(up, 1) +
             split(D, dsv4::moe_down_grain);                    // MoE sub-block: gate, up, down
    }
    return n + split(c.vocab_size, rows);  // the head (hc_head of one token runs on the caller)
}

}  // namespace

TEST_CASE("forward: the parallel regions of a decode step are counted, as many as the code implies") {
    const dsv4::model& m = toy();
    const dsv4::model_config& c = m.config();
    const std::size_t V = m.vocab();
    std::vector<int64_t> prompt(20);
    for (std::size_t i = 0; i < prompt.size(); ++i) prompt[i] = int64_t((i * 37 + 11) % V);
    std::vector<float> a(V), b(V);
    for (const std::size_t threads : {std::size_t(1), std::size_t(2)}) {
        tbb::task_arena arena{static_cast<int>(threads)};
        arena.execute([&] {
            auto s0 = m.new_sequence(), s1 = m.new_sequence();
            m.prefill(s0, prompt.data(), 2, a.data());  // position 2: no indexer key yet
            m.prefill(s1, prompt.data(), prompt.size(), b.data());
            dsv4::region_stats early, late;
            s0.profile = &early;
            s1.profile = &late;
            m.decode(s0, 5, a.data());
            for (int k = 0; k < 3; ++k) m.decode(s1, 7 + k, b.data());
            CHECK(early.calls == 1);
            CHECK(early.tokens == 1);
            CHECK(early.regions == decode_regions(c, 2, threads));
            CHECK(late.calls == 3);
            CHECK(late.tokens == 3);
            CHECK(late.regions == decode_regions(c, 20, threads) + decode_regions(c, 21, threads) +
                                      decode_regions(c, 22, threads));
            CHECK(late.region_ns <= late.forward_ns);
            MESSAGE(threads << " threads: " << late.regions / 3 << " regions per decoded token (toy, "
                            << c.num_hidden_layers << " layers)");
            // not counted without a profile; the logits do not depend on it
            s1.profile = nullptr;
            auto s2 = m.new_sequence();
            m.prefill(s2, prompt.data(), prompt.size(), a.data());
            s2.profile = &early;
            m.decode(s1, 10, b.data());
            m.decode(s2, 7, a.data());
            m.decode(s2, 8, a.data());
            m.decode(s2, 9, a.data());
            s2.profile = nullptr;
            m.decode(s2, 10, a.data());
            CHECK(late.calls == 3);
            CHECK(early.calls == 4);
            CHECK(std::memcmp(a.data(), b.data(), V * sizeof(float)) == 0);
        });
    }
}

TEST_CASE("forward: argument errors") {
    const auto& m = toy();
    std::vector<float> lg(m.vocab());
    auto s = m.new_sequence();
    const int64_t bad[] = {0, int64_t(m.vocab())};
    CHECK_THROWS_AS(m.prefill(s, bad, 2, lg.data()), dsv4::error);
    CHECK_THROWS_AS(m.decode(s, 3, lg.data()), dsv4::error);  // no prefix
    CHECK_THROWS_AS(m.prefill(s, bad, 0, lg.data()), dsv4::error);
    CHECK_THROWS_AS(dsv4::model::open("/nonexistent/dsv4"), dsv4::error);
    // a state belongs to the model that made it; moving the model keeps it valid
    auto other = toy(dsv4::model_revision::initial).new_sequence();
    const int64_t ok[] = {0, 7};
    CHECK_THROWS_AS(m.prefill(other, ok, 2, lg.data()), dsv4::error);
    dsv4::model a = dsv4::model::open(toy_dir());
    auto sa = a.new_sequence();
    dsv4::model b = std::move(a);
    b.prefill(sa, ok, 2, lg.data());
    CHECK(sa.pos == 2);
}

TEST_CASE("forward: a non-finite hidden state is an error naming layer, position and token") {
    // The toy copy whose embedding row of token 7 holds a NaN (fixture checkpoint.toy_nan_embed).
    const char* dir = std::getenv("DSV4_NAN_EMBED_MODEL");
    REQUIRE_MESSAGE(dir, "DSV4_NAN_EMBED_MODEL is not set (ctest sets it)");
    const dsv4::model m = dsv4::model::open(dir);
    std::vector<float> lg(m.vocab());
    auto s = m.new_sequence();
    auto expect = [&](auto&& f, const std::string& part) {
        std::string msg;
        try {
            f();
        } catch (const dsv4::error& e) {
            msg = e.what();
        }
        CHECK_MESSAGE(msg.find(part) != std::string::npos, "\"" << msg << "\" lacks \"" << part << "\"");
    };
    const int64_t with7[] = {0, 5, 7, 9}, without[] = {0, 5, 17};
    expect([&] { m.prefill(s, with7, 4, lg.data()); },
           "dsv4::model::prefill: non-finite hidden state (NaN in stream 0, element 0) after layer 0 at position 2 "
           "(token id 7)");
    expect([&] { m.decode(s, 1, lg.data()); }, "decode needs a prefix");  // the sequence must start over
    m.prefill(s, without, 3, lg.data());  // token 7 unused: fine
    for (float v : lg) REQUIRE(std::isfinite(v));
    expect([&] { m.decode(s, 7, lg.data()); },
           "dsv4::model::decode: non-finite hidden state (NaN in stream 0, element 0) after layer 0 at position 3 "
           "(token id 7)");
    expect([&] { m.decode(s, 1, lg.data()); }, "decode needs a prefix");
    m.prefill(s, without, 3, lg.data());
    m.decode(s, 1, lg.data());
    CHECK(s.pos == 4);
    // Without the check the NaN reaches the logits: what the check keeps from the sampler.
    dsv4::forward_options o;
    o.check_finite = false;
    const dsv4::model raw = dsv4::model::open(dir, o);
    auto r = raw.new_sequence();
    raw.prefill(r, with7, 3, lg.data());
    CHECK(std::none_of(lg.begin(), lg.end(), [](float v) { return std::isfinite(v); }));
}

TEST_CASE("forward: diagnostics of the last position against the reference (report only)") {
    for (const char* name : {"prefill_S7", "prefill_S130", "prefill_S300", "prefill_S130_initial"}) {
        golden g("forward", name);
        const bool initial = g.scalar_i64("revision") == 0;
        const auto& m = toy(initial ? dsv4::model_revision::initial : dsv4::model_revision::current);
        const auto ids = g.get<int64_t>("ids");
        const auto lo = g.get<uint16_t>("layer_out");
        const auto moe_idx = g.get<int32_t>("moe_idx");
        std::vector<float> lg(m.vocab());
        auto s = m.new_sequence();
        dsv4::forward_diagnostics d;
        m.prefill(s, ids.data(), ids.size(), lg.data(), &d);
        const std::size_t L = m.config().num_hidden_layers, W = 4 * m.config().hidden_size;
        std::string line;
        for (std::size_t l = 0; l < L; ++l) {
            std::vector<float> a(W), b(W);
            for (std::size_t i = 0; i < W; ++i) {
                a[i] = dsv4::bf16_to_f32(d.layer_out[l * W + i]);
                b[i] = dsv4::bf16_to_f32(lo[l * W + i]);
            }
            char buf[64];
            std::snprintf(buf, sizeof buf, " L%zu %.2e", l, rel_rms(a.data(), b.data(), W));
            line += buf;
        }
        const auto index_idx = g.get<int32_t>("index_idx");
        const std::size_t K = m.config().num_experts_per_tok, KI = m.config().index_topk;
        std::string flips;
        for (std::size_t l = 0; l < L; ++l) {
            if (!std::equal(d.moe_idx.begin() + long(l * K), d.moe_idx.begin() + long((l + 1) * K), moe_idx.begin() + long(l * K)))
                flips += " moe@L" + std::to_string(l);
            if (!std::equal(d.index_idx.begin() + long(l * KI), d.index_idx.begin() + long((l + 1) * KI),
                            index_idx.begin() + long(l * KI)))
                flips += " indexer@L" + std::to_string(l);
        }
        MESSAGE(std::string(name) << ": residual rel RMS per layer:" << line
                                  << "; selections differing from the reference:" << (flips.empty() ? " none" : flips));
    }
}
