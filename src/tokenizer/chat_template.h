// Chat templates rendered natively: the template string of each supported model is recognized
// (ChatML and its variants with a default system message: SmolLM2, Qwen2/Qwen2.5) and rendered
// in C++. There is deliberately no Jinja engine; anything unrecognized is Unsupported.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "tokenizer/tokenizer.h"

namespace gsa::tokenizer {

/// A recognized chat format.
struct ChatFormat {
  std::string name;            // "chatml", "smollm", "qwen2.5", ... for messages and logs
  std::string default_system;  // inserted when the first message is not a system message
  bool tool_role = false;          // "tool" messages become <tool_response> blocks in a user turn
};

/// Recognizes a template given by name ("chatml", "smollm", "qwen2.5") or as the template string
/// itself. An empty or unknown template gives Unsupported naming the fix.
Result<ChatFormat> detect_chat_format(std::string_view tmpl);

/// Renders msgs in `format`; at least one message. Roles must be non-empty; with tool_role only system, user,
/// assistant and tool are accepted (the template would silently drop others).
Result<std::string> render_chat(const ChatFormat& format, const std::vector<ChatMessage>& msgs,
                                bool add_generation_prompt);

}  // namespace gsa::tokenizer
