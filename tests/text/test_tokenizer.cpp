// tests/text/test_tokenizer.cpp - dsv4::text::tokenizer against Hugging Face `tokenizers`.
//
// The goldens (DSV4_GOLDENS/tokenizer/, written by reference/make_tokenizer.py --goldens) hold a
// tokenizer.json in the official DeepSeek-V4 structure, >= 12 000 lines of text and the ids that
// `tokenizers` gives for each (encode without special tokens), and three variants of the same
// vocab with the other supported components. Every id must match.
#include <doctest/doctest.h>

#include <dsv4/text/prompt.hpp>
#include <dsv4/text/tokenizer.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using dsv4::text::tokenizer;

namespace {

fs::path goldens_dir() {
    const char* g = std::getenv("DSV4_GOLDENS");
    REQUIRE_MESSAGE(g != nullptr, "DSV4_GOLDENS is not set (run through CTest: the goldens.tokenizer fixture)");
    const fs::path dir = fs::path(g) / "tokenizer";
    REQUIRE_MESSAGE(fs::exists(dir / "goldens.jsonl"), "no ", (dir / "goldens.jsonl").string());
    return dir;
}

struct golden_line {
    std::string text;
    std::vector<int32_t> ids;
};

std::vector<golden_line> read_goldens(const fs::path& file) {
    std::ifstream in(file);
    REQUIRE_MESSAGE(in.good(), "cannot open ", file.string());
    std::vector<golden_line> out;
    for (std::string line; std::getline(in, line);) {
        const auto j = nlohmann::json::parse(line);
        out.push_back({j.at("text").get<std::string>(), j.at("ids").get<std::vector<int32_t>>()});
    }
    return out;
}

// Every line's ids; the first mismatch is reported with its text.
std::size_t check_ids(const tokenizer& tok, const std::vector<golden_line>& lines) {
    std::size_t bad = 0;
    for (std::size_t i = 0; i < lines.size(); ++i) {
        const auto ids = tok.encode(lines[i].text);
        if (ids != lines[i].ids) {
            if (bad++ < 3) {
                std::string got, want;
                for (auto id : ids) got += std::to_string(id) + " ";
                for (auto id : lines[i].ids) want += std::to_string(id) + " ";
                FAIL_CHECK("line " << i << " " << nlohmann::json(lines[i].text).dump() << "\n  got  " << got
                                   << "\n  want " << want);
            }
        }
    }
    return bad;
}

// The id of the single-byte token whose bytes are `b`.
int32_t byte_token(const tokenizer& tok, char b) {
    for (std::size_t id = 0; id < tok.vocab_size(); ++id)
        if (tok.token_bytes(int32_t(id)) == std::string(1, b)) return int32_t(id);
    FAIL("no token for byte " << int(static_cast<unsigned char>(b)));
    return -1;
}

tokenizer from_text(const std::string& json) { return tokenizer::from_json(json, "test.json"); }

// The smallest tokenizer.json in the official structure around `model` / `pre`.
std::string minimal_json(const std::string& extra) {
    return R"({"version": "1.0", "added_tokens": [], "normalizer": null,
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
      "post_processor": null, "decoder": {"type": "ByteLevel"},
      "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})" +
           extra + "}";
}

}  // namespace

TEST_CASE("tokenizer: DeepSeek-V4 structure, >= 10 000 lines id for id with Hugging Face tokenizers") {
    const fs::path dir = goldens_dir();
    const tokenizer tok = tokenizer::load(dir / "v4");
    const auto lines = read_goldens(dir / "goldens.jsonl");
    CHECK(lines.size() >= 10000);
    std::size_t ids = 0;
    for (auto& l : lines) ids += l.ids.size();
    MESSAGE(lines.size() << " lines, " << ids << " ids");
    CHECK(check_ids(tok, lines) == 0);
    // decode(encode(x)) == x: nothing is normalized or dropped by this structure
    std::size_t round_trip_bad = 0;
    for (auto& l : lines)
        if (tok.decode(tok.encode(l.text)) != l.text && round_trip_bad++ < 3) FAIL_CHECK("round trip of " << l.text);
    CHECK(round_trip_bad == 0);
}

TEST_CASE("tokenizer: variants (NFC, Digits, ByteLevel regex + prefix space, added-token flags, split behaviours)") {
    const fs::path dir = goldens_dir();
    for (const char* name : {"nfc_digits", "bytelevel_regex", "behaviors"}) {
        CAPTURE(name);
        const tokenizer tok = tokenizer::load(dir / (std::string(name) + ".json"));
        const auto lines = read_goldens(dir / (std::string(name) + ".jsonl"));
        CHECK(lines.size() >= 1000);
        CHECK(check_ids(tok, lines) == 0);
    }
}

TEST_CASE("tokenizer: special tokens, BOS/EOS from tokenizer_config.json, add_bos") {
    const tokenizer tok = tokenizer::load(goldens_dir() / "v4");
    CHECK(tok.bos_id() == 0);
    CHECK(tok.eos_id() == 1);
    CHECK(tok.token_id("<｜end▁of▁sentence｜>") == 1);
    CHECK(tok.token_id("<｜User｜>") == 128803);
    CHECK(tok.token_id("<｜Assistant｜>") == 128804);
    CHECK(tok.token_id("<think>") == 128798);
    CHECK(tok.token_id("</think>") == 128799);
    CHECK(tok.token_id("no such token") == std::nullopt);
    CHECK(tok.vocab_size() == 129280);
    const auto plain = tok.encode("<｜User｜>hi");
    const auto with_bos = tok.encode("<｜User｜>hi", true);
    REQUIRE(with_bos.size() == plain.size() + 1);
    CHECK(with_bos[0] == 0);
    CHECK(plain[0] == 128803);
    CHECK(tok.is_special(128803));
    CHECK(tok.decode(plain) == "<｜User｜>hi");
    CHECK(tok.decode(plain, true) == "hi");
}

TEST_CASE("tokenizer: invalid UTF-8 is refused with the byte offset") {
    const tokenizer tok = tokenizer::load(goldens_dir() / "v4");
    const std::pair<std::string, std::string> cases[] = {
        {std::string("ab\xff" "cd"), "offset 2 (byte 0xFF)"},
        {std::string("\xC0\x80"), "offset 0 (byte 0xC0)"},             // overlong NUL
        {std::string("x\xED\xA0\x80"), "offset 1 (byte 0xED)"},        // surrogate
        {std::string("hello \xE4\xB8"), "offset 6 (byte 0xE4)"},       // cut at the end
        {std::string("\xF4\x90\x80\x80"), "offset 0 (byte 0xF4)"},     // above U+10FFFF
        {std::string("ok \x80"), "offset 3 (byte 0x80)"},              // lone continuation
    };
    for (const auto& c : cases) {
        const std::string& text = c.first;
        const std::string& where = c.second;  // (a named variable: Clang 14 cannot capture structured bindings)
        CAPTURE(where);
        CHECK_THROWS_WITH_AS(tok.encode(text), doctest::Contains(("invalid UTF-8 at byte " + where).c_str()),
                             dsv4::error);
    }
}

TEST_CASE("tokenizer: streaming decoder emits only whole characters and equals decode") {
    const fs::path dir = goldens_dir();
    const tokenizer tok = tokenizer::load(dir / "v4");
    const auto lines = read_goldens(dir / "goldens.jsonl");
    std::size_t split_chars = 0;
    for (std::size_t n = 0; n < 2000; ++n) {
        const auto& ids = lines[n].ids;
        auto stream = tok.stream();
        std::string text;
        for (int32_t id : ids) {
            const std::string piece = stream.push(id);
            CHECK(dsv4::text::first_invalid_utf8(piece) == std::string::npos);
            if (piece.empty() && !tok.token_bytes(id).empty()) ++split_chars;
            text += piece;
        }
        text += stream.finish();
        CHECK(text == tok.decode(ids));
    }
    CHECK(split_chars > 0);  // the corpus does split characters across tokens
    // a 4-byte character fed one byte-token at a time: nothing until the last byte
    const std::string robot = "\xF0\x9F\xA4\x96";
    auto stream = tok.stream();
    for (std::size_t k = 0; k < 3; ++k) CHECK(stream.push(byte_token(tok, robot[k])).empty());
    CHECK(stream.push(byte_token(tok, robot[3])) == robot);
    CHECK(stream.finish().empty());
    // a character left incomplete at the end of the stream becomes U+FFFD
    auto cut = tok.stream();
    CHECK(cut.push(byte_token(tok, '\xE4')).empty());
    CHECK(cut.finish() == "\xEF\xBF\xBD");
    // an invalid byte is replaced at once, not held back
    auto bad = tok.stream();
    CHECK(bad.push(byte_token(tok, '\xFF')) == "\xEF\xBF\xBD");
}

TEST_CASE("tokenizer: unsupported components and malformed files are clear errors") {
    CHECK_NOTHROW(from_text(minimal_json("")));
    CHECK(from_text(minimal_json("")).encode("abab") == std::vector<int32_t>{2, 2});
    auto throws = [](const std::string& json, const char* msg) {
        CAPTURE(msg);
        CHECK_THROWS_WITH_AS(from_text(json), doctest::Contains(msg), dsv4::error);
    };
    throws("{", "test.json: invalid JSON");
    throws(R"({"decoder": {"type": "ByteLevel"}})", "test.json: tokenizer.json.model: missing");
    throws(R"({"normalizer": {"type": "Lowercase"}, "decoder": {"type": "ByteLevel"},
              "model": {"type": "BPE", "vocab": {}, "merges": []}})",
           "test.json: normalizer: normalizer type 'Lowercase' is not supported");
    throws(R"({"pre_tokenizer": {"type": "Metaspace"}, "decoder": {"type": "ByteLevel"},
              "model": {"type": "BPE", "vocab": {}, "merges": []}})",
           "test.json: pre_tokenizer: pre-tokenizer type 'Metaspace' is not supported");
    throws(R"({"decoder": {"type": "WordPiece"}, "model": {"type": "BPE", "vocab": {}, "merges": []}})",
           "test.json: decoder: decoder type 'WordPiece' is not supported");
    throws(R"({"decoder": {"type": "ByteLevel"}, "model": {"type": "Unigram", "vocab": []}})",
           "test.json: model.type: 'Unigram' is not supported");
    throws(R"({"decoder": {"type": "ByteLevel"}, "post_processor": {"type": "BertProcessing"},
              "model": {"type": "BPE", "vocab": {}, "merges": []}})",
           "post-processor type 'BertProcessing' is not supported");
    throws(R"({"decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a c"]}})",
           "test.json: model.merges[0]: a token of 'a c' or their merge is not in the vocab");
    throws(R"({"decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}})",
           "test.json: model.merges[0]: expected");
    throws(R"({"decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"a": -1}, "merges": []}})",
           "test.json: model.vocab: id of 'a'");
    throws(R"({"decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {}, "merges": [], "dropout": 0.1}})",
           "test.json: model.dropout: not supported");
    throws(R"({"decoder": {"type": "ByteLevel"}, "truncation": {"max_length": 5},
              "model": {"type": "BPE", "vocab": {}, "merges": []}})",
           "test.json: truncation: not supported");
    throws(R"({"decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {}, "merges": []},
              "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(["}, "behavior": "Isolated"}})",
           "test.json: pre_tokenizer.pattern.Regex: bad regex");
    throws(R"({"decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {}, "merges": []},
              "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Sideways"}})",
           "test.json: pre_tokenizer.behavior: 'Sideways' is not a split behaviour");
    throws(R"({"decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {"x": 0}, "merges": []},
              "added_tokens": [{"id": 3, "content": "x"}]})",
           "test.json: added_tokens[0].id: 'x' has id 0 in the vocab");
    throws(R"({"decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {}, "merges": []},
              "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}, {"type": "Digits"}]}})",
           "ByteLevel must be the last pre-tokenizer");
    CHECK_THROWS_WITH_AS(tokenizer::load("/no/such/dir/tokenizer.json"),
                         doctest::Contains("/no/such/dir/tokenizer.json: cannot open"), dsv4::error);
    const tokenizer tok = from_text(minimal_json(""));
    CHECK_THROWS_WITH_AS(tok.decode(std::vector<int32_t>{7}), doctest::Contains("token id 7 is not in the vocabulary"),
                         dsv4::error);
    CHECK_THROWS_WITH_AS(tok.encode("a", true), doctest::Contains("no BOS token"), dsv4::error);
}

TEST_CASE("tokenizer: the toy checkpoint's tokenizer.json") {
    const char* toy = std::getenv("DSV4_TOY_CHECKPOINT");
    REQUIRE(toy != nullptr);
    const tokenizer tok = tokenizer::load(toy);
    CHECK(tok.vocab_size() <= 512);
    CHECK(tok.bos_id() == 0);
    CHECK(tok.eos_id() == 1);
    const std::string text = "hello world, the model<｜User｜>hi</think>";
    const auto ids = tok.encode(text, true);
    for (int32_t id : ids) CHECK((id >= 0 && id < 512));
    CHECK(ids.front() == 0);
    CHECK(tok.decode(ids, true) == "hello world, the modelhi");
    CHECK(tok.decode(ids) == "<｜begin▁of▁sentence｜>" + text);
}

TEST_CASE("tokenizer: chat prompts to ids (prompt_ids / suffix_ids), replies back") {
    namespace chat = dsv4::text::chat;
    const tokenizer tok = tokenizer::load(goldens_dir() / "v4");
    const std::vector<chat::message> conv = {{chat::role::system, "Be brief."}, {chat::role::user, "Hi"}};
    const auto ids = dsv4::text::prompt_ids(tok, conv, {});
    // BOS, the system text, <｜User｜>, "Hi", <｜Assistant｜>, </think>: the markers are their special ids
    std::vector<int32_t> want = {0};
    for (int32_t id : tok.encode("Be brief.")) want.push_back(id);
    want.push_back(128803);
    for (int32_t id : tok.encode("Hi")) want.push_back(id);
    want.push_back(128804);
    want.push_back(128799);
    CHECK(ids == want);
    CHECK(tok.decode(ids) == chat::encode(conv));
    // the reply streamed back and parsed
    const std::string reply = "Hello! \xF0\x9F\xA4\x96<｜end▁of▁sentence｜>";
    auto stream = tok.stream();
    std::string text;
    for (int32_t id : tok.encode(reply)) {
        if (id == tok.eos_id()) break;
        text += stream.push(id);
    }
    text += stream.finish();
    CHECK(text == "Hello! \xF0\x9F\xA4\x96");
    CHECK(chat::parse_completion(text + "<｜end▁of▁sentence｜>", chat::mode::chat).content == text);
    // the next turn appended to the live sequence
    std::vector<chat::message> ctx = conv;
    ctx.push_back({chat::role::assistant, text});
    const std::vector<chat::message> next = {{chat::role::user, "More"}};
    const auto suffix = dsv4::text::suffix_ids(tok, ctx, next, {});
    CHECK(suffix.front() == 128803);
    CHECK(tok.decode(suffix) == "<｜User｜>More<｜Assistant｜></think>");
}
