#!/usr/bin/env python3
"""Compares `gsa eval ruler` runs on the cases they share, for docs/ACCURACY.md.

Each run is a (label, variant) pair (a label is one engine configuration, a variant one
per-request setting). For every context, the table restricts every run to the (case id) set that
all listed runs completed, so differences are never due to different cases. Columns: suite mean
score x100 over the common cases, delta against full attention, cases lost (full scored higher
on the case), and the mean attended fraction. A second table gives per-task means.
Usage: eval/ruler/compare.py FILE.jsonl... --runs A:full,A:gsa,B:gsa@2048 [--context N] [--tasks]
"""

import argparse
import json
from collections import defaultdict

TASKS = ["niah_number", "niah_word", "niah_uuid", "niah_multikey", "niah_multivalue",
         "niah_multiquery", "vt", "cwe", "two_hop"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--runs", required=True, help="label:variant,... (the first full run is the baseline)")
    ap.add_argument("--context", type=int, required=True)
    ap.add_argument("--tasks", action="store_true", help="also print per-task means")
    ap.add_argument("--names", help="display names, comma-separated, one per run")
    a = ap.parse_args()
    runs = [tuple(r.split(":", 1)) for r in a.runs.split(",")]
    names = a.names.split(",") if a.names else [f"{l}:{v}" for l, v in runs]
    data = defaultdict(dict)  # run -> id -> row
    for f in a.files:
        for line in open(f):
            r = json.loads(line)
            if r["context"] == a.context:
                data[(r["label"], r["variant"])][r["id"]] = r
    common = set.intersection(*(set(data[r]) for r in runs))
    base = next(r for r in runs if r[1] == "full")
    print(f"context {a.context}: {len(common)} common cases\n")
    print("| configuration | score | vs full | lost | attended |")
    print("|---|---|---|---|---|")
    full_mean = sum(data[base][i]["score"] for i in common) / len(common)
    for run, name in zip(runs, names):
        rows = [data[run][i] for i in common]
        mean = sum(r["score"] for r in rows) / len(rows)
        lost = sum(data[base][i]["score"] > data[run][i]["score"] for i in common)
        att = sum(r.get("attended_fraction", 1.0) for r in rows) / len(rows)
        print(f"| {name} | {100 * mean:.1f} | {100 * (mean - full_mean):+.1f} | {lost} | {att:.2f} |")
    if a.tasks:
        print("\n| task | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(runs))
        for t in TASKS:
            ids = [i for i in common if data[base][i]["task"] == t]
            if not ids:
                continue
            cells = [f"{100 * sum(data[r][i]['score'] for i in ids) / len(ids):.0f}" for r in runs]
            print(f"| {t} (n={len(ids)}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
