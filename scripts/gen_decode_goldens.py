#!/usr/bin/env python3
"""Generates the greedy-decode goldens that gsa's decode tests compare against (llama.cpp).

Reference: llama.cpp through its Python binding (llama-cpp-python, built by scripts/build-llama-cpp),
CPU, 2 threads, n_batch 512, flash attention off, F32 KV cache. Each prompt is a chat turn written
for this file, rendered the way gsa renders it (`gsa generate --chat`: src/tokenizer/
chat_template.cpp, ChatML with the model's default system message unless the prompt brings its
own), tokenized by llama.cpp with special tokens parsed (no BOS: none of these models adds one),
evaluated from an empty cache in 512-token batches, then decoded one token per llama_decode call:
greedy (argmax, ties to the lower id) for STEPS steps. Decoding does not stop at an end-of-
generation token: llama.cpp is made to go on (as `ignore_eos` does) so every prompt has STEPS
comparable steps; `eog_step` records where a user would have seen the answer end.

Output: tests/golden/decode/<model-name>.json, one object:
  format       "gsa-decode-goldens/1"
  model        {name, file, sha256, size}: the GGUF (scripts/fetch-model NAME gives it)
  reference    {llama_cpp_python, n_ctx, n_batch, n_threads, type_k, type_v, flash_attn,
                system_info}
  steps, top_k 48, 5
  prompts      list of
    name         e.g. "fact_tides", "code_lru", "long_log" (the kind is the prefix)
    system       the system message ("" = the model's default, as gsa --chat)
    user         the user message (all written for this file: the constants and generators below)
    tokens       the exact prompt ids llama.cpp was fed; a test feeds exactly these
    eog_step     index of the first end-of-generation token in `out`, or null
    out          the STEPS greedy tokens
    text         llama.cpp's detokenized `out` (for people reading diffs)
    top          per step, [[token_id, logit], ...] top_k pairs (logit desc, 4 decimals); the
                 step's top-1/top-2 margin is top[s][0][1] - top[s][1][1]

Comparing: llama.cpp quantizes activations to 8 bits before its quantized matmuls and gsa's
f32 paths do not, so logits differ by up to ~1.5 (scripts/gen_logits_goldens.py); greedy tokens
can only be expected to match while llama.cpp's own top-1/top-2 margin is clear (>= 0.5).

Usage: scripts/gen_decode_goldens.py [--models smollm2-135m,qwen2.5-coder-0.5b] [--out DIR]
       [--only NAME,...] [--check]   (--check: regenerate and compare with the files; --only:
       regenerate those prompts only, replacing them in an existing file)
       Needs `import llama_cpp` (scripts/build-llama-cpp) and the models (scripts/fetch-model).
"""

import argparse
import importlib.machinery
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
STEPS = 48
TOP_K = 5
N_BATCH = 512

DEFAULT_SYSTEM = {
    "llama": "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "qwen2": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
}

# ---- short prompts: factual questions, instructions, code ---------------------------------------

FACTUAL = [
    ("fact_capital", "What is the capital of Australia, and why was it chosen over Sydney and "
                     "Melbourne?"),
    ("fact_tides", "What causes the tides on Earth?"),
    ("fact_photosynthesis", "Explain photosynthesis in simple terms."),
    ("fact_boiling", "Why does water boil at a lower temperature on a high mountain?"),
    ("fact_planets", "List the planets of the solar system in order from the Sun."),
    ("fact_dna", "What is DNA and what does it do in a living cell?"),
    ("fact_seasons", "Why do we have seasons? Is it because the Earth is closer to the Sun in "
                     "summer?"),
    ("fact_binary", "How do computers represent numbers in binary? Give the binary form of 13."),
    ("fact_volcano", "How does a volcano form?"),
    ("fact_vaccine", "How do vaccines help the immune system fight a disease?"),
    ("fact_rainbow", "Why does a rainbow appear after rain?"),
    ("fact_http", "What is the difference between HTTP and HTTPS?"),
]

INSTRUCTIONS = [
    ("inst_email", "Write a short, polite email to my neighbour asking them to water my plants "
                   "while I am away for a week."),
    ("inst_haiku", "Write a haiku about a quiet morning by a lake."),
    ("inst_steps_tea", "Give step-by-step instructions for making a cup of green tea."),
    ("inst_summary", "Summarize in two sentences: The town council met on Tuesday to discuss the "
                     "new bike lanes. Residents were divided; shop owners worried about parking, "
                     "while parents wanted safer routes to school. The council agreed to a "
                     "six-month trial on Main Street."),
    ("inst_translate", "Translate into French: 'The library opens at nine and closes at six.'"),
    ("inst_list_names", "Suggest five names for a small bakery that specializes in bread made "
                        "with old grain varieties."),
    ("inst_rewrite", "Rewrite this sentence to be more formal: 'hey, can u send me the report "
                     "asap? thx'"),
    ("inst_plan", "Make a three-day plan to learn the basics of touch typing."),
]

CODE = [
    ("code_reverse", "Write a Python function that reverses a string."),
    ("code_fizzbuzz", "Write FizzBuzz in Python for the numbers 1 to 20."),
    ("code_sql", "Write a SQL query that returns the ten customers with the highest total order "
                 "amount from tables customers(id, name) and orders(id, customer_id, amount)."),
    ("code_explain", "What does this Python code do?\n\n```python\ndef f(xs):\n    seen = set()\n"
                     "    out = []\n    for x in xs:\n        if x not in seen:\n"
                     "            seen.add(x)\n            out.append(x)\n    return out\n```"),
    ("code_bug", "Find the bug in this C function:\n\n```c\nint sum(int *a, int n) {\n"
                 "    int s = 0;\n    for (int i = 0; i <= n; i++) s += a[i];\n    return s;\n}\n"
                 "```"),
    ("code_lru", "Implement an LRU cache class in Python with get and put methods, both O(1)."),
    ("code_js_debounce", "Write a JavaScript debounce function and explain how it works."),
    ("code_cpp_vector", "In C++, how do I remove all even numbers from a std::vector<int>?"),
    ("code_regex", "Write a regular expression that matches an ISO date like 2024-03-15, and show "
                   "how to use it in Python."),
]

# ---- long prompts (> 2K tokens): text generated here from constant pieces -------------------------


class Lcg:
    """A fixed pseudo-random sequence (the same on every machine and Python version)."""

    def __init__(self, seed):
        self.state = seed

    def next(self, n):
        self.state = (1103515245 * self.state + 12345) % (1 << 31)
        return (self.state >> 8) % n


HARBOUR = [
    "The harbour master opened the office at dawn and read the weather report aloud to the "
    "fishermen waiting outside.",
    "Three trawlers left before sunrise, their lights moving slowly past the breakwater.",
    "By mid-morning the fish market was crowded with buyers from the inland towns.",
    "A cargo ship carrying timber waited at anchor until the tide was high enough to enter.",
    "The lifeboat crew practised launching the boat twice a week, in every kind of weather.",
    "Gulls followed the returning boats and argued loudly over anything thrown overboard.",
    "In the afternoon the wind usually picked up and small sailing boats raced around the buoys.",
    "The old customs house had become a museum of ship models, maps and faded photographs.",
    "Repairs to the north pier had been planned for years but were always postponed.",
    "On Fridays the ferry to the islands ran an extra trip for families visiting relatives.",
    "The net maker worked in a shed by the slipway, mending nets with a wooden needle.",
    "Fog horns sounded twice in the night when a bank of mist rolled in from the sea.",
    "The harbour accounts were kept in a ledger that listed every mooring fee and repair.",
    "Children fished for crabs from the steps with string, bacon and a lot of patience.",
    "A storm in October damaged two moorings and sank a rowing boat that was never claimed.",
    "The lighthouse at the end of the mole flashed white every ten seconds.",
]


def long_harbour():
    rng = Lcg(2024)
    parts = []
    for i in range(150):
        if i == 97:
            parts.append("That season the harbour master recorded that the mooring fee for the "
                         "blue ketch 'Saltmarsh' was paid in full on the fourteenth of June.")
        parts.append(HARBOUR[rng.next(len(HARBOUR))])
    text = " ".join(parts)
    return ("Read the harbour notes below and answer the question after them.\n\n" + text +
            "\n\nQuestion: on what date was the mooring fee for the blue ketch 'Saltmarsh' paid?")


def long_code():
    rng = Lcg(7)
    ops = [("+", "add"), ("-", "sub"), ("*", "mul")]
    lines = ['"""Small numeric helpers used by the report generator."""', ""]
    for i in range(70):
        a, b = rng.next(9) + 1, rng.next(20) + 1
        op, word = ops[rng.next(3)]
        lines += [f"def {word}_{i}(x):",
                  f'    """Returns x {op} {a} then multiplied by {b}."""',
                  f"    y = x {op} {a}",
                  f"    return y * {b}", ""]
    lines += ["def total(xs):", "    return sum(mul_3(x) for x in xs)", ""]
    return ("Here is a Python module:\n\n```python\n" + "\n".join(lines) + "```\n\nExplain what the "
            "function `total` computes, and suggest one way to make this module easier to "
            "maintain.")


def long_log():
    rng = Lcg(31337)
    paths = ["/api/orders", "/api/users", "/api/search", "/health", "/api/cart", "/static/app.js"]
    lines = []
    for i in range(60):
        h, m, s = 9 + i // 60, i % 60, rng.next(60)
        path = paths[rng.next(len(paths))]
        status = 200 if rng.next(10) else 404
        ms = rng.next(300) + 3
        if i == 41:
            path, status, ms = "/api/payments", 500, 2950
        lines.append(f"2024-05-02T{h:02d}:{m:02d}:{s:02d}Z GET {path} status={status} "
                     f"time_ms={ms} worker={rng.next(8)}")
    return ("Here is an excerpt of a web server log.\n\n" + "\n".join(lines) +
            "\n\nWhich request returned a server error (status 500), at what time, and how long "
            "did it take?")


ESSAY = [
    "Good tools disappear while you use them; you notice them only when they break.",
    "A team that writes down its decisions argues less about what it decided last month.",
    "Most performance problems are found by measuring, not by guessing where the time goes.",
    "The cheapest bug to fix is the one a test catches before the code is merged.",
    "Simple designs survive changes in requirements better than clever ones.",
    "Documentation is a letter to a future colleague who cannot ask you questions.",
    "Every cache is a bet that the past predicts the future.",
    "Naming things well is half of explaining them.",
    "When two parts of a system must agree, give one of them the final word.",
    "An error message should say what happened, what was expected and what to do next.",
    "Small, frequent releases make each release less frightening.",
    "Code review is a conversation about the code, not a verdict on its author.",
]


def long_essay():
    rng = Lcg(555)
    paras = []
    for _ in range(24):
        paras.append(" ".join(ESSAY[rng.next(len(ESSAY))] for _ in range(6)))
    return ("Here are my notes on software engineering:\n\n" + "\n\n".join(paras) +
            "\n\nSummarize the three most important ideas in these notes as a bulleted list.")


LONG = [("long_harbour", long_harbour), ("long_code", long_code), ("long_log", long_log),
        ("long_essay", long_essay)]

# A few prompts with a system message of their own (replacing the default, as in gsa --chat --system).
OWN_SYSTEM = {
    "inst_haiku": "You are a poet who writes only in English.",
    "code_reverse": "You are a senior Python developer. Answer with code first.",
}


def all_prompts():
    out = []
    for name, user in FACTUAL + INSTRUCTIONS + CODE:
        out.append((name, OWN_SYSTEM.get(name, ""), user))
    for name, make in LONG:
        out.append((name, "", make()))
    return out


def render_chat(arch, system, user):
    """gsa's rendering (src/tokenizer/chat_template.cpp) for one user turn."""
    system = system or DEFAULT_SYSTEM[arch]
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


def load_fetch_model():
    """Imports scripts/fetch-model (no .py suffix) for its pinned model table."""
    path = str(ROOT / "scripts" / "fetch-model")
    loader = importlib.machinery.SourceFileLoader("fetch_model", path)
    spec = importlib.util.spec_from_loader("fetch_model", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def top_pairs(row, k):
    """[[token_id, logit], ...] of the k largest logits of one row, logit desc (ties: lower id)."""
    idx = np.argpartition(-row, k)[:k]
    idx = idx[np.lexsort((idx, -row[idx]))]
    return [[int(i), round(float(row[i]), 4)] for i in idx]


def generate(name, fm, args, llama_cpp):
    model = fm.MODELS[name]
    path = fm.model_dir(None) / model.file
    if not fm.is_valid(path, model):
        raise SystemExit(f"gen_decode_goldens: {path} missing or wrong sha256; "
                         f"run scripts/fetch-model {name}")
    n_ctx = 4096
    params = dict(n_ctx=n_ctx, n_batch=N_BATCH, n_ubatch=N_BATCH, n_threads=args.threads,
                  n_threads_batch=args.threads_batch, logits_all=False, flash_attn=False,
                  type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, seed=0,
                  verbose=False)
    llm = llama_cpp.Llama(model_path=str(path), **params)
    arch = llm.metadata.get("general.architecture")
    if arch not in DEFAULT_SYSTEM:
        raise SystemExit(f"gen_decode_goldens: no chat rendering for architecture {arch}")
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llm.n_vocab()

    def last_logits():
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float32).copy()

    out_prompts = []
    only = set(args.only.split(",")) if args.only else None
    for pname, system, user in all_prompts():
        if only and pname not in only:
            continue
        text = render_chat(arch, system, user)
        tokens = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if len(tokens) + STEPS >= n_ctx:
            raise SystemExit(f"gen_decode_goldens: prompt '{pname}' has {len(tokens)} tokens")
        t0 = time.time()
        llm.reset()
        llm.eval(tokens)
        out, tops, eog = [], [], None
        for s in range(STEPS):
            row = last_logits()
            if not np.all(np.isfinite(row)):
                raise SystemExit(f"gen_decode_goldens: non-finite logits, prompt '{pname}'")
            top = top_pairs(row, TOP_K)
            tok = top[0][0]
            out.append(tok)
            tops.append(top)
            if eog is None and llama_cpp.llama_vocab_is_eog(vocab, tok):
                eog = s
            if s + 1 < STEPS:
                llm.eval([tok])
        margins = [t[0][1] - t[1][1] for t in tops]
        low = next((i for i, m in enumerate(margins) if m < 0.5), STEPS)
        gen_text = llm.detokenize(out, special=True).decode("utf-8", "replace")
        print(f"  {name} {pname}: {len(tokens)} prompt tokens, first margin < 0.5 at step {low}, "
              f"eog at {eog}, {time.time() - t0:.1f} s: {gen_text[:60]!r}", file=sys.stderr,
              flush=True)
        out_prompts.append({"name": pname, "system": system, "user": user, "tokens": tokens,
                            "eog_step": eog, "out": out, "text": gen_text, "top": tops})
    return {
        "format": "gsa-decode-goldens/1",
        "model": {"name": name, "file": model.file, "sha256": model.sha256, "size": model.size},
        "reference": {
            "llama_cpp_python": llama_cpp.__version__, "n_ctx": n_ctx, "n_batch": N_BATCH,
            "n_threads": args.threads, "n_threads_batch": args.threads_batch, "type_k": "f32", "type_v": "f32", "flash_attn": False,
            "eos": "ignored (decoding goes on past end-of-generation tokens)",
            "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        },
        "steps": STEPS,
        "top_k": TOP_K,
        "prompts": out_prompts,
    }


def write_compact(obj, path):
    """JSON with a few lines per prompt, so diffs of regenerated goldens stay readable."""
    lines = ["{"]
    for key, value in obj.items():
        if key != "prompts":
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},")
    lines.append(' "prompts": [')
    prompts = obj["prompts"]
    for i, p in enumerate(prompts):
        meta = {k: p[k] for k in ("name", "system", "user", "eog_step", "text")}
        lines.append(" {" + json.dumps(meta, ensure_ascii=False)[1:-1] + ",")
        lines.append('  "tokens": ' + json.dumps(p["tokens"], separators=(",", ":")) + ",")
        lines.append('  "out": ' + json.dumps(p["out"], separators=(",", ":")) + ",")
        lines.append('  "top": [')
        lines.append(",\n".join("   " + json.dumps(t, separators=(",", ":")) for t in p["top"]))
        lines.append("  ]}" + ("," if i + 1 < len(prompts) else ""))
    lines.append(" ]\n}\n")
    path.write_text("\n".join(lines), encoding="utf-8")
    json.loads(path.read_text(encoding="utf-8"))  # the file must parse


def check(obj, path):
    """Compares a regenerated golden with the file on disk; returns the number of mismatches."""
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        print(f"{path}: cannot read ({e})")
        return 1
    bad = 0
    old_prompts = {p["name"]: p for p in old.get("prompts", [])}
    for p in obj["prompts"]:
        q = old_prompts.get(p["name"])
        if q is None or q["tokens"] != p["tokens"] or q["out"] != p["out"]:
            print(f"{path}: prompt '{p['name']}': tokens or output differ, or prompt missing")
            bad += 1
            continue
        worst = max(abs(a[1] - b[1]) for ta, tb in zip(p["top"], q["top"])
                    for a, b in zip(ta, tb))
        print(f"{path}: prompt '{p['name']}': same tokens, max |logit diff| {worst:.4f}")
        bad += worst > 1e-2
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    ap.add_argument("--out", default=str(ROOT / "tests" / "golden" / "decode"))
    ap.add_argument("--only", default="",
                    help="comma-separated prompt names: regenerate those, keep the file's others")
    # One thread per decode step: on a loaded 2-core machine a 2-thread step waits at every
    # barrier for a descheduled thread (docs/MODELS.md); results do not depend on the count.
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads per decode step")
    ap.add_argument("--threads-batch", type=int, default=2, help="llama.cpp threads for prefill")
    ap.add_argument("--check", action="store_true",
                    help="regenerate and compare with the committed files instead of writing")
    args = ap.parse_args()
    try:
        import llama_cpp
    except ImportError as e:
        raise SystemExit(f"gen_decode_goldens: cannot import llama_cpp ({e}); "
                         "run scripts/build-llama-cpp")
    fm = load_fetch_model()
    failures = 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        if name not in fm.MODELS:
            raise SystemExit(f"gen_decode_goldens: unknown model '{name}'")
        t0 = time.time()
        obj = generate(name, fm, args, llama_cpp)
        path = out / f"{name}.json"
        if args.check:
            failures += check(obj, path)
        else:
            if args.only and path.exists():  # replace those prompts, keep the others
                new = {p["name"]: p for p in obj["prompts"]}
                old = json.loads(path.read_text(encoding="utf-8"))["prompts"]
                kept = {p["name"]: p for p in old}
                kept.update(new)
                obj["prompts"] = [kept[n] for n, _, _ in all_prompts() if n in kept]
            write_compact(obj, path)
            print(f"{path} ({os.path.getsize(path) / 1e6:.2f} MB, {time.time() - t0:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
