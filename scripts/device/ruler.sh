#!/usr/bin/env bash
# Device calls for the RULER-style accuracy suite on a real model (pieces made by
# scripts/device/pack_ruler.sh). Stages, one per call, back to back while the machine is warm:
#   tests        unpack the gsa pack, run every CUDA test binary in it but the goldens
#   bench ARGS...  gsa bench --compare on the Qwen2.5-7B shape at 32K x 20 and 120K x 5 (random
#                weights and KV): defaults, then quant ranked by mass (BENCH_CFGS), each with ARGS,
#                for each build in BENCH_BINS; tables to $OUT/bench.md
#   select       block selection over 2-bit key codes at the 7B shape's heads, each scoring path
#                (bench_cuda_attention --select-only, when packed); table to $OUT/select.txt
#   piece NN     keep model piece NN (carried as .device/q.partNN) on the machine's disk
#   golden       llama.cpp's decode goldens for the carried model on CUDA (native weights, f32
#                weights, GSA with a full budget)
#   run LABEL ARGS...  join the pieces (checked against the sha256), then run
#                `gsa eval ruler` with ARGS on the GPU, appending to $OUT/ruler_LABEL.jsonl
set -uo pipefail
stage=${1:-tests}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT" /tmp/gsa-model
export LD_LIBRARY_PATH=/tmp/ruler/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
gsa=${GSA_BIN:-/tmp/ruler/bin/gsa}  # GSA_BIN: another build of gsa in the pack, for a side-by-side baseline
join_model() {
  m=/tmp/gsa-model/$(cat /tmp/ruler/MODEL_NAME)
  if [[ ! -f $m ]]; then
    cat /tmp/gsa-model/q.part* > "$m"
    [[ $(sha256sum "$m" | cut -d' ' -f1) == $(cat /tmp/ruler/MODEL_SHA256) ]] || { echo "model sha256 mismatch"; rm -f "$m"; exit 1; }
    rm -f /tmp/gsa-model/q.part*
  fi
}
case $stage in
  tests)
    tar -C /tmp -xJf .device/ruler.tar.xz
    { echo "commit $(cat /tmp/ruler/COMMIT)"; cat /tmp/ruler/DIFF; date -u
      nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; } | tee "$OUT/device.txt"
    for t in /tmp/ruler/bin/*_test; do
      [[ $(basename $t) == model_golden_decode_cuda_test ]] && continue  # the golden stage runs it
      $t --gtest_brief=1 > "$OUT/$(basename $t).log" 2>&1
      echo "$(basename $t) rc $?: $(grep -E '^\[  (PASSED|FAILED) ' $OUT/$(basename $t).log | tr '\n' ' ')"
      grep -B2 -A8 Failure "$OUT/$(basename $t).log" | head -30
    done ;;
  golden)
    # llama.cpp's decode goldens (tests/golden/decode) for the carried model, on CUDA. The test
    # binary looks for the goldens where it was built (the repo root of the pack's build).
    join_model
    src=$(cat /tmp/ruler/SOURCE_DIR)
    [[ -d $src/tests/golden ]] || { mkdir -p "$(dirname "$src")" && ln -sfn "$PWD" "$src"; }
    GSA_MODEL_DIR=/tmp/gsa-model timeout 500 /tmp/ruler/bin/model_golden_decode_cuda_test \
      > "$OUT/golden_decode_cuda.log" 2>&1
    echo "golden rc $?"; grep -E '^\[ (decode|  PASSED|  FAILED|  SKIPPED)|median|OK \]|FAILED' "$OUT/golden_decode_cuda.log" | head -30 ;;
  bench)
    shift
    # BENCH_SHAPES, BENCH_CFGS (';'-separated flag sets, "" = the defaults) and BENCH_BINS
    # (gsa builds in the pack, each run in turn on every shape and config: a side-by-side
    # baseline) choose what runs.
    IFS=, read -ra shapes <<< "${BENCH_SHAPES:-32768 20,122880 5}"
    IFS=';' read -ra cfgs <<< "${BENCH_CFGS:-;--representation quant --rank-by mass}"
    [[ ${#cfgs[@]} == 0 ]] && cfgs=("")
    read -ra bins <<< "${BENCH_BINS:-gsa}"
    for shape in "${shapes[@]}"; do
      read -r ctx batch <<< "$shape"
      for cfg in "${cfgs[@]}"; do
        for bin in "${bins[@]}"; do
          echo "config: ${cfg:-defaults} $* at ${ctx}x${batch} ($bin)" | tee -a "$OUT/bench.md"
          timeout 90 /tmp/ruler/bin/$bin bench --device cuda --shape qwen2.5-7b --random-kv --sparse gsa --compare \
            --ctx $ctx --batch $batch --gen 16 $cfg "$@" 2>&1 | grep -E '^\|' | tee -a "$OUT/bench.md"
        done
      done
    done ;;
  select)
    /tmp/ruler/bin/bench_cuda_attention --select-only --quick --json "$OUT/select.jsonl" 2>&1 | tee "$OUT/select.txt" | grep -E "device|quant_select" ;;
  piece)
    cp .device/q.part"$2" /tmp/gsa-model/ && ls /tmp/gsa-model | tr '\n' ' ' ;;
  run)
    label=$2; shift 2
    join_model
    $gsa eval ruler -m "$m" --device cuda --data-dir /tmp/ruler/data --cases /tmp/ruler/cases.jsonl \
      --label "$label" -o "$OUT/ruler_$label.jsonl" "$@" 2> "$OUT/ruler_$label.err"
    echo "rc $?"; tail -3 "$OUT/ruler_$label.err" ;;
esac
