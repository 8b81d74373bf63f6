"""Paired significance between runs on the same studies:

A thin entry point: the code, and the usage this docstring held, are in rrg/score/compare.py (`--help` prints it)."""

from __future__ import annotations

import sys

from rrg.score.compare import main

if __name__ == "__main__":
    sys.exit(0 if main() else 1)
