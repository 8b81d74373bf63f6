"""Resize an image folder once (longest side --max_side) into a cache that training and eval read instead.

A thin entry point: the code, and the usage this docstring held, are in rrg/data/resize_cache.py (`--help` prints it)."""

from __future__ import annotations

import sys

from rrg.data.resize_cache import main

if __name__ == "__main__":
    sys.exit(main())
