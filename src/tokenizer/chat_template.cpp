// Recognition of ChatML-family chat templates and their native rendering (see chat_template.h).
// Recognition is structural: the template must render each message with the canonical ChatML
// expression, and may carry a literal default system message and Qwen2.5's tool turns.
#include "tokenizer/chat_template.h"

namespace gsa::tokenizer {
namespace {

constexpr std::string_view kSmolLmSystem =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
constexpr std::string_view kQwenSystem =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

constexpr std::string_view kFix =
    "pass --chat-template chatml to use plain ChatML, or a model whose template gsa knows";

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

// The template with whitespace removed outside string literals, one quoting style, newlines in
// literals written as the escape "\n", and attribute-style member access, so that equivalent
// spellings of an expression compare equal.
std::string normalize(std::string_view tmpl) {
  std::string s;
  s.reserve(tmpl.size());
  char quote = 0;  // the open string literal's quote character, or 0
  for (size_t i = 0; i < tmpl.size(); ++i) {
    const char c = tmpl[i];
    if (quote != 0) {
      if (c == '\\' && i + 1 < tmpl.size()) {
        s.push_back(c);
        s.push_back(tmpl[++i]);
      } else if (c == quote) {
        s.push_back('\'');
        quote = 0;
      } else if (c == '\n') {
        s.append("\\n");
      } else {
        s.push_back(c == '\'' ? '"' : c);
      }
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    if (c == '\'' || c == '"') {
      quote = c;
      s.push_back('\'');
      continue;
    }
    s.push_back(c);
  }
  replace_all(s, "message['role']", "message.role");
  replace_all(s, "message['content']", "message.content");
  return s;
}

// A literal default system message: "<|im_start|>system\n" + text + "<|im_end|>" inside one
// quoted string ("\n" written as an escape or as a real newline). Empty when there is none.
std::string find_default_system(std::string_view tmpl) {
  constexpr std::string_view kOpen = "<|im_start|>system";
  size_t pos = 0;
  while ((pos = tmpl.find(kOpen, pos)) != std::string_view::npos) {
    pos += kOpen.size();
    size_t start = pos;
    if (tmpl.substr(start, 2) == "\\n") {
      start += 2;
    } else if (tmpl.substr(start, 1) == "\n") {
      start += 1;
    } else {
      continue;
    }
    const size_t end = tmpl.find("<|im_end|>", start);
    if (end == std::string_view::npos) break;
    const std::string_view text = tmpl.substr(start, end - start);
    if (!text.empty() && text.find_first_of("'\"+{}\\") == std::string_view::npos) {
      return std::string(text);
    }
  }
  return {};
}

ChatFormat named(std::string name, std::string_view system, bool tool_role) {
  ChatFormat f;
  f.name = std::move(name);
  f.default_system = std::string(system);
  f.tool_role = tool_role;
  return f;
}

}  // namespace

Result<ChatFormat> detect_chat_format(std::string_view tmpl) {
  if (tmpl == "chatml") return named("chatml", "", false);
  if (tmpl == "smollm" || tmpl == "smollm2") return named("smollm", kSmolLmSystem, false);
  if (tmpl == "qwen2.5" || tmpl == "qwen2") return named("qwen2.5", kQwenSystem, true);
  if (tmpl.empty()) return unsupported("the model has no chat template; {}", kFix);

  const std::string norm = normalize(tmpl);
  const bool chatml_messages =
      norm.find("'<|im_start|>'+message.role+'\\n'+message.content+'<|im_end|>'+'\\n'") !=
          std::string::npos ||
      norm.find("'<|im_start|>'+message.role+'\\n'+message.content+'<|im_end|>\\n'") !=
          std::string::npos;
  // Reasoning templates (Qwen3, DeepSeek-R1) rewrite earlier assistant turns: not ChatML.
  const bool reasoning = norm.find("<think>") != std::string::npos ||
                         norm.find("reasoning_content") != std::string::npos;
  if (!chatml_messages || reasoning) {
    return unsupported("chat template not recognized (first 60 bytes: '{}'); {}",
                       tmpl.substr(0, 60), kFix);
  }
  const bool tool_role = norm.find("<tool_response>") != std::string::npos;
  const std::string system = find_default_system(tmpl);
  std::string name = "chatml";
  if (system == kSmolLmSystem) {
    name = "smollm";
  } else if (system == kQwenSystem) {
    name = "qwen2.5";
  } else if (!system.empty()) {
    name = "chatml+system";
  }
  return named(std::move(name), system, tool_role);
}

Result<std::string> render_chat(const ChatFormat& format, const std::vector<ChatMessage>& msgs,
                                bool add_generation_prompt) {
  if (msgs.empty()) return invalid_argument("chat: no messages to render");
  for (size_t i = 0; i < msgs.size(); ++i) {
    const std::string& role = msgs[i].role;
    if (role.empty()) return invalid_argument("chat: message {} has an empty role", i);
    if (format.tool_role && role != "system" && role != "user" && role != "assistant" &&
        role != "tool") {
      return invalid_argument("chat: message {} has role '{}'; the {} template accepts system, "
                              "user, assistant and tool",
                              i, role.substr(0, 32), format.name);
    }
  }
  std::string out;
  size_t total = 0;
  for (const auto& m : msgs) total += m.role.size() + m.content.size() + 32;
  out.reserve(total + format.default_system.size() + 64);
  if (!format.default_system.empty() && msgs[0].role != "system") {
    out += "<|im_start|>system\n";
    out += format.default_system;
    out += "<|im_end|>\n";
  }
  for (size_t i = 0; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    if (format.tool_role && m.role == "tool") {
      // Consecutive tool results share one user turn.
      if (i == 0 || msgs[i - 1].role != "tool") out += "<|im_start|>user";
      out += "\n<tool_response>\n";
      out += m.content;
      out += "\n</tool_response>";
      if (i + 1 == msgs.size() || msgs[i + 1].role != "tool") out += "<|im_end|>\n";
      continue;
    }
    out += "<|im_start|>";
    out += m.role;
    out += '\n';
    out += m.content;
    out += "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

Result<std::string> Tokenizer::apply_chat_template(const std::vector<ChatMessage>& msgs,
                                                   bool add_generation_prompt,
                                                   std::string_view template_override) const {
  const std::string_view tmpl = template_override.empty() ? chat_template_ : template_override;
  GSA_ASSIGN_OR_RETURN(const ChatFormat format, detect_chat_format(tmpl));
  return render_chat(format, msgs, add_generation_prompt);
}

}  // namespace gsa::tokenizer
