"""Resize an image folder once (longest side --max_side) into a cache that training and eval read instead.

    python scripts/resize_cache.py --image_dir data/mimic-cxr-jpg --json_file data/mimic/train_report.json \
        data/mimic/val_report.json data/mimic/test_report.json --out data/mimic-cxr-jpg-512
    python train_lora.py ... --image_dir data/mimic-cxr-jpg-512      # the same split files

Only the images the split files list are resized (every image below --image_dir without --json_file).
Parallel over --workers processes, resumable (a finished image is never redone), with a progress bar.
See rrg/data/image_cache.py for the formats and docs/datasets.md for what it saves.
"""

from __future__ import annotations

import sys

from rrg.data.resize_cache import main

if __name__ == "__main__":
    sys.exit(main())
