"""The comparison table: our runs beside the reference paper and published IU X-Ray results.

    python plot/make_tables.py \
        --runs results/reference/lora/scores.json:"Ours (LoRA, reference split)" \
               results/r2gen/lora/scores.json:"Ours (LoRA, R2Gen split)" \
        --out results/table

writes results/table/table.md and results/table/table.png. Every row carries its test split and its
metric tooling: numbers from different splits or metric code are not comparable, and the table says so
instead of hiding it. A card with a "legacy" block adds a second row with the reference paper's own
metric code (findings section), the only like-for-like comparison with the reference's numbers.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.report.tables import main

if __name__ == "__main__":
    main()
