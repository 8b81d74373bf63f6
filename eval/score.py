"""Score generated reports: `python eval/score.py predictions.jsonl --out scores.json`.

Each line of predictions.jsonl holds "id", "prediction" and "reference" (a string or a list of strings),
optionally "study_id" and "images". Prints a small table and writes the JSON metric card.

--r2gen_compat --train_json data/r2gen/train_report.json scores the texts R2Gen's evaluation scores
(references cut to 59 tokens, words seen fewer than 3 times in train as <unk>, no CIDEr; rrg/score/r2gen_compat.py),
so that rows on the R2Gen split compare with the papers that reuse its code.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.score.command import main

if __name__ == "__main__":
    main(sys.argv[1:])
