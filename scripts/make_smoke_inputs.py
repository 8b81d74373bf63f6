"""Inputs of the CPU smoke run: a small Kaggle-shaped IU X-Ray folder and a tiny random LLaVA-Med
checkpoint in the ORIGINAL format (so the run also exercises the on-the-fly conversion).

    python scripts/make_smoke_inputs.py --out smoke_out [--studies 40]
Needs LLaVA-Med's config, weight index and tokenizer.model from the shared data folder
($RRG_SHARED_DATA, default ../shared/data); uses its Kaggle CSVs when present.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.data.smoke_inputs import main

if __name__ == "__main__":
    main()
