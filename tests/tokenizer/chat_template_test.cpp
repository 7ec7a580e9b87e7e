// Chat template recognition and rendering (ChatML, SmolLM2, Qwen2.5 with tool turns), and
// reading a tokenizer from a synthetic GGUF file.
#include <gtest/gtest.h>

#include "gguf/gguf.h"
#include "synthetic_vocab.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace gsa::tokenizer {
namespace {

// SmolLM2-135M-Instruct's tokenizer.chat_template, as stored in its GGUF file.
constexpr const char* kSmolLm2Template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\\n' }}{% endif %}";

// The non-tool branch of Qwen2.5-Instruct's template plus its tool turns (abridged: the tool
// call formatting of assistant messages is left out, as gsa's messages carry no tool calls).
constexpr const char* kQwen25Template = R"({%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
)";

TEST(ChatTemplate, RecognizesKnownTemplates) {
  auto smol = detect_chat_format(kSmolLm2Template);
  ASSERT_TRUE(smol.is_ok()) << smol.status().to_string();
  EXPECT_EQ(smol->name, "smollm");
  EXPECT_EQ(smol->default_system,
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  EXPECT_FALSE(smol->tool_role);
  auto qwen = detect_chat_format(kQwen25Template);
  ASSERT_TRUE(qwen.is_ok()) << qwen.status().to_string();
  EXPECT_EQ(qwen->name, "qwen2.5");
  EXPECT_TRUE(qwen->tool_role);
  auto plain = detect_chat_format(
      "{% for message in messages %}{{\"<|im_start|>\" + message[\"role\"] + \"\\n\" + "
      "message[\"content\"] + \"<|im_end|>\\n\"}}{% endfor %}");
  ASSERT_TRUE(plain.is_ok()) << plain.status().to_string();
  EXPECT_EQ(plain->name, "chatml");
  EXPECT_TRUE(plain->default_system.empty());
}

TEST(ChatTemplate, UnknownTemplatesNameTheFix) {
  for (const char* tmpl :
       {"", "{{ bos_token }}{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}",
        "{{'<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n'}}"
        "{% if reasoning %}<think>{% endif %}"}) {
    auto f = detect_chat_format(tmpl);
    ASSERT_FALSE(f.is_ok()) << tmpl;
    EXPECT_EQ(f.status().code(), StatusCode::Unsupported);
    EXPECT_NE(f.status().message().find("--chat-template chatml"), std::string::npos);
  }
}

TEST(ChatTemplate, SmolLmInsertsItsSystemMessage) {
  TokenizerData d = testing::synthetic_vocab();
  d.chat_template = kSmolLm2Template;
  auto t = Tokenizer::from_data(d);
  ASSERT_TRUE(t.is_ok());
  auto r = t->apply_chat_template({{"user", "Hi"}}, true);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(*r,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  r = t->apply_chat_template({{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}},
                             false);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(*r,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello<|im_end|>\n");
  // The override replaces the model's template.
  r = t->apply_chat_template({{"user", "Hi"}}, true, "chatml");
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(*r, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, QwenToolTurns) {
  auto f = detect_chat_format(kQwen25Template);
  ASSERT_TRUE(f.is_ok());
  auto r = render_chat(*f,
                       {{"user", "Weather?"},
                        {"assistant", "Checking."},
                        {"tool", "sunny"},
                        {"tool", "22C"},
                        {"user", "Thanks"}},
                       true);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(*r,
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
            "assistant.<|im_end|>\n<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n"
            "Checking.<|im_end|>\n<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n"
            "<tool_response>\n22C\n</tool_response><|im_end|>\n<|im_start|>user\nThanks"
            "<|im_end|>\n<|im_start|>assistant\n");
  auto bad = render_chat(*f, {{"developer", "x"}}, false);
  EXPECT_FALSE(bad.is_ok());
  EXPECT_FALSE(render_chat(*f, {}, true).is_ok());
  EXPECT_FALSE(render_chat(*f, {{"", "x"}}, true).is_ok());
}

TEST(FromGguf, ReadsTokenizerMetadata) {
  const TokenizerData d = testing::synthetic_vocab("smollm");
  gguf::GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "smollm");
  w.set_string_array("tokenizer.ggml.tokens", d.tokens);
  w.set_i32_array("tokenizer.ggml.token_type", d.token_types);
  w.set_string_array("tokenizer.ggml.merges", d.merges);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_u32("tokenizer.ggml.padding_token_id", 999999);  // out of range: ignored
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_string("tokenizer.chat_template", kSmolLm2Template);
  auto file = gguf::GgufFile::from_bytes(w.finish());
  ASSERT_TRUE(file.is_ok()) << file.status().to_string();
  auto t = Tokenizer::from_gguf(*file);
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  EXPECT_EQ(t->pre(), "smollm");
  EXPECT_EQ(t->n_vocab(), static_cast<int32_t>(d.tokens.size()));
  EXPECT_EQ(t->pad_id(), -1);
  EXPECT_TRUE(t->add_bos());
  EXPECT_EQ(*t->encode("hello", true, true), (std::vector<int32_t>{1, t->find_token("hello")}));
  EXPECT_TRUE(t->apply_chat_template({{"user", "x"}}, true).is_ok());

  gguf::GgufWriter empty;
  empty.set_string("general.architecture", "llama");
  auto no_tok = gguf::GgufFile::from_bytes(empty.finish());
  ASSERT_TRUE(no_tok.is_ok());
  EXPECT_EQ(Tokenizer::from_gguf(*no_tok).status().code(), StatusCode::NotFound);

  gguf::GgufWriter wrong;
  wrong.set_string("tokenizer.ggml.model", "gpt2");
  wrong.set_u32("tokenizer.ggml.tokens", 7);  // not an array
  auto bad = gguf::GgufFile::from_bytes(wrong.finish());
  ASSERT_TRUE(bad.is_ok());
  EXPECT_FALSE(Tokenizer::from_gguf(*bad).is_ok());
}

}  // namespace
}  // namespace gsa::tokenizer
