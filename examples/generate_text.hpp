// examples/generate_text.hpp - dsv4-generate's text mode: the checkpoint's tokenizer, the
// DeepSeek-V4 chat encoding, streaming text out, and a chat that keeps its context.
//
// Every user turn is appended to the live sequence (model::extend of the turn's own ids, the
// history is never re-run), so time-to-first-token depends on the turn, not on the history.
// The id that ended a reply (EOS, or the last one at --max-new-tokens, then followed by EOS
// as the chat template closes every assistant turn) is fed with the next turn's ids.
// --save-session writes the sequence and the conversation; --load-session continues it.
#pragma once

#include <dsv4/model/forward.hpp>
#include <dsv4/model/sampling.hpp>
#include <dsv4/model/session.hpp>
#include <dsv4/text/prompt.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

namespace generate_text {

namespace chat = dsv4::text::chat;

struct options {
    std::string prompt;          ///< one user turn (or raw text with raw)
    std::string tokenizer_path;  ///< file or directory; empty: the model directory
    std::string system;
    std::string save_session, load_session;
    bool chat = false;   ///< turns from stdin, one per line, until EOF
    bool think = false;  ///< thinking mode (<think> after <｜Assistant｜>)
    bool raw = false;    ///< --prompt is plain text after BOS, no chat template
    uint64_t max_new = 16, chunk = 0;
    bool ignore_eos = false;
};

/// The tokenizer of `path` (a tokenizer.json, or a directory holding one), with the error a
/// user of the generator needs when there is none.
inline dsv4::text::tokenizer load_tokenizer(const std::string& path, const std::string& model_dir) {
    const std::filesystem::path p = path.empty() ? std::filesystem::path(model_dir) : std::filesystem::path(path);
    if (std::filesystem::is_directory(p) && !std::filesystem::exists(p / "tokenizer.json"))
        throw dsv4::error("no tokenizer found: " + (p / "tokenizer.json").string() +
                          " does not exist (give --tokenizer FILE, or --prompt-ids)");
    return dsv4::text::tokenizer::load(p);
}

/// The conversation kept in a session file beside the sequence's state.
struct conversation {
    std::vector<chat::message> messages;
    std::vector<int32_t> pending;  ///< ids generated but not yet in the sequence
    chat::mode mode = chat::mode::chat;
    bool raw = false;

    std::string to_json() const {
        nlohmann::json j;
        j["mode"] = mode == chat::mode::thinking ? "thinking" : "chat";
        j["raw"] = raw;
        j["pending"] = pending;
        for (const chat::message& m : messages)
            j["messages"].push_back({{"role", m.role == chat::role::system      ? "system"
                                               : m.role == chat::role::assistant ? "assistant"
                                                                                 : "user"},
                                     {"content", m.content},
                                     {"reasoning", m.reasoning}});
        return j.dump();
    }
    static conversation from_json(const std::string& text, const std::string& file) {
        conversation c;
        try {
            const nlohmann::json j = nlohmann::json::parse(text);
            c.mode = j.at("mode").get<std::string>() == "thinking" ? chat::mode::thinking : chat::mode::chat;
            c.raw = j.at("raw").get<bool>();
            c.pending = j.at("pending").get<std::vector<int32_t>>();
            if (j.contains("messages"))
                for (const auto& m : j.at("messages")) {
                    const std::string r = m.at("role").get<std::string>();
                    c.messages.emplace_back(r == "system" ? chat::role::system
                                            : r == "assistant" ? chat::role::assistant
                                                               : chat::role::user,
                                            m.at("content").get<std::string>(), m.at("reasoning").get<std::string>());
                }
        } catch (const nlohmann::json::exception& e) {
            throw dsv4::error(file + ": the session's conversation is malformed: " + e.what());
        }
        return c;
    }
};

/// Prints a reply as it comes: reasoning (before </think> in thinking mode) apart from the
/// answer; special tokens are not printed (markup never leaks into the text).
class reply_printer {
public:
    reply_printer(const dsv4::text::tokenizer& tok, bool thinking)
        : out_(tok.stream(true)), think_end_(tok.token_id(chat::think_end).value_or(-1)), thinking_(thinking) {
        if (thinking_) std::fputs("[thinking] ", stdout);
    }
    void push(int32_t id) {
        if (thinking_ && id == think_end_) {
            std::fputs(out_.finish().c_str(), stdout);
            std::fputs("\n[answer] ", stdout);
            thinking_ = false;
        } else {
            std::fputs(out_.push(id).c_str(), stdout);
        }
        std::fflush(stdout);
    }
    void finish() {
        std::fputs(out_.finish().c_str(), stdout);
        std::fputc('\n', stdout);
        std::fflush(stdout);
    }

private:
    dsv4::text::stream_decoder out_;
    int32_t think_end_;
    bool thinking_;
};

using clock = std::chrono::steady_clock;
inline double seconds_since(clock::time_point t) { return std::chrono::duration<double>(clock::now() - t).count(); }

/// Runs the text mode: one --prompt turn, or --chat turns from stdin.
inline int run(const dsv4::model& m, const options& o, const std::string& model_dir, dsv4::sampler& smp) {
    const dsv4::text::tokenizer tok = load_tokenizer(o.tokenizer_path, model_dir);
    if (tok.vocab_size() > m.vocab())
        throw dsv4::error("tokenizer has " + std::to_string(tok.vocab_size()) + " ids, the model's vocabulary " +
                          std::to_string(m.vocab()));
    const int32_t eos = tok.eos_id();
    if (eos < 0) throw dsv4::error("the tokenizer names no end-of-sentence token");
    const int32_t stop = o.ignore_eos ? -1 : eos;

    dsv4::sequence_state s = m.new_sequence();
    std::vector<int64_t> history;
    conversation conv;
    conv.mode = o.think ? chat::mode::thinking : chat::mode::chat;
    conv.raw = o.raw;
    if (!o.load_session.empty()) {
        std::string blob;
        history = dsv4::load_session(m, s, o.load_session, &blob);
        conv = conversation::from_json(blob, o.load_session);
        std::printf("session %s: %zu tokens, %zu messages\n", o.load_session.c_str(), history.size(),
                    conv.messages.size());
    } else if (!o.system.empty()) {
        conv.messages.emplace_back(chat::role::system, o.system);
    }
    const chat::options copt{conv.mode, false, true};
    std::vector<float> logits(m.vocab());

    // One turn: the ids the turn appends, the reply streamed, the reply kept in the conversation.
    auto turn = [&](const std::string& text, std::size_t n) {
        const std::size_t before = history.size();
        std::vector<int32_t> ids = conv.pending;
        const chat::message user(chat::role::user, text);
        std::vector<int32_t> t;
        if (conv.raw) {
            t = tok.encode(text, before == 0 && ids.empty());
        } else if (before == 0) {  // the whole prompt: BOS, the system prompt if any, this turn
            std::vector<chat::message> all = conv.messages;
            all.push_back(user);
            t = dsv4::text::prompt_ids(tok, all, copt);
        } else {
            t = dsv4::text::suffix_ids(tok, conv.messages, std::span(&user, 1), copt);
        }
        ids.insert(ids.end(), t.begin(), t.end());
        if (history.size() + ids.size() + o.max_new + 1 > m.max_context())
            throw dsv4::error("turn " + std::to_string(n) + ": " + std::to_string(history.size()) + " tokens of history + " +
                              std::to_string(ids.size()) + " + --max-new-tokens exceed the context of " +
                              std::to_string(m.max_context()) + " positions (--max-context)");
        std::vector<int64_t> ids64(ids.begin(), ids.end());
        const auto t0 = clock::now();
        if (history.empty() && o.chunk) m.prefill_chunked(s, ids64.data(), ids64.size(), o.chunk, logits.data());
        else m.extend(s, ids64.data(), ids64.size(), logits.data());
        history.insert(history.end(), ids64.begin(), ids64.end());
        conv.pending.clear();

        reply_printer out(tok, conv.mode == chat::mode::thinking && !conv.raw);
        std::vector<int32_t> reply;
        double ttft = 0, decode_s = 0;
        for (uint64_t j = 0; j < o.max_new; ++j) {
            const int32_t id = smp.pick(logits.data(), m.vocab());
            if (j == 0) ttft = seconds_since(t0);
            reply.push_back(id);
            if (id == stop) break;
            out.push(id);
            if (j + 1 == o.max_new) break;
            const auto t1 = clock::now();
            m.decode(s, id, logits.data());
            history.push_back(id);
            decode_s += seconds_since(t1);
        }
        out.finish();
        // the last pick is not in the sequence yet; an assistant turn ends with EOS
        conv.pending = {reply.back()};
        if (reply.back() != eos && !conv.raw) conv.pending.push_back(eos);
        if (!conv.raw) {
            std::string text_out = tok.decode(reply);
            if (reply.back() != eos) text_out += std::string(chat::eos_token);
            chat::message said(chat::role::assistant, {});
            try {
                const chat::completion c = chat::parse_completion(text_out, conv.mode);
                said.content = c.content;
                said.reasoning = c.reasoning;
                said.tool_calls = c.tool_calls;
            } catch (const dsv4::error&) {  // not a well-formed reply (e.g. random weights): keep the text
                said.content = tok.decode(reply, true);
            }
            conv.messages.push_back(user);
            conv.messages.push_back(said);
        }
        const std::size_t decoded = reply.size() > 1 ? reply.size() - 1 : 0;
        std::printf("turn %zu: %zu prompt tokens (history %zu), time to first token %.3f s | %zu tokens, decode %.1f tokens/s\n",
                    n, ids.size(), before, ttft, reply.size(),
                    decoded ? double(decoded) / decode_s : 0.0);
        std::fflush(stdout);
    };

    std::size_t n = 0;
    if (!o.prompt.empty()) turn(o.prompt, ++n);
    if (o.chat) {
        std::string line;
        while (std::fputs("> ", stderr), std::getline(std::cin, line))
            if (!line.empty()) turn(line, ++n);
        std::fputc('\n', stderr);
    }
    if (!o.save_session.empty()) {
        dsv4::save_session(m, s, history, o.save_session, conv.to_json());
        std::printf("session saved to %s: %zu tokens, %zu messages\n", o.save_session.c_str(), history.size(),
                    conv.messages.size());
    }
    return 0;
}

}  // namespace generate_text
