"""CheXpert Plus: split files from its report table (df_chexpert_plus_240401.csv) and image folder.

The columns read (the dataset's documentation, Stanford-AIMI/chexpert-plus): `path_to_image`
("train/patient00001/study1/view1_frontal.jpg"), `frontal_lateral` (Frontal/Lateral), `ap_pa`,
`deid_patient_id`, `split`, `section_findings`, `section_impression`, `section_clinical_history`. The
images are the release's PNGs under DATA_DIR with the same relative path; a path whose file is absent
is tried with the other suffix (.jpg <-> .png), since the table names the original JPGs.

One entry per study (the folder holding the image): its frontal image (PA before AP, then by name),
with views="both" also a lateral. The sections are the dataset's own columns. A study lacking the
target's sections or a frontal image is skipped and counted; absent images are an error naming the
file (or a counted skip with skip_missing); a patient in two splits is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from rrg.data.dataset_files import Skips, check_subjects, read_table, response_text
from rrg.data.entries import Entry
from rrg.io import InputError
from rrg.model.prompts import report_question

REPORT_CSV = "df_chexpert_plus_240401.csv"
COLUMNS = ("path_to_image", "frontal_lateral", "deid_patient_id", "split")
SPLITS = {"train": "train", "valid": "val", "validate": "val", "val": "val", "test": "test"}
VIEWS = {"Frontal": "Frontal", "Lateral": "Lateral"}


@dataclass
class ChexpertPlusConfig:
    views: str = "frontal"
    target: str = "findings_impression"
    indication: bool = False
    skip_missing: bool = False
    check_images: bool = True
    notes: dict = field(default_factory=dict)


def text_or_none(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value and value.lower() != "nan" else None


def find_image(data_dir: Path, name: str) -> str | None:
    """The image's name relative to data_dir as it exists on disk (suffix swapped if needed), or None."""
    path = PurePosixPath(name)
    for candidate in (path, path.with_suffix(".png"), path.with_suffix(".jpg")):
        if (data_dir / candidate).is_file():
            return str(candidate)
    return None


def build_chexpert_plus_splits(
    data_dir: str | os.PathLike, csv_path: str | os.PathLike | None, config: ChexpertPlusConfig
) -> tuple[dict[str, list[Entry]], dict]:
    data_dir = Path(data_dir)
    csv_path = Path(csv_path) if csv_path else data_dir / REPORT_CSV
    table = read_table(csv_path, COLUMNS)
    for column in ("ap_pa", "section_findings", "section_impression", "section_clinical_history"):
        if column not in table.columns:
            table[column] = None
    studies: dict[str, list[tuple[int, dict]]] = {}
    subjects: dict[str, set[str]] = {}
    for row, record in enumerate(table.to_dict("records"), start=2):
        split = SPLITS.get(record["split"])
        if split is None:
            raise InputError(f"{csv_path}:{row}: unknown split {record['split']!r} (expected train, valid or test)")
        if record["frontal_lateral"] not in VIEWS:
            raise InputError(f"{csv_path}:{row}: unknown frontal_lateral {record['frontal_lateral']!r} (Frontal or Lateral)")
        study = str(PurePosixPath(record["path_to_image"]).parent)
        studies.setdefault(study, []).append((row, {**record, "split": split}))
        subjects.setdefault(record["deid_patient_id"], set()).add(split)
    check_subjects(subjects, str(csv_path))

    need_findings = config.target in ("findings_impression", "findings")
    need_impression = config.target in ("findings_impression", "impression")
    skips = Skips()
    splits: dict[str, list[Entry]] = {}
    for study, rows in tqdm(sorted(studies.items()), desc="CheXpert Plus studies", unit="study"):
        records = [r for _, r in rows]
        first = records[0]
        findings = text_or_none(first["section_findings"]) if need_findings else None
        impression = text_or_none(first["section_impression"]) if need_impression else None
        if need_findings and not findings:
            skips.add("no findings section", study)
            continue
        if need_impression and not impression:
            skips.add("no impression section", study)
            continue
        frontal = sorted(
            (r for r in records if r["frontal_lateral"] == "Frontal"),
            key=lambda r: (r.get("ap_pa") != "PA", r["path_to_image"]),
        )
        if not frontal:
            skips.add("no frontal image", study)
            continue
        chosen = [frontal[0]]
        lateral = sorted((r for r in records if r["frontal_lateral"] == "Lateral"), key=lambda r: r["path_to_image"])
        if config.views == "both" and lateral:
            chosen.append(lateral[0])
        names = []
        for record in chosen:
            name = find_image(data_dir, record["path_to_image"]) if config.check_images else record["path_to_image"]
            if name is None:
                if not config.skip_missing:
                    raise InputError(
                        f"{data_dir / record['path_to_image']}: image of study {study} not found "
                        "(nor with .png/.jpg; pass --skip_missing to count and skip such studies)"
                    )
                break
            names.append(name)
        if len(names) < len(chosen):
            skips.add("image file missing", study)
            continue
        indication = text_or_none(first["section_clinical_history"])
        indication = " ".join(indication.split()) if indication else None
        entry = Entry(
            id=study,
            study_id=study,
            images=names,
            views=[VIEWS[r["frontal_lateral"]] for r in chosen],
            prompt=report_question(indication if config.indication else None),
            response=response_text(findings, impression),
            findings=findings,
            impression=impression,
            indication=indication,
            source=f"{csv_path}:{rows[0][0]}",
        )
        splits.setdefault(first["split"], []).append(entry)
    print(skips.summary())
    audit = {
        "dataset": "chexpert-plus",
        "studies_in_csv": len(studies),
        "subjects": len(subjects),
        "subjects_in_several_splits": 0,
        "skipped": skips.to_json(),
        "notes": config.notes,
    }
    return splits, audit
