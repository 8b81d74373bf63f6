"""Training curves from one or more runs' train_log.jsonl: loss, validation loss, learning rate, throughput.

    python plot/training_curves.py runs/lora_r64 runs/lora_r16 --out results/figures/training_curves.png

Runs are overlaid in the same four panels (one colour per run, legend names the run folder), so two
configurations can be compared at a glance.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.report.training_curves import main

if __name__ == "__main__":
    main()
