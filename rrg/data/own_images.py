"""The user's own images as a split file: a folder of PNG/JPG/DICOM, or a CSV listing them.

Folder: every image file below it (suffixes in IMAGE_SUFFIXES, DICOM also recognised by name), one entry
each, in path order; the id is the path relative to the folder without its suffix.

CSV: a header row with `image` (one path, or several joined with ";", relative to the CSV's folder or
to --data_dir) and optionally `id`, `study_id`, `report` (the reference: "Findings: ... Impression: ...",
cut by rrg.data.sections), `findings`, `impression`, `indication`. Rows with a report give entries eval can
score (and training can use); rows without one give entries eval generates for, without scoring.
Every image is decoded once (rrg.data.images) so a bad file is one line naming it before a model is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from tqdm import tqdm

from rrg.data.dataset_files import read_table, response_text
from rrg.data.entries import Entry
from rrg.data.images import image_problem
from rrg.data.sections import parse_sections
from rrg.io import InputError
from rrg.model.prompts import report_question

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


def text_of(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = " ".join(value.split())
    return value or None


def folder_images(folder: Path) -> list[str]:
    names = sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not names:
        raise InputError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return names


def check_images(image_dir: Path, names: list[str], where: list[str]) -> None:
    for name, place in tqdm(list(zip(names, where)), desc="checking images", unit="image"):
        problem = image_problem(image_dir / name)
        if problem:
            raise InputError(f"{place}: {problem}")


def folder_entries(folder: str | os.PathLike, indication: str | None = None) -> list[Entry]:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found")
    names = folder_images(folder)
    check_images(folder, names, [str(folder)] * len(names))
    prompt = report_question(indication)
    return [
        Entry(id=str(Path(n).with_suffix("")), study_id=str(Path(n).with_suffix("")), images=[n], prompt=prompt,
              response="", indication=indication, source=f"{folder}/{n}")
        for n in names
    ]


def csv_entries(csv_path: str | os.PathLike, image_dir: str | os.PathLike | None, indication: bool) -> list[Entry]:
    """Entries from a CSV of image paths (see the module docstring); image_dir defaults to the CSV's folder."""
    csv_path = Path(csv_path)
    table = read_table(csv_path, ("image",))
    base = Path(image_dir) if image_dir else csv_path.parent
    entries, seen = [], {}
    for row, record in enumerate(table.to_dict("records"), start=2):
        where = f"{csv_path}:{row}"
        images = [p.strip() for p in record["image"].split(";") if p.strip()]
        if not images:
            raise InputError(f"{where}: field 'image' is empty")
        for name in images:
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise InputError(f"{where}: image path {name!r} must be relative to {base} (no '..')")
        findings, impression = text_of(record.get("findings")), text_of(record.get("impression"))
        report = text_of(record.get("report"))
        if report and not (findings or impression):
            sections = parse_sections(report)
            findings, impression = sections.findings, sections.impression
            if findings is None and impression is None:
                findings = sections.body  # a report without headings is all findings
        entry_id = text_of(record.get("id")) or str(Path(images[0]).with_suffix(""))
        if entry_id in seen:
            raise InputError(f"{where}: duplicate id {entry_id!r} (first at line {seen[entry_id]})")
        seen[entry_id] = row
        context = text_of(record.get("indication"))
        entries.append(
            Entry(
                id=entry_id,
                study_id=text_of(record.get("study_id")) or entry_id,
                images=images,
                prompt=report_question(context if indication else None),
                response=response_text(findings, impression),
                findings=findings,
                impression=impression,
                indication=context,
                source=where,
            )
        )
    check_images(base, [e.images[i] for e in entries for i in range(len(e.images))],
                 [e.source for e in entries for _ in e.images])
    return entries
