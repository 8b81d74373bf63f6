"""ReXrank's public MIMIC-CXR and CheXpert Plus test sets (rajpurkarlab/ReXrank) as split-file entries.

ReXRank_MIMICCXR_test.json (2,347 studies) and ReXRank_CheXpertPlus.json (200 studies) map a study key
to `image_path` (a list), `key_image_path` (the image ReXrank's single-image models get),
`frontal_lateral` (one per image), `section_findings`, `section_impression` and `context` ("Age:...
Gender:... Indication: ..."). The references are ReXrank's own section texts, so scores are comparable
with the leaderboard's. MIMIC-CXR paths ("/p10/p10046166/s50051329/x.jpg") get MIMIC-CXR-JPG's "files"
prefix, so the entries' images are relative to the same DATA_DIR as the official split's.
(The IU X-Ray set is read by rrg.data.rexrank.)
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from rrg.data.dataset_files import response_text
from rrg.data.entries import Entry
from rrg.io import InputError, read_json_object
from rrg.model.prompts import report_question

MIMIC_JSON = "ReXRank_MIMICCXR_test.json"
CHEXPERT_PLUS_JSON = "ReXRank_CheXpertPlus.json"
FRONTAL_WORDS = ("frontal", "antero-posterior", "postero-anterior", "ap", "pa")
_INDICATION = re.compile(r"Indication:\s*(.*?)\s*(?:Comparison:|$)", re.DOTALL)


def field_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text if text and text.lower() not in ("nan", "none", "none.") else None


def view_name(label: object) -> str:
    """Frontal / Lateral from ReXrank's labels ("antero-posterior", "left lateral", ...); anything else
    (NaN: unrecorded, "Erect") is Unknown."""
    if not isinstance(label, str):
        return "Unknown"
    label = label.strip().lower()
    return "Frontal" if label in FRONTAL_WORDS else "Lateral" if "lateral" in label else "Unknown"


def context_indication(context: object) -> str | None:
    match = _INDICATION.search(str(context or ""))
    return field_text(" ".join(match.group(1).split())) if match else None


def rexrank_entries(path: str | os.PathLike, dataset: str, views: str = "frontal", indication: bool = False) -> list[Entry]:
    """The ReXrank set's studies as entries; dataset "mimic-cxr" or "chexpert-plus"."""
    path = Path(path)
    records = read_json_object(path)
    entries = []
    for key, record in records.items():
        where = f"{path}: study {key}"
        if not isinstance(record, dict) or not isinstance(record.get("image_path"), list) or not record["image_path"]:
            raise InputError(f"{where}: field 'image_path' must be a non-empty list")
        images = list(record["image_path"])
        labels = list(record.get("frontal_lateral") or [])
        if len(labels) != len(images):
            raise InputError(f"{where}: 'frontal_lateral' has {len(labels)} values for {len(images)} images")
        named = [view_name(v) for v in labels]
        key_image = record.get("key_image_path") or images[0]
        order = [images.index(key_image)] if key_image in images else [0]
        if views == "both":
            order += [i for i, v in enumerate(named) if v == "Lateral" and i not in order][:1]
        findings = field_text(record.get("section_findings"))
        impression = field_text(record.get("section_impression"))
        if not findings and not impression:
            raise InputError(f"{where}: neither section_findings nor section_impression")
        prefix = "files" if dataset == "mimic-cxr" else ""
        names = [(prefix + images[i]) if prefix else images[i] for i in order]
        text = context_indication(record.get("context"))
        entries.append(
            Entry(
                id=str(key),
                study_id=str(key),
                images=names,
                views=[named[i] for i in order],
                prompt=report_question(text if indication else None),
                response=response_text(findings, impression),
                findings=findings,
                impression=impression,
                indication=text,
                source=where,
            )
        )
    return entries


def rexrank_subjects(path: str | os.PathLike, dataset: str) -> set[str]:
    """The patients of a ReXrank set (MIMIC: subject_id; CheXpert Plus: the patientNNNNN folder)."""
    records = read_json_object(Path(path))
    if dataset == "mimic-cxr":
        return {str(r["subject_id"]) for r in records.values() if "subject_id" in r}
    return {part for r in records.values() for part in r["image_path"][0].split("/") if part.startswith("patient")}
