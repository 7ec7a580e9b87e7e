#!/usr/bin/env python3
"""Writes the cases of the RULER-style long-context suite that `gsa eval ruler` runs.

Cases are model-agnostic: each names a haystack (pg_essays or kjv, fetched by scripts/fetch-data,
or a literal text for cwe), sentences to insert at relative depths, a question and the expected
answers; `gsa eval ruler` sizes the haystack to each context with the model's own tokenizer.
Tasks follow RULER (Hsieh et al., 2024): niah_number, niah_word, niah_uuid, niah_multikey,
niah_multivalue, niah_multiquery, vt, cwe, two_hop. The output is a pure function of --seed,
--per-task and the wonderwords lists (~/.cache/gsa/data/wonderwords, read as files).

Usage: eval/ruler/gen_ruler.py -o cases.jsonl [--seed 1] [--per-task 40] [--tasks a,b]
"""

import argparse
import json
import os
import random
import re
import sys
import uuid
from pathlib import Path

TASKS = ["niah_number", "niah_word", "niah_uuid", "niah_multikey", "niah_multivalue",
         "niah_multiquery", "vt", "cwe", "two_hop"]
HAYSTACKS = ["pg_essays", "kjv"]
CWE_COMMON = 10          # words that recur
CWE_RARE_PER_ROUND = 10  # words seen once, between two rounds of the common words
CWE_MIN_CHARS = 200_000  # about 40K+ tokens of "123. word" lines for any tokenizer here

FIRST_NAMES = ["Alice", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiroshi",
               "Ingrid", "Jamal", "Katya", "Lorenzo", "Maya", "Nikolai", "Olga", "Pedro",
               "Quentin", "Rosa", "Samir", "Tamara", "Ulrich", "Vera", "Walter", "Ximena",
               "Yusuf", "Zofia"]
LAST_NAMES = ["Abbott", "Brennan", "Castillo", "Delacroix", "Eriksen", "Fontaine", "Gallagher",
              "Hartmann", "Iverson", "Jovanovic", "Kowalski", "Lindqvist", "Moreau", "Novak",
              "Okafor", "Petrov", "Quinlan", "Rasmussen", "Sokolov", "Takahashi", "Underwood",
              "Vasquez", "Whitfield", "Yamamoto", "Zimmermann"]


def fail(msg):
    print(f"gen_ruler: {msg}", file=sys.stderr)
    sys.exit(1)


def load_words(data_dir):
    """Lower-case alphabetic words of 3-12 letters from the wonderwords lists, sorted, by kind."""
    d = Path(data_dir) / "wonderwords"
    out = {}
    for kind, name in (("noun", "nounlist.txt"), ("adj", "adjectivelist.txt"),
                       ("verb", "verblist.txt")):
        p = d / name
        if not p.exists():
            fail(f"'{p}' does not exist; run scripts/fetch-data")
        words = {w.strip() for w in p.read_text().splitlines()}
        out[kind] = sorted(w for w in words if re.fullmatch(r"[a-z]{3,12}", w))
    return out


class Gen:
    def __init__(self, seed, words):
        self.rng = random.Random(seed)
        self.w = words

    def key(self):
        return f"{self.rng.choice(self.w['adj'])}-{self.rng.choice(self.w['noun'])}"

    def number(self):
        return str(self.rng.randint(1_000_000, 9_999_999))

    def word(self):
        return self.rng.choice(self.w["noun"])

    def uuid(self):
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def depths(self, n):
        return sorted(round(self.rng.random(), 4) for _ in range(n))

    def distinct(self, make, n, exclude=()):
        seen, out = set(exclude), []
        while len(out) < n:
            v = make()
            if v not in seen:
                seen.add(v)
                out.append(v)
        return out


def needle(kind, key, value):
    return f"One of the special magic {kind} for {key} is: {value}."


def niah_question(kind, key):
    return (f"What is the special magic {kind[:-1]} for {key} mentioned in the provided text? "
            f"Answer with the {kind[:-1]} only.")


def make_niah_single(g, kind):
    key = g.key()
    value = {"numbers": g.number, "words": g.word, "uuids": g.uuid}[kind]()
    [d] = g.depths(1)
    return {"inserts": [{"depth": d, "text": needle(kind, key, value)}],
            "question": niah_question(kind, key), "answers": [value], "metric": "all",
            "n_predict": 64 if kind == "uuids" else 32}


def make_multikey(g):
    # Distractor keys share the adjective or the noun of the right key: similar, never equal.
    key = g.key()
    adj, noun = key.split("-")
    n_distractors = g.rng.randint(4, 16)

    def similar():
        if g.rng.random() < 0.5:
            return f"{adj}-{g.rng.choice(g.w['noun'])}"
        return f"{g.rng.choice(g.w['adj'])}-{noun}"

    keys = [key] + g.distinct(similar, n_distractors, exclude={key})
    values = g.distinct(g.number, len(keys))
    depths = g.depths(len(keys))
    order = list(range(len(keys)))
    g.rng.shuffle(order)  # the right key lands at a random one of the sorted depths
    inserts = [{"depth": depths[i], "text": needle("numbers", keys[k], values[k])}
               for i, k in enumerate(order)]
    return {"inserts": inserts, "question": niah_question("numbers", key),
            "answers": [values[0]], "metric": "all", "n_predict": 32}


def make_multivalue(g):
    key = g.key()
    values = g.distinct(g.number, 4)
    inserts = [{"depth": d, "text": needle("numbers", key, v)}
               for d, v in zip(g.depths(4), values)]
    q = (f"What are all the special magic numbers for {key} mentioned in the provided text? "
         "List every one of them.")
    return {"inserts": inserts, "question": q, "answers": values, "metric": "all",
            "n_predict": 64}


def make_multiquery(g):
    keys = g.distinct(g.key, 4)
    values = g.distinct(g.number, 4)
    inserts = [{"depth": d, "text": needle("numbers", k, v)}
               for d, k, v in zip(g.depths(4), keys, values)]
    q = (f"What are all the special magic numbers for {', '.join(keys[:3])} and {keys[3]} "
         "mentioned in the provided text? Give the number for each.")
    return {"inserts": inserts, "question": q, "answers": values, "metric": "all",
            "n_predict": 80}


def make_vt(g, hops=4):
    # One chain of `hops` re-assignments from the queried value, one or two distractor chains;
    # each chain's statements keep their order (sorted depths), chains interleave.
    n_chains = 1 + g.rng.randint(1, 2)
    names = g.distinct(lambda: "".join(g.rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5)),
                       n_chains * (hops + 1))
    values = g.distinct(lambda: str(g.rng.randint(10_000, 99_999)), n_chains)
    inserts = []
    for c in range(n_chains):
        chain = names[c * (hops + 1):(c + 1) * (hops + 1)]
        texts = [f"VAR {chain[0]} = {values[c]}."]
        texts += [f"VAR {chain[i]} = VAR {chain[i - 1]}." for i in range(1, hops + 1)]
        inserts += [{"depth": d, "text": t} for d, t in zip(g.depths(hops + 1), texts)]
    inserts.sort(key=lambda x: x["depth"])
    q = (f"Find all variables that are assigned the value {values[0]} in the text above, "
         "directly or through other variables. List their names.")
    return {"inserts": inserts, "question": q, "answers": names[:hops + 1], "metric": "all",
            "n_predict": 48}


def make_cwe(g):
    # Rounds of the 10 common words and 10 words seen once, shuffled within each round, so every
    # prefix of the list keeps the common words the most frequent by far.
    pool = sorted(set(g.w["noun"]) | set(g.w["adj"]) | set(g.w["verb"]))
    g.rng.shuffle(pool)
    common, rare = pool[:CWE_COMMON], pool[CWE_COMMON:]
    lines, chars, r = [], 0, 0
    while chars < CWE_MIN_CHARS:
        if r + CWE_RARE_PER_ROUND > len(rare):
            fail(f"the word lists hold {len(pool)} words, too few for the cwe list")
        rnd = common + rare[r:r + CWE_RARE_PER_ROUND]
        r += CWE_RARE_PER_ROUND
        g.rng.shuffle(rnd)
        for w in rnd:
            line = f"{len(lines) + 1}. {w}"
            lines.append(line)
            chars += len(line) + 1
    literal = ("Below is a numbered list of words. In these words, some appear more often than "
               "others. Memorize the ones that appear most often.\n" + "\n".join(lines))
    q = ("Question: What are the 10 most common words in the above list? "
         "Answer with the 10 words only.")
    return {"haystack": "literal", "literal": literal, "inserts": [], "question": q,
            "answers": common, "metric": "all", "n_predict": 96}


def make_two_hop(g):
    # The queried person's code box and that box's content, plus one distractor pair.
    people = g.distinct(lambda: f"{g.rng.choice(FIRST_NAMES)} {g.rng.choice(LAST_NAMES)}", 2)
    boxes = g.distinct(lambda: f"{g.rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}-{g.rng.randint(100, 999)}", 2)
    values = g.distinct(g.number, 2)
    facts = []
    for p, b, v in zip(people, boxes, values):
        facts += [f"The code of {p} is stored in box {b}.", f"Box {b} contains the number {v}."]
    g.rng.shuffle(facts)
    inserts = [{"depth": d, "text": t} for d, t in zip(g.depths(len(facts)), facts)]
    q = (f"Which number is in the box that stores the code of {people[0]}? "
         "Answer with the number only.")
    return {"inserts": inserts, "question": q, "answers": [values[0]], "metric": "all",
            "n_predict": 32}


MAKERS = {
    "niah_number": lambda g: make_niah_single(g, "numbers"),
    "niah_word": lambda g: make_niah_single(g, "words"),
    "niah_uuid": lambda g: make_niah_single(g, "uuids"),
    "niah_multikey": make_multikey,
    "niah_multivalue": make_multivalue,
    "niah_multiquery": make_multiquery,
    "vt": make_vt,
    "cwe": make_cwe,
    "two_hop": make_two_hop,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("GSA_DATA_DIR", str(Path.home() / ".cache" / "gsa" / "data"))
    ap.add_argument("-o", "--out", required=True, help="cases JSONL to write")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-task", type=int, default=40, help="cases per task (default 40)")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of tasks")
    ap.add_argument("--data-dir", default=default_data, help="fetch-data's directory")
    args = ap.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    for t in tasks:
        if t not in MAKERS:
            fail(f"unknown task '{t}' (known: {', '.join(TASKS)})")
    if args.per_task < 1:
        fail(f"--per-task must be >= 1, got {args.per_task}")
    words = load_words(args.data_dir)
    n = 0
    with open(args.out, "w") as out:
        for task in tasks:
            # One generator per task, so a task's cases do not depend on which others are chosen.
            g = Gen(args.seed * 1000 + TASKS.index(task), words)
            for i in range(args.per_task):
                case = MAKERS[task](g)
                case = {"id": f"{task}-{i:03d}", "task": task,
                        "haystack": case.pop("haystack", HAYSTACKS[i % len(HAYSTACKS)]), **case}
                out.write(json.dumps(case) + "\n")
                n += 1
    print(f"{n} cases ({len(tasks)} tasks x {args.per_task}) in {args.out}")


if __name__ == "__main__":
    main()
