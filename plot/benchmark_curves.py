"""Loss curves of the training configurations of one benchmark run (scripts/benchmark.py's results JSON).

A thin entry point: the code, and the usage this docstring held, are in rrg/report/benchmark_curves.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.report.benchmark_curves import main

if __name__ == "__main__":
    main()
