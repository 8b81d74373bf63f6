"""Text-only baselines: `python eval/baselines.py --method constant --out runs/baseline-constant`.

A thin entry point: the code, and the usage this docstring held, are in rrg/score/baselines_command.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.score.baselines_command import main

if __name__ == "__main__":
    main(sys.argv[1:])
