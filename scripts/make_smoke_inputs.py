"""Inputs of the CPU smoke run: a small Kaggle-shaped IU X-Ray folder and a tiny random LLaVA-Med

A thin entry point: the code, and the usage this docstring held, are in rrg/data/smoke_inputs.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.data.smoke_inputs import main

if __name__ == "__main__":
    main()
