#!/usr/bin/env python3
"""Turns one device call's JSON lines (bench_cuda_attention --json, torch_sdpa_decode.py --json)
into the markdown tables of docs/BENCHMARKS_CUDA.md: dense decode next to torch's flash and
cuDNN SDPA, sparse decode next to dense over the same bytes, selection share, CPU-selector I/O.
Usage: summarize.py DIR (the folder holding bench_gsa.jsonl and bench_torch.jsonl)."""
import json
import pathlib
import sys


def load(path):
    p = pathlib.Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def main():
    d = pathlib.Path(sys.argv[1])
    gsa = load(d / "bench_gsa.jsonl")
    torch = load(d / "bench_torch.jsonl")
    ceiling = next((r for r in gsa if r["op"] == "ceiling"), None)
    if ceiling:
        print(f"Read ceiling (4 GiB read-only reduction): {ceiling['read_gbps']:.0f} GB/s; "
              f"device-to-device copy: {ceiling['copy_gbps']:.0f} GB/s (read + write).\n")
    key = lambda r: (r["heads"], r["kv_heads"], r["ctx"], r["batch"])
    tor = {}
    for r in torch:
        tor.setdefault(key(r), {})[r["backend"]] = r
    dense = {key(r): r for r in gsa if r["op"] == "decode_attn" and r["mode"] == "dense"}
    sparse = {key(r): r for r in gsa if r["op"] == "decode_attn" and r["mode"] == "sparse"}

    print("| heads q/kv | context | batch | KV read | gsa dense us | GB/s | torch flash us | torch cuDNN us | gsa vs best peer |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in sorted(dense):
        r = dense[k]
        t = tor.get(k, {})
        fl = t.get("flash", {}).get("time_us")
        cu = t.get("cudnn", {}).get("time_us")
        peers = [x for x in (fl, cu) if x]
        best = min(peers) if peers else None
        ratio = f"{best / r['time_us']:.2f}x" if best else "n/a"
        fmt = lambda x: f"{x:.1f}" if x else "n/a"
        print(f"| {k[0]}/{k[1]} | {k[2]} | {k[3]} | {r['bytes'] / 1e6:.0f} MB | {r['time_us']:.1f} | "
              f"{r['gbps']:.0f} | {fmt(fl)} | {fmt(cu)} | {ratio} |")

    print("\n| heads q/kv | context | batch | sparse us (48 blocks) | GB/s | dense 6K same bytes GB/s | select us | select / sparse attn | reps / KV bytes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in sorted(sparse):
        r = sparse[k]
        same = dense.get((k[0], k[1], 6144, k[3]))
        print(f"| {k[0]}/{k[1]} | {k[2]} | {k[3]} | {r['time_us']:.1f} | {r['gbps']:.0f} | "
              f"{same['gbps'] if same else 'n/a'} | {r['select_us']:.1f} | {100 * r['select_share']:.0f}% | "
              f"{100 * r['rep_share_of_kv']:.2f}% |")

    io = [r for r in gsa if r["op"] == "cpu_selector_io"]
    if io:
        print("\n| heads q/kv | context | batch | sparse attn us | + query to host + selection to device us | query copy latency us |")
        print("|---|---|---|---|---|---|")
        for r in io:
            print(f"| {r['heads']}/{r['kv_heads']} | {r['ctx']} | {r['batch']} | {r['attn_us']:.1f} | "
                  f"{r['with_copies_us']:.1f} | {r['q_copy_latency_us']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
