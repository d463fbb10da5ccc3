// tests/model/test_streaming.cpp - routed experts streamed from disk under a RAM budget
// (forward_options::ram_budget, model/expert_streaming.hpp) on the toy checkpoint: the same
// logits bit for bit as the mapped model with a cache of topk slots (LRU and LFU; the
// embedding table read by row), the routing trace, the
// cache bookkeeping, and I/O errors while a sequence decodes (a shard truncated; EIO on the
// k-th read and a read ending early, injected through forward_options::io_read; reads cut in
// pieces): a dsv4::error naming the file and the tensor, never SIGBUS or garbage; the
// sequence must start over (decode refuses it), the model stays usable.
#include "test_support.hpp"

#include <dsv4/model/forward.hpp>
#include <dsv4/model/speculative.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace {

std::string toy_dir() {
    const char* p = std::getenv("DSV4_TOY_MODEL");
    if (!p || !*p) throw dsv4::error("DSV4_TOY_MODEL is not set (ctest sets it)");
    return p;
}

std::string scratch_dir(const std::string& name) {
    const char* p = std::getenv("DSV4_STREAM_SCRATCH");
    const std::string base = p && *p ? p : std::string("stream-scratch");
    const std::string d = base + "/" + name;
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
}

/// Slot bytes of the toy's experts (a store with a large budget tells).
uint64_t toy_slot_bytes() {
    dsv4::forward_options o;
    o.ram_budget = 1;  // below the experts' bytes: streaming; too small: the error names the slot size
    try {
        (void)dsv4::model::open(toy_dir(), o);
    } catch (const dsv4::error& e) {
        const std::string w = e.what();
        const auto p = w.find("slots of ");
        REQUIRE(p != std::string::npos);
        return std::stoull(w.substr(p + 9));
    }
    FAIL("a 1-byte budget was accepted");
    return 0;
}

/// Greedy generation: the logits of a 7-token prefill and `steps` decodes, concatenated.
std::vector<float> run(const dsv4::model& m, std::size_t steps, std::vector<int64_t>* tokens = nullptr) {
    const std::size_t V = m.vocab();
    std::vector<int64_t> ids{0, 5, 17, 33, 101, 7, 250};
    std::vector<float> all, l(V);
    auto s = m.new_sequence();
    m.prefill(s, ids.data(), ids.size(), l.data());
    all.insert(all.end(), l.begin(), l.end());
    for (std::size_t i = 0; i < steps; ++i) {
        const int64_t t = int64_t(std::max_element(l.begin(), l.end()) - l.begin());
        if (tokens) tokens->push_back(t);
        m.decode(s, t, l.data());
        all.insert(all.end(), l.begin(), l.end());
    }
    return all;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

/// A read function that misbehaves on purpose (forward_options::io_read): from the moment
/// `arm` is called, the k-th read of the chosen kind (expert pieces: 4 KiB or more; embedding
/// rows: less) fails with EIO or ends early (returns 0: a short read); `halves` cuts every read
/// into halves (partial reads that must be continued). Its state belongs to the test.
struct faulty_reads {
    enum mode_t { eio, eof };
    std::atomic<int64_t> left{-1};  ///< reads of the kind before the failing one; -1: off
    std::atomic<int> fails{0};
    std::atomic<mode_t> mode{eio};
    std::atomic<bool> experts{true};
    bool halves = false;  ///< set before the model opens

    void arm(int64_t k, mode_t m, bool expert_reads) {
        mode = m;
        experts = expert_reads;
        left = k;
    }
    dsv4::io_read_fn fn() {
        return [this](int fd, void* dst, std::size_t len, uint64_t off) -> ssize_t {
            if ((len >= 4096) == experts && left.load() >= 0 && left.fetch_sub(1) == 0) {
                ++fails;
                if (mode == eof) return 0;
                errno = EIO;
                return -1;
            }
            const std::size_t n = halves && len >= 8192 ? len / 2 / 4096 * 4096 : len;
            return ::pread(fd, dst, n, off_t(off));
        };
    }
};

/// The tensor named in a store's error ("...: tensor NAME: ...").
std::string tensor_in(const std::string& msg) {
    const auto p = msg.find("tensor ");
    if (p == std::string::npos) return "";
    const auto e = msg.find(':', p);
    return msg.substr(p + 7, e - p - 7);
}

}  // namespace

TEST_CASE("streaming: the cache index's LRU and LFU choices") {
    dsv4::expert_cache_index lru(2, dsv4::cache_policy::lru, 8);
    CHECK_THROWS_AS(lru.acquire(8), dsv4::error);  // outside the key space
    auto a = lru.acquire(1), b = lru.acquire(2);
    REQUIRE((a && b && !a->hit && !b->hit));
    CHECK_FALSE(lru.acquire(3));  // both pinned
    lru.release(a->slot);
    lru.release(b->slot);
    lru.release(lru.acquire(1)->slot);  // 1 is now the most recent
    auto c = lru.acquire(3);            // evicts 2
    REQUIRE(c);
    CHECK(c->slot == b->slot);
    lru.release(c->slot);
    CHECK(lru.acquire(1)->hit);
    CHECK(lru.hits() == 2);
    CHECK(lru.misses() == 3);

    dsv4::expert_cache_index lfu(2, dsv4::cache_policy::lfu, 4);
    for (int i = 0; i < 3; ++i) lfu.release(lfu.acquire(1)->slot);  // 1 used 3 times
    lfu.release(lfu.acquire(2)->slot);
    lfu.release(lfu.acquire(3)->slot);  // evicts 2 (fewer uses), although 1 is older
    auto h = lfu.acquire(1);
    CHECK(h->hit);
}

TEST_CASE("streaming: a budget of topk expert slots gives the mapped model's logits bit for bit") {
    const dsv4::model mapped = dsv4::model::open(toy_dir());
    CHECK(mapped.streamer() == nullptr);
    const std::size_t steps = 12;
    std::vector<int64_t> t0;
    const auto ref = run(mapped, steps, &t0);
    const uint64_t slot = toy_slot_bytes();
    const std::size_t topk = mapped.config().num_experts_per_tok;
    for (auto [slots, policy] : {std::pair{topk, dsv4::cache_policy::lru}, std::pair{topk + 3, dsv4::cache_policy::lfu}}) {
        dsv4::forward_options o;
        o.ram_budget = slot * slots;
        o.cache = policy;
        const dsv4::model m = dsv4::model::open(toy_dir(), o);
        REQUIRE(m.streamer() != nullptr);
        CHECK(m.streamer()->store->slots() == slots);
        // the embedding table is not resident: one row read per token (7 prefill + steps decode)
        const uint64_t rows0 = m.streamer()->embed_reads.load();
        CHECK(m.streamer()->store->memory_bytes() <= o.ram_budget);  // the cache's memory is the budget's
        std::vector<int64_t> t1;
        const auto got = run(m, steps, &t1);
        CHECK(t1 == t0);
        CHECK(same_bits(got, ref));
        CHECK(m.streamer()->embed_reads.load() - rows0 == 7 + steps);
        const auto st = m.streamer()->store->stats();
        MESSAGE(slots << " slots (" << std::string(dsv4::cache_policy_name(policy)) << "): " << st.hits << " hits, " << st.misses
                      << " misses, " << st.bytes_read << " bytes read in " << st.reads << " reads, resident part "
                      << m.streamer()->resident.bytes << " bytes, O_DIRECT " << m.streamer()->store->direct());
        CHECK(st.misses > 0);
        CHECK(st.bytes_read >= st.misses * 6);
    }
    {  // next-layer prefetch (guesses pinned beside the layer's experts): the same bits
        dsv4::forward_options o;
        o.ram_budget = slot * (3 * topk + 1);
        o.prefetch_next = true;
        const dsv4::model m = dsv4::model::open(toy_dir(), o);
        REQUIRE(m.streamer()->prefetch);
        std::vector<int64_t> t1;
        CHECK(same_bits(run(m, steps, &t1), ref));
        CHECK(t1 == t0);
        const auto st = m.streamer()->store->stats();
        MESSAGE("prefetch: " << st.prefetched << " experts read, " << st.prefetch_used << " used; " << st.hits << " hits, "
                             << st.misses << " misses");
        CHECK(st.prefetched > 0);
        CHECK(st.prefetch_used <= st.prefetched);
    }
    // a 130-token prefill: chunks of slots/topk tokens, still the same bits
    dsv4::forward_options o;
    o.ram_budget = slot * (2 * topk + 1);
    const dsv4::model m = dsv4::model::open(toy_dir(), o);
    std::vector<int64_t> ids(130);
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t((i * 37 + 11) % mapped.vocab());
    std::vector<float> a(mapped.vocab()), b(mapped.vocab());
    auto s1 = mapped.new_sequence();
    auto s2 = m.new_sequence();
    mapped.prefill(s1, ids.data(), ids.size(), a.data());
    m.prefill(s2, ids.data(), ids.size(), b.data());
    CHECK(same_bits(a, b));
    // a budget that holds every expert maps as before
    o.ram_budget = uint64_t(1) << 40;
    CHECK(dsv4::model::open(toy_dir(), o).streamer() == nullptr);
}

TEST_CASE("streaming: MTP drafts over a streamed model give the mapped model's tokens") {
    // the MTP block's experts are not streamed (mapped, read in place); its embedding rows are
    const dsv4::model mapped = dsv4::model::open(toy_dir());
    dsv4::forward_options o;
    o.ram_budget = toy_slot_bytes() * 3;
    const dsv4::model m = dsv4::model::open(toy_dir(), o);
    REQUIRE(dsv4::has_mtp_block(m.config(), m.weights()));
    const dsv4::mtp_block dm(mapped), ds(m);
    const std::vector<int64_t> prompt{0, 5, 17, 33, 101};
    auto gen = [&](const dsv4::model& mm, const dsv4::mtp_block& d) {
        dsv4::speculative_decoder g(mm, d, 2, {});
        std::vector<int64_t> out{g.start(prompt.data(), prompt.size())};
        while (out.size() < 16) g.step(out);
        return out;
    };
    const uint64_t rows0 = m.streamer()->embed_reads.load();
    CHECK(gen(m, ds) == gen(mapped, dm));
    CHECK(m.streamer()->embed_reads.load() > rows0);
}

TEST_CASE("streaming: the routing trace has one line of routed experts per layer and token") {
    const std::string dir = scratch_dir("trace");
    dsv4::forward_options o;
    o.ram_budget = toy_slot_bytes() * 4;
    o.expert_trace = dir + "/trace.txt";
    std::size_t L = 0, K = 0, E = 0;
    {
        const dsv4::model m = dsv4::model::open(toy_dir(), o);
        L = m.config().num_hidden_layers;
        K = m.config().num_experts_per_tok;
        E = m.config().n_routed_experts;
        run(m, 5);
    }
    std::ifstream f(o.expert_trace);
    std::string line;
    REQUIRE(std::getline(f, line));
    CHECK(line.rfind("# dsv4 expert trace layers " + std::to_string(L), 0) == 0);
    std::size_t lines = 0;
    while (std::getline(f, line)) {
        std::istringstream in(line);
        std::size_t n = 0;
        for (uint64_t g; in >> g;) {
            CHECK(g / E < L);
            ++n;
        }
        // prefill: 7 tokens in chunks of 2 (4 slots / topk 2): up to 2 * K experts; decode: K
        CHECK(n >= 1);
        CHECK(n <= 2 * K);
        ++lines;
    }
    CHECK(lines == L * (4 + 5));  // 4 prefill chunks + 5 decode steps per layer
}

TEST_CASE("streaming: a shard truncated while a sequence decodes is an error naming the file and tensor") {
    const std::string dir = scratch_dir("truncate");
    for (const auto& e : std::filesystem::directory_iterator(toy_dir()))
        if (e.is_regular_file()) std::filesystem::copy_file(e.path(), dir + "/" + e.path().filename().string());
    dsv4::forward_options o;
    o.ram_budget = toy_slot_bytes() * 2;
    const dsv4::model m = dsv4::model::open(dir, o);
    // the shard holding layer 3's experts; cut it where its first expert tensor starts
    const dsv4::tensor_view& t = m.weights().at("layers.3.ffn.experts.0.w1.weight");
    const std::string shard(t.file);
    uint64_t cut = UINT64_MAX;
    for (const auto& v : m.weights().tensors())
        if (v.file == t.file && v.name.find(".ffn.experts.") != std::string_view::npos) cut = std::min(cut, v.file_offset);
    const std::size_t V = m.vocab();
    std::vector<float> l(V);
    auto s = m.new_sequence();
    const int64_t p[] = {3, 1, 4, 1, 5};
    m.prefill(s, p, 5, l.data());
    m.decode(s, 9, l.data());
    REQUIRE(::truncate(shard.c_str(), off_t(cut)) == 0);
    std::string msg;
    try {
        for (int i = 0; i < 64; ++i) m.decode(s, int64_t(i % int(V)), l.data());  // 2 slots: every layer misses
    } catch (const dsv4::error& e) {
        msg = e.what();
    }
    MESSAGE(msg);
    CHECK(msg.find(shard) != std::string::npos);
    CHECK(msg.find("tensor layers.") != std::string::npos);
    CHECK(msg.find(".ffn.experts.") != std::string::npos);
    CHECK(msg.find("truncated") != std::string::npos);
    // the sequence must start over; a new one on the same model fails the same way, cleanly
    CHECK_THROWS_AS(m.decode(s, 1, l.data()), dsv4::error);
    auto s2 = m.new_sequence();
    CHECK_THROWS_AS(run(m, 32), dsv4::error);
}

TEST_CASE("streaming: EIO or a read ending early mid-decode: an error naming file and tensor; the model stays usable") {
    const dsv4::model mapped = dsv4::model::open(toy_dir());
    const std::size_t steps = 10, V = mapped.vocab();
    const auto ref = run(mapped, steps);
    faulty_reads fr;
    dsv4::forward_options o;
    o.ram_budget = toy_slot_bytes() * 2;  // every layer misses: reads on every decode step
    o.io_read = fr.fn();
    const dsv4::model m = dsv4::model::open(toy_dir(), o);
    struct fault {
        faulty_reads::mode_t mode;
        bool experts;
        int64_t k;
        const char* says;
    };
    for (const fault f : {fault{faulty_reads::eio, true, 5, "read error: Input/output error"},
                          fault{faulty_reads::eof, true, 11, "short read"},
                          fault{faulty_reads::eio, false, 1, "read error: Input/output error"},
                          fault{faulty_reads::eof, false, 0, "short read"}}) {
        CAPTURE(f.says);
        CAPTURE(f.experts);
        std::vector<float> l(V);
        auto s = m.new_sequence();
        const int64_t p[] = {3, 1, 4, 1, 5};
        m.prefill(s, p, 5, l.data());
        m.decode(s, 9, l.data());
        fr.fails = 0;
        fr.arm(f.k, f.mode, f.experts);
        std::string msg;
        try {
            for (int i = 0; i < 16; ++i) m.decode(s, int64_t((i * 7) % int(V)), l.data());
        } catch (const dsv4::error& e) {
            msg = e.what();
        }
        MESSAGE(msg);
        CHECK(fr.fails == 1);
        REQUIRE(!msg.empty());
        CHECK(msg.find(f.says) != std::string::npos);
        const std::string name = tensor_in(msg);
        CHECK(name.find(f.experts ? ".ffn.experts." : "embed.weight") != std::string::npos);
        REQUIRE(m.weights().find(name) != nullptr);
        CHECK(msg.find(std::string(m.weights().at(name).file)) != std::string::npos);  // the tensor's shard
        // the sequence is marked unusable (its position reset): decode refuses it
        CHECK_THROWS_WITH_AS(m.decode(s, 1, l.data()), doctest::Contains("prefill"), dsv4::error);
        // the model is not: the failed slot was emptied, and a new run (and this sequence,
        // started over) gives the mapped model's logits bit for bit
        CHECK(same_bits(run(m, steps), ref));
        m.prefill(s, p, 5, l.data());
        m.decode(s, 9, l.data());
    }
}

TEST_CASE("streaming: reads returned in pieces are continued: the same bits") {
    const dsv4::model mapped = dsv4::model::open(toy_dir());
    const auto ref = run(mapped, 6);
    faulty_reads fr;
    fr.halves = true;
    dsv4::forward_options o;
    o.ram_budget = toy_slot_bytes() * 3;
    o.io_read = fr.fn();
    const dsv4::model m = dsv4::model::open(toy_dir(), o);
    CHECK(same_bits(run(m, 6), ref));
}
