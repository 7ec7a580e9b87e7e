#!/usr/bin/env bash
# Packs what scripts/device/ruler.sh needs on the GPU machine into .device/ (git-ignored): the gsa
# command and the CUDA tests (built without -march=native in build-devpack) with the shared
# libraries the device image lacks, the RULER-style cases and their haystacks (PG essays and the
# King James Bible from ~/.cache/gsa/data), and MODEL (default qwen2.5-coder-1.5b) split into
# pieces of PIECE_MB (default 50) MiB, each carried by one device call (a call carries the
# working tree too, about 9 MiB, within its 64 MiB). Run from the repo root.
set -euo pipefail
build=${BUILD:-build-devpack}
model=${MODEL:-$HOME/.cache/gsa/models/Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf}
data=${GSA_DATA_DIR:-$HOME/.cache/gsa/data}
targets=${TARGETS:-gsa backend_cuda_test engine_cuda_test model_golden_decode_cuda_test}
cmake --build "$build" --target $targets -j"${JOBS:-2}"
rm -rf .device/ruler .device/q.part* && mkdir -p .device/ruler/bin .device/ruler/lib .device/ruler/data
for t in $targets; do cp "$build/bin/$t" .device/ruler/bin/; done
# BASE_BIN: another build of gsa, packed as bin/gsa_base for side-by-side benchmarks.
[[ -n ${BASE_BIN:-} ]] && cp "$BASE_BIN" .device/ruler/bin/gsa_base
ldd .device/ruler/bin/* | awk '/=>/ {print $3}' | sort -u |
  grep -vE 'libc\.so|libm\.so|libdl|libpthread|librt|ld-linux|libstdc|libgcc_s|libcuda|libcublas' |
  xargs -r -I{} cp -L {} .device/ruler/lib/
cp -r "$data/pg_essays" "$data/kjv" .device/ruler/data/
python3 eval/ruler/gen_ruler.py --seed ${SEED:-1} --per-task ${PER_TASK:-40} -o .device/ruler/cases.jsonl
git rev-parse HEAD > .device/ruler/COMMIT
pwd > .device/ruler/SOURCE_DIR
git diff --stat HEAD > .device/ruler/DIFF  # uncommitted changes the binaries were built with
sha256sum "$model" | cut -d' ' -f1 > .device/ruler/MODEL_SHA256
basename "$model" > .device/ruler/MODEL_NAME
tar -C .device -cJf .device/ruler.tar.xz ruler
split -b "${PIECE_MB:-50}M" -d "$model" .device/q.part
ls -la .device/ruler.tar.xz .device/q.part* | awk '{print $5, $9}'
