"""Make nltk's WordNet corpus available (needed only by `--legacy`, the reference paper's nltk METEOR).

    python scripts/install_wordnet.py

Tries, in order: WordNet already loadable; `nltk.download("wordnet")` (needs network); Debian's WordNet 3.0
database (`apt-get install wordnet-base`, /usr/share/wordnet), which is the database nltk's download ships,
laid out where nltk looks (~/nltk_data/corpora/wordnet) with the `lexnames` table that Debian omits.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

DEBIAN_WORDNET = Path("/usr/share/wordnet")
# WordNet 3.0's lexicographer files (lexnames(5WN)): number, name, syntactic category (1 noun, 2 verb,
# 3 adjective, 4 adverb). nltk's reader needs this file; Debian installs it only as a man page.
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition", "verb.consumption",
    "verb.contact", "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
    "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]  # fmt: skip
CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def wordnet_loads() -> bool:
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
        return bool(wordnet.synsets("lung"))
    except LookupError:
        return False


def install_from_debian(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in DEBIAN_WORDNET.iterdir():
        shutil.copy2(path, target / path.name)
    lines = [f"{i:02d}\t{name}\t{CATEGORY[name.split('.')[0]]}" for i, name in enumerate(LEXNAMES)]
    (target / "lexnames").write_text("\n".join(lines) + "\n")


def main() -> int:
    if wordnet_loads():
        print("nltk WordNet: already installed")
        return 0
    import nltk

    if nltk.download("wordnet", quiet=True) and wordnet_loads():
        print("nltk WordNet: downloaded")
        return 0
    if DEBIAN_WORDNET.is_dir():
        target = Path.home() / "nltk_data" / "corpora" / "wordnet"
        install_from_debian(target)
        if wordnet_loads():
            print(f"nltk WordNet: installed from {DEBIAN_WORDNET} into {target}")
            return 0
    print(
        "error: could not install nltk's WordNet (offline?). Run `python -m nltk.downloader wordnet` on a "
        "machine with network, or `apt-get install wordnet-base` and run this script again.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
