#!/usr/bin/env bash
# CI slice of the RULER-style suite: one case per task (haystacks alternating between the PG
# essays and the King James Bible), `gsa eval ruler` on SmolLM2-135M at a 2048-token context with
# full attention and GSA at a 1024-token budget; checks the result lines' shape, not the scores.
# Exits 77 (CTest: skipped) when the model or the fetched text is missing.
# Usage: eval_ruler_smoke.sh GSA_BINARY SOURCE_DIR
set -euo pipefail
gsa=$1
src=$2
model=${GSA_MODEL_DIR:-$HOME/.cache/gsa/models}/SmolLM2-135M-Instruct.Q4_1.gguf
data=${GSA_DATA_DIR:-$HOME/.cache/gsa/data}
[ -f "$model" ] || { echo "skip: $model missing (scripts/fetch-model smollm2-135m)"; exit 77; }
for d in pg_essays kjv wonderwords; do
  [ -d "$data/$d" ] || { echo "skip: $data/$d missing (scripts/fetch-data)"; exit 77; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "$src/eval/ruler/gen_ruler.py" --per-task 2 --data-dir "$data" -o "$tmp/all.jsonl" >/dev/null
# Case 0 of even tasks, case 1 of odd ones: both haystacks appear (cwe is always literal). The
# inserts move into the last quarter, so cases on one haystack share its first ~1500 tokens
# through the prefix cache: about 9K tokens to prefill instead of 18K on two shared cores.
python3 - "$tmp/all.jsonl" "$tmp/cases.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tasks = list(dict.fromkeys(r["task"] for r in rows))
keep = [r for r in rows if int(r["id"][-3:]) == tasks.index(r["task"]) % 2]
for r in keep:
    for ins in r["inserts"]:
        ins["depth"] = 0.75 + 0.25 * ins["depth"]
open(sys.argv[2], "w").write("".join(json.dumps(r) + "\n" for r in keep))
PY
"$gsa" eval ruler -m "$model" --data-dir "$data" --cases "$tmp/cases.jsonl" --contexts 2048 \
  --variants full,gsa@1024 --sparse gsa --block-size 32 --min-context 512 --max-new 8 \
  --label ci -o "$tmp/out.jsonl" 2>"$tmp/err.log" || { cat "$tmp/err.log"; exit 1; }
python3 - "$tmp/cases.jsonl" "$tmp/out.jsonl" <<'PY'
import json, sys
cases = [json.loads(l) for l in open(sys.argv[1])]
out = [json.loads(l) for l in open(sys.argv[2])]
def check(cond, msg):
    if not cond:
        sys.exit(f"FAIL: {msg}")
check(len(out) == 2 * len(cases), f"{len(out)} lines for {len(cases)} cases x 2 variants")
check({c["haystack"] for c in cases} == {"pg_essays", "kjv", "literal"}, "haystacks not all used")
got = {(r["id"], r["variant"]) for r in out}
check(got == {(c["id"], v) for c in cases for v in ("full", "gsa@1024")}, "missing (case, variant)")
for r in out:
    for k in ("label", "task", "id", "context", "prompt_tokens", "variant", "budget_tokens",
              "score", "answer", "expected", "attended_fraction", "config", "seconds",
              "decode_tok_s"):
        check(k in r, f"{r['id']} {r['variant']}: no '{k}'")
    check(0.0 <= r["score"] <= 1.0, f"{r['id']}: score {r['score']}")
    check(abs(r["prompt_tokens"] - 2048) <= 64, f"{r['id']}: {r['prompt_tokens']} prompt tokens")
    if r["variant"] == "full":
        check(r["attended_fraction"] == 1.0, f"{r['id']} full: attended {r['attended_fraction']}")
    else:
        check(r["applied"] and 0 < r["attended_fraction"] < 0.75,
              f"{r['id']} gsa@1024: attended {r['attended_fraction']}, applied {r.get('applied')}")
print(f"ok: {len(out)} lines, mean score full "
      f"{sum(r['score'] for r in out if r['variant'] == 'full') / len(cases):.2f}, gsa@1024 "
      f"{sum(r['score'] for r in out if r['variant'] != 'full') / len(cases):.2f}")
PY
