// dsv4-spec-cost: what a speculative-decoding round costs against one plain decode step,
// on a real checkpoint (docs/mtp.md). At a fixed position (after a prefill), interleaved
// and repeated, median wall time of:
//   decode     one token (m.decode), then rolled back
//   verify k   k + 1 tokens in one extend with the logits of every position (what a round
//              with k drafts verifies), then rolled back; save + extend + rollback timed
//   mtp        one step of the MTP block (one position, its logits), then rolled back
// and prints the ratios verify k / decode and the speed-up (1 + a) / (verify k + k mtp)
// per round for accepted drafts a, with the acceptance that breaks even. Times are the
// process's CPU time (all threads), not wall time: on a shared machine a wait for a core
// is not the forward's cost (wall medians are printed too). --threads 1 gives the cleanest
// numbers there.
//
//   dsv4-spec-cost --model DIR [--position N=64] [--reps N=15] [--numerics reference|fast]
//                  [--threads N=all]
//                  [--only decode|verify1]   (one loop alone, for a profiler)
#include <dsv4/model/speculative.hpp>

#include <oneapi/tbb/global_control.h>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int run(int argc, char** argv) {
    std::string dir, numerics = "reference", only;
    std::size_t pos = 64, reps = 15, threads = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i], v = argv[i + 1];
        if (a == "--model") dir = v;
        else if (a == "--position") pos = std::stoul(v);
        else if (a == "--reps") reps = std::stoul(v);
        else if (a == "--numerics") numerics = v;
        else if (a == "--only") only = v;
        else if (a == "--threads") threads = std::stoul(v);
        else throw dsv4::error("unknown option " + a);
    }
    if (dir.empty() || pos < 1 || reps < 1) throw dsv4::error("usage: dsv4-spec-cost --model DIR [--position N] [--reps N]");
    std::unique_ptr<tbb::global_control> gc;
    if (threads) gc = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, threads);
    dsv4::forward_options opt;
    opt.numerics = numerics == "fast" ? dsv4::moe_numerics::fast : dsv4::moe_numerics::reference;
    opt.max_context = pos + 64;
    const dsv4::model m = dsv4::model::open(dir, opt);
    const bool has_mtp = dsv4::has_mtp_block(m.config(), m.weights());
    std::unique_ptr<dsv4::mtp_block> d;
    if (has_mtp) d = std::make_unique<dsv4::mtp_block>(m);
    const std::size_t V = m.vocab(), W = 4 * m.config().hidden_size, K = 3;

    std::vector<int64_t> ids(pos + K + 1);
    for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t((i * 7919 + 13) % V);
    auto s = m.new_sequence();
    std::vector<float> lg((K + 1) * V), dl(V);
    std::vector<uint16_t> H(pos * W), streams((K + 1) * W);
    m.extend(s, ids.data(), pos, dsv4::forward_outputs{lg.data(), false, H.data()});
    auto ds = has_mtp ? d->new_sequence() : dsv4::sequence_state{};
    if (has_mtp) d->run(ds, H.data(), ids.data() + 1, pos - 1, dl.data());

    struct stamp {
        std::chrono::steady_clock::time_point wall;
        double cpu;
    };
    auto now = [] {
        timespec ts{};
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        return stamp{std::chrono::steady_clock::now(), double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec)};
    };
    std::vector<double> wall;  // every measurement's wall time, for the report
    auto seconds = [&](const stamp& t) {
        const stamp e = now();
        wall.push_back(std::chrono::duration<double>(e.wall - t.wall).count());
        return e.cpu - t.cpu;
    };
    dsv4::append_undo u;
    std::vector<double> t_dec, t_ver[K + 1], t_mtp, w_dec;
    for (std::size_t r = 0; r <= reps; ++r) {  // round 0 warms the page cache up
        if (only == "decode" || only == "verify1") {
            const std::size_t n = only == "decode" ? 1 : 2;
            dsv4::save_for_append(s, n, u);
            m.extend(s, ids.data() + pos, n, dsv4::forward_outputs{lg.data(), n > 1, streams.data()});
            dsv4::rollback_append(s, u, 0);
            continue;
        }
        auto t = now();
        dsv4::save_for_append(s, 1, u);
        m.decode(s, ids[pos], lg.data());
        dsv4::rollback_append(s, u, 0);
        if (r) t_dec.push_back(seconds(t)), w_dec.push_back(wall.back());
        for (std::size_t k = 1; k <= K; ++k) {
            t = now();
            dsv4::save_for_append(s, k + 1, u);
            m.extend(s, ids.data() + pos, k + 1, dsv4::forward_outputs{lg.data(), true, streams.data()});
            dsv4::rollback_append(s, u, 0);
            if (r) t_ver[k].push_back(seconds(t));
        }
        if (has_mtp) {
            t = now();
            dsv4::save_for_append(ds, 1, u);
            d->run(ds, H.data() + (pos - 1) * W, ids.data() + pos, 1, dl.data());
            dsv4::rollback_append(ds, u, 0);
            if (r) t_mtp.push_back(seconds(t));
        }
    }
    if (!only.empty()) return 0;
    const double dec = median(t_dec), mtp = has_mtp ? median(t_mtp) : 0.0;
    std::printf("%s: %u layers, %s numerics, %d threads, position %zu, %zu reps (medians of CPU time)\n",
                dir.c_str(), m.config().num_hidden_layers, numerics.c_str(),
                int(tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism)), pos, reps);
    std::printf("decode 1 token: %.1f ms CPU (wall %.1f ms)\n", 1e3 * dec, 1e3 * median(w_dec));
    if (has_mtp) std::printf("mtp block step: %.1f ms = %.3f x decode\n", 1e3 * mtp, mtp / dec);
    for (std::size_t k = 1; k <= K; ++k) {
        const double v = median(t_ver[k]), round = v + double(k) * mtp;
        std::printf("verify %zu tokens (draft %zu): %.1f ms = %.3f x decode; round with drafting %.3f x decode: "
                    "speed-up (1 + a) / %.3f, break-even at a = %.2f accepted per round\n",
                    k + 1, k, 1e3 * v, v / dec, round / dec, round / dec, round / dec - 1.0);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "dsv4-spec-cost: %s\n", e.what());
        return 1;
    }
}
