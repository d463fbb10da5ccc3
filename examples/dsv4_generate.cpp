// dsv4-generate: token-id generation with the whole DeepSeek-V4-Flash model on the CPU,
// straight from the official checkpoint directory (mmap, no conversion).
//
//   dsv4-generate --model DIR (--prompt-ids 0,5,17 | --prompt-file F) [--max-new-tokens N]
//                 [--temperature T] [--top-p P] [--seed S] [--threads N] [--revision current|initial]
//                 [--numerics reference|fast] [--chunk N] [--ignore-eos]
//                 [--mtp | --draft K] [--verify] [--ram-budget BYTES [--cache lru|lfu] [--io-threads N]
//                 [--no-direct] [--lock-resident]] [--trace FILE] [--warmup N] [--profile]
//                 [--populate]
//   dsv4-generate --model DIR --prompt "text" [--think] [--system TEXT] [--raw] [--tokenizer FILE]
//   dsv4-generate --model DIR --chat [--think] [--system TEXT] [--save-session F] [--load-session F]
//   dsv4-generate --model DIR --verify
//
// --ram-budget (e.g. 12G): a checkpoint larger than RAM (docs/streaming.md): everything but the
// routed experts and the embedding table (read a row per token) is copied into memory at load,
// the routed experts stream from disk into a cache of that many bytes (--cache policy,
// --io-threads concurrent reads, O_DIRECT unless --no-direct); the summary adds the cache's hit
// rate and bytes read per decoded token.
// --warmup N leaves the first N decoded tokens out of the decode tokens/s and the cache's
// decode counters (a steady-state measurement). --trace FILE writes the routing trace (one
// line of expert ids per layer and chunk; needs --ram-budget) for dsv4-stream-bench replay.
// --populate maps every page at load (checkpoint::populate, MADV_POPULATE_READ): no first-touch
// page faults in the timed steps (else ~2,000 per decoded token while new experts are picked).
// --profile counts the parallel regions (fork-join points) of the prefill and of the timed
// decode steps and splits their time into inside regions and outside (the serial part:
// norms, RoPE, activation quantisation, index lists, routing, checks); dsv4/regions.hpp.
//
// Text mode (--prompt / --chat; examples/generate_text.hpp): the checkpoint's tokenizer.json,
// the DeepSeek-V4 chat encoding, streaming text, turns appended to the live sequence.
//
// Prints the generated ids as they come (one line), then load time, prefill and decode
// tokens/s, peak RSS and bytes mapped. --mtp / --draft K: speculative decoding with the
// checkpoint's MTP block (K drafted tokens per main-model pass, default 1; greedy output is
// the plain output, sampled output has its distribution); the summary adds rounds, drafted
// and accepted tokens. DSV4_ISA picks the kernel tier (runtime dispatch).
// Any problem (missing or malformed model directory, bad or out-of-vocabulary ids, bad
// options, a non-finite hidden state or logit) is one line on stderr and exit status 1 (2
// for usage errors).
//
// --verify: checks config.json and every tensor's dtype and shape (as a run does), then
// reads every tensor's bytes (dsv4::verify_checkpoint: pread, --threads readers) and reports
// FP8 NaN codes, E8M0 NaN scales, non-finite BF16/F32 values and read errors, one line per
// bad tensor on stderr (the first 20), a summary on stdout; exit status 1 if anything is
// wrong. Without a prompt it verifies and exits; with one it generates only from a clean
// checkpoint.
#include "generate_text.hpp"

#include <dsv4/kernel_table.hpp>
#include <dsv4/model/forward.hpp>
#include <dsv4/model/sampling.hpp>
#include <dsv4/model/speculative.hpp>

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

void usage(FILE* f) {
    std::fprintf(f,
                 "usage: dsv4-generate --model DIR (--prompt-ids ID,ID,... | --prompt-file FILE |\n"
                 "                     --prompt TEXT | --chat) [--think] [--system TEXT] [--raw] [--tokenizer FILE]\n"
                 "                     [--save-session FILE] [--load-session FILE]\n"
                 "                     [--max-new-tokens N=16] [--temperature T=0 (greedy)] [--top-p P=1]\n"
                 "                     [--seed S=0] [--threads N=all] [--revision current|initial]\n"
                 "                     [--max-context N] [--numerics reference|fast] [--chunk N=0]\n"
                 "                     [--ignore-eos] [--mtp | --draft K] [--verify]\n"
                 "                     [--ram-budget BYTES[K|M|G] [--cache lfu|lru] [--io-threads N=8] [--no-direct]\n"
                 "                      [--lock-resident] [--prefetch] [--trace FILE]] [--warmup N=0] [--profile]\n"
                 "                     [--populate]\n"
                 "       dsv4-generate --model DIR --verify [--threads N]\n"
                 "Generation stops after the config's eos_token_id unless --ignore-eos; --numerics fast runs\n"
                 "the routed experts on int8 activations. --chunk N prefills the prompt in pieces of N tokens\n"
                 "(memory bounded by N; 0 = one piece, the official prefill).\n"
                 "--mtp drafts 1 token per main-model pass with the checkpoint's MTP block and verifies it\n"
                 "in that pass (speculative decoding; same greedy output); --draft K drafts K (1 to 3).\n"
                 "--ram-budget streams the routed experts from disk into a cache of that many bytes (the\n"
                 "rest is copied into memory at load); --trace FILE records the routing (docs/streaming.md).\n"
                 "--prompt: one user turn through the chat template (--raw: plain text after BOS); --chat: one\n"
                 "turn per stdin line until EOF, each appended to the live sequence; --think: thinking mode,\n"
                 "the reasoning printed apart; the tokenizer is DIR/tokenizer.json unless --tokenizer.\n"
                 "--save-session / --load-session: the sequence's whole state and the conversation.\n"
                 "--profile prints the parallel regions per token and the time inside / outside them.\n"
                 "--populate maps every page of the checkpoint at load (MADV_POPULATE_READ: reads what the\n"
                 "page cache lacks; later tokens take no page faults); not with a streaming --ram-budget.\n"
                 "--verify reads every tensor's bytes and reports NaN codes / non-finite values / read\n"
                 "errors (exit 1 if any); without a prompt it verifies and exits.\n"
                 "DSV4_ISA=scalar|avx2|avx2_vnni|avx512|avx512_vnni|avx512_bf16 forces a kernel tier.\n");
}

/// Token ids separated by commas and/or white space; every one a plain non-negative integer.
std::vector<int64_t> parse_ids(const std::string& text, const std::string& where) {
    std::vector<int64_t> ids;
    std::string tok;
    auto flush = [&]() {
        if (tok.empty()) return;
        bool digits = tok.size() <= 18;
        for (char c : tok) digits = digits && c >= '0' && c <= '9';
        if (!digits) throw dsv4::error(where + ": bad token id '" + tok + "' (expected a non-negative integer)");
        ids.push_back(std::stoll(tok));
        tok.clear();
    };
    for (char c : text) {
        if (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            if (c == ',' && tok.empty()) throw dsv4::error(where + ": empty token id (stray comma)");
            flush();
        } else {
            tok.push_back(c);
        }
    }
    flush();
    if (ids.empty()) throw dsv4::error(where + ": no token ids");
    return ids;
}

double number(const std::string& opt, const std::string& v) {
    char* end = nullptr;
    errno = 0;
    const double d = std::strtod(v.c_str(), &end);
    if (v.empty() || *end || errno) throw usage_error(opt + ": '" + v + "' is not a number");
    return d;
}
uint64_t count(const std::string& opt, const std::string& v) {
    bool ok = !v.empty() && v.size() <= 18;
    for (char c : v) ok = ok && c >= '0' && c <= '9';
    if (!ok) throw usage_error(opt + ": '" + v + "' is not a non-negative integer");
    return std::stoull(v);
}

/// BYTES with an optional K, M or G suffix (powers of 1024).
uint64_t bytes_arg(const std::string& opt, std::string v) {
    uint64_t mul = 1;
    if (!v.empty() && (v.back() == 'K' || v.back() == 'M' || v.back() == 'G')) {
        mul = v.back() == 'K' ? 1024 : v.back() == 'M' ? 1024 * 1024 : 1024ull * 1024 * 1024;
        v.pop_back();
    }
    return count(opt, v) * mul;
}

std::string bad_tensors(std::size_t n) { return std::to_string(n) + (n == 1 ? " bad tensor" : " bad tensors"); }

/// The byte-level pass over an opened checkpoint: summary on stdout, bad tensors on stderr.
/// Returns whether the checkpoint is clean.
bool verify(const dsv4::checkpoint& ck, const std::string& where, uint64_t threads) {
    dsv4::verify_options vo;
    vo.threads = unsigned(threads);
    const dsv4::verify_report r = dsv4::verify_checkpoint(ck, vo);
    constexpr std::size_t max_listed = 20;
    for (std::size_t i = 0; i < r.problems.size() && i < max_listed; ++i)
        std::fprintf(stderr, "dsv4-generate: %s\n", dsv4::to_string(r.problems[i]).c_str());
    if (r.problems.size() > max_listed)
        std::fprintf(stderr, "dsv4-generate: ... and %zu more bad tensors\n", r.problems.size() - max_listed);
    std::printf("verify %s: %zu tensors in %zu files, %llu bytes read in %.3f s = %.2f GB/s (%u thread%s): %s\n",
                where.c_str(), r.tensors, r.files, (unsigned long long)r.bytes, r.seconds, r.gb_per_s(), r.threads,
                r.threads == 1 ? "" : "s", r.ok() ? "ok" : bad_tensors(r.problems.size()).c_str());
    std::fflush(stdout);
    if (!r.ok())
        std::fprintf(stderr, "dsv4-generate: %s: checkpoint verification failed: %s (first: '%s')\n",
                     where.c_str(), bad_tensors(r.problems.size()).c_str(), r.problems.front().tensor.c_str());
    return r.ok();
}

double peak_rss_mib() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_maxrss) / 1024.0;  // KiB on Linux
}

int run(int argc, char** argv) {
    std::string model_dir, ids_text, ids_file, revision = "current", numerics = "reference", trace, cache = "lfu";
    uint64_t max_new = 16, seed = 0, threads = 0, max_ctx = 0, chunk = 0, draft = 0, ram_budget = 0, io_threads = 8,
             warmup = 0;
    double temperature = 0.0, top_p = 1.0;
    bool verify_bytes = false, ignore_eos = false, no_direct = false, lock_resident = false, prefetch = false, populate = false,
         profile = false;
    generate_text::options text;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            usage(stdout);
            return 0;
        }
        if (a == "--verify" || a == "--ignore-eos" || a == "--profile") {
            (a == "--verify" ? verify_bytes : a == "--profile" ? profile : ignore_eos) = true;
            continue;
        }
        if (a == "--mtp") {
            draft = draft ? draft : 1;
            continue;
        }
        if (a == "--no-direct" || a == "--lock-resident" || a == "--prefetch" || a == "--populate") {
            (a == "--no-direct"  ? no_direct
             : a == "--prefetch" ? prefetch
             : a == "--populate" ? populate
                                 : lock_resident) = true;
            continue;
        }
        if (a == "--chat" || a == "--think" || a == "--raw") {
            (a == "--chat" ? text.chat : a == "--think" ? text.think : text.raw) = true;
            continue;
        }
        if (i + 1 >= argc) throw usage_error(a + ": missing value (or unknown option)");
        const std::string v = argv[++i];
        if (a == "--model") model_dir = v;
        else if (a == "--prompt-ids") ids_text = v;
        else if (a == "--prompt-file") ids_file = v;
        else if (a == "--max-new-tokens") max_new = count(a, v);
        else if (a == "--temperature") temperature = number(a, v);
        else if (a == "--top-p") top_p = number(a, v);
        else if (a == "--seed") seed = count(a, v);
        else if (a == "--threads") threads = count(a, v);
        else if (a == "--revision") revision = v;
        else if (a == "--numerics") numerics = v;
        else if (a == "--max-context") max_ctx = count(a, v);
        else if (a == "--chunk") chunk = count(a, v);
        else if (a == "--draft") draft = count(a, v);
        else if (a == "--ram-budget") ram_budget = bytes_arg(a, v);
        else if (a == "--trace") trace = v;
        else if (a == "--cache") cache = v;
        else if (a == "--io-threads") io_threads = count(a, v);
        else if (a == "--warmup") warmup = count(a, v);
        else if (a == "--prompt") text.prompt = v;
        else if (a == "--tokenizer") text.tokenizer_path = v;
        else if (a == "--system") text.system = v;
        else if (a == "--save-session") text.save_session = v;
        else if (a == "--load-session") text.load_session = v;
        else throw usage_error("unknown option " + a);
    }
    if (model_dir.empty()) throw usage_error("--model DIR is required");
    const bool text_mode = !text.prompt.empty() || text.chat;
    if (int(!ids_text.empty()) + int(!ids_file.empty()) + int(text_mode) > 1)
        throw usage_error("give only one of --prompt-ids, --prompt-file and --prompt/--chat");
    if (!text_mode && (text.think || text.raw || !text.system.empty() || !text.tokenizer_path.empty() ||
                       !text.save_session.empty() || !text.load_session.empty()))
        throw usage_error("--think, --raw, --system, --tokenizer and the session options go with --prompt or --chat");
    if (text.raw && (text.think || !text.system.empty())) throw usage_error("--raw takes no chat template (--think, --system)");
    const bool verify_only = verify_bytes && ids_text.empty() && ids_file.empty() && !text_mode;
    if (!verify_only && ids_text.empty() && ids_file.empty() && !text_mode)
        throw usage_error("give one of --prompt-ids, --prompt-file, --prompt and --chat (or --verify alone)");
    if (revision != "current" && revision != "initial") throw usage_error("--revision must be current or initial");
    if (numerics != "reference" && numerics != "fast") throw usage_error("--numerics must be reference or fast");
    if (draft > 3) throw usage_error("--draft must be 1 to 3");
    if (profile && (draft || text_mode)) throw usage_error("--profile goes with plain decoding of --prompt-ids / --prompt-file");
    if (draft && text_mode) throw usage_error("--mtp / --draft go with --prompt-ids or --prompt-file (not text mode yet)");
    if (cache != "lru" && cache != "lfu") throw usage_error("--cache must be lru or lfu");
    if (!trace.empty() && !ram_budget) throw usage_error("--trace needs --ram-budget");
    if (io_threads < 1 || io_threads > 256) throw usage_error("--io-threads must be 1..256");

    if (verify_only) {  // config + schema as a run checks them, then every byte
        const dsv4::model_config cfg = dsv4::load_model_config(model_dir);
        const dsv4::checkpoint ck = dsv4::checkpoint::open(model_dir);
        (void)dsv4::validate_checkpoint(cfg, ck);
        return verify(ck, model_dir, threads) ? 0 : 1;
    }

    std::vector<int64_t> prompt;
    if (!ids_file.empty()) {
        std::ifstream f(ids_file);
        if (!f) throw dsv4::error(ids_file + ": cannot open prompt file");
        const std::string content((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        prompt = parse_ids(content, ids_file);
    } else if (!ids_text.empty()) {
        prompt = parse_ids(ids_text, "--prompt-ids");
    }

    std::unique_ptr<tbb::global_control> gc;
    if (threads) gc = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, threads);
    const dsv4::tier tier = dsv4::active_tier();  // DSV4_ISA errors surface here

    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    dsv4::forward_options opt = dsv4::forward_options::for_revision(
        revision == "current" ? dsv4::model_revision::current : dsv4::model_revision::initial);
    // routed experts: FP8-quantised activations as in the reference (exact products), or int8
    // activations per 32 with integer dot products (faster; error bound in docs/numerics.md)
    opt.numerics = numerics == "fast" ? dsv4::moe_numerics::fast : dsv4::moe_numerics::reference;
    opt.max_context = max_ctx;
    opt.ram_budget = ram_budget;
    opt.cache = cache == "lfu" ? dsv4::cache_policy::lfu : dsv4::cache_policy::lru;
    opt.io_threads = unsigned(io_threads);
    opt.direct_io = !no_direct;
    opt.lock_resident = lock_resident;
    opt.prefetch_next = prefetch;
    opt.expert_trace = trace;
    const dsv4::model m = dsv4::model::open(model_dir, opt);
    if (populate) {
        if (m.streamer()) throw usage_error("--populate maps the whole checkpoint: not with a --ram-budget below the routed experts");
        const auto p0 = clock::now();
        const bool full = m.weights().populate();
        const double s = std::chrono::duration<double>(clock::now() - p0).count();
        uint64_t bytes = 0;  // the files' sizes (memory() would walk every page again)
        for (const auto& f : m.weights().files()) bytes += std::filesystem::file_size(f);
        std::printf("populate: %.2f GB mapped in %.2f s%s\n", double(bytes) * 1e-9, s,
                    full ? "" : " (kernel without MADV_POPULATE_READ: readahead only)");
    }
    const double load_s = std::chrono::duration<double>(clock::now() - t0).count();
    if (verify_bytes && !verify(m.weights(), model_dir, threads)) return 1;

    if (text_mode) {
        dsv4::sampler smp(m.vocab(), dsv4::sampling_params{float(temperature), float(top_p), seed});
        std::printf("model %s: %u layers, vocab %zu, tier %s, %d threads, %s numerics; load %.3f s\n",
                    model_dir.c_str(), m.config().num_hidden_layers, m.vocab(), std::string(dsv4::tier_name(tier)).c_str(),
                    int(threads ? threads : uint64_t(tbb::info::default_concurrency())), numerics.c_str(), load_s);
        text.max_new = max_new;
        text.chunk = chunk;
        text.ignore_eos = ignore_eos;
        const int rc = generate_text::run(m, text, model_dir, smp);
        std::printf("peak RSS %.1f MiB\n", peak_rss_mib());
        return rc;
    }

    const std::size_t V = m.vocab();
    dsv4::check_token_ids(std::span<const int64_t>(prompt), V);
    if (prompt.size() + max_new > m.max_context())
        throw dsv4::error("prompt (" + std::to_string(prompt.size()) + ") + max-new-tokens (" + std::to_string(max_new) +
                          ") exceed the context of " + std::to_string(m.max_context()) + " positions (--max-context)");
    dsv4::sampler smp(V, dsv4::sampling_params{float(temperature), float(top_p), seed});

    std::printf("model %s: %u layers, vocab %zu, tier %s, %d threads, %s numerics; prompt %zu tokens\n",
                model_dir.c_str(), m.config().num_hidden_layers, V, std::string(dsv4::tier_name(tier)).c_str(),
                int(threads ? threads : uint64_t(tbb::info::default_concurrency())), numerics.c_str(), prompt.size());
    const int64_t eos = ignore_eos ? -1 : m.config().eos_token_id;  // -1: none
    std::fflush(stdout);

    // plain: one main-model pass per token; speculative: drafts from the MTP block, verified
    // and kept or rolled back in one pass of draft + 1 tokens
    std::unique_ptr<dsv4::mtp_block> drafter;
    std::unique_ptr<dsv4::speculative_decoder> spec;
    if (draft) {
        drafter = std::make_unique<dsv4::mtp_block>(m);
        spec = std::make_unique<dsv4::speculative_decoder>(m, *drafter, draft,
                                                           dsv4::sampling_params{float(temperature), float(top_p), seed});
    }
    dsv4::sequence_state s = spec ? dsv4::sequence_state{} : m.new_sequence();
    std::vector<float> logits(V);
    std::vector<int64_t> pending;  // speculative: tokens of the last round not printed yet
    dsv4::region_stats prof_prefill, prof_decode;  // --profile
    if (profile) s.profile = &prof_prefill;
    const auto t1 = clock::now();
    if (spec) pending.push_back(spec->start(prompt.data(), prompt.size(), chunk ? chunk : prompt.size()));
    else if (chunk) m.prefill_chunked(s, prompt.data(), prompt.size(), chunk, logits.data());
    else m.prefill(s, prompt.data(), prompt.size(), logits.data());
    const double prefill_s = std::chrono::duration<double>(clock::now() - t1).count();
    const dsv4::expert_streamer* xs = m.streamer();
    const dsv4::expert_store_stats st_prefill = xs ? xs->store->stats() : dsv4::expert_store_stats{};
    dsv4::expert_store_stats st0 = st_prefill;

    std::printf("generated:");
    std::fflush(stdout);
    double decode_s = 0;
    uint64_t decoded = 0;
    for (uint64_t j = 0; j < max_new; ++j) {
        if (spec && pending.empty()) {
            const auto t2 = clock::now();
            spec->step(pending);
            decode_s += std::chrono::duration<double>(clock::now() - t2).count();
            std::reverse(pending.begin(), pending.end());  // taken from the back
        }
        const int64_t id = spec ? pending.back() : smp.pick(logits.data(), V);
        if (spec) pending.pop_back();
        std::printf(" %lld", (long long)id);
        std::fflush(stdout);
        if (id == eos) {
            std::printf(" (eos)");
            break;
        }
        if (j + 1 == max_new) break;
        if (spec) {  // the round's tokens were decoded (and timed) in spec->step
            ++decoded;
            continue;
        }
        if (profile) s.profile = j >= warmup ? &prof_decode : nullptr;
        const auto t2 = clock::now();
        m.decode(s, id, logits.data());
        if (j >= warmup) {
            decode_s += std::chrono::duration<double>(clock::now() - t2).count();
            ++decoded;
        } else if (xs && j + 1 == warmup) {
            st0 = xs->store->stats();
        }
    }
    std::printf("\n");
    const auto mem = m.weights().memory();
    if (warmup) std::printf("(the first %llu decoded tokens are left out of the decode numbers: --warmup)\n",
                            (unsigned long long)warmup);
    std::printf("load %.3f s | prefill %zu tokens%s%s %.3f s = %.1f tokens/s | decode %llu tokens %.3f s = %.2f tokens/s",
                load_s, prompt.size(), chunk ? (" (chunks of " + std::to_string(chunk) + ")").c_str() : "",
                spec ? " + MTP block" : "", prefill_s, double(prompt.size()) / prefill_s, (unsigned long long)decoded,
                decode_s, decoded ? double(decoded) / decode_s : 0.0);
    if (spec) {
        const dsv4::speculative_stats& st = spec->stats();
        std::printf(" | mtp draft %llu: %zu passes, %zu drafted, %zu accepted (%.1f %%), %.2f tokens per pass",
                    (unsigned long long)draft, st.rounds, st.drafted, st.accepted,
                    st.drafted ? 100.0 * double(st.accepted) / double(st.drafted) : 0.0,
                    st.rounds ? double(st.rounds + st.accepted) / double(st.rounds) : 0.0);
    }
    std::printf("\n");
    if (profile) {
        auto line = [](const char* what, const dsv4::region_stats& st) {
            if (!st.tokens || !st.calls) return;
            const double per = double(st.calls), in = double(st.region_ns) / 1e3, all = double(st.forward_ns) / 1e3;
            std::printf("profile %s: %llu calls, %llu tokens | per call: %.1f parallel regions, %.1f us inside them, "
                        "%.1f us outside (%.1f %% of %.1f us)\n",
                        what, (unsigned long long)st.calls, (unsigned long long)st.tokens, double(st.regions) / per,
                        in / per, (all - in) / per, all > 0 ? 100.0 * (all - in) / all : 0.0, all / per);
        };
        line("prefill", prof_prefill);
        line("decode", prof_decode);
    }
    std::printf("peak RSS %.1f MiB | mapped %.1f MiB in %zu files", peak_rss_mib(), double(mem.bytes_mapped) / 1048576.0,
                mem.files);
    if (mem.bytes_touched) std::printf(" (%.1f MiB touched)", double(*mem.bytes_touched) / 1048576.0);
    std::printf("\n");
    if (ram_budget && !xs) std::printf("experts: the budget holds every routed expert: mapped as without --ram-budget\n");
    if (xs) {
        const dsv4::expert_store_stats st = xs->store->stats();
        const double mib = 1048576.0, slot = double(xs->store->slot_bytes());
        const uint64_t h = st.hits - st0.hits, mi = st.misses - st0.misses;
        std::printf("experts: budget %.1f MiB = %zu slots of %.2f MiB, %s, %s reads, %u I/O threads | resident part "
                    "%.1f MiB copied in %.2f s%s\n",
                    double(ram_budget) / mib, xs->store->slots(), slot / mib, dsv4::cache_policy_name(opt.cache),
                    xs->store->direct() ? "O_DIRECT" : "buffered", opt.io_threads, double(xs->resident.bytes) / mib,
                    xs->resident.seconds, lock_resident ? (xs->resident.locked ? ", mlocked" : ", mlock failed") : "");
        std::printf("experts: prefill %llu hits %llu misses | decode %llu hits %llu misses = hit rate %.1f %%, "
                    "%.1f MiB hit + %.1f MiB read per token, %.1f MiB read in all, %.3f s of the decode waiting for reads\n",
                    (unsigned long long)st_prefill.hits, (unsigned long long)st_prefill.misses, (unsigned long long)h,
                    (unsigned long long)mi, h + mi ? 100.0 * double(h) / double(h + mi) : 0.0,
                    decoded ? double(h) * slot / mib / double(decoded) : 0.0,
                    decoded ? double(mi) * slot / mib / double(decoded) : 0.0, double(st.bytes_read) / mib,
                    st.wait_seconds - st0.wait_seconds);
        if (xs->prefetch)
            std::printf("experts: decode prefetch %llu experts read, %llu of them used (%.1f MiB read per token in all)\n",
                        (unsigned long long)(st.prefetched - st0.prefetched),
                        (unsigned long long)(st.prefetch_used - st0.prefetch_used),
                        decoded ? double(st.bytes_read - st0.bytes_read) / mib / double(decoded) : 0.0);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const usage_error& e) {
        std::fprintf(stderr, "dsv4-generate: %s\n", e.what());
        usage(stderr);
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "dsv4-generate: %s\n", e.what());
        return 1;
    }
}
