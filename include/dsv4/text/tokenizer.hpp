// dsv4/text/tokenizer.hpp - a reader of Hugging Face tokenizer.json files (byte-level BPE, the
// kind DeepSeek-V3/V4 ship) whose encode() gives the ids of `tokenizers`'
// encode(text, add_special_tokens=False), id for id, plus decoding and streaming decoding.
//
// Supported components (anything else is a dsv4::error naming the component and the file):
// * model: BPE with vocab, merges ("a b" or ["a", "b"]), unk_token, fuse_unk, byte_fallback,
//   ignore_merges; dropout and subword prefixes/suffixes must be null.
// * normalizer: null, NFC, or a Sequence of those (empty included).
// * pre_tokenizer: Split (Regex or String pattern; Isolated, Removed, MergedWithPrevious,
//   MergedWithNext, Contiguous; invert), Digits, and ByteLevel (add_prefix_space, use_regex;
//   trim_offsets only moves offsets), alone or in a Sequence with ByteLevel last.
// * added_tokens: matched in the raw text before anything else, leftmost then longest, with
//   lstrip / rstrip / single_word; `normalized` ones are matched after normalization instead.
// * decoder: ByteLevel, or a Sequence of only ByteLevel.
// * post_processor: null, TemplateProcessing, ByteLevel or a Sequence of them: parsed and not
//   applied. encode(text, false) is encode-without-special-tokens; encode(text, true) puts BOS
//   first, which is all DeepSeek's TemplateProcessing does for one sequence.
// * truncation and padding must be null (they would change encode's ids).
//
// Ids are int32_t (the vocab is 129280). Text must be valid UTF-8: encode() refuses anything
// else with the byte offset of the first bad byte (Python's `tokenizers` takes str, which
// cannot hold invalid UTF-8, so there is no behaviour to copy). decode() replaces invalid
// UTF-8 produced by the tokens with U+FFFD, as `tokenizers` does.
//
// encode() caches the ids of words (pre-tokenizer pieces) under a mutex: one tokenizer can be
// used from several threads. Speed on one core (benchmarks/bench_tokenizer.cpp, CPU time): the
// 1.2 MB golden corpus (random code points, CJK, emoji: most words new) ~19 MB/s with an empty
// cache, ~30 MB/s warm; English prose and C++ ~26 / ~34 MB/s; decode ~160 MB/s.
// Unicode classes come from PCRE2's tables (regex.hpp: characters assigned after its Unicode
// version can pre-tokenize differently from `tokenizers`).
#pragma once

#include "../config.hpp"
#include "regex.hpp"
#include "unicode.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <climits>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dsv4::text {
inline namespace DSV4_ISA_NS {

class tokenizer;

/// Feeds ids one at a time and hands back only complete UTF-8 characters: bytes of a
/// character split across tokens wait for the rest. Concatenating every push() and the final
/// finish() gives exactly tokenizer::decode() of all the ids. Refers to its tokenizer, which
/// must outlive it.
class stream_decoder {
public:
    stream_decoder(const tokenizer& tok, bool skip_special) : tok_(&tok), skip_special_(skip_special) {}

    /// The text that `id` completes (possibly empty).
    std::string push(int32_t id);

    /// End of stream: a character left incomplete becomes U+FFFD.
    std::string finish() {
        std::string out = pending_.empty() ? std::string() : utf8_lossy(pending_);
        pending_.clear();
        return out;
    }

private:
    const tokenizer* tok_;
    bool skip_special_;
    std::string pending_;  // bytes of an incomplete character (at most 3)
};

class tokenizer {
public:
    struct added_token {
        std::string content;
        int32_t id = -1;
        bool special = false, lstrip = false, rstrip = false, single_word = false, normalized = false;
    };

    /// tokenizer.json at `path`, or in the directory `path`. A tokenizer_config.json beside it
    /// names BOS and EOS (bos_token / eos_token); without one they are DeepSeek's
    /// <｜begin▁of▁sentence｜> and <｜end▁of▁sentence｜> when the vocab has them.
    static tokenizer load(const std::filesystem::path& path) {
        namespace fs = std::filesystem;
        const fs::path file = fs::is_directory(path) ? path / "tokenizer.json" : path;
        tokenizer t = from_json(read_file(file), file.string());
        const fs::path config = file.parent_path() / "tokenizer_config.json";
        if (fs::exists(config)) t.read_config(read_file(config), config.string());
        return t;
    }

    /// Parses tokenizer.json text; `what` (normally the file name) starts every error message.
    static tokenizer from_json(std::string_view json_text, const std::string& what) {
        tokenizer t;
        t.what_ = what;
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(json_text);
        } catch (const nlohmann::json::exception& e) {
            throw error(what + ": invalid JSON: " + e.what());
        }
        t.parse(j);
        return t;
    }

    /// Ids of `text` (valid UTF-8), BOS first when `add_bos`.
    std::vector<int32_t> encode(std::string_view text, bool add_bos = false) const {
        if (const std::size_t bad = first_invalid_utf8(text); bad != std::string_view::npos)
            throw error("tokenizer::encode: invalid UTF-8 at byte offset " + std::to_string(bad) + " (byte 0x" +
                        hex_byte(static_cast<unsigned char>(text[bad])) + ")");
        std::vector<int32_t> ids;
        ids.reserve(text.size() / 3 + 2);
        if (add_bos) {
            if (bos_id_ < 0) throw error(what_ + ": encode with BOS, but the tokenizer has no BOS token");
            ids.push_back(bos_id_);
        }
        encode_context ctx;
        split_on_added(raw_added_, text, ids, [&](std::string_view piece) { encode_unmatched(piece, ids, ctx); });
        return ids;
    }

    /// Text of `ids`: every token's bytes in turn, invalid UTF-8 replaced by U+FFFD.
    std::string decode(std::span<const int32_t> ids, bool skip_special = false) const {
        std::string bytes;
        for (int32_t id : ids) append_bytes(id, skip_special, bytes);
        return utf8_lossy(bytes);
    }

    stream_decoder stream(bool skip_special = false) const { return stream_decoder(*this, skip_special); }

    /// Id of a token (added tokens first, then the vocab), e.g. token_id("<｜end▁of▁sentence｜>").
    std::optional<int32_t> token_id(std::string_view token) const {
        if (auto it = added_by_content_.find(token); it != added_by_content_.end()) return added_[it->second].id;
        if (auto it = vocab_.find(token); it != vocab_.end()) return it->second;
        return std::nullopt;
    }

    /// BOS / EOS ids, -1 when the tokenizer has none.
    int32_t bos_id() const { return bos_id_; }
    int32_t eos_id() const { return eos_id_; }

    /// One past the largest id.
    std::size_t vocab_size() const { return id_bytes_.size(); }

    bool is_special(int32_t id) const {
        return id >= 0 && std::size_t(id) < id_special_.size() && id_special_[std::size_t(id)];
    }

    /// Bytes that token `id` decodes to (the ByteLevel decoder's mapping).
    const std::string& token_bytes(int32_t id) const {
        if (id < 0 || std::size_t(id) >= id_bytes_.size() || !id_known_[std::size_t(id)])
            throw error("tokenizer::decode: token id " + std::to_string(id) + " is not in the vocabulary of " + what_);
        return id_bytes_[std::size_t(id)];
    }

    /// Appends the bytes of `id` unless it is a special token and `skip_special`.
    void append_bytes(int32_t id, bool skip_special, std::string& out) const {
        const std::string& b = token_bytes(id);
        if (!(skip_special && is_special(id))) out += b;
    }

    const std::vector<added_token>& added_tokens() const { return added_; }

private:
    // ---------------------------------------------------------------- pieces of the pipeline
    enum class split_behavior { isolated, removed, merged_with_previous, merged_with_next, contiguous };
    struct split_step {
        regex re;
        split_behavior behavior = split_behavior::isolated;
        bool invert = false;
    };
    struct byte_level_step {
        bool present = false, add_prefix_space = false, use_regex = false;
        split_step gpt2;  // its own regex, Isolated
    };
    struct merge_info {
        int32_t rank, id;
    };
    // Byte trie of added-token contents: leftmost-longest matching, like the aho-corasick
    // automaton (MatchKind::LeftmostLongest) of `tokenizers`.
    struct token_trie {
        struct node {
            std::vector<std::pair<unsigned char, uint32_t>> next;
            int32_t token = -1;  // index into added_
        };
        std::vector<node> nodes{node{}};
        std::array<bool, 256> starts{};
        bool empty() const { return nodes.size() == 1; }
        void insert(std::string_view s, int32_t token) {
            if (s.empty()) return;
            starts[static_cast<unsigned char>(s[0])] = true;
            uint32_t at = 0;
            for (char ch : s) {
                const auto c = static_cast<unsigned char>(ch);
                uint32_t to = 0;
                for (auto& [k, v] : nodes[at].next)
                    if (k == c) to = v;
                if (!to) {
                    to = uint32_t(nodes.size());
                    nodes[at].next.emplace_back(c, to);
                    nodes.emplace_back();
                }
                at = to;
            }
            if (nodes[at].token < 0) nodes[at].token = token;
        }
        // Longest token starting at s[i]: its end, or 0 with token = -1.
        std::size_t longest(std::string_view s, std::size_t i, int32_t& token) const {
            token = -1;
            std::size_t end = 0;
            uint32_t at = 0;
            for (std::size_t k = i; k < s.size(); ++k) {
                const auto c = static_cast<unsigned char>(s[k]);
                uint32_t to = 0;
                for (auto& [key, v] : nodes[at].next)
                    if (key == c) to = v;
                if (!to) break;
                at = to;
                if (nodes[at].token >= 0) {
                    token = nodes[at].token;
                    end = k + 1;
                }
            }
            return end;
        }
    };
    struct string_hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    template <class V>
    using string_map = std::unordered_map<std::string, V, string_hash, std::equal_to<>>;

    // Storage for the strings encode() makes (NFC text, prefixed spaces); a deque keeps the
    // views into earlier ones valid.
    struct encode_context {
        std::deque<std::string> arena;
        std::vector<std::string_view> pieces, next;
        std::vector<std::pair<std::pair<std::size_t, std::size_t>, bool>> matches;
    };

    // ---------------------------------------------------------------- encode
    template <class OnText>
    void split_on_added(const token_trie& trie, std::string_view s, std::vector<int32_t>& ids, OnText&& on_text) const {
        if (trie.empty()) {
            on_text(s);
            return;
        }
        std::size_t start_offset = 0, i = 0;
        while (i < s.size()) {
            if (!trie.starts[static_cast<unsigned char>(s[i])]) {
                ++i;
                continue;
            }
            int32_t t;
            const std::size_t end = trie.longest(s, i, t);
            if (t < 0) {
                ++i;
                continue;
            }
            const added_token& tok = added_[std::size_t(t)];
            std::size_t start = i, stop = end;
            i = end;  // the automaton goes on after the match, whatever is done with it
            if (tok.single_word) {
                const bool space_before = start == 0 || !ends_with_word(s.substr(0, start));
                const bool space_after = stop == s.size() || !starts_with_word(s.substr(stop));
                if (!space_before || !space_after) continue;
            }
            if (tok.lstrip) {
                std::size_t new_start = start;
                while (new_start > 0) {
                    const std::size_t p = previous_char_start(s, new_start);
                    std::size_t len;
                    if (!is_whitespace(decode_utf8(s, p, len))) break;
                    new_start = p;
                }
                start = std::max(new_start, start_offset);
            }
            if (tok.rstrip) {
                while (stop < s.size()) {
                    std::size_t len;
                    if (!is_whitespace(decode_utf8(s, stop, len))) break;
                    stop += len;
                }
            }
            if (start_offset < start) on_text(s.substr(start_offset, start - start_offset));
            ids.push_back(tok.id);
            start_offset = stop;
        }
        if (start_offset < s.size()) on_text(s.substr(start_offset));
    }

    static bool ends_with_word(std::string_view s) {
        std::size_t len;
        return !s.empty() && is_alphanumeric(decode_utf8(s, previous_char_start(s, s.size()), len));
    }
    static bool starts_with_word(std::string_view s) {
        std::size_t len;
        return !s.empty() && is_alphanumeric(decode_utf8(s, 0, len));
    }

    // Text between raw added tokens: normalize, match the normalized added tokens, pre-tokenize, BPE.
    void encode_unmatched(std::string_view text, std::vector<int32_t>& ids, encode_context& ctx) const {
        if (nfc_) {
            ctx.arena.push_back(nfc(text));
            text = ctx.arena.back();
        }
        split_on_added(normalized_added_, text, ids, [&](std::string_view piece) { pre_tokenize_and_bpe(piece, ids, ctx); });
    }

    void pre_tokenize_and_bpe(std::string_view text, std::vector<int32_t>& ids, encode_context& ctx) const {
        if (text.empty()) return;
        ctx.pieces.assign(1, text);
        for (const split_step& step : splits_) {
            ctx.next.clear();
            for (std::string_view p : ctx.pieces) apply_split(step, p, ctx);
            std::swap(ctx.pieces, ctx.next);
        }
        if (byte_level_.add_prefix_space) {
            for (std::string_view& p : ctx.pieces)
                if (p.front() != ' ') {
                    std::string& prefixed = ctx.arena.emplace_back(1, ' ');
                    prefixed.append(p);  // (not " " + p: GCC 12 -Wrestrict false positive)
                    p = prefixed;
                }
        }
        if (byte_level_.use_regex) {
            ctx.next.clear();
            for (std::string_view p : ctx.pieces) apply_split(byte_level_.gpt2, p, ctx);
            std::swap(ctx.pieces, ctx.next);
        }
        for (std::string_view word : ctx.pieces) encode_word(word, ids);
    }

    // NormalizedString::split of `tokenizers`: matches and the text between them, then the behaviour.
    void apply_split(const split_step& step, std::string_view s, encode_context& ctx) const {
        auto& m = ctx.matches;
        m.clear();
        std::size_t prev = 0;
        step.re.for_each_match(s, [&](std::size_t b, std::size_t e) {
            if (prev != b) m.push_back({{prev, b}, false});
            m.push_back({{b, e}, true});
            prev = e;
        });
        if (prev != s.size()) m.push_back({{prev, s.size()}, false});
        if (step.invert)
            for (auto& x : m) x.second = !x.second;
        auto emit = [&](std::size_t b, std::size_t e) {
            if (e > b) ctx.next.push_back(s.substr(b, e - b));
        };
        switch (step.behavior) {
        case split_behavior::isolated:
            for (auto& [o, is_match] : m) emit(o.first, o.second);
            break;
        case split_behavior::removed:
            for (auto& [o, is_match] : m)
                if (!is_match) emit(o.first, o.second);
            break;
        case split_behavior::contiguous:
        case split_behavior::merged_with_previous: {
            // a run (contiguous: of equal kind; merged: a match) joins the piece before it
            std::vector<std::pair<std::size_t, std::size_t>> out;
            bool previous_match = false;
            for (auto& [o, is_match] : m) {
                const bool join = step.behavior == split_behavior::contiguous ? is_match == previous_match
                                                                              : is_match && !previous_match;
                if (join && !out.empty()) out.back().second = o.second;
                else out.push_back(o);
                previous_match = is_match;
            }
            for (auto& [b, e] : out) emit(b, e);
            break;
        }
        case split_behavior::merged_with_next: {
            std::vector<std::pair<std::size_t, std::size_t>> out;
            bool previous_match = false;
            for (auto it = m.rbegin(); it != m.rend(); ++it) {
                if (it->second && !previous_match && !out.empty()) out.back().first = it->first.first;
                else out.push_back(it->first);
                previous_match = it->second;
            }
            for (auto it = out.rbegin(); it != out.rend(); ++it) emit(it->first, it->second);
            break;
        }
        }
    }

    void encode_word(std::string_view word, std::vector<int32_t>& ids) const {
        if (word.size() == 1 && byte_level_.present && byte_id_[static_cast<unsigned char>(word[0])] >= 0) {
            ids.push_back(byte_id_[static_cast<unsigned char>(word[0])]);
            return;
        }
        const bool cacheable = word.size() <= max_cached_word;
        if (cacheable) {
            std::lock_guard lock(*cache_mutex_);
            if (auto it = cache_.find(word); it != cache_.end()) {
                ids.insert(ids.end(), it->second.begin(), it->second.end());
                return;
            }
        }
        std::vector<int32_t> sym;
        bpe(word, sym);
        ids.insert(ids.end(), sym.begin(), sym.end());
        if (cacheable) {
            std::lock_guard lock(*cache_mutex_);
            if (cache_.size() >= max_cache_entries) cache_.clear();
            cache_.emplace(std::string(word), std::move(sym));
        }
    }

    // The word as the model sees it: byte-level characters when ByteLevel pre-tokenizes.
    std::string model_text(std::string_view word) const {
        if (!byte_level_.present) return std::string(word);
        std::string out;
        for (char c : word) out += byte_char_[static_cast<unsigned char>(c)];
        return out;
    }

    void bpe(std::string_view word, std::vector<int32_t>& sym) const {
        if (ignore_merges_) {
            if (auto it = vocab_.find(model_text(word)); it != vocab_.end()) {
                sym.push_back(it->second);
                return;
            }
        }
        // initial symbols: one per character of the model text
        bool last_unk = false;
        auto push_char = [&](std::string_view ch, int32_t id) {
            if (id < 0)
                if (auto it = vocab_.find(ch); it != vocab_.end()) id = it->second;
            if (id >= 0) {
                sym.push_back(id);
                last_unk = false;
                return;
            }
            if (byte_fallback_) {
                std::vector<int32_t> bytes;
                for (char c : ch) {
                    auto it = vocab_.find("<0x" + hex_byte(static_cast<unsigned char>(c)) + ">");
                    if (it == vocab_.end()) break;
                    bytes.push_back(it->second);
                }
                if (bytes.size() == ch.size()) {
                    sym.insert(sym.end(), bytes.begin(), bytes.end());
                    last_unk = false;
                    return;
                }
            }
            if (unk_id_ >= 0 && !(fuse_unk_ && last_unk)) sym.push_back(unk_id_);
            last_unk = unk_id_ >= 0;  // without an unk token the character is dropped, as in `tokenizers`
        };
        if (byte_level_.present) {
            for (char c : word) {
                const auto b = static_cast<unsigned char>(c);
                push_char(byte_char_[b], byte_id_[b]);
            }
        } else {
            for (std::size_t i = 0, len; i < word.size(); i += len) {
                decode_utf8(word, i, len);
                push_char(word.substr(i, len), -1);
            }
        }
        // merges: always the lowest rank, leftmost first (the priority queue of `tokenizers`)
        if (sym.size() < 2) return;
        if (sym.size() <= short_word) merge_short(sym);
        else merge_long(sym);
    }

    const merge_info* find_merge(int32_t a, int32_t b) const {
        auto it = merges_.find((uint64_t(uint32_t(a)) << 32) | uint32_t(b));
        return it == merges_.end() ? nullptr : &it->second;
    }

    // Short words: a rank per adjacent pair, the minimum found by a scan (no allocation churn).
    void merge_short(std::vector<int32_t>& sym) const {
        std::array<int32_t, short_word> rank;
        auto pair_rank = [&](std::size_t i) {
            const merge_info* m = find_merge(sym[i], sym[i + 1]);
            return m ? m->rank : INT32_MAX;
        };
        std::size_t n = sym.size();
        for (std::size_t i = 0; i + 1 < n; ++i) rank[i] = pair_rank(i);
        while (n > 1) {
            const auto best = std::min_element(rank.begin(), rank.begin() + std::ptrdiff_t(n - 1));
            if (*best == INT32_MAX) break;
            const std::size_t i = std::size_t(best - rank.begin());
            sym[i] = find_merge(sym[i], sym[i + 1])->id;
            std::copy(sym.begin() + std::ptrdiff_t(i) + 2, sym.begin() + std::ptrdiff_t(n), sym.begin() + std::ptrdiff_t(i) + 1);
            std::copy(rank.begin() + std::ptrdiff_t(i) + 1, rank.begin() + std::ptrdiff_t(n - 1), rank.begin() + std::ptrdiff_t(i));
            --n;
            if (i + 1 < n) rank[i] = pair_rank(i);
            if (i > 0) rank[i - 1] = pair_rank(i - 1);
        }
        sym.resize(n);
    }

    // Long words (a paragraph of CJK is one piece): a heap of candidate merges over a linked
    // list of symbols, O(n log n) like `tokenizers`' Word::merge_all; a popped candidate whose
    // pair has changed since it was pushed is skipped.
    void merge_long(std::vector<int32_t>& sym) const {
        struct candidate {
            int32_t rank;
            uint32_t pos;
            int32_t id;
            bool operator>(const candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
        };
        const std::size_t n = sym.size();
        std::vector<uint32_t> next(n), prev(n);
        std::vector<bool> alive(n, true);
        constexpr uint32_t none = UINT32_MAX;
        for (std::size_t i = 0; i < n; ++i) {
            next[i] = i + 1 < n ? uint32_t(i + 1) : none;
            prev[i] = i > 0 ? uint32_t(i - 1) : none;
        }
        std::priority_queue<candidate, std::vector<candidate>, std::greater<>> heap;
        auto push = [&](uint32_t i) {
            if (i == none || next[i] == none) return;
            if (const merge_info* m = find_merge(sym[i], sym[next[i]])) heap.push({m->rank, i, m->id});
        };
        for (uint32_t i = 0; i + 1 < n; ++i) push(i);
        while (!heap.empty()) {
            const candidate c = heap.top();
            heap.pop();
            const uint32_t right = next[c.pos];
            if (!alive[c.pos] || right == none) continue;
            const merge_info* m = find_merge(sym[c.pos], sym[right]);
            if (!m || m->id != c.id) continue;
            sym[c.pos] = c.id;
            alive[right] = false;
            next[c.pos] = next[right];
            if (next[right] != none) prev[next[right]] = c.pos;
            push(prev[c.pos]);
            push(c.pos);
        }
        std::size_t out = 0;
        for (std::size_t i = 0; i < n; ++i)
            if (alive[i]) sym[out++] = sym[i];
        sym.resize(out);
    }

    // ---------------------------------------------------------------- loading
    using json = nlohmann::json;

    [[noreturn]] void fail(const std::string& field, const std::string& msg) const {
        throw error(what_ + ": " + field + ": " + msg);
    }
    const json& member(const json& obj, const char* key, const std::string& field) const {
        if (!obj.is_object()) fail(field, "expected an object");
        auto it = obj.find(key);
        if (it == obj.end()) fail(field + "." + key, "missing");
        return *it;
    }
    bool flag(const json& obj, const char* key, const std::string& field, bool fallback) const {
        auto it = obj.find(key);
        if (it == obj.end() || it->is_null()) return fallback;
        if (!it->is_boolean()) fail(field + "." + key, "expected true or false");
        return it->get<bool>();
    }
    std::string string_field(const json& obj, const char* key, const std::string& field) const {
        const json& v = member(obj, key, field);
        if (!v.is_string()) fail(field + "." + key, "expected a string");
        return v.get<std::string>();
    }
    std::string type_of(const json& obj, const std::string& field) const {
        return string_field(obj, "type", field);
    }

    void parse(const json& j) {
        if (!j.is_object()) fail("tokenizer.json", "expected a JSON object at the top");
        for (const char* k : {"truncation", "padding"})
            if (auto it = j.find(k); it != j.end() && !it->is_null())
                fail(k, "not supported (must be null: it would change the ids of encode)");
        parse_model(member(j, "model", "tokenizer.json"));
        if (auto it = j.find("added_tokens"); it != j.end() && !it->is_null()) parse_added(*it);
        if (auto it = j.find("normalizer"); it != j.end()) parse_normalizer(*it, "normalizer");
        if (auto it = j.find("pre_tokenizer"); it != j.end()) parse_pre_tokenizer(*it);
        parse_decoder(member(j, "decoder", "tokenizer.json"), "decoder");
        if (auto it = j.find("post_processor"); it != j.end()) parse_post_processor(*it, "post_processor");
        build_tables();
        for (const added_token& t : added_) {
            const std::string key = t.normalized && nfc_ ? nfc(t.content) : t.content;
            (t.normalized ? normalized_added_ : raw_added_).insert(key, int32_t(&t - added_.data()));
        }
        bos_id_ = token_id("<｜begin▁of▁sentence｜>").value_or(-1);
        eos_id_ = token_id("<｜end▁of▁sentence｜>").value_or(-1);
    }

    void parse_model(const json& m) {
        const std::string f = "model";
        if (m.contains("type") && type_of(m, f) != "BPE")
            fail(f + ".type", "'" + type_of(m, f) + "' is not supported (only BPE)");
        if (auto it = m.find("dropout"); it != m.end() && !it->is_null())
            fail(f + ".dropout", "not supported (must be null: dropout makes encode random)");
        for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
            if (auto it = m.find(k); it != m.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty()))
                fail(f + "." + k, "not supported (must be null)");
        fuse_unk_ = flag(m, "fuse_unk", f, false);
        byte_fallback_ = flag(m, "byte_fallback", f, false);
        ignore_merges_ = flag(m, "ignore_merges", f, false);
        const json& vocab = member(m, "vocab", f);
        if (!vocab.is_object()) fail(f + ".vocab", "expected an object of token: id");
        vocab_.reserve(vocab.size());
        for (auto it = vocab.begin(); it != vocab.end(); ++it) {
            if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > INT32_MAX)
                fail(f + ".vocab", "id of " + detail_quote(it.key()) + " is not an integer in [0, 2^31)");
            vocab_.emplace(it.key(), int32_t(it.value().get<int64_t>()));
        }
        const json& merges = member(m, "merges", f);
        if (!merges.is_array()) fail(f + ".merges", "expected an array");
        merges_.reserve(merges.size());
        for (std::size_t r = 0; r < merges.size(); ++r) {
            const json& e = merges[r];
            std::string a, b;
            const std::string field = f + ".merges[" + std::to_string(r) + "]";
            if (e.is_string()) {
                const std::string s = e.get<std::string>();
                const auto sp = s.find(' ');
                if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
                    fail(field, "expected \"a b\" (two tokens and one space), got " + detail_quote(s));
                a = s.substr(0, sp);
                b = s.substr(sp + 1);
            } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
                a = e[0].get<std::string>();
                b = e[1].get<std::string>();
            } else {
                fail(field, "expected \"a b\" or [\"a\", \"b\"]");
            }
            const auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(a + b);
            if (ia == vocab_.end() || ib == vocab_.end() || iab == vocab_.end())
                fail(field, "a token of " + detail_quote(a + " " + b) + " or their merge is not in the vocab");
            merges_.emplace((uint64_t(uint32_t(ia->second)) << 32) | uint32_t(ib->second),
                            merge_info{int32_t(r), iab->second});  // a repeated pair keeps its first rank
        }
        if (auto it = m.find("unk_token"); it != m.end() && !it->is_null()) {
            if (!it->is_string()) fail(f + ".unk_token", "expected a string or null");
            auto v = vocab_.find(it->get<std::string>());
            if (v == vocab_.end()) fail(f + ".unk_token", detail_quote(it->get<std::string>()) + " is not in the vocab");
            unk_id_ = v->second;
        }
    }

    void parse_added(const json& a) {
        if (!a.is_array()) fail("added_tokens", "expected an array");
        for (std::size_t i = 0; i < a.size(); ++i) {
            const std::string f = "added_tokens[" + std::to_string(i) + "]";
            const json& e = a[i];
            added_token t;
            t.content = string_field(e, "content", f);
            const json& id = member(e, "id", f);
            if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
                fail(f + ".id", "expected an integer in [0, 2^31)");
            t.id = int32_t(id.get<int64_t>());
            t.special = flag(e, "special", f, false);
            t.lstrip = flag(e, "lstrip", f, false);
            t.rstrip = flag(e, "rstrip", f, false);
            t.single_word = flag(e, "single_word", f, false);
            t.normalized = flag(e, "normalized", f, !t.special);
            if (t.content.empty()) fail(f + ".content", "empty");
            if (auto v = vocab_.find(t.content); v != vocab_.end() && v->second != t.id)
                fail(f + ".id", detail_quote(t.content) + " has id " + std::to_string(v->second) + " in the vocab");
            if (added_by_content_.count(t.content)) fail(f + ".content", detail_quote(t.content) + " added twice");
            added_by_content_.emplace(t.content, added_.size());
            added_.push_back(std::move(t));
        }
    }

    void parse_normalizer(const json& n, const std::string& f) {
        if (n.is_null()) return;
        const std::string type = type_of(n, f);
        if (type == "NFC") {
            nfc_ = true;
        } else if (type == "Sequence") {
            const json& list = member(n, "normalizers", f);
            if (!list.is_array()) fail(f + ".normalizers", "expected an array");
            for (std::size_t i = 0; i < list.size(); ++i) parse_normalizer(list[i], f + ".normalizers[" + std::to_string(i) + "]");
        } else {
            fail(f, "normalizer type '" + type + "' is not supported (null, NFC, or a Sequence of those)");
        }
    }

    void parse_pre_tokenizer(const json& p) {
        if (p.is_null()) return;
        const std::string f = "pre_tokenizer";
        if (type_of(p, f) == "Sequence") {
            const json& list = member(p, "pretokenizers", f);
            if (!list.is_array()) fail(f + ".pretokenizers", "expected an array");
            for (std::size_t i = 0; i < list.size(); ++i) {
                if (byte_level_.present) fail(f, "ByteLevel must be the last pre-tokenizer of the Sequence");
                parse_pre_tokenizer_step(list[i], f + ".pretokenizers[" + std::to_string(i) + "]");
            }
        } else {
            parse_pre_tokenizer_step(p, f);
        }
    }

    void parse_pre_tokenizer_step(const json& p, const std::string& f) {
        const std::string type = type_of(p, f);
        if (type == "Split") {
            const json& pattern = member(p, "pattern", f);
            split_step s;
            if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string())
                s.re = regex(pattern["Regex"].get<std::string>(), false, what_ + ": " + f + ".pattern.Regex");
            else if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string())
                s.re = regex(pattern["String"].get<std::string>(), true, what_ + ": " + f + ".pattern.String");
            else
                fail(f + ".pattern", "expected {\"Regex\": ...} or {\"String\": ...}");
            const std::string behavior = string_field(p, "behavior", f);
            if (behavior == "Isolated") s.behavior = split_behavior::isolated;
            else if (behavior == "Removed") s.behavior = split_behavior::removed;
            else if (behavior == "MergedWithPrevious") s.behavior = split_behavior::merged_with_previous;
            else if (behavior == "MergedWithNext") s.behavior = split_behavior::merged_with_next;
            else if (behavior == "Contiguous") s.behavior = split_behavior::contiguous;
            else fail(f + ".behavior", "'" + behavior + "' is not a split behaviour");
            s.invert = flag(p, "invert", f, false);
            splits_.push_back(std::move(s));
        } else if (type == "Digits") {
            // char::is_numeric is general category N: one match per digit
            const bool individual = flag(p, "individual_digits", f, false);
            splits_.push_back({regex("\\p{N}", false, what_ + ": " + f),
                               individual ? split_behavior::isolated : split_behavior::contiguous, false});
        } else if (type == "ByteLevel") {
            byte_level_.present = true;
            byte_level_.add_prefix_space = flag(p, "add_prefix_space", f, true);
            byte_level_.use_regex = flag(p, "use_regex", f, true);
            if (byte_level_.use_regex)
                byte_level_.gpt2.re = regex(
                    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", false,
                    what_ + ": " + f);
        } else {
            fail(f, "pre-tokenizer type '" + type + "' is not supported (Split, Digits, ByteLevel, Sequence)");
        }
    }

    void parse_decoder(const json& d, const std::string& f) {
        if (d.is_null()) fail(f, "null is not supported (only ByteLevel)");
        const std::string type = type_of(d, f);
        if (type == "Sequence") {
            const json& list = member(d, "decoders", f);
            if (!list.is_array() || list.empty()) fail(f + ".decoders", "expected a non-empty array");
            for (std::size_t i = 0; i < list.size(); ++i) parse_decoder(list[i], f + ".decoders[" + std::to_string(i) + "]");
        } else if (type != "ByteLevel") {
            fail(f, "decoder type '" + type + "' is not supported (ByteLevel, or a Sequence of only ByteLevel)");
        }
    }

    void parse_post_processor(const json& p, const std::string& f) {
        if (p.is_null()) return;
        const std::string type = type_of(p, f);
        if (type == "Sequence") {
            const json& list = member(p, "processors", f);
            if (!list.is_array()) fail(f + ".processors", "expected an array");
            for (std::size_t i = 0; i < list.size(); ++i) parse_post_processor(list[i], f + ".processors[" + std::to_string(i) + "]");
        } else if (type != "TemplateProcessing" && type != "ByteLevel") {
            fail(f, "post-processor type '" + type + "' is not supported (null, TemplateProcessing, ByteLevel)");
        }
    }

    void build_tables() {
        // GPT-2's byte <-> character map of the ByteLevel pre-tokenizer and decoder
        std::array<char32_t, 256> byte_cp{};
        for (int b = 0, extra = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            byte_cp[std::size_t(b)] = printable ? char32_t(b) : char32_t(256 + extra++);
        }
        std::unordered_map<char32_t, unsigned char> cp_byte;
        for (int b = 0; b < 256; ++b) {
            byte_char_[std::size_t(b)] = encode_utf8(byte_cp[std::size_t(b)]);
            cp_byte[byte_cp[std::size_t(b)]] = static_cast<unsigned char>(b);
            auto it = vocab_.find(byte_char_[std::size_t(b)]);
            byte_id_[std::size_t(b)] = it == vocab_.end() ? -1 : it->second;
        }
        std::size_t n = 0;
        for (auto& [tok, id] : vocab_) n = std::max(n, std::size_t(id) + 1);
        for (auto& t : added_) n = std::max(n, std::size_t(t.id) + 1);
        id_bytes_.assign(n, {});
        id_known_.assign(n, false);
        id_special_.assign(n, false);
        // ByteLevel decoding of one token: its characters mapped back to bytes when all of them
        // are in the map, its own UTF-8 otherwise (e.g. <｜User｜>)
        auto token_to_bytes = [&](const std::string& tok) {
            std::string out;
            for (std::size_t i = 0, len; i < tok.size(); i += len) {
                if (!utf8_next(tok, i).valid) return tok;
                auto it = cp_byte.find(decode_utf8(tok, i, len));
                if (it == cp_byte.end()) return tok;
                out += char(it->second);
            }
            return out;
        };
        for (auto& [tok, id] : vocab_) {
            id_bytes_[std::size_t(id)] = token_to_bytes(tok);
            id_known_[std::size_t(id)] = true;
        }
        for (auto& t : added_) {
            id_bytes_[std::size_t(t.id)] = token_to_bytes(t.content);
            id_known_[std::size_t(t.id)] = true;
            id_special_[std::size_t(t.id)] = t.special;
        }
    }

    void read_config(const std::string& text, const std::string& file) {
        json j;
        try {
            j = json::parse(text);
        } catch (const json::exception& e) {
            throw error(file + ": invalid JSON: " + e.what());
        }
        if (!j.is_object()) throw error(file + ": expected a JSON object at the top");
        auto lookup = [&](const char* key, int32_t& id) {
            auto it = j.find(key);
            if (it == j.end() || it->is_null()) return;
            std::string content;
            if (it->is_string()) content = it->get<std::string>();
            else if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
                content = (*it)["content"].get<std::string>();
            else throw error(file + ": " + key + ": expected a string or {\"content\": ...}");
            auto found = token_id(content);
            if (!found) throw error(file + ": " + key + ": " + detail_quote(content) + " is not a token of " + what_);
            id = *found;
        };
        lookup("bos_token", bos_id_);
        lookup("eos_token", eos_id_);
    }

    // ---------------------------------------------------------------- small helpers
    static std::string read_file(const std::filesystem::path& p) {
        std::ifstream in(p, std::ios::binary);
        if (!in) throw error(p.string() + ": cannot open");
        std::ostringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }
    static std::string hex_byte(unsigned char b) {
        static const char digits[] = "0123456789ABCDEF";
        return {digits[b >> 4], digits[b & 15]};
    }
    static std::string detail_quote(const std::string& s) {
        return "'" + (s.size() > 80 ? s.substr(0, 80) + "..." : s) + "'";
    }
    static std::string encode_utf8(char32_t c) {
        std::string s;
        if (c < 0x80) {
            s += char(c);
        } else if (c < 0x800) {
            s += char(0xC0 | (c >> 6));
            s += char(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            s += char(0xE0 | (c >> 12));
            s += char(0x80 | ((c >> 6) & 0x3F));
            s += char(0x80 | (c & 0x3F));
        } else {
            s += char(0xF0 | (c >> 18));
            s += char(0x80 | ((c >> 12) & 0x3F));
            s += char(0x80 | ((c >> 6) & 0x3F));
            s += char(0x80 | (c & 0x3F));
        }
        return s;
    }

    static constexpr std::size_t short_word = 48;  // symbols; longer words take the heap
    static constexpr std::size_t max_cached_word = 256;
    static constexpr std::size_t max_cache_entries = 1 << 16;

    std::string what_;
    string_map<int32_t> vocab_;
    std::unordered_map<uint64_t, merge_info> merges_;
    std::vector<added_token> added_;
    string_map<std::size_t> added_by_content_;
    token_trie raw_added_, normalized_added_;
    bool nfc_ = false;
    std::vector<split_step> splits_;
    byte_level_step byte_level_;
    bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
    int32_t unk_id_ = -1, bos_id_ = -1, eos_id_ = -1;
    std::array<std::string, 256> byte_char_;
    std::array<int32_t, 256> byte_id_{};
    std::vector<std::string> id_bytes_;
    std::vector<bool> id_known_, id_special_;
    std::unique_ptr<std::mutex> cache_mutex_ = std::make_unique<std::mutex>();  // movable tokenizer
    mutable string_map<std::vector<int32_t>> cache_;
};

inline std::string stream_decoder::push(int32_t id) {
    tok_->append_bytes(id, skip_special_, pending_);
    std::string out;
    std::size_t i = 0;
    while (i < pending_.size()) {
        const utf8_step st = utf8_next(pending_, i);
        if (st.incomplete) break;  // wait for the next token
        if (st.valid) out.append(pending_, i, st.len);
        else out += "\xEF\xBF\xBD";
        i += st.len;
    }
    pending_.erase(0, i);
    return out;
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4::text
