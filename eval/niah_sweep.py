#!/usr/bin/env python3
"""Needle-in-a-haystack sweep: full attention vs GSA over contexts x depths, for each
representation kind, scope and lag, through `gsa eval niah` (one prefill per prompt and engine;
the budgets of a prompt reuse its KV through the prefix cache). Writes the raw results as JSON
lines, then docs/ACCURACY.md tables and one PNG heatmap (depth x context, pass/fail) per
configuration and budget, plus the per-layer attention-mass plot.

Usage: eval/niah_sweep.py [--gsa build/bin/gsa] [--out docs/accuracy] [--only NAME ...]
                          [--report-only]
Needs: scripts/fetch-data (the essays), the default model, matplotlib (pip).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTEXTS = [1024, 2048, 4096, 7680]
LONG = [4096, 7680]
DEPTHS = list(range(0, 101, 10))
BLOCK = 32

SPARSE_DEPTHS = list(range(0, 101, 20))

# name, extra engine flags, budgets (tokens; 0 = full attention), contexts, depths, --mass.
# The full grid runs for mean and minmax; the other kinds, scopes and lags run on a coarser grid
# (about 25 minutes of 2 cores for the whole sweep instead of over two hours).
CONFIGS = [
    ("mean", ["--representation", "mean"], [0, 256, 512, 1024, 2048], CONTEXTS, DEPTHS, True),
    ("minmax", ["--representation", "minmax"], [512, 1024, 2048], CONTEXTS, DEPTHS, False),
    ("hash", ["--representation", "hash"], [1024, 2048], [2048, 7680], SPARSE_DEPTHS, False),
    ("mean_per_kv_head", ["--representation", "mean", "--scope", "per_kv_head"], [1024, 2048], [7680], SPARSE_DEPTHS, False),
    ("mean_lag1_cpu", ["--representation", "mean", "--lag", "1", "--selector", "cpu"], [1024, 2048], [7680], SPARSE_DEPTHS, False),
    ("mean_lag3_cpu", ["--representation", "mean", "--lag", "3", "--selector", "cpu"], [1024, 2048], [7680], SPARSE_DEPTHS, False),
]


def run(gsa, out_dir, only):
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "niah.jsonl"
    for name, flags, budgets, contexts, depths, mass in CONFIGS:
        if only and name not in only:
            continue
        if raw.exists():
            lines = [l for l in raw.read_text().splitlines() if json.loads(l).get("label") != name]
            raw.write_text("".join(l + "\n" for l in lines))
        cmd = [gsa, "eval", "niah", "--sparse", "gsa", "--block-size", str(BLOCK), "--min-context", "512",
               "--contexts", ",".join(map(str, contexts)), "--depths", ",".join(map(str, depths)),
               "--budgets", ",".join(map(str, budgets)), "--label", name, "-o", str(raw)] + flags
        if mass:
            cmd.append("--mass")
        t = time.time()
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        print(f"{name}: {time.time() - t:.0f} s", flush=True)


def report(out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [json.loads(l) for l in (out_dir / "niah.jsonl").read_text().splitlines() if l.strip()]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["label"], r["budget_tokens"])].append(r)
    full = {(r["context"], r["depth"]): r["pass"] for r in rows if r["label"] == "mean" and r["budget_tokens"] == 0}

    lines = []
    lines.append("| configuration | budget (tokens) | contexts | passed | full attention passed (same cases) | GSA misses where full passes | mean attended fraction |")
    lines.append("|---|---|---|---|---|---|---|")
    for (label, budget), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "mean", kv[0][0], kv[0][1])):
        ctxs = sorted({r["context"] for r in rs})
        passed = sum(r["pass"] for r in rs)
        fp = sum(full.get((r["context"], r["depth"]), False) for r in rs)
        miss = sum(1 for r in rs if full.get((r["context"], r["depth"])) and not r["pass"])
        att = np.mean([r.get("attended_fraction", 1.0) for r in rs])
        name = "full attention" if budget == 0 else label
        lines.append(f"| {name} | {budget if budget else '-'} | {','.join(map(str, ctxs))} | {passed}/{len(rs)} | {fp}/{len(rs)} | {miss} | {att:.2f} |")

        ctx_list = sorted({r["context"] for r in rs})
        depth_list = sorted({r["depth"] for r in rs})
        grid = np.full((len(depth_list), len(ctx_list)), np.nan)
        for r in rs:
            grid[depth_list.index(r["depth"]), ctx_list.index(r["context"])] = 1.0 if r["pass"] else 0.0
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(ctx_list), 4.2))
        ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(ctx_list)), [str(c) for c in ctx_list])
        ax.set_yticks(range(len(depth_list)), [f"{d}%" for d in depth_list])
        ax.set_xlabel("context (tokens)")
        ax.set_ylabel("needle depth")
        ax.set_title(f"{name}" + (f", budget {budget}" if budget else "") + f": {passed}/{len(rs)}", fontsize=9)
        fig.tight_layout()
        fig.savefig(out_dir / f"niah_{label}_{budget}.png", dpi=80)
        plt.close(fig)

    # Attention mass per layer (mean representation, per budget, averaged over cases).
    mass = defaultdict(list)
    for r in rows:
        if r["label"] == "mean" and r.get("mass_per_layer") and r["budget_tokens"] > 0:
            mass[r["budget_tokens"]].append(r["mass_per_layer"])
    mass_lines = []
    if mass:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        mass_lines.append("| budget | " + " | ".join(f"L{i}" for i in range(len(next(iter(mass.values()))[0]))) + " |")
        mass_lines.append("|---|" + "---|" * len(next(iter(mass.values()))[0]))
        for b in sorted(mass):
            m = np.mean(np.array(mass[b]), axis=0)
            ax.plot(m, marker=".", label=f"budget {b}")
            mass_lines.append(f"| {b} | " + " | ".join(f"{x:.2f}" for x in m) + " |")
        ax.set_xlabel("layer")
        ax.set_ylabel("softmax mass in selected blocks")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / "niah_mass_per_layer.png", dpi=80)
        plt.close(fig)
    (out_dir / "niah_table.md").write_text("\n".join(lines) + "\n")
    (out_dir / "niah_mass.md").write_text("\n".join(mass_lines) + "\n")
    print("\n".join(lines))
    print("\n".join(mass_lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gsa", default=str(ROOT / "build" / "bin" / "gsa"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "accuracy"))
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    if not a.report_only:
        run(a.gsa, out, a.only)
    report(out)


if __name__ == "__main__":
    sys.exit(main())
