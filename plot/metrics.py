"""Metric bars from score cards: one row per report section, with bootstrap 95% intervals as error bars,

A thin entry point: the code, and the usage this docstring held, are in rrg/report/metrics_figure.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.report.metrics_figure import main

if __name__ == "__main__":
    main()
