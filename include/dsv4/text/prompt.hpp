// dsv4/text/prompt.hpp - what a generator needs from dsv4::text in one place: a conversation
// to prompt ids, the ids a live sequence appends for new turns, and the reply back.
//
//   auto tok = dsv4::text::tokenizer::load(model_dir);           // tokenizer.json in the checkpoint
//   std::vector<dsv4::text::chat::message> conv = {{dsv4::text::chat::role::user, "Hi"}};
//   auto ids = dsv4::text::prompt_ids(tok, conv, {});             // BOS ... <｜Assistant｜></think>
//   auto out = tok.stream();                                      // per generated id: print out.push(id)
//   ... stop at tok.eos_id(); then chat::parse_completion(text, mode) for reasoning / tool calls
#pragma once

#include "chat.hpp"
#include "tokenizer.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace dsv4::text {
inline namespace DSV4_ISA_NS {

/// Ids of a whole conversation's prompt. The prompt text carries BOS and the role markers as
/// text; the tokenizer turns them into their special ids.
inline std::vector<int32_t> prompt_ids(const tokenizer& tok, std::span<const chat::message> messages,
                                       const chat::options& opt) {
    return tok.encode(chat::encode(messages, opt));
}

/// Ids that `new_messages` append to a sequence that already holds `context` (its prompt and
/// the replies generated so far), e.g. the next user turn of a live chat.
inline std::vector<int32_t> suffix_ids(const tokenizer& tok, std::span<const chat::message> context,
                                       std::span<const chat::message> new_messages, const chat::options& opt) {
    return tok.encode(chat::encode_suffix(context, new_messages, opt));
}

}  // namespace DSV4_ISA_NS
}  // namespace dsv4::text
