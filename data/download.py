"""Download IU X-Ray (Kaggle raddar/chest-xrays-indiana-university) into data/iu_xray/ and verify it.

    python data/download.py                        # kagglehub (needs Kaggle access)
    python data/download.py --from-zip archive.zip # a zip downloaded by hand from the Kaggle page
    python data/download.py --from-dir FOLDER      # an unzipped copy

Layout: <out>/indiana_reports.csv, <out>/indiana_projections.csv, <out>/images/images_normalized/*.png.
Exit status 1 (with the list) when an image is missing or undecodable, or the counts are not the full
dataset's (3,851 reports, 7,466 projection rows; --no-count-check makes that a warning, for samples).
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.data.download_command import main

if __name__ == "__main__":
    sys.exit(main())
