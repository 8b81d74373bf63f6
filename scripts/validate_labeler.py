"""Validate the offline CheXpert-14 labeler against IU X-Ray's manual MeSH annotations.

A thin entry point: the code, and the usage this docstring held, are in rrg/score/clinical/validate.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.score.clinical.validate import main

if __name__ == "__main__":
    main()
