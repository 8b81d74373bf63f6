"""Validate the offline CheXpert-14 labeler against IU X-Ray's manual MeSH annotations.

    python scripts/validate_labeler.py --data_dir data/iu_xray

Labels the findings + impression of every report in indiana_reports.csv with rrg.score.clinical.labeler, maps its
MeSH field to CheXpert observations (rrg.score.clinical.mesh), and writes per-observation precision, recall
and F1 with counts to results/labeler_validation.json; prints the Markdown table of the README and a
sample of disagreements with the sentences that decided the label. Reports without findings and
impression, and reports whose MeSH is "No Indexing", are counted and left out.

The headline treats an uncertain label as positive, because the MeSH annotators index what a report
calls possible or borderline; the JSON also holds the figures with uncertain as negative.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.score.clinical.validate import main

if __name__ == "__main__":
    main()
