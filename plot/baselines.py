"""The text-only baselines per protocol: BLEU-4 beside clinical F1-14 and F1-5 (figure), every headline metric (table).

A thin entry point: the code, and the usage this docstring held, are in rrg/report/baselines_figure.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.report.baselines_figure import main

if __name__ == "__main__":
    main()
