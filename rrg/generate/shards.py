"""The files of an eval run: its predictions file's siblings (image controls, scores) and, when the run is
split over processes (`accelerate launch`), the part files and their merge into one predictions file.

Under `accelerate launch --num_processes N` each process generates its own share of the pending entries
and appends its lines to its own part file beside the predictions file, `predictions.jsonl.rank<r>`:
append-only and flushed per batch like the predictions file itself, and never written by two processes.
When every process is done, the main process merges the parts and the lines already in the predictions
file into that file, in entry order, with one atomic rename, then removes the parts. A killed run leaves
its parts behind; the next run merges them first (whatever number of processes wrote them), so their
lines count as done. A lone process (plain `python`) appends to the predictions file itself, as before.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Sequence
from pathlib import Path

from rrg.io import atomic_write_text, iter_jsonl


def control_path(predictions: Path, condition: str) -> Path:
    """predictions.jsonl -> predictions.blank.jsonl; the real run keeps the plain name."""
    if condition == "none":
        return predictions
    return predictions.with_name(f"{predictions.stem}.{condition}{predictions.suffix}")


def scores_path(predictions: Path) -> Path:
    """predictions.jsonl -> scores.json beside it; other.jsonl -> other.scores.json."""
    stem = predictions.stem
    return predictions.with_name("scores.json" if stem == "predictions" else f"{stem}.scores.json")


def part_path(path: Path, rank: int) -> Path:
    """predictions.jsonl -> predictions.jsonl.rank3 (not *.jsonl, so nothing mistakes a part for a result)."""
    return path.with_name(f"{path.name}.rank{rank}")


def part_paths(path: Path) -> list[Path]:
    """The part files of `path` present on disk, by rank, whatever number of processes wrote them."""
    pattern = re.compile(re.escape(path.name) + r"\.rank(\d+)")
    found = []
    for candidate in path.parent.glob(glob.escape(path.name) + ".rank*"):
        if match := pattern.fullmatch(candidate.name):
            found.append((int(match[1]), candidate))
    return [part for _, part in sorted(found)]


def output_of(path: Path, rank: int, world: int) -> Path:
    """Where a process appends its lines: the predictions file itself when it is alone, else its part."""
    return path if world == 1 else part_path(path, rank)


def merge_parts(path: Path, order: Sequence[str]) -> None:
    """Fold the part files into `path`: each id once, ids of `order` in that order, any other ids after them.

    Lines are read from `path` first, then the parts by rank; an id seen again is dropped and counted
    (the only way it happens: a merge killed after its rename, before removing the parts). The file is
    rewritten atomically, and only when something changes; the parts are removed after it is in place.
    The caller checks beforehand that every line was made with this run's settings.
    """
    parts = part_paths(path)
    lines: dict[str, str] = {}
    repeated = 0
    sources = [path, *parts] if path.exists() else parts
    for source in sources:
        for _, record in iter_jsonl(source, allow_partial_last_line=True):
            key = str(record.get("id"))
            if key in lines:
                repeated += 1
                continue
            lines[key] = json.dumps(record, ensure_ascii=False) + "\n"
    position = {key: i for i, key in enumerate(order)}
    # sorted() is stable: ids outside `order` (an earlier run without --limit) keep their file order.
    text = "".join(lines[key] for key in sorted(lines, key=lambda key: position.get(key, len(position))))
    if parts or (path.exists() and path.read_text(encoding="utf-8") != text):
        atomic_write_text(path, text)
    for part in parts:
        part.unlink()
    if repeated:
        print(f"note: {path}: {repeated} line(s) were there twice (a merge killed before removing its parts)")


def remove_merge_leftovers(path: Path) -> None:
    """Delete the temporary files a killed merge (or any killed atomic write of `path`) left beside it.

    Only names rrg.io.atomic_write_text makes for this very file (".predictions.jsonl.<8 chars>.tmp", up to
    the whole predictions file's size), only in its folder; the caller holds the folder's lock, so no
    other run is writing one.
    """
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp")
    leftovers = [
        p for p in path.parent.glob(glob.escape(f".{path.name}.") + "*.tmp") if pattern.fullmatch(p.name)
    ]
    for leftover in leftovers:
        size = leftover.stat().st_size
        leftover.unlink()
        print(f"note: removed {leftover} ({size} bytes), left by a killed write of {path.name}")
