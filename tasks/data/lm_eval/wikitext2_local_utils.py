"""Helpers of the lm-eval task ``wikitext2_local`` (see SOURCE.md in this folder).

- ``wikitext_detokenizer`` and ``process_results`` are lm-eval's own functions of its ``wikitext``
  task (imported, not copied), so this task scores exactly as lm-eval's ``wikitext`` does: the
  model reads the detokenized page; words and bytes are counted on the page before detokenization.
- ``split_documents`` and ``main`` rebuild ``wikitext2_local.jsonl`` from the shared WikiText-2 raw
  test file: ``python tasks/data/lm_eval/wikitext2_local_utils.py [RAW_FILE]``.

lm-eval loads this file through the YAML tag ``!function wikitext2_local_utils.<name>``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer

__all__ = ["process_results", "wikitext_detokenizer", "split_documents", "main"]

HERE = Path(__file__).resolve().parent
JSONL = HERE / "wikitext2_local.jsonl"
RAW = HERE.parents[3] / "shared" / "data" / "lm-text" / "wikitext-2-raw" / "wiki.test.raw"
# A top-level WikiText heading (" = Title = "); section headings read " = = Section = = ".
_TITLE = re.compile(r"^ = [^=].* = $")


def split_documents(raw: str) -> list[str]:
    """Cut WikiText text into articles at its top-level ``" = Title = "`` lines.

    Line ends become ``"\\n"``; every line keeps its terminator, so ``"".join(pages)`` is the
    whole text (with ``"\\n"`` line ends). Text before the first title would be a page of its own.
    """
    lines = raw.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final line end
    pages: list[list[str]] = []
    for line in lines:
        if _TITLE.match(line) or not pages:
            pages.append([])
        pages[-1].append(line + "\n")
    return ["".join(page) for page in pages]


def main(raw_path: str | None = None) -> None:
    """Write ``wikitext2_local.jsonl`` (one ``{"page": text}`` per article) from the raw file."""
    raw = Path(raw_path) if raw_path else RAW
    pages = split_documents(raw.read_bytes().decode("utf-8"))
    with JSONL.open("w", encoding="utf-8", newline="\n") as f:
        for page in pages:
            f.write(json.dumps({"page": page}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:2])
