"""Loss curves of the training configurations of one benchmark run (scripts/benchmark.py's results JSON).

    python plot/benchmark_curves.py --results results/benchmark-h200.json --out results/figures/benchmark_curves.png

Top: each configuration's loss at every optimizer step (all configurations of a run see the same samples in
the same order from the same LoRA init, so the curves differ only by the configuration). Bottom: each one's
relative difference from the first configuration, step by step: the "within 1% of the default" check, as a picture.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.report.benchmark_curves import main

if __name__ == "__main__":
    main()
