#!/usr/bin/env bash
# One device call: unpack the binaries built by pack.sh, record the card, run the CUDA tests
# (CUDA vs CPU) and the benchmarks (gsa decode attention, then torch SDPA on the same shapes).
# Usage there: scripts/device/run_cuda.sh [tests|bench|all] [--quick]; logs go to $OUT.
set -uo pipefail
what=${1:-all}
quick=${2:-}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
tar -C /tmp -xJf .device/pack.tar.xz
export LD_LIBRARY_PATH=/tmp/pack/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
{
  echo "commit $(cat /tmp/pack/COMMIT)"; date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
} | tee "$OUT/device.txt"
if [[ $what == tests || $what == all ]]; then
  /tmp/pack/bin/backend_cuda_test --gtest_brief=1 2>&1 | tee "$OUT/tests.log" | grep -vE '^seed' | tail -40
fi
if [[ $what == bench || $what == all ]]; then
  /tmp/pack/bin/bench_cuda_attention --json "$OUT/bench_gsa.jsonl" $quick 2>&1 | tee "$OUT/bench_gsa.log"
  # The same sweep with two waves of split CTAs (2 per SM) instead of one, for the notes.
  /tmp/pack/bin/bench_cuda_attention --json "$OUT/bench_gsa_wave2.jsonl" --ctas-per-sm 2 $quick > "$OUT/bench_gsa_wave2.log" 2>&1
  PYTHONUNBUFFERED=1 python3 scripts/device/torch_sdpa_decode.py --json "$OUT/bench_torch.jsonl" $quick 2>&1 |
    tee "$OUT/bench_torch.log" | tail -40
fi
