#!/usr/bin/env bash
# Builds the CUDA test and benchmark binaries for the device machine (no -march=native: its CPU
# differs) and packs them with the shared libraries the device image lacks into
# .device/pack.tar.xz (git-ignored), which a device call carries. Run from the repository root.
set -euo pipefail
build=${BUILD:-build-devpack}
cmake -S . -B "$build" -DGSA_CUDA=ON -DGSA_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target backend_cuda_test bench_cuda_attention -j"${JOBS:-2}"
rm -rf .device/pack && mkdir -p .device/pack/bin .device/pack/lib
cp "$build"/bin/backend_cuda_test "$build"/bin/bench_cuda_attention .device/pack/bin/
# Every non-system library except the CUDA ones (the device image has its own CUDA 13).
ldd .device/pack/bin/backend_cuda_test .device/pack/bin/bench_cuda_attention | awk '/=>/ {print $3}' | sort -u |
  grep -vE 'libc\.so|libm\.so|libdl|libpthread|librt|ld-linux|libstdc|libgcc_s|libcuda|libcublas' |
  xargs -r -I{} cp -L {} .device/pack/lib/
git rev-parse HEAD > .device/pack/COMMIT
tar -C .device -cJf .device/pack.tar.xz pack
ls -la .device/pack.tar.xz
