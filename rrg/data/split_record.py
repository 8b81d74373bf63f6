"""Which test split a score card was scored on, recorded in the card so tables need not guess.

A split file written by data/report2json.py sits beside its leak_audit.json, which names the protocol
(clean, r2gen, reference); the split's name (test, val, train) is the file's stem before "_report".
Prediction lines may carry this record as "split" (eval/baselines.py writes it); the eval run records
the --json_file it read. The card keeps it under settings.split; rrg.report.results.infer_split_label reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rrg.io import InputError

PROTOCOLS = ("clean", "r2gen", "reference")


def split_record(json_file: str | os.PathLike) -> dict:
    """{"file", "name", "protocol"} of a split file; protocol None when no leak_audit.json says it."""
    path = Path(json_file)
    name = path.stem.removesuffix("_report")
    protocol = None
    audit = path.parent / "leak_audit.json"
    try:
        found = json.loads(audit.read_text(encoding="utf-8")).get("protocol")
        protocol = found if found in PROTOCOLS else None
    except (OSError, ValueError, AttributeError):
        pass  # no audit beside the file: the protocol is unknown, never guessed
    return {"file": str(path), "name": name, "protocol": protocol}


def split_of_records(records: list[dict]) -> dict | None:
    """The split every prediction line records, None when none does; lines of two splits are an error."""
    found: dict | None = None
    first = ""
    for record in records:
        split = record.get("split")
        if split is None:
            continue
        if not isinstance(split, dict):
            raise InputError(f"{record.get('_where', 'a line')}: field 'split' must be an object")
        if found is None:
            found, first = split, record.get("_where", "")
        elif split != found:
            raise InputError(
                f"{record.get('_where', 'a line')}: made from split {split} but {first} from {found}: "
                "one card scores one split"
            )
    return found
