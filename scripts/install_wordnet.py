"""Make nltk's WordNet corpus available (needed only by `--legacy`, the reference paper's nltk METEOR).

A thin entry point: the code, and the usage this docstring held, are in rrg/score/wordnet.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.score.wordnet import main

if __name__ == "__main__":
    sys.exit(main())
