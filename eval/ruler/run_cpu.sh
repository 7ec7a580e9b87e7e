#!/usr/bin/env bash
# The RULER-style suite on the CPU with SmolLM2-135M-Instruct (8K trained context): 4K and 8K
# contexts, full attention against GSA at 2048/1024-token budgets and the oracle selection at the
# same budgets (block 32, min_context 512 so the budgets apply at these lengths). Writes the cases,
# the raw JSONL, the markdown report and the plots under OUT_DIR. Slow: 9 tasks x 40 cases x 2
# contexts x 5 variants; PER_TASK, TASKS, CONTEXTS and THREADS shrink it.
#
# Usage: eval/ruler/run_cpu.sh [OUT_DIR]        (default: .cache/ruler/cpu, git-ignored)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT_DIR=${1:-.cache/ruler/cpu}
GSA=${GSA:-build/bin/gsa}
PER_TASK=${PER_TASK:-40}
CONTEXTS=${CONTEXTS:-4096,8192}
VARIANTS=${VARIANTS:-full,gsa@2048,gsa@1024,oracle@2048,oracle@1024}
THREADS=${THREADS:-0}
SEED=${SEED:-1}
TASKS=${TASKS:-niah_number,niah_word,niah_uuid,niah_multikey,niah_multivalue,niah_multiquery,vt,cwe,two_hop}

[ -x "$GSA" ] || { echo "run_cpu.sh: $GSA not built (scripts/setup, or set GSA=...)" >&2; exit 1; }
mkdir -p "$OUT_DIR"
rm -f "$OUT_DIR/results.jsonl"  # gsa eval appends
scripts/fetch-data >/dev/null
scripts/fetch-model smollm2-135m >/dev/null
eval/ruler/gen_ruler.py --seed "$SEED" --per-task "$PER_TASK" --tasks "$TASKS" -o "$OUT_DIR/cases.jsonl"
commit=$(git rev-parse --short HEAD)
"$GSA" eval ruler --cases "$OUT_DIR/cases.jsonl" --contexts "$CONTEXTS" --variants "$VARIANTS" \
  --threads "$THREADS" --sparse gsa --block-size 32 --min-context 512 --mass \
  --label "smollm2-135m cpu $commit" -o "$OUT_DIR/results.jsonl"
eval/ruler/report.py "$OUT_DIR/results.jsonl" --md "$OUT_DIR/report.md" --plots "$OUT_DIR"
echo "report: $OUT_DIR/report.md"
