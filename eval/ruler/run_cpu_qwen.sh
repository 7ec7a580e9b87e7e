#!/usr/bin/env bash
# The RULER-style suite on the CPU with Qwen2.5-Coder-0.5B-Instruct (32K context) at 8K tokens and
# 128-token pages: one engine per configuration (CONFIGS: LABEL:FLAG,FLAG... entries separated
# by spaces; default the minmax box, quant, and quant with group-max queries), each running GSA
# ranked by score and by estimated mass at 2048 and 1024 tokens on the same prefilled prompts.
# The first configuration's engine also runs full attention and the oracle. Writes the cases and
# one JSONL per configuration under OUT_DIR, then the comparison table (eval/ruler/compare.py).
# Slow on a small machine (about a minute of prefill per case on 2 cores): PER_TASK (default 2),
# TASKS, CONTEXT and THREADS shrink or grow it.
#
# Usage: eval/ruler/run_cpu_qwen.sh [OUT_DIR]        (default: .cache/ruler/q05, git-ignored)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-.cache/ruler/q05}
GSA=${GSA:-build/bin/gsa}
PER_TASK=${PER_TASK:-2}
CONTEXT=${CONTEXT:-8192}
THREADS=${THREADS:-0}
SEED=${SEED:-1}
CONFIGS=${CONFIGS:-minmax:--representation,minmax quant:--representation,quant quantmax:--representation,quant,--query,group_max}
TASKS=${TASKS:-niah_number,niah_word,niah_uuid,niah_multikey,niah_multivalue,niah_multiquery,vt,cwe,two_hop}

[ -x "$GSA" ] || { echo "run_cpu_qwen.sh: $GSA not built (scripts/setup, or set GSA=...)" >&2; exit 1; }
mkdir -p "$OUT_DIR"
scripts/fetch-data >/dev/null
scripts/fetch-model qwen2.5-coder-0.5b >/dev/null
[ -f "$OUT_DIR/cases.jsonl" ] ||
  eval/ruler/gen_ruler.py --seed "$SEED" --per-task "$PER_TASK" --tasks "$TASKS" -o "$OUT_DIR/cases.jsonl"
commit=$(git rev-parse --short HEAD)
first=1
files=()
runs=minmax:full
for cfg in $CONFIGS; do
  label=${cfg%%:*}
  IFS=, read -r -a flags <<< "${cfg#*:}"
  variants=score@2048,score@1024,mass@2048,mass@1024
  if [ $first = 1 ]; then
    variants=full,oracle@2048,oracle@1024,$variants
    runs=$label:full,$label:oracle@2048,$label:oracle@1024
  fi
  first=0
  runs=$runs,$label:score@2048,$label:mass@2048,$label:score@1024,$label:mass@1024
  files+=("$OUT_DIR/$label.jsonl")
  [ -s "$OUT_DIR/$label.jsonl" ] && continue  # done by an earlier run (delete it to redo)
  "$GSA" eval ruler -m qwen2.5-coder-0.5b --cases "$OUT_DIR/cases.jsonl" --contexts "$CONTEXT" \
    --variants "$variants" --threads "$THREADS" --sparse gsa "${flags[@]}" \
    --min-context 512 --label "$label" -o "$OUT_DIR/$label.jsonl.part"
  mv "$OUT_DIR/$label.jsonl.part" "$OUT_DIR/$label.jsonl"
done
eval/ruler/compare.py "${files[@]}" --runs "$runs" --context "$CONTEXT" --tasks | tee "$OUT_DIR/compare.md"
