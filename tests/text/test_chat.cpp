// tests/text/test_chat.cpp - DeepSeek-V4 chat encoding: expected prompts written out from the
// rules of the official encoding_dsv4.py (see include/dsv4/text/chat.hpp), for every role and
// mode, multi-turn reasoning drop, tools and tool results, suffixes, and completion parsing.
#include <doctest/doctest.h>

#include <dsv4/text/chat.hpp>

#include <string>
#include <vector>

using namespace dsv4::text::chat;

namespace {

const std::string BOS = "<｜begin▁of▁sentence｜>", EOS = "<｜end▁of▁sentence｜>", U = "<｜User｜>",
                  A = "<｜Assistant｜>", TB = "<think>", TE = "</think>";

message sys(std::string c) { return {role::system, std::move(c)}; }
message usr(std::string c) { return {role::user, std::move(c)}; }
message asst(std::string c, std::string r = {}, std::vector<tool_call> calls = {}) {
    return {role::assistant, std::move(c), std::move(r), std::move(calls)};
}
message tool(std::string c, std::string id) {
    message m(role::tool, std::move(c));
    m.tool_call_id = std::move(id);
    return m;
}

options thinking(bool max = false) { return {mode::thinking, max, true}; }

const char* weather_tool = R"([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
  "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
  "required": ["city"]}}}])";

}  // namespace

TEST_CASE("chat: single turns in chat and thinking mode") {
    const std::vector<message> m = {usr("Hi")};
    CHECK(encode(m) == BOS + U + "Hi" + A + TE);
    CHECK(encode(m, thinking()) == BOS + U + "Hi" + A + TB);
    const std::vector<message> with_sys = {sys("You are terse."), usr("Hi")};
    CHECK(encode(with_sys) == BOS + "You are terse." + U + "Hi" + A + TE);
    CHECK(encode(with_sys, thinking()) == BOS + "You are terse." + U + "Hi" + A + TB);
    // a system message alone: plain text, no transition
    CHECK(encode(std::vector<message>{sys("S")}) == BOS + "S");
}

TEST_CASE("chat: the max reasoning-effort preamble comes first, in thinking mode only") {
    const std::vector<message> m = {sys("S"), usr("Q")};
    CHECK(encode(m, thinking(true)) == BOS + std::string(reasoning_effort_max_preamble) + "S" + U + "Q" + A + TB);
    CHECK(encode(m, {mode::chat, true, true}) == BOS + "S" + U + "Q" + A + TE);
    CHECK(reasoning_effort_max_preamble.starts_with("Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"));
    CHECK(reasoning_effort_max_preamble.ends_with("is left unchecked.\n\n"));
}

TEST_CASE("chat: multi-turn, reasoning of turns before the last user message dropped") {
    const std::vector<message> m = {sys("S"), usr("Q1"), asst("A1", "R1"), usr("Q2"), asst("A2", "R2")};
    // chat mode: no reasoning anywhere, every user turn closes the think block
    CHECK(encode(m) == BOS + "S" + U + "Q1" + A + TE + "A1" + EOS + U + "Q2" + A + TE + "A2" + EOS);
    // thinking: turn 1's reasoning dropped (its user turn gets </think>), the last one kept
    CHECK(encode(m, thinking()) ==
          BOS + "S" + U + "Q1" + A + TE + "A1" + EOS + U + "Q2" + A + TB + "R2" + TE + "A2" + EOS);
    // drop_thinking off: every reasoning kept, every user turn opens <think>
    CHECK(encode(m, {mode::thinking, false, false}) ==
          BOS + "S" + U + "Q1" + A + TB + "R1" + TE + "A1" + EOS + U + "Q2" + A + TB + "R2" + TE + "A2" + EOS);
    // prompt for the next reply
    const std::vector<message> next = {usr("Q1"), asst("A1", "R1"), usr("Q2")};
    CHECK(encode(next, thinking()) == BOS + U + "Q1" + A + TE + "A1" + EOS + U + "Q2" + A + TB);
}

TEST_CASE("chat: consecutive user messages join one turn") {
    const std::vector<message> m = {usr("a"), usr("b")};
    CHECK(encode(m) == BOS + U + "a\n\nb" + A + TE);
}

TEST_CASE("chat: tools, tool calls in DSML, tool results in call order") {
    message s = sys("S");
    s.tools = json::parse(weather_tool);
    const std::vector<tool_call> calls = {{"get_weather", R"({"city": "Paris", "days": 3})", "c1"},
                                          {"get_weather", R"({"city": "Oslo"})", "c2"}};
    const std::vector<message> m = {s, usr("Weather?"), asst("", "need data", calls), tool("sunny", "c2"),
                                    tool("rain", "c1"), asst("Paris rain, Oslo sun.", "done")};
    const std::string d = "｜DSML｜";
    const std::string dsml = "\n\n<" + d + "tool_calls>\n<" + d + "invoke name=\"get_weather\">\n<" + d +
                             "parameter name=\"city\" string=\"true\">Paris</" + d + "parameter>\n<" + d +
                             "parameter name=\"days\" string=\"false\">3</" + d + "parameter>\n</" + d + "invoke>\n<" +
                             d + "invoke name=\"get_weather\">\n<" + d +
                             "parameter name=\"city\" string=\"true\">Oslo</" + d + "parameter>\n</" + d + "invoke>\n</" +
                             d + "tool_calls>";
    const std::string schema =
        R"({"name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}})";
    const std::string prompt = encode(m, thinking());
    const std::string tools_block = detail::render_tools(s.tools);
    CHECK(tools_block.starts_with("## Tools\n\nYou have access to a set of tools"));
    CHECK(tools_block.find("### Available Tool Schemas\n\n" + schema + "\n\nYou MUST strictly follow") !=
          std::string::npos);
    CHECK(tools_block.ends_with("to invoke tool calls.\n"));
    // tools keep all reasoning; results sorted by call order (c1 before c2), in the user turn
    CHECK(prompt == BOS + "S\n\n" + tools_block + U + "Weather?" + A + TB + "need data" + TE + dsml + EOS + U +
                        "<tool_result>rain</tool_result>\n\n<tool_result>sunny</tool_result>" + A + TB + "done" + TE +
                        "Paris rain, Oslo sun." + EOS);
    // chat mode: no reasoning, the transitions close the think block
    CHECK(encode(m) == BOS + "S\n\n" + tools_block + U + "Weather?" + A + TE + dsml + EOS + U +
                           "<tool_result>rain</tool_result>\n\n<tool_result>sunny</tool_result>" + A + TE +
                           "Paris rain, Oslo sun." + EOS);
}

TEST_CASE("chat: response format and non-JSON arguments") {
    message s = sys("S");
    s.response_format = json::parse(R"({"type": "json_object", "schema": {"a": 1}})");
    CHECK(encode(std::vector<message>{s, usr("Q")}) ==
          BOS + "S\n\n## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n"
                "{\"type\": \"json_object\", \"schema\": {\"a\": 1}}" + U + "Q" + A + TE);
    const std::string d = "｜DSML｜";
    CHECK(detail::render_tool_calls({{"f", "not json", ""}}) ==
          "\n\n<" + d + "tool_calls>\n<" + d + "invoke name=\"f\">\n<" + d +
              "parameter name=\"arguments\" string=\"true\">not json</" + d + "parameter>\n</" + d + "invoke>\n</" + d +
              "tool_calls>");
    // JSON values in Python's json.dumps form
    CHECK(detail::to_json(json::parse(R"({"b": [1, 2.5, true, null], "a": "é\n\"x\""})")) ==
          R"({"b": [1, 2.5, true, null], "a": "é\n\"x\""})");
}

TEST_CASE("chat: a suffix appended to a live sequence") {
    const std::vector<message> context = {sys("S"), usr("Q1"), asst("A1", "R1")};
    const std::vector<message> added = {usr("Q2")};
    // the sequence so far: prompt + generated reply
    const std::string live = encode(std::vector<message>{sys("S"), usr("Q1")}, thinking()) + "R1" + TE + "A1" + EOS;
    CHECK(live == BOS + "S" + U + "Q1" + A + TB + "R1" + TE + "A1" + EOS);
    CHECK(encode_suffix(context, added, thinking()) == U + "Q2" + A + TB);
    CHECK(encode_suffix(context, added) == U + "Q2" + A + TE);
    // a tool result appended after an assistant's calls
    const std::vector<message> ctx2 = {usr("Q"), asst("", "", {{"f", "{}", "x"}})};
    CHECK(encode_suffix(ctx2, std::vector<message>{tool("42", "x")}) == U + "<tool_result>42</tool_result>" + A + TE);
    // no context: the whole prompt, BOS included
    CHECK(encode_suffix({}, added) == BOS + U + "Q2" + A + TE);
}

TEST_CASE("chat: completions parse back into reasoning, content and tool calls") {
    const completion c = parse_completion("Let me see." + TE + "The answer is 4." + EOS, mode::thinking);
    CHECK(c.reasoning == "Let me see.");
    CHECK(c.content == "The answer is 4.");
    CHECK(c.tool_calls.empty());
    const completion chat = parse_completion("Hello!" + EOS, mode::chat);
    CHECK(chat.content == "Hello!");
    CHECK(chat.reasoning.empty());
    // round trip: an assistant turn rendered, then parsed
    const std::vector<tool_call> calls = {{"get_weather", R"({"city": "Paris", "days": 3, "opts": {"u": "C"}})", ""},
                                          {"noop", "{}", ""}};
    const std::string rendered = "thinking hard" + TE + "Checking." + detail::render_tool_calls(calls) + EOS;
    const completion t = parse_completion(rendered, mode::thinking);
    CHECK(t.reasoning == "thinking hard");
    CHECK(t.content == "Checking.");
    REQUIRE(t.tool_calls.size() == 2);
    CHECK(t.tool_calls[0].name == "get_weather");
    CHECK(t.tool_calls[0].arguments == calls[0].arguments);
    CHECK(t.tool_calls[1].name == "noop");
    CHECK(t.tool_calls[1].arguments == "{}");
    // the whole assistant message of encode(), after the transition, parses to what went in
    const std::vector<message> conv = {usr("Q"), asst("Checking.", "thinking hard", calls)};
    const std::string prompt = encode(conv, thinking());
    const std::string head = BOS + U + "Q" + A + TB;
    REQUIRE(prompt.starts_with(head));
    const completion again = parse_completion(prompt.substr(head.size()), mode::thinking);
    CHECK(again.content == "Checking.");
    CHECK(again.tool_calls.size() == 2);
    // malformed completions
    CHECK_THROWS_WITH_AS(parse_completion("no end", mode::chat), doctest::Contains("missing <｜end▁of▁sentence｜>"),
                         dsv4::error);
    CHECK_THROWS_WITH_AS(parse_completion("x" + EOS, mode::thinking), doctest::Contains("missing </think>"), dsv4::error);
    CHECK_THROWS_WITH_AS(parse_completion("a" + EOS + "b", mode::chat), doctest::Contains("unexpected text after"),
                         dsv4::error);
    CHECK_THROWS_WITH_AS(parse_completion("a<think>b" + EOS, mode::chat), doctest::Contains("special token '<think>'"),
                         dsv4::error);
    const std::string d = "｜DSML｜";
    const std::string dup = "\n\n<" + d + "tool_calls>\n<" + d + "invoke name=\"f\">\n<" + d +
                            "parameter name=\"a\" string=\"true\">1</" + d + "parameter>\n<" + d +
                            "parameter name=\"a\" string=\"true\">2</" + d + "parameter>\n</" + d + "invoke>\n</" + d +
                            "tool_calls>" + EOS;
    CHECK_THROWS_WITH_AS(parse_completion(dup, mode::chat), doctest::Contains("duplicate parameter 'a'"), dsv4::error);
    CHECK_THROWS_WITH_AS(parse_completion("\n\n<" + d + "tool_calls>\n<" + d + "invoke nam=\"f\">\n</" + d + "invoke>\n</" +
                                              d + "tool_calls>" + EOS,
                                          mode::chat),
                         doctest::Contains("tool name format"), dsv4::error);
}
