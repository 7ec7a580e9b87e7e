#!/usr/bin/env bash
# Packs the gsa command, the CUDA tests and the attention benchmark (built without
# -march=native, with the shared libraries the device image lacks) into .device/e2e.tar.xz, and
# splits the default model into pieces under 60 MiB (.device/model.part*), for
# scripts/device/e2e.sh. Run from the repository root after building build-devpack.
set -euo pipefail
build=${BUILD:-build-devpack}
cmake --build "$build" --target gsa backend_cuda_test engine_cuda_test model_cuda_test bench_cuda_attention bench_cuda_gemm -j"${JOBS:-2}"
rm -rf .device/e2e && mkdir -p .device/e2e/bin .device/e2e/lib
cp "$build"/bin/gsa "$build"/bin/backend_cuda_test "$build"/bin/engine_cuda_test "$build"/bin/model_cuda_test "$build"/bin/bench_cuda_attention "$build"/bin/bench_cuda_gemm .device/e2e/bin/
ldd .device/e2e/bin/* | awk '/=>/ {print $3}' | sort -u |
  grep -vE 'libc\.so|libm\.so|libdl|libpthread|librt|ld-linux|libstdc|libgcc_s|libcuda|libcublas' |
  xargs -r -I{} cp -L {} .device/e2e/lib/
git rev-parse HEAD > .device/e2e/COMMIT
tar -C .device -cJf .device/e2e.tar.xz e2e
model=${GSA_MODEL_DIR:-$HOME/.cache/gsa/models}/SmolLM2-135M-Instruct.Q4_1.gguf
rm -f .device/model.part*
split -b 50M -d "$model" .device/model.part
tar -C "$HOME/.cache/gsa/data" -czf .device/pg_essays.tar.gz pg_essays
ls -la .device/e2e.tar.xz .device/model.part* .device/pg_essays.tar.gz
