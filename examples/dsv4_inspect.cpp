// dsv4-inspect: opens a checkpoint directory (config.json + safetensors shards), validates it
// against its config and prints a summary, the memory report and optionally touches tensors.
//
//   dsv4-inspect DIR [--touch PREFIX]   # --touch reads every byte of tensors named PREFIX*
#include <dsv4/io/model_config.hpp>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s CHECKPOINT_DIR [--touch TENSOR_PREFIX]\n", argv[0]);
        return 2;
    }
    try {
        const std::string dir = argv[1];
        const auto t0 = std::chrono::steady_clock::now();
        const auto cfg = dsv4::load_model_config(dir);
        const auto ck = dsv4::checkpoint::open(dir);
        const auto rep = dsv4::validate_checkpoint(cfg, ck);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        std::printf("%s: %zu tensors in %zu files, %llu data bytes, valid for %s (%.1f ms)\n", dir.c_str(), ck.size(),
                    ck.files().size(), static_cast<unsigned long long>(rep.expected_bytes), cfg.source.c_str(), ms);
        std::printf("  layers %u (+%u MTP, present: %zu), hidden %u, heads %u x %u, experts %u (top %u), vocab %u\n",
                    cfg.num_hidden_layers, cfg.num_nextn_predict_layers, rep.mtp_blocks.size(), cfg.hidden_size,
                    cfg.num_attention_heads, cfg.head_dim, cfg.n_routed_experts, cfg.num_experts_per_tok,
                    cfg.vocab_size);
        std::map<std::string, std::pair<std::size_t, unsigned long long>> by_dtype;
        for (const auto& t : ck.tensors()) {
            auto& e = by_dtype[std::string(dsv4::dtype_name(t.type))];
            ++e.first;
            e.second += t.bytes;
        }
        for (const auto& [name, e] : by_dtype) std::printf("  %-8s %7zu tensors %15llu bytes\n", name.c_str(), e.first, e.second);
        if (!rep.extras.empty()) std::printf("  %zu extra tensors, first %s\n", rep.extras.size(), rep.extras[0].c_str());
        if (argc >= 4 && std::strcmp(argv[2], "--touch") == 0) {
            unsigned long long sum = 0, bytes = 0;
            for (const auto& t : ck.tensors())
                if (t.name.substr(0, std::strlen(argv[3])) == argv[3]) {
                    for (uint64_t i = 0; i < t.bytes; i += 64) sum += t.data[i];
                    bytes += t.bytes;
                }
            std::printf("  touched %llu bytes of %s* (checksum %llu)\n", bytes, argv[3], sum);
        }
        const auto m = ck.memory();
        std::printf("  memory: mapped %llu, resident %llu, touched %s\n", static_cast<unsigned long long>(m.bytes_mapped),
                    static_cast<unsigned long long>(m.bytes_resident),
                    m.bytes_touched ? std::to_string(*m.bytes_touched).c_str() : "unknown");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    return 0;
}
