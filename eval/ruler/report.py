#!/usr/bin/env python3
"""Summarises `gsa eval ruler` results (JSONL) as a markdown report and PNG plots.

Markdown (stdout, or --md FILE): per task, one column per (context, variant) with the mean score
x100 and the case count; the suite mean per (context, variant); per sparse variant the cases lost
against full attention (full scored higher on the same case and context) and the mean attended
fraction; the attention-mass recall per layer when the results carry it (--mass). Plots (--plots
DIR): score per task and variant for each context, and mass recall per layer.

The plots need matplotlib: when it is missing, --plots installs it with `pip install matplotlib`
(the tables need nothing beyond Python 3).
Usage: eval/ruler/report.py results.jsonl [more.jsonl ...] [--md report.md] [--plots DIR]
"""

import argparse
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

TASK_ORDER = ["niah_number", "niah_word", "niah_uuid", "niah_multikey", "niah_multivalue",
              "niah_multiquery", "vt", "cwe", "two_hop"]


def variant_key(v):
    base, _, budget = v.partition("@")
    order = {"full": 0, "gsa": 1, "oracle": 2}.get(base, 3)
    return (order, -int(budget) if budget.isdigit() else -10**9)


def load(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    sys.exit(f"report: {p} line {n}: {e}")
                for k in ("task", "id", "context", "variant", "score"):
                    if k not in r:
                        sys.exit(f"report: {p} line {n}: missing '{k}' (not gsa eval ruler output?)")
                rows.append(r)
    if not rows:
        sys.exit("report: no result lines")
    return rows


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def label_of(rows):
    labels = sorted({r.get("label", "") for r in rows if r.get("label")})
    return ", ".join(labels) if labels else "unlabelled"


def tables(rows):
    out = []
    contexts = sorted({r["context"] for r in rows})
    variants = sorted({r["variant"] for r in rows}, key=variant_key)
    tasks = [t for t in TASK_ORDER if any(r["task"] == t for r in rows)]
    tasks += sorted({r["task"] for r in rows} - set(tasks))
    cell = defaultdict(list)
    for r in rows:
        cell[(r["task"], r["context"], r["variant"])].append(r["score"])
    cols = [(c, v) for c in contexts for v in variants]
    out.append(f"Results: {label_of(rows)}; {len(rows)} runs. Mean score x100 (n cases).\n")
    out.append("| task | " + " | ".join(f"{c} {v}" for c, v in cols) + " |")
    out.append("|---|" + "---:|" * len(cols))
    for t in tasks:
        vals = []
        for c, v in cols:
            s = cell.get((t, c, v), [])
            vals.append(f"{100 * mean(s):.1f} ({len(s)})" if s else "-")
        out.append(f"| {t} | " + " | ".join(vals) + " |")
    # Suite mean: the mean over tasks of the task means, so each task weighs the same.
    vals = []
    for c, v in cols:
        ms = [mean(cell[(t, c, v)]) for t in tasks if cell.get((t, c, v))]
        vals.append(f"**{100 * mean(ms):.1f}**" if ms else "-")
    out.append("| **suite mean** | " + " | ".join(vals) + " |")

    # Lost vs full, attended fraction, applied.
    by_case = {(r["id"], r["context"], r["variant"]): r for r in rows}
    out.append("\n| context | variant | lost vs full | won vs full | compared | mean attended "
               "fraction | not applied |")
    out.append("|---:|---|---:|---:|---:|---:|---:|")
    for c in contexts:
        for v in variants:
            if v == "full":
                continue
            rs = [r for r in rows if r["context"] == c and r["variant"] == v]
            lost = won = compared = 0
            for r in rs:
                f = by_case.get((r["id"], c, "full"))
                if f is None:
                    continue
                compared += 1
                lost += f["score"] > r["score"]
                won += f["score"] < r["score"]
            att = [r["attended_fraction"] for r in rs if "attended_fraction" in r]
            not_applied = sum(1 for r in rs if r.get("applied") is False)
            out.append(f"| {c} | {v} | {lost} | {won} | {compared} | "
                       f"{mean(att):.3f} | {not_applied} |")

    mass = mass_table(rows)
    if mass:
        out.append("\nAttention-mass recall (share of full attention's softmax mass inside the "
                   "selected blocks), mean over decode steps and cases, per layer:\n")
        out += mass
    return "\n".join(out) + "\n"


def mass_by_group(rows):
    groups = defaultdict(list)
    for r in rows:
        if r.get("mass_per_layer") and r.get("applied", True):
            groups[(r["context"], r["variant"])].append(r["mass_per_layer"])
    out = {}
    for k, ms in groups.items():
        n = min(len(m) for m in ms)
        out[k] = [mean([m[i] for m in ms]) for i in range(n)]
    return out


def mass_table(rows):
    groups = mass_by_group(rows)
    if not groups:
        return []
    n_layers = max(len(v) for v in groups.values())
    lines = ["| context | variant | mean | min (layer) | " +
             " | ".join(f"L{i}" for i in range(n_layers)) + " |",
             "|---:|---|---:|---:|" + "---:|" * n_layers]
    for (c, v) in sorted(groups, key=lambda k: (k[0], variant_key(k[1]))):
        m = groups[(c, v)]
        lo = min(range(len(m)), key=lambda i: m[i])
        lines.append(f"| {c} | {v} | {mean(m):.3f} | {m[lo]:.3f} ({lo}) | " +
                     " | ".join(f"{x:.2f}" for x in m) + " |")
    return lines


def plots(rows, out_dir):
    try:
        import matplotlib
    except ImportError:
        print("report: installing matplotlib (pip)", file=sys.stderr)
        res = subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                              "--disable-pip-version-check", "matplotlib"])
        if res.returncode != 0:
            sys.exit("report: the plots need matplotlib; pip install matplotlib failed")
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    contexts = sorted({r["context"] for r in rows})
    variants = sorted({r["variant"] for r in rows}, key=variant_key)
    tasks = [t for t in TASK_ORDER if any(r["task"] == t for r in rows)]
    cell = defaultdict(list)
    for r in rows:
        cell[(r["task"], r["context"], r["variant"])].append(r["score"])
    written = []
    for c in contexts:
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(tasks) + 2), 4))
        width = 0.8 / max(1, len(variants))
        for i, v in enumerate(variants):
            ys = [100 * mean(cell[(t, c, v)]) if cell.get((t, c, v)) else 0 for t in tasks]
            xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(tasks))]
            ax.bar(xs, ys, width, label=v)
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels(tasks, rotation=30, ha="right")
        ax.set_ylabel("score x100")
        ax.set_ylim(0, 100)
        ax.set_title(f"RULER-style suite, context {c} ({label_of(rows)})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / f"ruler_scores_{c}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)
    groups = mass_by_group(rows)
    if groups:
        fig, ax = plt.subplots(figsize=(7, 4))
        for (c, v) in sorted(groups, key=lambda k: (k[0], variant_key(k[1]))):
            ax.plot(range(len(groups[(c, v)])), groups[(c, v)], marker=".", label=f"{c} {v}")
        ax.set_xlabel("layer")
        ax.set_ylabel("attention-mass recall")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"Mass inside the selected blocks ({label_of(rows)})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / "ruler_mass_per_layer.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="JSONL files from gsa eval ruler")
    ap.add_argument("--md", help="write the markdown here instead of stdout")
    ap.add_argument("--plots", help="directory for the PNG plots")
    args = ap.parse_args()
    rows = load(args.results)
    md = tables(rows)
    if args.md:
        Path(args.md).write_text(md)
    else:
        sys.stdout.write(md)
    if args.plots:
        for p in plots(rows, args.plots):
            print(f"wrote {p}", file=sys.stderr)


if __name__ == "__main__":
    main()
