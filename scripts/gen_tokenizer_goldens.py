#!/usr/bin/env python3
"""Reference token ids for gsa's tokenizer tests, from tokenizers no one on gsa wrote.

For each GGUF given, builds a Hugging Face `tokenizers` BPE tokenizer from the file's vocabulary
and merges (read with the `gguf` package), with the pre-tokenizer of the model family, the
ByteLevel decoder and the added tokens (control tokens as special, user-defined ones as normal
added tokens). Every corpus case is encoded with parse_special on and off. When llama-cpp-python
is importable, llama.cpp's tokenizer (vocab_only) is run on the same cases and any disagreement
is reported. Chat template cases are rendered from the file's template with jinja2, the way
transformers renders them. Writes tests/golden/tokenizer/<model>.json, and
pretokenizer_splits.json: the pieces of every case under each pre-tokenizer family (gpt2,
smollm, qwen2, llama-bpe), which checks the regexes of families no local model uses.

Usage: scripts/gen_tokenizer_goldens.py [MODEL.gguf ...] [--out DIR] [--corpus FILE]
Needs: pip install gguf==0.19.0 tokenizers jinja2 (llama-cpp-python optional).
"""
import argparse
import json
import os
import sys

from gguf import GGUFReader
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN_DIR = os.path.join(HERE, "..", "tests", "golden", "tokenizer")

# The split patterns of the models' own tokenizer.json files (Hugging Face syntax).
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
                r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

PRE_FAMILIES = {
    "gpt2": ("gpt2", "mpt", "olmo", "jais"),
    "smollm": ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone"),
    "qwen2": ("qwen2", "stablelm2", "deepseek-r1-qwen"),
    "llama3": ("llama-bpe", "llama3", "llama-v3", "dbrx", "smaug-bpe"),
}

CONTROL, USER_DEFINED = 3, 4

# Conversations for the chat template goldens.
CHATS = [
    {"messages": [{"role": "user", "content": "Hello!"}], "add_generation_prompt": True},
    {"messages": [{"role": "system", "content": "You answer in one word."},
                  {"role": "user", "content": "Capital of France?"},
                  {"role": "assistant", "content": "Paris."},
                  {"role": "user", "content": "And of Japan?"}],
     "add_generation_prompt": True},
    {"messages": [{"role": "user", "content": "Write a haiku.\nAbout rain."},
                  {"role": "assistant", "content": "Soft rain on the roof"}],
     "add_generation_prompt": False},
    {"messages": [{"role": "user", "content": "Ünïcödé 🚀 and\ttabs"},
                  {"role": "assistant", "content": ""},
                  {"role": "user", "content": "   spaces   "}],
     "add_generation_prompt": True},
]


def field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    if len(f.types) >= 2 and f.types[0].name == "ARRAY":
        if f.types[1].name == "STRING":
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [int(f.parts[i][0]) for i in f.data]
    if f.types[0].name == "STRING":
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    value = f.parts[f.data[0]]
    return bool(value[0]) if f.types[0].name == "BOOL" else int(value[0])


def family_of(pre):
    for family, names in PRE_FAMILIES.items():
        if pre in names:
            return family
    raise SystemExit(f"pre-tokenizer '{pre}' has no Hugging Face equivalent in this script")


def hf_pre_tokenizer(family):
    if family == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if family == "smollm":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    split = QWEN2_SPLIT if family == "qwen2" else LLAMA3_SPLIT
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def build_hf(tokens, types, merges, pre):
    family = family_of(pre)
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=(family == "llama3"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = hf_pre_tokenizer(family)
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True, normalized=False)
               for t, ty in zip(tokens, types) if ty == CONTROL]
    user = [AddedToken(t, special=False, normalized=False)
            for t, ty in zip(tokens, types) if ty == USER_DEFINED]
    tok.add_special_tokens(special)
    tok.add_tokens(user)
    return tok


def hf_encode(tok, text, add_bos, bos_id, parse_special):
    tok.encode_special_tokens = not parse_special
    ids = tok.encode(text, add_special_tokens=False).ids
    return ([bos_id] if add_bos else []) + ids


def render_chat(template, chat, bos, eos):
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=chat["messages"], add_generation_prompt=chat["add_generation_prompt"],
        bos_token=bos, eos_token=eos)


def llama_cpp_tokenizer(path):
    try:
        from llama_cpp import Llama
    except Exception as e:  # not installed, or installed without its shared library
        print(f"  llama.cpp cross-check skipped: {type(e).__name__}: {e}", file=sys.stderr)
        return None
    return Llama(model_path=path, vocab_only=True, verbose=False)


def generate(path, corpus, out_dir):
    reader = GGUFReader(path)
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)
    merges = field(reader, "tokenizer.ggml.merges") or []
    pre = field(reader, "tokenizer.ggml.pre") or "default"
    bos_id = field(reader, "tokenizer.ggml.bos_token_id")
    eos_id = field(reader, "tokenizer.ggml.eos_token_id")
    add_bos = field(reader, "tokenizer.ggml.add_bos_token")
    if add_bos is None:
        add_bos = family_of(pre) == "llama3"
    template = field(reader, "tokenizer.chat_template")
    tok = build_hf(tokens, types, merges, pre)
    llama = llama_cpp_tokenizer(path)

    texts = [c for c in corpus["cases"]]
    # One long case: the whole corpus three times, exercising repeated-word caching.
    long_text = "\n\n".join(c["text"] for c in corpus["cases"]) * 3
    texts.append({"name": "long_concatenation", "text": long_text})

    cases, disagreements = [], 0
    for c in texts:
        for parse_special in (True, False):
            for add_special in ((True, False) if c["name"] == "prose" else (False,)):
                ids = hf_encode(tok, c["text"], add_special and add_bos, bos_id, parse_special)
                case = {"name": c["name"], "text": c["text"], "parse_special": parse_special,
                        "add_special": add_special, "ids": ids}
                if llama is not None:
                    lids = llama.tokenize(c["text"].encode("utf-8"), add_bos=add_special,
                                          special=parse_special)
                    if lids != ids:
                        disagreements += 1
                        case["llama_cpp_ids"] = lids
                        print(f"  llama.cpp differs on {c['name']} (parse_special="
                              f"{parse_special})", file=sys.stderr)
                cases.append(case)

    chats = []
    if template:
        tok_text = lambda i: tokens[i] if i is not None and i < len(tokens) else ""
        for chat in CHATS:
            chats.append(dict(chat, expected=render_chat(template, chat, tok_text(bos_id),
                                                         tok_text(eos_id))))

    import tokenizers
    reference = f"tokenizers {tokenizers.__version__}"
    if llama is not None:
        import llama_cpp
        reference += f"; llama.cpp via llama-cpp-python {llama_cpp.__version__}" \
                     f" ({disagreements} disagreements)"
    model = os.path.basename(path)
    out = {"model": model, "pre": pre, "n_vocab": len(tokens), "reference": reference,
           "cases": cases, "chat": chats}
    name = model[:-5] if model.endswith(".gguf") else model
    dest = os.path.join(out_dir, name + ".json")
    with open(dest, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"{dest}: {len(cases)} cases, {len(chats)} chats, reference: {reference}")


def generate_splits(corpus, out_dir):
    """Pieces of every corpus case under each pre-tokenizer family (no model needed)."""
    out = {"reference": None, "families": {}}
    import tokenizers
    out["reference"] = f"tokenizers {tokenizers.__version__} pre_tokenizers"
    for family, names in PRE_FAMILIES.items():
        pre = hf_pre_tokenizer(family)
        cases = []
        for c in corpus["cases"]:
            text = c["text"]
            # Offsets are in code points of the original text.
            pieces = [text[a:b] for _, (a, b) in pre.pre_tokenize_str(text)]
            assert "".join(pieces) == text, (family, c["name"])
            cases.append({"name": c["name"], "pieces": pieces})
        out["families"][names[0]] = cases
    dest = os.path.join(out_dir, "pretokenizer_splits.json")
    with open(dest, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"{dest}: {len(PRE_FAMILIES)} pre-tokenizers x {len(corpus['cases'])} cases")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", help="GGUF files (none: only the pre-tokenizer splits)")
    ap.add_argument("--out", default=GOLDEN_DIR)
    ap.add_argument("--corpus", default=os.path.join(GOLDEN_DIR, "corpus.json"))
    args = ap.parse_args()
    with open(args.corpus, encoding="utf-8") as f:
        corpus = json.load(f)
    generate_splits(corpus, args.out)
    for path in args.models:
        generate(path, corpus, args.out)


if __name__ == "__main__":
    main()
