"""What the dataset builders beyond IU X-Ray share (MIMIC-CXR, CheXpert Plus, own images, ReXrank sets).

    read_table         a CSV (plain or gzipped), every column as text, required columns checked
    Skips              studies left out, counted per reason, with a few examples each
    check_subjects     the leak audit across patients: a subject in two splits is an error
    write_split_files  {split}_report.json and dataset_audit.json, atomically; stale split files removed
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pandas as pd

from rrg.data.entries import Entry
from rrg.io import InputError, atomic_write_json

SPLIT_NAMES = ("train", "val", "test")


def read_table(path: str | os.PathLike, required: tuple[str, ...]) -> pd.DataFrame:
    """A CSV (".csv" or ".csv.gz") with every field as a string (empty fields as NaN).

    A missing file, an unreadable one or a missing column is one InputError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{path}: unreadable CSV ({first})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(map(repr, missing))} (has {list(frame.columns)})")
    for column in required:
        empty = frame[column].isna()
        if empty.any():
            row = int(empty.to_numpy().nonzero()[0][0]) + 2  # +1 header, +1 one-based
            raise InputError(f"{path}:{row}: field {column!r} is empty")
    return frame


class Skips:
    """Studies left out of the split files, counted by reason (never silently)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, study: str) -> None:
        self.counts[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(study)

    def to_json(self) -> dict:
        return {reason: {"count": n, "examples": self.examples[reason]} for reason, n in sorted(self.counts.items())}

    def summary(self) -> str:
        if not self.counts:
            return "skipped: none"
        return "skipped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))


def check_subjects(subject_splits: dict[str, set[str]], where: str) -> None:
    """A patient whose studies are in two splits leaks their anatomy and history into the test: refuse it."""
    for subject, names in subject_splits.items():
        if len(names) > 1:
            raise InputError(f"{where}: subject {subject} is in several splits ({', '.join(sorted(names))})")


def split_counts(entries: list[Entry]) -> dict:
    views = Counter(v for e in entries for v in e.views)
    return {
        "studies": len({e.study_id for e in entries}),
        "entries": len(entries),
        "images": sum(len(e.images) for e in entries),
        "views": dict(sorted(views.items())),
        "with_findings": sum(bool(e.findings) for e in entries),
        "with_impression": sum(bool(e.impression) for e in entries),
    }


def write_split_files(splits: dict[str, list[Entry]], audit: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write {split}_report.json (JSON arrays) and dataset_audit.json; a split this run does not have is removed
    when an earlier run left one, so two runs' files never mix."""
    out_dir = Path(out_dir)
    written = []
    for name in SPLIT_NAMES:
        path = out_dir / f"{name}_report.json"
        if name in splits:
            atomic_write_json(path, [e.to_json() for e in splits[name]], indent=1)
            written.append(path)
        elif path.exists():
            path.unlink()
            print(f"note: removed {path} (left by an earlier run; this one has no {name} split)")
    audit = {**audit, "splits": {name: split_counts(entries) for name, entries in splits.items()}}
    atomic_write_json(out_dir / "dataset_audit.json", audit)
    return [*written, out_dir / "dataset_audit.json"]


def response_text(findings: str | None, impression: str | None) -> str:
    """The target text from the sections a study has ("Findings: ... Impression: ..." when both)."""
    parts = [f"Findings: {findings}" if findings else "", f"Impression: {impression}" if impression else ""]
    return " ".join(p for p in parts if p)
