"""MIMIC-CXR-JPG (v2.0.0 / v2.1.0) with MIMIC-CXR's free-text reports: split files by the official split.

The layout read (PhysioNet's, unchanged):

    DATA_DIR/mimic-cxr-2.0.0-split.csv.gz      dicom_id, study_id, subject_id, split (train/validate/test)
    DATA_DIR/mimic-cxr-2.0.0-metadata.csv.gz   dicom_id, subject_id, study_id, ViewPosition, ...
    DATA_DIR/mimic-cxr-2.0.0-chexpert.csv.gz   subject_id, study_id, 14 labels (optional; counted in the audit)
    DATA_DIR/files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.jpg
    REPORTS/files/pXX/pXXXXXXXX/sXXXXXXXX.txt  MIMIC-CXR's reports: a folder, or mimic-cxr-reports.zip

One entry per study: its frontal image (PA before AP, then by dicom_id), with views="both" also a
lateral (LATERAL before LL); findings and impression taken from the report by rrg.data.mimic_sections (the
authors' rules). A study lacking what the target needs, or without a frontal image, is skipped and
counted by reason; a study whose images are absent on disk is an error naming the file (or, with
skip_missing, a counted skip). The official split is by patient; a subject in two splits is an error.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from rrg.data.dataset_files import Skips, check_subjects, read_table, response_text
from rrg.data.entries import Entry
from rrg.data.mimic_sections import mimic_sections
from rrg.io import InputError
from rrg.model.prompts import report_question

SPLIT_CSV = "mimic-cxr-2.0.0-split.csv.gz"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv.gz"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv.gz"
OFFICIAL_SPLITS = {"train": "train", "validate": "val", "test": "test"}
FRONTAL = ("PA", "AP")  # in order of preference
LATERAL = ("LATERAL", "LL")
# The other ViewPosition values MIMIC-CXR-JPG's metadata holds: images that are neither a standard
# frontal nor a lateral (decubitus, oblique, lordotic...). An empty field is an unrecorded view.
OTHER_VIEWS = ("AP AXIAL", "AP LLD", "AP RLD", "PA LLD", "PA RLD", "LAO", "RAO", "LPO", "XTABLE LATERAL", "SWIMMERS")
TARGETS = ("findings_impression", "findings", "impression")


@dataclass
class MimicConfig:
    views: str = "frontal"  # "frontal" or "both" (frontal + lateral)
    target: str = "findings_impression"  # which sections a study must have
    indication: bool = False  # append the report's INDICATION section to the question
    skip_missing: bool = False  # count and skip studies whose images are absent instead of failing
    check_images: bool = True  # look for each chosen image on disk
    notes: dict = field(default_factory=dict)


def subject_dir(subject_id: str) -> str:
    return f"p{subject_id[:2]}/p{subject_id}"


def image_name(subject_id: str, study_id: str, dicom_id: str) -> str:
    """The image's path relative to DATA_DIR, as the split files list it."""
    return f"files/{subject_dir(subject_id)}/s{study_id}/{dicom_id}.jpg"


class Reports:
    """MIMIC-CXR's report texts, from the folder (holding files/, or files/ itself) or mimic-cxr-reports.zip."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.zip: zipfile.ZipFile | None = None
        self.members: dict[str, str] = {}
        if self.path.is_file():
            try:
                self.zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile:
                raise InputError(f"{self.path}: not a zip file (give the reports folder or mimic-cxr-reports.zip)") from None
            # members are indexed by their last three parts, pXX/pXXXXXXXX/sXXXXXXXX.txt, whatever the prefix
            for name in self.zip.namelist():
                parts = PurePosixPath(name).parts
                if name.endswith(".txt") and len(parts) >= 3:
                    self.members["/".join(parts[-3:])] = name
            if not self.members:
                raise InputError(f"{self.path}: no report files (pXX/pXXXXXXXX/sXXXXXXXX.txt) in the zip")
        elif self.path.is_dir():
            self.root = self.path / "files" if (self.path / "files").is_dir() else self.path
        else:
            raise InputError(f"{self.path}: reports not found (a folder with files/pXX/... or mimic-cxr-reports.zip)")

    def where(self, subject_id: str, study_id: str) -> str:
        key = f"{subject_dir(subject_id)}/s{study_id}.txt"
        return f"{self.path}:{self.members.get(key, key)}" if self.zip else str(self.root / key)

    def text(self, subject_id: str, study_id: str) -> str | None:
        """The report, or None when the study has none."""
        key = f"{subject_dir(subject_id)}/s{study_id}.txt"
        if self.zip is not None:
            member = self.members.get(key)
            raw = self.zip.read(member) if member else None
        else:
            file = self.root / key
            raw = file.read_bytes() if file.is_file() else None
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{self.where(subject_id, study_id)}: not UTF-8 text (byte {e.start})") from None


def read_views(metadata_path: Path) -> dict[str, str]:
    """dicom_id -> ViewPosition ("" when unrecorded); an unknown value is an error naming the line."""
    metadata = read_table(metadata_path, ("dicom_id", "study_id", "subject_id"))
    if "ViewPosition" not in metadata.columns:
        raise InputError(f"{metadata_path}: missing column 'ViewPosition' (has {list(metadata.columns)})")
    known = set(FRONTAL) | set(LATERAL) | set(OTHER_VIEWS)
    views = {}
    for row, (dicom_id, view) in enumerate(zip(metadata["dicom_id"], metadata["ViewPosition"]), start=2):
        view = "" if not isinstance(view, str) else view.strip()
        if view and view not in known:
            raise InputError(f"{metadata_path}:{row}: unknown ViewPosition {view!r} (known: {', '.join(sorted(known))})")
        views[dicom_id] = view
    return views


def choose_images(dicoms: list[tuple[str, str]], views_mode: str) -> list[tuple[str, str]]:
    """(dicom_id, ViewPosition) of the chosen images: the frontal first, a lateral second with "both"."""
    def best(positions: tuple[str, ...]) -> tuple[str, str] | None:
        ranked = sorted((positions.index(v), d, v) for d, v in dicoms if v in positions)
        return (ranked[0][1], ranked[0][2]) if ranked else None

    frontal = best(FRONTAL)
    if frontal is None:
        return []
    lateral = best(LATERAL) if views_mode == "both" else None
    return [frontal, lateral] if lateral else [frontal]


def study_entry(
    subject_id: str, study_id: str, chosen: list[tuple[str, str]], text: str, config: MimicConfig
) -> tuple[Entry | None, str | None]:
    """The study's entry, or (None, why it is skipped)."""
    sections = mimic_sections(text)
    findings, impression = sections.findings or None, sections.impression or None
    need_findings = config.target in ("findings_impression", "findings")
    need_impression = config.target in ("findings_impression", "impression")
    if need_findings and not findings:
        return None, "no findings section"
    if need_impression and not impression:
        return None, "no impression section"
    if not need_findings:
        findings = None
    if not need_impression:
        impression = None
    indication = " ".join(sections.indication.split()) if sections.indication else None
    entry = Entry(
        id=f"s{study_id}",
        study_id=study_id,
        images=[image_name(subject_id, study_id, d) for d, _ in chosen],
        views=["Frontal" if v in FRONTAL else "Lateral" for _, v in chosen],
        prompt=report_question(indication if config.indication else None),
        response=response_text(findings, impression),
        findings=findings,
        impression=impression,
        indication=indication,
    )
    return entry, None


def build_mimic_splits(
    data_dir: str | os.PathLike, reports_path: str | os.PathLike, config: MimicConfig
) -> tuple[dict[str, list[Entry]], dict]:
    """{"train"/"val"/"test": entries} by the official split, and the audit (counts, skips by reason)."""
    if config.target not in TARGETS:
        raise InputError(f"unknown target {config.target!r} (choose from {', '.join(TARGETS)})")
    data_dir = Path(data_dir)
    split_path = data_dir / SPLIT_CSV
    split = read_table(split_path, ("dicom_id", "study_id", "subject_id", "split"))
    views = read_views(data_dir / METADATA_CSV)
    reports = Reports(reports_path)
    studies: dict[tuple[str, str], list[tuple[str, str]]] = {}
    study_split: dict[str, str] = {}
    subjects: dict[str, set[str]] = {}
    for row, (dicom_id, study_id, subject_id, name) in enumerate(
        zip(split["dicom_id"], split["study_id"], split["subject_id"], split["split"]), start=2
    ):
        if name not in OFFICIAL_SPLITS:
            raise InputError(f"{split_path}:{row}: unknown split {name!r} (expected train, validate or test)")
        if dicom_id not in views:
            raise InputError(f"{split_path}:{row}: dicom_id {dicom_id} is not in {data_dir / METADATA_CSV}")
        if study_split.setdefault(study_id, name) != name:
            raise InputError(f"{split_path}:{row}: study {study_id} is in several splits")
        subjects.setdefault(subject_id, set()).add(OFFICIAL_SPLITS[name])
        studies.setdefault((subject_id, study_id), []).append((dicom_id, views[dicom_id]))
    check_subjects(subjects, str(split_path))

    labelled = None
    if (data_dir / CHEXPERT_CSV).is_file():
        labelled = set(read_table(data_dir / CHEXPERT_CSV, ("subject_id", "study_id"))["study_id"])
    else:
        config.notes["chexpert_labels"] = f"{data_dir / CHEXPERT_CSV} not found (optional)"

    skips = Skips()
    splits: dict[str, list[Entry]] = {name: [] for name in OFFICIAL_SPLITS.values()}
    for (subject_id, study_id), dicoms in tqdm(sorted(studies.items()), desc="MIMIC-CXR studies", unit="study"):
        chosen = choose_images(dicoms, config.views)
        if not chosen:
            skips.add("no PA/AP frontal image", study_id)
            continue
        if config.views == "both" and len(chosen) == 1:
            config.notes["no_lateral"] = config.notes.get("no_lateral", 0) + 1
        if config.check_images:
            absent = [d for d, _ in chosen if not (data_dir / image_name(subject_id, study_id, d)).is_file()]
            if absent:
                if not config.skip_missing:
                    raise InputError(
                        f"{data_dir / image_name(subject_id, study_id, absent[0])}: image of study {study_id} "
                        "not found (pass --skip_missing to count and skip such studies)"
                    )
                skips.add("image file missing", study_id)
                continue
        text = reports.text(subject_id, study_id)
        if text is None:
            skips.add("no report file", study_id)
            continue
        entry, reason = study_entry(subject_id, study_id, chosen, text, config)
        if entry is None:
            skips.add(reason, study_id)
            continue
        entry.source = reports.where(subject_id, study_id)
        splits[OFFICIAL_SPLITS[study_split[study_id]]].append(entry)
    audit = {
        "dataset": "mimic-cxr",
        "studies_in_split_csv": len(studies),
        "subjects": len(subjects),
        "subjects_in_several_splits": 0,
        "skipped": skips.to_json(),
        "notes": config.notes,
    }
    if labelled is not None:
        audit["studies_with_chexpert_labels"] = sum(e.study_id in labelled for es in splits.values() for e in es)
    print(skips.summary())
    return splits, audit
