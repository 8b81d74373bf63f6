"""Score generated reports: `python eval/score.py predictions.jsonl --out scores.json`.

A thin entry point: the code, and the usage this docstring held, are in rrg/score/command.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.score.command import main

if __name__ == "__main__":
    main(sys.argv[1:])
