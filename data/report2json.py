"""Build the IU X-Ray split files from the Kaggle data (see rrg/data/iu_xray.py for the protocols).

    python data/report2json.py --protocol clean --data_dir data/iu_xray --out data/
    python data/report2json.py --protocol reference --data_dir data/iu_xray --out data/reference/
    python data/report2json.py --protocol r2gen --r2gen-annotation annotation.json --out data/r2gen/
    python data/report2json.py --protocol rexrank --rexrank_dir rexrank/ --r2gen_annotation annotation.json \
        --board findings --out data/rexrank/

Writes train_report.json, val_report.json (not for reference), test_report.json, reports.csv and
leak_audit.json into --out, and prints the audit.

Other datasets (rrg/data/dataset_splits.py; docs/datasets.md), writing {split}_report.json and dataset_audit.json:

    python data/report2json.py --dataset mimic-cxr --data_dir MIMIC-CXR-JPG --reports mimic-cxr-reports.zip
    python data/report2json.py --dataset chexpert-plus --data_dir CheXpert-Plus
    python data/report2json.py --dataset mimic-cxr --test_set rexrank --rexrank_json ReXRank_MIMICCXR_test.json --text_only
    python data/report2json.py --dataset images --data_dir my_images/ --out data/mine/
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.data.report2json import main

if __name__ == "__main__":
    sys.exit(main())
