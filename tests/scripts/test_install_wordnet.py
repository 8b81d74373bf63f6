"""scripts/install_wordnet.py on a clean machine-like layout: a temporary HOME and NLTK_DATA, and a
WordNet database in Debian's layout built here (one noun, "lung"), with the extra `wnres/` folder that
Debian's recommended GUI package adds (it crashed the copy before)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "install_wordnet.py"
NOUN = "00000000 08 n 01 lung 0 000 | a spongy saclike respiratory organ\n"


def _debian_tree(folder: Path, skip: tuple[str, ...] = ()) -> Path:
    """A tiny WordNet database as Debian's wordnet-base + wordnet-sense-index lay it out."""
    files = {
        name: "" for name in ("cntlist.rev", "index.adj", "index.adv", "index.verb", "data.adj", "data.adv")
    }
    files |= {f"{pos}.exc": "" for pos in ("adj", "adv", "noun", "verb")}
    files |= {
        "data.noun": NOUN,
        "data.verb": "",
        "index.noun": "lung n 1 0 1 0 00000000  \n",
        "index.sense": "lung%1:08:00:: 00000000 1 0\n",
        "sents.vrb": "",
    }
    folder.mkdir(parents=True)
    for name, text in files.items():
        if name not in skip:
            (folder / name).write_text(text)
    (folder / "wnres").mkdir()  # the GUI's resources: a folder among the files
    (folder / "wnres" / "license.txt").write_text("x\n")
    return folder


def _run(tmp_path: Path, source: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "NLTK_DATA": str(tmp_path / "home" / "nltk_data"),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--source", str(source), "--no_download"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _wordnet(tmp_path: Path) -> Path:
    return tmp_path / "home" / "nltk_data" / "corpora" / "wordnet"


def _leftovers(tmp_path: Path) -> list[str]:
    corpora = _wordnet(tmp_path).parent
    return sorted(p.name for p in corpora.iterdir() if p.name != "wordnet") if corpora.exists() else []


@pytest.mark.slow
def test_installs_from_debian_layout_and_is_idempotent(tmp_path):
    source = _debian_tree(tmp_path / "usr-share-wordnet")
    first = _run(tmp_path, source)
    assert first.returncode == 0, first.stderr
    assert f"installed from Debian's database in {source}" in first.stdout
    wordnet = _wordnet(tmp_path)
    assert (wordnet / "lexnames").read_text().splitlines()[8] == "08\tnoun.body\t1"
    assert (wordnet / "index.sense").is_file() and not (wordnet / "wnres").exists()
    assert _leftovers(tmp_path) == []
    again = _run(tmp_path, source)
    assert again.returncode == 0 and "already installed" in again.stdout, again.stderr


@pytest.mark.slow
def test_repairs_a_partial_install(tmp_path):
    """What the old script left after crashing: some files, no lexnames, no index.sense."""
    wordnet = _wordnet(tmp_path)
    wordnet.mkdir(parents=True)
    (wordnet / "data.noun").write_text(NOUN)
    (wordnet / "adj.exc").write_text("")
    result = _run(tmp_path, _debian_tree(tmp_path / "usr-share-wordnet"))
    assert result.returncode == 0, result.stderr
    assert "is incomplete (missing " in result.stdout and "replacing it" in result.stdout
    assert (wordnet / "lexnames").is_file() and (wordnet / "index.sense").is_file()
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["missing_file", "absent_source"])
def test_failure_leaves_nothing_behind(tmp_path, broken):
    source = tmp_path / "usr-share-wordnet"
    if broken == "missing_file":  # wordnet-base without wordnet-sense-index
        _debian_tree(source, skip=("index.sense",))
    result = _run(tmp_path, source)
    assert result.returncode == 1
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "apt-get install --no-install-recommends wordnet-base wordnet-sense-index" in err
    if broken == "missing_file":
        assert "lacks index.sense" in err
    assert not _wordnet(tmp_path).exists() and _leftovers(tmp_path) == []
