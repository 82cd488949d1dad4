#!/usr/bin/env python3
"""Split a LoCoV1-format folder into train/ and eval/ by holding queries apart.

Usage: python scripts/make_holdout_split.py SRC DEST [--every 2]

For every document, its queries (in file order) go alternately to train and eval: with
``--every 2`` the 1st, 3rd, ... go to train and the 2nd, 4th, ... to eval. Both halves keep every
document, so eval measures retrieval of the same corpus with unseen queries (in-domain, as LoCoV1's
V1 encoders were trained). Writes DEST/{train,eval}/{queries,documents}.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections import defaultdict
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="folder with queries.jsonl and documents.jsonl")
    ap.add_argument("dest", type=Path)
    ap.add_argument("--every", type=int, default=2, help="every N-th query of a document is eval")
    args = ap.parse_args()
    queries = [json.loads(line) for line in open(args.src / "queries.jsonl") if line.strip()]
    seen: dict[str, int] = defaultdict(int)
    halves: dict[str, list[dict]] = {"train": [], "eval": []}
    for q in queries:
        key = q["answer_pids"][0]
        half = "eval" if seen[key] % args.every == args.every - 1 else "train"
        seen[key] += 1
        halves[half].append(q)
    for half, rows in halves.items():
        out = args.dest / half
        out.mkdir(parents=True, exist_ok=True)
        (out / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in rows))
        shutil.copyfile(args.src / "documents.jsonl", out / "documents.jsonl")
        print(f"{out}: {len(rows)} queries")


if __name__ == "__main__":
    main()
