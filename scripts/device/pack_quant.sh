#!/usr/bin/env bash
# Packs what scripts/device/quant.sh needs into .device/q.tar.xz (git-ignored): the gsa command and
# backend_cuda_test built without -march=native in build-devpack, with the shared libraries the
# device image lacks. Run from the repo root, then: device run `bash scripts/device/quant.sh`
# carrying .device/q.tar.xz.
set -euo pipefail
build=${BUILD:-build-devpack}
cmake -S . -B "$build" -DGSA_CUDA=ON -DGSA_NATIVE=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" --target gsa backend_cuda_test -j"${JOBS:-2}"
rm -rf .device/q .device/q.tar.xz && mkdir -p .device/q/bin .device/q/lib
cp "$build/bin/gsa" "$build/bin/backend_cuda_test" .device/q/bin/
ldd .device/q/bin/* | awk '/=>/ {print $3}' | sort -u |
  grep -vE 'libc\.so|libm\.so|libdl|libpthread|librt|ld-linux|libstdc|libgcc_s|libcuda|libcublas' |
  xargs -r -I{} cp -L {} .device/q/lib/
git rev-parse HEAD > .device/q/COMMIT
tar -C .device -cJf .device/q.tar.xz q
ls -la .device/q.tar.xz | awk '{print $5, $9}'
