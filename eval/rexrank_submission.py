"""Write a ReXrank submission file from our predictions:

    python eval/rexrank_submission.py --predictions runs/x/predictions.jsonl \\
        --test_json ../shared/data/rexrank/ReXRank_IUXray_test.json --out submission.json [--section findings]

The output is ReXrank's prediction.json layout: the test file's entries, every field as it is there, plus
`model_prediction`. Each prediction line's "id" must be ReXrank's study key (the rexrank protocol's split
files use them as ids); a study of the test file without a prediction, or a prediction of a study the
test file lacks, is refused with the ids named.
"""

from __future__ import annotations

import sys

from rrg.data.rexrank_submission import main

if __name__ == "__main__":
    sys.exit(main())
