#!/usr/bin/env bash
# One device call for the quant representation: the CUDA backend tests (rep_update, the fused
# rope_append write, block_select against the CPU) and the 7B-shape decode step, full attention
# and GSA side by side (gsa bench --compare), for the default minmax box and for quant ranked by
# mass. Carry .device/q.tar.xz (the gsa command and backend_cuda_test from build-devpack, with
# the shared libraries the device image lacks).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
tar -C /tmp -xJf .device/q.tar.xz
export LD_LIBRARY_PATH=/tmp/q/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
{ echo "commit $(cat /tmp/q/COMMIT)"; date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; } | tee "$OUT/device.txt"
timeout 120 /tmp/q/bin/backend_cuda_test --gtest_brief=1 > "$OUT/backend_cuda_test.log" 2>&1
echo "backend_cuda_test rc $?: $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/backend_cuda_test.log" | tr '\n' ' ')"
grep -B2 -A10 Failure "$OUT/backend_cuda_test.log" | head -40
bench() {
  timeout 60 /tmp/q/bin/gsa bench --device cuda --shape qwen2.5-7b --random-kv --sparse gsa --compare \
    --ctx 32768 --batch 20 --gen 16 "$@" 2>&1 | grep -E '^\|' | tail -2
}
echo "defaults"; bench | tee -a "$OUT/bench.md"
echo "quant, mass"; bench --representation quant --rank-by mass | tee -a "$OUT/bench.md"
echo "quant, mass, group_max"; bench --representation quant --rank-by mass --query group_max | tee -a "$OUT/bench.md"
