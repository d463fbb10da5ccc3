// dsv4/text/chat.hpp - DeepSeek-V4's chat prompt format: messages -> prompt text, and a
// completion -> reasoning / content / tool calls. Re-derived from the rules of the official
// encoding/encoding_dsv4.py (encode_messages, parse_message_from_completion_text):
//
// * BOS once, at the start of a conversation (never in a suffix appended to a live sequence).
// * thinking mode with reasoning_effort "max": a fixed preamble before the first message.
// * system: its content as plain text, then "\n\n" + the Tools block when it has tools, then
//   "\n\n## Response Format:..." when it has a response format.
// * user: <｜User｜> + content. Tool results (role tool) join the user turn that follows the
//   assistant's calls as <tool_result>...</tool_result> blocks, in the order of the calls;
//   the blocks and any user text of the same turn are joined by "\n\n".
// * after a user turn that an assistant turn (or the end) follows: <｜Assistant｜>, then
//   <think> in thinking mode for the last user turn, </think> otherwise.
// * assistant: {reasoning}</think> in thinking mode for turns after the last user turn (just
//   </think>... is never written for chat mode: the transition already closed the think block),
//   then {content}, then "\n\n" + the DSML tool-call block, then <｜end▁of▁sentence｜>.
// * thinking mode drops the reasoning of assistant turns before the last user turn (and
//   developer turns there), unless drop_thinking is off or any message has tools.
// * DSML: <｜DSML｜tool_calls>\n, one <｜DSML｜invoke name="f">\n...\n</｜DSML｜invoke> per call
//   joined by "\n", each argument <｜DSML｜parameter name="k" string="true|false">v</｜DSML｜parameter>
//   joined by "\n": strings as is (string="true"), other JSON values as JSON (string="false").
//
// JSON written into prompts (tool schemas, response formats, non-string arguments) is formatted
// like Python's json.dumps(ensure_ascii=False): ", " and ": " separators, keys in their given order.
#pragma once

#include "../config.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace dsv4::text::chat {
inline namespace DSV4_ISA_NS {

inline constexpr std::string_view bos_token = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view eos_token = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view user_token = "<｜User｜>";
inline constexpr std::string_view assistant_token = "<｜Assistant｜>";
inline constexpr std::string_view think_begin = "<think>";
inline constexpr std::string_view think_end = "</think>";
inline constexpr std::string_view dsml_token = "｜DSML｜";

inline constexpr std::string_view reasoning_effort_max_preamble =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root "
    "cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial "
    "scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

using json = nlohmann::ordered_json;  // keys keep their order, as Python dicts do

struct tool_call {
    std::string name;
    std::string arguments;  // a JSON object as text (OpenAI's "arguments")
    std::string id;         // matches a tool message's tool_call_id (orders the results)
};

enum class role { system, developer, user, assistant, tool };

struct message {
    message() = default;
    message(chat::role r, std::string text, std::string reasoning_text = {}, std::vector<tool_call> calls = {})
        : role(r), content(std::move(text)), reasoning(std::move(reasoning_text)), tool_calls(std::move(calls)) {}

    chat::role role = role::user;
    std::string content;
    std::string reasoning;              // assistant: reasoning_content
    std::vector<tool_call> tool_calls;  // assistant
    std::string tool_call_id;           // tool
    json tools;                         // system / developer: OpenAI tools [{"type": "function", "function": {...}}]
    json response_format;               // system / developer
};

enum class mode { chat, thinking };

struct options {
    chat::mode mode = mode::chat;
    bool reasoning_effort_max = false;
    bool drop_thinking = true;
};

/// A completion parsed back (the model's output after the prompt).
struct completion {
    std::string reasoning;
    std::string content;
    std::vector<tool_call> tool_calls;  // ids empty
};

namespace detail {

inline void dump_string(std::string_view s, std::string& out) {
    static const char hex[] = "0123456789abcdef";
    out += '"';
    for (char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
            if (c < 0x20) {
                out += "\\u00";
                out += hex[c >> 4];
                out += hex[c & 15];
            } else {
                out += ch;
            }
        }
    }
    out += '"';
}

/// json.dumps(v, ensure_ascii=False).
inline void dump_python(const json& v, std::string& out) {
    switch (v.type()) {
    case json::value_t::object: {
        out += '{';
        bool first = true;
        for (auto it = v.begin(); it != v.end(); ++it) {
            if (!first) out += ", ";
            first = false;
            dump_string(it.key(), out);
            out += ": ";
            dump_python(it.value(), out);
        }
        out += '}';
        break;
    }
    case json::value_t::array: {
        out += '[';
        for (std::size_t i = 0; i < v.size(); ++i) {
            if (i) out += ", ";
            dump_python(v[i], out);
        }
        out += ']';
        break;
    }
    case json::value_t::string: dump_string(v.get_ref<const std::string&>(), out); break;
    default: out += v.dump(); break;  // numbers, true, false, null
    }
}

inline std::string to_json(const json& v) {
    std::string out;
    dump_python(v, out);
    return out;
}

inline std::string render_tools(const json& tools) {
    std::string schemas;
    for (std::size_t i = 0; i < tools.size(); ++i) {
        if (!tools[i].is_object() || !tools[i].contains("function"))
            throw error("chat: tools[" + std::to_string(i) + "]: expected {\"type\": \"function\", \"function\": {...}}");
        if (i) schemas += '\n';
        schemas += to_json(tools[i]["function"]);
    }
    const std::string d(dsml_token), tb(think_begin), te(think_end);
    return "## Tools\n\nYou have access to a set of tools to help answer the user's question. You can invoke tools "
           "by writing a \"<" + d + "tool_calls>\" block like the following:\n\n"
           "<" + d + "tool_calls>\n<" + d + "invoke name=\"$TOOL_NAME\">\n<" + d +
           "parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</" + d + "parameter>\n...\n</" + d +
           "invoke>\n<" + d + "invoke name=\"$TOOL_NAME2\">\n...\n</" + d + "invoke>\n</" + d + "tool_calls>\n\n"
           "String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, "
           "booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n"
           "If thinking_mode is enabled (triggered by " + tb + "), you MUST output your complete reasoning inside " +
           tb + "..." + te + " BEFORE any tool calls or final response.\n\n"
           "Otherwise, output directly after " + te + " with tool calls or final response.\n\n"
           "### Available Tool Schemas\n\n" + schemas +
           "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";
}

inline std::string render_extras(const message& m) {
    std::string out;
    if (!m.tools.is_null() && !m.tools.empty()) {
        if (!m.tools.is_array()) throw error("chat: tools must be an array");
        out += "\n\n" + render_tools(m.tools);
    }
    if (!m.response_format.is_null() && !m.response_format.empty())
        out += "\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n" +
               to_json(m.response_format);
    return out;
}

inline std::string render_tool_calls(const std::vector<tool_call>& calls) {
    const std::string d(dsml_token);
    std::string out = "\n\n<" + d + "tool_calls>\n";
    for (std::size_t c = 0; c < calls.size(); ++c) {
        if (c) out += '\n';
        out += "<" + d + "invoke name=\"" + calls[c].name + "\">\n";
        json args;
        try {
            args = json::parse(calls[c].arguments);
        } catch (const json::exception&) {
            args = json::object({{"arguments", calls[c].arguments}});  // not JSON: passed whole, as the official encoder does
        }
        if (!args.is_object()) args = json::object({{"arguments", calls[c].arguments}});
        bool first = true;
        for (auto it = args.begin(); it != args.end(); ++it) {
            if (!first) out += '\n';
            first = false;
            const bool is_string = it.value().is_string();
            out += "<" + d + "parameter name=\"" + it.key() + "\" string=\"" + (is_string ? "true" : "false") + "\">";
            out += is_string ? it.value().get<std::string>() : to_json(it.value());
            out += "</" + d + "parameter>";
        }
        out += "\n</" + d + "invoke>";
    }
    out += "\n</" + d + "tool_calls>";
    return out;
}

// A user turn after merging: text and tool results, in order.
struct block {
    bool is_tool_result;
    std::string text;
    std::string tool_call_id;
};
struct turn {
    const message* msg = nullptr;  // null for a merged user turn
    chat::role role = role::user;
    std::vector<block> blocks;     // merged user turns
    bool drop_reasoning = false;
};

// Tool messages become tool-result blocks of a user turn; a user message or tool result that
// follows a merged user turn joins it (merge_tool_messages + sort_tool_results_by_call_order).
inline std::vector<turn> merge(std::span<const message> msgs) {
    std::vector<turn> out;
    for (const message& m : msgs) {
        if (m.role == role::tool || m.role == role::user) {
            block b{m.role == role::tool, m.content, m.tool_call_id};
            if (!out.empty() && out.back().role == role::user) out.back().blocks.push_back(std::move(b));
            else out.push_back(turn{nullptr, role::user, {std::move(b)}, false});
        } else {
            out.push_back(turn{&m, m.role, {}, false});
        }
    }
    return out;
}

inline void sort_tool_results(std::vector<turn>& turns) {
    std::unordered_map<std::string, std::size_t> order;
    for (turn& t : turns) {
        if (t.role == role::assistant && !t.msg->tool_calls.empty()) {
            order.clear();
            for (std::size_t i = 0; i < t.msg->tool_calls.size(); ++i)
                if (!t.msg->tool_calls[i].id.empty()) order.emplace(t.msg->tool_calls[i].id, i);
        } else if (t.role == role::user && !order.empty()) {
            std::vector<block> results;
            for (auto& b : t.blocks)
                if (b.is_tool_result) results.push_back(b);
            if (results.size() < 2) continue;
            auto rank = [&](const block& b) {
                auto it = order.find(b.tool_call_id);
                return it == order.end() ? std::size_t(0) : it->second;
            };
            std::stable_sort(results.begin(), results.end(),
                             [&](const block& a, const block& b) { return rank(a) < rank(b); });
            std::size_t k = 0;
            for (auto& b : t.blocks)
                if (b.is_tool_result) b = results[k++];
        }
    }
}

inline std::ptrdiff_t last_user_index(const std::vector<turn>& turns) {
    for (std::size_t i = turns.size(); i-- > 0;)
        if (turns[i].role == role::user || turns[i].role == role::developer) return std::ptrdiff_t(i);
    return -1;
}

// Thinking mode's drop: before the last user turn, assistant turns lose their reasoning and
// developer turns go.
inline std::vector<turn> drop_thinking(const std::vector<turn>& turns) {
    const std::ptrdiff_t last_user = last_user_index(turns);
    std::vector<turn> out;
    for (std::size_t i = 0; i < turns.size(); ++i) {
        const turn& t = turns[i];
        if (std::ptrdiff_t(i) >= last_user || t.role == role::user || t.role == role::system) {
            out.push_back(t);
        } else if (t.role == role::assistant) {
            out.push_back(t);
            out.back().drop_reasoning = true;
        }
    }
    return out;
}

inline std::string render(std::size_t index, const std::vector<turn>& turns, const options& opt, bool drop) {
    const bool thinking = opt.mode == mode::thinking;
    const std::ptrdiff_t last_user = last_user_index(turns);
    const turn& t = turns[index];
    std::string out;
    if (index == 0 && thinking && opt.reasoning_effort_max) out += reasoning_effort_max_preamble;
    switch (t.role) {
    case role::system:
        out += t.msg->content + render_extras(*t.msg);
        break;
    case role::developer:
        if (t.msg->content.empty()) throw error("chat: a developer message needs content");
        out += std::string(user_token) + t.msg->content + render_extras(*t.msg);
        break;
    case role::user:
        out += user_token;
        for (std::size_t i = 0; i < t.blocks.size(); ++i) {
            if (i) out += "\n\n";
            out += t.blocks[i].is_tool_result ? "<tool_result>" + t.blocks[i].text + "</tool_result>" : t.blocks[i].text;
        }
        break;
    case role::assistant: {
        const message& m = *t.msg;
        if (thinking && (!drop || std::ptrdiff_t(index) > last_user))
            out += (t.drop_reasoning ? std::string() : m.reasoning) + std::string(think_end);
        out += m.content;
        if (!m.tool_calls.empty()) out += render_tool_calls(m.tool_calls);
        out += eos_token;
        break;
    }
    case role::tool: throw error("chat: tool message left unmerged");
    }
    // an assistant turn (or the end) after a user turn opens the assistant's reply
    const bool next_is_assistant = index + 1 == turns.size() || turns[index + 1].role == role::assistant;
    if (next_is_assistant && (t.role == role::user || t.role == role::developer)) {
        out += assistant_token;
        const bool open_think = thinking && (!drop || std::ptrdiff_t(index) >= last_user);
        out += open_think ? think_begin : think_end;
    }
    return out;
}

inline bool any_tools(std::span<const message> a, std::span<const message> b) {
    for (auto s : {a, b})
        for (const message& m : s)
            if (!m.tools.is_null() && !m.tools.empty()) return true;
    return false;
}

inline std::string encode(std::span<const message> context, std::span<const message> messages, const options& opt) {
    std::vector<turn> ctx = merge(context), msgs = merge(messages);
    std::vector<turn> full = ctx;
    full.insert(full.end(), msgs.begin(), msgs.end());
    sort_tool_results(full);
    // tools anywhere keep every reasoning (the calls depend on it)
    const bool drop = opt.drop_thinking && !any_tools(context, messages);
    std::size_t first = ctx.size();
    if (opt.mode == mode::thinking && drop) {
        const std::size_t ctx_after_drop = drop_thinking(ctx).size();
        full = drop_thinking(full);
        first = ctx_after_drop;
    }
    std::string out = context.empty() ? std::string(bos_token) : std::string();
    for (std::size_t i = first; i < full.size(); ++i) out += render(i, full, opt, drop);
    return out;
}

// The official parser's _read_until_stop: text from `at` to the earliest of `stops`.
inline std::string_view read_until(std::string_view text, std::size_t& at, std::initializer_list<std::string_view> stops,
                                   std::string_view& matched) {
    std::size_t best = std::string_view::npos;
    matched = {};
    for (std::string_view s : stops) {
        const std::size_t p = text.find(s, at);
        if (p != std::string_view::npos && p < best) {
            best = p;
            matched = s;
        }
    }
    const std::size_t end = best == std::string_view::npos ? text.size() : best;
    std::string_view content = text.substr(at, end - at);
    at = best == std::string_view::npos ? text.size() : best + matched.size();
    return content;
}

}  // namespace detail

/// The prompt of a whole conversation: BOS, then every message rendered.
inline std::string encode(std::span<const message> messages, const options& opt = {}) {
    return detail::encode({}, messages, opt);
}

/// Only the text that `new_messages` add after `context` (already in the sequence, e.g. a
/// previous prompt and the reply the model generated): no BOS, context left as it was.
inline std::string encode_suffix(std::span<const message> context, std::span<const message> new_messages,
                                 const options& opt = {}) {
    if (context.empty()) return encode(new_messages, opt);
    return detail::encode(context, new_messages, opt);
}

/// Parses a completion: the model's text after a prompt from encode() in `m` mode, ending
/// with <｜end▁of▁sentence｜> (optional after tool calls, as in the official parser). A
/// malformed completion is a dsv4::error saying what is wrong.
inline completion parse_completion(std::string_view text, mode m) {
    using detail::read_until;
    const std::string d(dsml_token);
    const std::string calls_start = "\n\n<" + d + "tool_calls";
    completion out;
    std::size_t at = 0;
    std::string_view stop;
    if (m == mode::thinking) {
        out.reasoning = read_until(text, at, {think_end, calls_start}, stop);
        if (stop != think_end) throw error("chat::parse_completion: missing </think> after the reasoning");
    }
    out.content = read_until(text, at, {eos_token, calls_start}, stop);
    const bool calling = stop == calls_start;
    if (!calling && stop != eos_token) throw error("chat::parse_completion: missing <｜end▁of▁sentence｜>");
    if (calling) {
        const std::string invoke = "<" + d + "invoke", invoke_end = "</" + d + "invoke", param = "<" + d + "parameter",
                          param_end = "/" + d + "parameter", calls_end = "</" + d + "tool_calls>";
        while (at < text.size()) {
            std::string_view gap = read_until(text, at, {invoke, calls_end}, stop);
            if (gap != ">\n") throw error("chat::parse_completion: tool calls: expected '>\\n', got '" + std::string(gap) + "'");
            if (stop == calls_end) break;
            if (stop.empty()) throw error("chat::parse_completion: tool calls: unterminated block");
            std::string_view head = read_until(text, at, {param, invoke_end}, stop);
            // ^\s*name="(.*?)">\n$  ($ also before one final newline)
            while (!head.empty() && (head.front() == ' ' || head.front() == '\n' || head.front() == '\t')) head.remove_prefix(1);
            if (head.ends_with("\n\n")) head.remove_suffix(1);
            if (!head.starts_with("name=\"") || !head.ends_with("\">\n") || head.size() < 9)
                throw error("chat::parse_completion: tool name format: '" + std::string(head) + "'");
            tool_call call;
            call.name = std::string(head.substr(6, head.size() - 9));
            std::string args = "{";
            std::vector<std::string> names;
            while (stop == param) {
                std::string_view p = read_until(text, at, {param_end}, stop);
                // ^ name="(.*?)" string="(true|false)">(.*?)<$
                const std::size_t q = p.find("\" string=\"");
                if (!p.starts_with(" name=\"") || q == std::string_view::npos || !p.ends_with("<"))
                    throw error("chat::parse_completion: parameter format: '" + std::string(p) + "'");
                const std::string name(p.substr(7, q - 7));
                std::string_view rest = p.substr(q + 10);
                bool is_string;
                if (rest.starts_with("true\">")) is_string = true;
                else if (rest.starts_with("false\">")) is_string = false;
                else throw error("chat::parse_completion: parameter format: '" + std::string(p) + "'");
                rest.remove_prefix(is_string ? 6 : 7);
                rest.remove_suffix(1);
                for (auto& n : names)
                    if (n == name) throw error("chat::parse_completion: duplicate parameter '" + name + "'");
                names.push_back(name);
                if (names.size() > 1) args += ", ";
                args += detail::to_json(json(name)) + ": ";
                args += is_string ? detail::to_json(json(std::string(rest))) : std::string(rest);
                std::string_view after = read_until(text, at, {param, invoke_end}, stop);
                if (after != ">\n")
                    throw error("chat::parse_completion: parameter: expected '>\\n', got '" + std::string(after) + "'");
            }
            call.arguments = args + "}";
            out.tool_calls.push_back(std::move(call));
        }
        std::string_view tail = read_until(text, at, {eos_token}, stop);
        if (!tail.empty()) throw error("chat::parse_completion: unexpected text after the tool calls");
    }
    if (at != text.size()) throw error("chat::parse_completion: unexpected text after <｜end▁of▁sentence｜>");
    for (std::string_view sp : {bos_token, eos_token, think_begin, think_end, dsml_token})
        if (out.content.find(sp) != std::string::npos || out.reasoning.find(sp) != std::string::npos)
            throw error("chat::parse_completion: special token '" + std::string(sp) + "' inside the content");
    return out;
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4::text::chat
