#!/usr/bin/env bash
# Device calls for the end-to-end GPU results. Stage 1 (carrying .device/e2e.tar.xz and the
# first model piece): CUDA tests, the read ceiling, then full vs GSA decode (device selection, and the
# pipelined CPU selector) on the Qwen2.5-7B shape with random
# bf16 weights and random KV at 32K x 20, 64K x 10, 120K x 5. Stage 2 (carrying the second
# piece and the essays, while the machine is warm): joins the default model, compares greedy
# tokens of the CUDA and CPU backends, and runs needle cases with GSA on the GPU and the CPU. Logs go to $OUT.
set -uo pipefail
stage=${1:-1}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/gsa-model
export LD_LIBRARY_PATH=/tmp/e2e/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
gsa=/tmp/e2e/bin/gsa
if [[ $stage == 1 ]]; then
  tar -C /tmp -xJf .device/e2e.tar.xz
  cp .device/model.part00 /tmp/gsa-model/ 2>/dev/null
  { echo "commit $(cat /tmp/e2e/COMMIT)"; date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; } | tee "$OUT/device.txt"
  for t in /tmp/e2e/bin/*_test; do
    $t --gtest_brief=1 > "$OUT/$(basename $t).log" 2>&1; rc=$?
    echo "$(basename $t): rc $rc $(grep -E '^\[  (PASSED|FAILED) ' $OUT/$(basename $t).log | tr '\n' ' ')"
  done | tee "$OUT/cuda_tests.log"
  # The read-bandwidth ceiling, in the same call as the e2e runs.
  /tmp/e2e/bin/bench_cuda_attention --ceiling-only --json "$OUT/ceiling.jsonl" 2>&1 | tail -3
  # Decode-sized GEMMs: the small-m kernel next to cuBLAS on the model's weight shapes.
  timeout ${GEMM_TIMEOUT:-150} /tmp/e2e/bin/bench_cuda_gemm ${GEMM_ARGS:-} --json "$OUT/gemm.jsonl" > "$OUT/gemm.log" 2>&1
  tail -40 "$OUT/gemm.log"
  # The e2e step with cublasGemmEx's default algorithms (no per-shape tuning), side by side.
  GSA_GEMM_TUNE=0 $gsa bench --device cuda --shape qwen2.5-7b --random-kv --ctx 32768 --batch 20 \
    --gen 32 --json --sparse gsa --compare 2>&1 | sed 's/^{/{"gemm_tuning":false,/' | tee -a "$OUT/e2e.jsonl"
  for shape in "32768 20" "65536 10" "122880 5"; do
    set -- $shape
    common="bench --device cuda --shape qwen2.5-7b --random-kv --ctx $1 --batch $2 --gen 32 --json"
    # Full attention and GSA with selection on the device, side by side.
    $gsa $common --sparse gsa --compare 2>&1 | tee -a "$OUT/e2e.jsonl"
    # GSA with the pipelined CPU selector (queries copied out per layer, one step of lag).
    $gsa $common --sparse gsa --selector cpu --lag 1 --cpu-workers ${CPU_WORKERS:-8} 2>&1 | tee -a "$OUT/e2e.jsonl"
    [[ $1 == 32768 ]] && $gsa $common --sparse gsa --selector cpu --lag 0 --cpu-workers ${CPU_WORKERS:-8} 2>&1 | tee -a "$OUT/e2e.jsonl"
  done
  [[ -n ${E2E_EXTRA:-} ]] && bash -c "$E2E_EXTRA"
else
  cp .device/model.part01 /tmp/gsa-model/ 2>/dev/null
  cat /tmp/gsa-model/model.part* > /tmp/gsa-model/SmolLM2-135M-Instruct.Q4_1.gguf
  sha256sum /tmp/gsa-model/SmolLM2-135M-Instruct.Q4_1.gguf | tee "$OUT/model.sha256"
  m=/tmp/gsa-model/SmolLM2-135M-Instruct.Q4_1.gguf
  for dev in cuda cpu; do
    $gsa generate -m $m --device $dev --weights bf16 -n 48 --no-stream \
      -p "The capital of France is" -p "Write a haiku about the sea." \
      -p "def fibonacci(n):" > "$OUT/greedy_$dev.txt" 2> "$OUT/greedy_$dev.err"
  done
  diff "$OUT/greedy_cuda.txt" "$OUT/greedy_cpu.txt" > "$OUT/greedy.diff" && echo "greedy: identical" | tee "$OUT/greedy.log" || echo "greedy: differ" | tee "$OUT/greedy.log"
  cat "$OUT/greedy_cuda.txt" | head -20
  # Needle cases with GSA selected on the GPU, next to the same cases on the CPU.
  mkdir -p /tmp/pg && tar -C /tmp/pg -xzf .device/pg_essays.tar.gz
  for dev in cuda cpu; do
    $gsa eval niah -m $m --device $dev --weights bf16 --haystack /tmp/pg/pg_essays --sparse gsa \
      --block-size 32 --min-context 512 --budget-tokens 1024 --contexts 4096,7680 --depths 10,50,90 \
      --label "gpu_check_$dev" -o "$OUT/niah_$dev.jsonl" 2>&1 | tail -1
  done
  # The same cases on the GPU with the pipelined CPU selector (one step of lag).
  $gsa eval niah -m $m --device cuda --weights bf16 --haystack /tmp/pg/pg_essays --sparse gsa \
    --block-size 32 --min-context 512 --budget-tokens 1024 --contexts 4096,7680 --depths 10,50,90 \
    --selector cpu --lag 1 --cpu-workers 4 --label gpu_check_cuda_cpusel_lag1 \
    -o "$OUT/niah_cuda_cpusel.jsonl" 2>&1 | tail -1
fi
