#!/usr/bin/env python3
"""Peer baseline for gsa's decode attention: torch scaled_dot_product_attention decoding the same
dense shapes (one query token, GQA, bf16, head dim 128) with the flash and cuDNN backends,
timed with CUDA events (median, L2 flushed before each run). Prints a table; --json writes JSON
lines that scripts/device/summarize.py puts next to gsa's own numbers."""
import argparse
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HEAD_DIM = 128


def time_us(fn, reps, flush):
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    for _ in range(3):
        fn()
    times = []
    for i in range(reps):
        flush.fill_(i & 0xFF)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000.0)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    out = open(args.json, "w") if args.json else None
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, cudnn {torch.backends.cudnn.version()}")
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    heads = [(28, 4), (64, 8)]
    ctxs = [32768] if args.quick else [6144, 32768, 131072]
    batches = [1, 8] if args.quick else [1, 8, 32]
    backends = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]
    gen = torch.Generator(device=dev)
    gen.manual_seed(1)
    for h, kvh in heads:
        for ctx in ctxs:
            for b in batches:
                q = torch.rand(b, h, 1, HEAD_DIM, device=dev, dtype=torch.bfloat16, generator=gen) * 2 - 1
                k = torch.rand(b, kvh, ctx, HEAD_DIM, device=dev, dtype=torch.bfloat16, generator=gen) * 2 - 1
                v = torch.rand(b, kvh, ctx, HEAD_DIM, device=dev, dtype=torch.bfloat16, generator=gen) * 2 - 1
                kv_bytes = 2.0 * b * kvh * ctx * HEAD_DIM * 2
                for name, backend in backends:
                    rec = {"op": "torch_sdpa_decode", "backend": name, "batch": b, "ctx": ctx, "heads": h,
                           "kv_heads": kvh, "head_dim": HEAD_DIM}
                    try:
                        with sdpa_kernel([backend]):
                            fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                            fn()
                            torch.cuda.synchronize()
                            us = time_us(fn, args.reps, flush)
                        rec.update(time_us=round(us, 2), bytes=kv_bytes, gbps=round(kv_bytes / (us * 1e-6) / 1e9, 1))
                        print(f"torch-{name:6s} b={b:<3d} ctx={ctx:<7d} h={h:2d}/{kvh}  {us:10.1f} us  "
                              f"{kv_bytes / (us * 1e-6) / 1e9:8.1f} GB/s")
                    except Exception as e:  # a backend that refuses this shape is reported, not fatal
                        msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
                        rec.update(error=msg)
                        print(f"torch-{name:6s} b={b:<3d} ctx={ctx:<7d} h={h:2d}/{kvh}  n/a: {msg}")
                    if out:
                        out.write(json.dumps(rec) + "\n")
                        out.flush()
                del q, k, v
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
