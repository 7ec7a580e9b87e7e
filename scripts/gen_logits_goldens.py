#!/usr/bin/env python3
"""Generates the per-position logit goldens that gsa's model tests compare against (llama.cpp).

Reference: llama.cpp through its Python binding (llama-cpp-python, built by scripts/build-llama-cpp),
CPU, 2 threads, n_batch 512, logits_all, flash attention off, F32 KV cache. The prompts are
tokenized by llama.cpp with the model's own tokenizer (`tokenize(text, add_bos=True, special=...)`:
BOS is added only where the GGUF's tokenizer.ggml.add_bos_token asks for it), evaluated in one
`eval(tokens)` from an empty cache, and the top-20 logits of the stored positions are written.

Output: tests/golden/logits/<model-name>.json, one object:
  format       "gsa-logits-goldens/1"
  model        {name, file, sha256, size}: the GGUF (scripts/fetch-model NAME gives it)
  reference    {llama_cpp_python, n_ctx, n_batch, n_ubatch, n_threads, type_k, type_v, flash_attn,
                system_info}
  top_k        20
  prompts      list of
    name         "short", "prose", "code", "chat", "mixed", "long"
    text         the prompt text (all written for this file: the constants below)
    special      whether special tokens in the text were parsed (the chat prompt)
    tokens       token ids, BOS included where the model adds one; feed exactly these
    positions    list of {pos, top}: pos is the index in `tokens` whose next-token logits these
                 are; top is [[token_id, logit], ...] (top_k pairs, logit desc, 4 decimals)
  Short prompts store every position; the long one (~2K tokens) every 8th position plus the last
  64. Logits are raw (no softmax, no temperature).

Comparing: llama.cpp quantizes activations to Q8 before every quantized matmul, an f32 engine
does not, so the two differ by more than rounding. `--f32-check` measures it with an exact f32
numpy forward on the same dequantized weights (smollm2-135m: max |logit diff| over the stored
top-20 0.57-0.85 on the short prompts, 1.36 on "mixed", 1.59 over the 2K prompt; top-1 agreement
96-100% per prompt, disagreements only where llama.cpp's top-1/top-2 margin is <= 0.29;
qwen2.5-coder-0.5b: 0.33-0.74, margins <= 0.09; docs/MODELS.md has the table). So an engine test
should demand top-1 agreement where the stored margin is clear (e.g. >= 0.5) and a max diff of
about 2, not bit-exactness. Determinism: the same llama.cpp build and CPU flags reproduce the
files exactly (`--check`: max diff 0.0000).

Usage: scripts/gen_logits_goldens.py [--models smollm2-135m,qwen2.5-coder-0.5b] [--out DIR]
       [--long-tokens 2000] [--check | --f32-check]  (--check: regenerate with llama.cpp and
       compare with the files; --f32-check: compare the files with the numpy f32 forward).
       Needs `import llama_cpp` (scripts/build-llama-cpp) and the models (scripts/fetch-model).
       Runtime: 1-3 minutes per model on 2 cores.
"""

import argparse
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOP_K = 20
LONG_STRIDE = 8
LONG_TAIL = 64

PROSE = (
    "The lighthouse keeper wrote in his log every evening, even when nothing happened. On the "
    "third of March he noted that the wind had turned from the west to the north, that the supply "
    "boat was two days late, and that the gulls had gone quiet before noon. His daughter, who "
    "read the log years later, said it was less a record of the sea than a record of patience. "
    "She kept the book on a shelf beside her own notebooks, which were full of measurements of "
    "tides, drawings of shells, and questions she never found time to answer."
)

CODE = '''def merge_intervals(intervals):
    """Merge overlapping [start, end) intervals; returns a new sorted list."""
    if not intervals:
        return []
    ordered = sorted(intervals, key=lambda iv: iv[0])
    merged = [list(ordered[0])]
    for start, end in ordered[1:]:
        last = merged[-1]
        if start <= last[1]:
            last[1] = max(last[1], end)
        else:
            merged.append([start, end])
    return [tuple(iv) for iv in merged]


if __name__ == "__main__":
    print(merge_intervals([(5, 8), (1, 3), (2, 4), (8, 10)]))
'''

CHAT = (
    "<|im_start|>system\nYou are a concise assistant who answers in one or two sentences."
    "<|im_end|>\n<|im_start|>user\nWhy does a metal spoon feel colder than a wooden one at the "
    "same room temperature?<|im_end|>\n<|im_start|>assistant\n"
)

MIXED = (
    "Order #40917: 3 x 250 g coffee @ EUR 7.45 = EUR 22.35 (paid 2024-11-05, 14:32 UTC).\n"
    "Crème brûlée, naïve façade, Straße, smörgåsbord; 東京 and Zürich; emoji: 🙂🚀.\n"
    "    indented line\twith\ttabs   and  extra   spaces!!! ... ??? {json: [1, 2.5e-3, -7]}"
)

# Sentences of the long prompt; it repeats them in a fixed pseudo-random order until it reaches the
# target token count. One sentence carries a fact the question at the end asks about.
LONG_SENTENCES = [
    "The village sat at the edge of a wide valley where the river bent twice before reaching the sea.",
    "Every spring the orchards flowered at once, and for a week the air smelled of pears and wet soil.",
    "The baker opened at five, and the first loaves were usually gone before the church bell rang six.",
    "Children walked to school along the old rail line, which had not carried a train in forty years.",
    "In winter the pond froze thick enough to hold the whole school, teachers included.",
    "The library was one room above the post office, with a ladder to reach the highest shelves.",
    "A retired surveyor kept careful maps of every path, fence and stream within a day's walk.",
    "Market day was Thursday, when farmers from the hills brought cheese, honey and wool.",
    "The clock on the town hall ran four minutes fast, and nobody had ever agreed to fix it.",
    "Most houses were built of grey stone quarried from the ridge to the north of the valley.",
    "At dusk the swifts circled the bell tower in loud, fast loops before settling for the night.",
    "The ferry across the river could carry two cars, eleven people and, once, a nervous horse.",
    "A small observatory on the hill opened to visitors on clear nights in late summer.",
    "The mill had been turned into a workshop where a family repaired bicycles and sewing machines.",
    "When the river flooded, the water reached the third step of the town hall and no further.",
    "Letters took three days to reach the capital, and replies usually took a week to come back.",
    "The schoolteacher organised a long walk each autumn to count birds along the river banks.",
    "The innkeeper claimed his soup recipe was older than the bridge, which was very old indeed.",
    "On the longest day of the year, people carried lanterns up the ridge and watched the sunrise.",
    "Nobody could remember who had planted the single palm tree that grew beside the fountain.",
    "The blacksmith's forge now made garden gates, railings and, occasionally, sculptures.",
    "A narrow road climbed the ridge in eleven tight bends, each one marked by a white stone.",
    "The harvest festival ended with a race between teams pushing wheelbarrows full of apples.",
    "Fog filled the valley most mornings in October and lifted slowly as the sun warmed the slopes.",
]
LONG_NEEDLE = "The secret word that opens the old observatory door is 'copperfinch'."
LONG_QUESTION = ("\n\nQuestion: what is the secret word that opens the old observatory door?\n"
                 "Answer: the secret word is")


def long_text(count_tokens, target):
    """Builds the long prompt: sentences in a fixed LCG order until `target` tokens are reached."""
    state = 12345
    parts = []
    needle_at = 40
    while True:
        if len(parts) == needle_at:
            parts.append(LONG_NEEDLE)
        state = (1103515245 * state + 12345) % (1 << 31)
        parts.append(LONG_SENTENCES[state % len(LONG_SENTENCES)])
        text = " ".join(parts) + LONG_QUESTION
        if len(parts) > needle_at and count_tokens(text) >= target:
            return text


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


def stored_positions(n, is_long):
    if not is_long:
        return list(range(n))
    keep = set(range(0, n, LONG_STRIDE)) | set(range(max(0, n - LONG_TAIL), n))
    return sorted(keep)


def generate(name, fm, args, llama_cpp):
    model = fm.MODELS[name]
    path = fm.model_dir(None) / model.file
    if not fm.is_valid(path, model):
        raise SystemExit(f"gen_logits_goldens: {path} missing or wrong sha256; "
                         f"run scripts/fetch-model {name}")
    n_ctx = args.long_tokens + 256
    params = dict(n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=args.threads,
                  n_threads_batch=args.threads, logits_all=True, flash_attn=False,
                  type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, seed=0,
                  verbose=False)
    llm = llama_cpp.Llama(model_path=str(path), **params)

    def tok(text, special=False):
        return llm.tokenize(text.encode("utf-8"), add_bos=True, special=special)

    prompts = [("short", "The capital of France is", False), ("prose", PROSE, False),
               ("code", CODE, False), ("chat", CHAT, True), ("mixed", MIXED, False),
               ("long", long_text(lambda t: len(tok(t)), args.long_tokens), False)]
    out_prompts = []
    for pname, text, special in prompts:
        tokens = tok(text, special)
        if len(tokens) >= n_ctx:
            raise SystemExit(f"gen_logits_goldens: prompt '{pname}' has {len(tokens)} tokens, "
                             f"n_ctx {n_ctx}")
        llm.reset()
        llm.eval(tokens)
        scores = np.asarray(llm.scores[: len(tokens)], dtype=np.float32)
        if not np.all(np.isfinite(scores)):
            raise SystemExit(f"gen_logits_goldens: non-finite logits for prompt '{pname}'")
        positions = [{"pos": p, "top": top_pairs(scores[p], TOP_K)}
                     for p in stored_positions(len(tokens), pname == "long")]
        top1 = [pp["top"][0][0] for pp in positions]
        print(f"  {name} {pname}: {len(tokens)} tokens, {len(positions)} positions stored, "
              f"next after prompt: {llm.detokenize([top1[-1]]).decode('utf-8', 'replace')!r}",
              file=sys.stderr)
        out_prompts.append({"name": pname, "text": text, "special": special, "tokens": tokens,
                            "positions": positions})
    return {
        "format": "gsa-logits-goldens/1",
        "model": {"name": name, "file": model.file, "sha256": model.sha256, "size": model.size},
        "reference": {
            "llama_cpp_python": llama_cpp.__version__, "n_ctx": n_ctx, "n_batch": 512,
            "n_ubatch": 512, "n_threads": args.threads, "type_k": "f32", "type_v": "f32",
            "flash_attn": False,
            "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        },
        "top_k": TOP_K,
        "prompts": out_prompts,
    }


def write_compact(obj, path):
    """JSON with one line per stored position, so diffs of regenerated goldens stay readable."""
    prompts = obj["prompts"]
    lines = ["{"]
    for key, value in obj.items():
        if key != "prompts":
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},")
    lines.append(' "prompts": [')
    for i, p in enumerate(prompts):
        meta = {k: p[k] for k in ("name", "text", "special")}
        lines.append(" {" + json.dumps(meta, ensure_ascii=False)[1:-1] + ",")
        lines.append('  "tokens": ' + json.dumps(p["tokens"]) + ",")
        lines.append('  "positions": [')
        rows = [f"   {json.dumps(pp, separators=(',', ':'))}" for pp in p["positions"]]
        lines.append(",\n".join(rows))
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
    if old.get("model", {}).get("sha256") != obj["model"]["sha256"]:
        print(f"{path}: model sha256 differs")
        bad += 1
    old_prompts = {p["name"]: p for p in old.get("prompts", [])}
    for p in obj["prompts"]:
        q = old_prompts.get(p["name"])
        if q is None or q["tokens"] != p["tokens"]:
            print(f"{path}: prompt '{p['name']}': tokens differ or prompt missing")
            bad += 1
            continue
        worst = 0.0
        for a, b in zip(p["positions"], q["positions"]):
            da, db = dict(map(tuple, a["top"])), dict(map(tuple, b["top"]))
            if a["pos"] != b["pos"] or a["top"][0][0] != b["top"][0][0]:
                print(f"{path}: prompt '{p['name']}' pos {a['pos']}: top-1 differs")
                bad += 1
                break
            common = set(da) & set(db)
            worst = max([worst] + [abs(da[t] - db[t]) for t in common])
        print(f"{path}: prompt '{p['name']}': max |logit diff| {worst:.4f}")
        if worst > 1e-2:
            bad += 1
    return bad


def f32_forward(path, tokens, positions):
    """Independent f32 numpy forward (llama and qwen2 archs) from gguf-py's dequantized weights;
    returns the logits [len(positions), n_vocab]. Used by --f32-check to measure how far llama.cpp
    itself is from exact f32 math on these files, i.e. the tolerance an f32 engine should expect."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    r = GGUFReader(str(path))
    arch = r.fields["general.architecture"].contents()
    if arch not in ("llama", "qwen2"):
        raise SystemExit(f"gen_logits_goldens: --f32-check supports llama and qwen2, not {arch}")
    hp = {k.split(".", 1)[1]: r.fields[k].contents() for k in r.fields if k.startswith(arch + ".")}
    tensors = {t.name: t for t in r.tensors}

    def w(name):  # [n_out, n_in] (GGUF ne0 is the fastest dimension)
        t = tensors[name]
        return dequantize(t.data, t.tensor_type).astype(np.float32).reshape(
            [int(d) for d in reversed(t.shape.tolist())])

    n_embd, n_head = hp["embedding_length"], hp["attention.head_count"]
    n_kv, eps = hp["attention.head_count_kv"], hp["attention.layer_norm_rms_epsilon"]
    hd, base = n_embd // n_head, hp["rope.freq_base"]
    neox = arch == "qwen2"  # llama.cpp's rope type: NORM for llama, NEOX for qwen2
    n = len(tokens)
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)  # [hd/2]
    ang = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]  # [n, hd/2]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)

    def rope(x):  # [n, heads, hd]
        if neox:
            a, b = x[..., : hd // 2], x[..., hd // 2:]
        else:
            a, b = x[..., 0::2], x[..., 1::2]
        c, s_ = cos[:, None, :], sin[:, None, :]
        ra, rb = a * c - b * s_, a * s_ + b * c
        return np.concatenate([ra, rb], -1) if neox else np.stack([ra, rb], -1).reshape(x.shape)

    def norm(x, g):
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * g

    emb = w("token_embd.weight")  # [n_vocab, n_embd]
    x = emb[np.asarray(tokens)]  # [n, n_embd]
    mask = np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)
    for layer in range(hp["block_count"]):
        def lw(s):
            return w(f"blk.{layer}.{s}")

        def lin(h, s):
            y = h @ lw(s + ".weight").T
            b = f"blk.{layer}.{s}.bias"
            return y + w(b) if b in tensors else y

        h = norm(x, lw("attn_norm.weight"))
        q = rope(lin(h, "attn_q").reshape(n, n_head, hd))
        k = rope(lin(h, "attn_k").reshape(n, n_kv, hd))
        v = lin(h, "attn_v").reshape(n, n_kv, hd)
        rep = n_head // n_kv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)  # [n, n_head, hd]
        att = np.einsum("qhd,khd->hqk", q, k) / np.float32(np.sqrt(hd)) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hqk,khd->qhd", att, v).reshape(n, n_embd)
        x = x + o @ lw("attn_output.weight").T
        h = norm(x, lw("ffn_norm.weight"))
        g, u = h @ lw("ffn_gate.weight").T, h @ lw("ffn_up.weight").T
        x = x + (g / (1 + np.exp(-g)) * u) @ lw("ffn_down.weight").T
    out = w("output.weight") if "output.weight" in tensors else emb
    return norm(x[positions], w("output_norm.weight")) @ out.T


def f32_check(name, fm, path):
    """Compares the committed golden of `name` with f32_forward on the same tokens."""
    model = fm.MODELS[name]
    gguf_path = fm.model_dir(None) / model.file
    golden = json.loads(path.read_text(encoding="utf-8"))
    for p in golden["prompts"]:
        pos = [pp["pos"] for pp in p["positions"]]
        logits = f32_forward(gguf_path, p["tokens"], pos)
        worst, agree, worst_margin = 0.0, 0, 0.0
        for row, pp in zip(logits, p["positions"]):
            ids = [t for t, _ in pp["top"]]
            worst = max(worst, float(np.max(np.abs(row[ids] - [l for _, l in pp["top"]]))))
            if int(np.argmax(row)) == ids[0]:
                agree += 1
            else:
                worst_margin = max(worst_margin, pp["top"][0][1] - pp["top"][1][1])
        print(f"{name} {p['name']}: f32 numpy vs llama.cpp: max |logit diff| over top-{TOP_K} "
              f"{worst:.4f}, top-1 agreement {agree}/{len(pos)}, largest llama.cpp top-1/top-2 "
              f"margin at a disagreement {worst_margin:.4f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    ap.add_argument("--out", default=str(ROOT / "tests" / "golden" / "logits"))
    ap.add_argument("--long-tokens", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--f32-check", action="store_true",
                    help="compare the committed files with an f32 numpy forward (no llama.cpp)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate and compare with the committed files instead of writing")
    args = ap.parse_args()
    if args.f32_check:
        fm = load_fetch_model()
        for name in args.models.split(","):
            f32_check(name, fm, Path(args.out) / f"{name}.json")
        return 0
    try:
        import llama_cpp
    except ImportError as e:
        raise SystemExit(f"gen_logits_goldens: cannot import llama_cpp ({e}); "
                         "run scripts/build-llama-cpp")
    fm = load_fetch_model()
    failures = 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        if name not in fm.MODELS:
            raise SystemExit(f"gen_logits_goldens: unknown model '{name}'")
        obj = generate(name, fm, args, llama_cpp)
        path = out / f"{name}.json"
        if args.check:
            failures += check(obj, path)
            continue
        write_compact(obj, path)
        print(f"{path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
