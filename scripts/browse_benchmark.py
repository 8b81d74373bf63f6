"""How fast the case browser is on a test set of the reference protocol's size (1,251 studies).

    python scripts/browse_benchmark.py [--studies 1251] [--loads 3] [--json results/browse_benchmark.json]

Builds a synthetic run in a temporary folder: real IU X-Ray reports (report.csv of the shared data) as
references, the same reports shuffled among the studies as predictions, another shuffle as a blank-image
control and a third as a second run to compare with; the 5 real X-rays of the shared data stand in for every
study's views. Then it times `python plot/browse.py` (the whole command, imports included) for one run and
for two runs side by side, and loads each page in headless Chromium: navigationStart -> load event, time to
the first rendered studies (the page's "cases-rendered" mark), and how long filtering, sorting and rendering
every study take in the page. Prints a table; --json keeps the numbers.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
from rrg.bench.browse import main

if __name__ == "__main__":
    main()
