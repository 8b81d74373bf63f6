"""Text-only baselines: `python eval/baselines.py --method constant --out runs/baseline-constant`.

Writes OUT/predictions.jsonl in the eval scripts' schema (score it with eval/score.py, tabulate it with
plot/make_tables.py) and OUT/baseline.json (settings and the counts of every rule-based choice: ties,
missing indications, fallbacks). No model and no images: the reports come from the train split
(rrg/score/baselines.py describes the methods). Deterministic for a given --seed.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.score.baselines_command import main

if __name__ == "__main__":
    main(sys.argv[1:])
