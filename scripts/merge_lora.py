"""Merge a LoRA adapter into LLaVA-Med and write a standalone HF Llava folder (+ processor).

A thin entry point: the code, and the usage this docstring held, are in rrg/model/merge.py (`--help` prints it)."""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.model.merge import main

if __name__ == "__main__":
    main()
