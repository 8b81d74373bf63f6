"""IU X-Ray: from the Kaggle CSVs and image folder to split files (train/val/test) and a leak audit.

The steps, one function each:

    read_reports / read_projections   the two Kaggle CSVs, columns checked
    build_reports_table               one row per study: its image files (listed from the folder), views, text
    read_reference_table              the reference paper's report.csv instead (exact copy of its entries)
    build_split                       protocol -> {"train": [Entry], "val": [...], "test": [...]}
    leak_audit                        what the prompts and splits give away
    write_splits                      {split}_report.json, reports.csv, leak_audit.json

Protocols:
    reference   the reference paper's data, reproduced on purpose (its Problems-in-prompt leak included)
    r2gen       the standard R2Gen split (train 2,069 / val 296 / test 590 studies) from its annotation.json
    rexrank     ReXrank's IU X-Ray board: its test (590) and val (296) files, R2Gen's train split (rrg/data/rexrank.py)
    clean       a seeded study-level split, a prompt with nothing taken from the report (the default)"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from rrg.io import InputError

REPORT_COLUMNS = ("uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression")
PROJECTION_COLUMNS = ("uid", "filename", "projection")
REFERENCE_COLUMNS = ("uid", "image_files", "Problems", "findings", "impression", "indication")
TABLE_COLUMNS = (
    "uid",
    "num_images",
    "image_files",
    "views",
    "Problems",
    "MeSH",
    "findings",
    "impression",
    "indication",
    "image",
    "comparison",
)
IMAGE_SUBDIR = Path("images") / "images_normalized"  # the Kaggle layout
REFERENCE_IMAGE_PREFIX = "./images/images_normalized/"  # the reference's input_image prefix
UNKNOWN_VIEW = "Unknown"  # an image of the folder that indiana_projections.csv does not list
# Excel turned three indications starting with "+"/"-" into a formula error in the Kaggle CSV
# (uids 1555, 3477, 3784); the text is lost, so outside the verbatim reference protocol it counts as missing.
EXCEL_ERROR = "#NAME?"


def read_csv_checked(path: str | os.PathLike, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a CSV; a missing file, an unreadable one or a missing column raises InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(
            f"{path}: unreadable CSV ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))} (has {list(frame.columns)})"
        )
    numbers = pd.to_numeric(frame["uid"], errors="coerce")
    # 1.5 or 12.0e3 is not a uid: astype(int) would cut it to another study's number.
    bad_uid = numbers.isna() | (numbers != numbers.round())
    if bad_uid.any():
        row = int(np.flatnonzero(bad_uid.to_numpy())[0]) + 2  # +1 header, +1 one-based
        value = frame["uid"].iloc[row - 2]
        shown = repr(value) if isinstance(value, str) else str(value)
        raise InputError(f"{path}:{row}: field 'uid' is not a whole number ({shown})")
    return frame.astype({"uid": int})


def read_reports(path: str | os.PathLike) -> pd.DataFrame:
    """indiana_reports.csv: one row per study (uid, MeSH, Problems, indication, findings, impression...)."""
    frame = read_csv_checked(path, REPORT_COLUMNS)
    if frame["uid"].duplicated().any():
        raise InputError(
            f"{path}: field 'uid' repeats study {frame['uid'][frame['uid'].duplicated()].iloc[0]}"
        )
    return frame


def read_projections(path: str | os.PathLike) -> pd.DataFrame:
    """indiana_projections.csv: one row per image (uid, filename, projection Frontal/Lateral)."""
    return read_csv_checked(path, PROJECTION_COLUMNS)


def find_image_dir(data_dir: str | os.PathLike) -> Path:
    """The folder holding the PNGs: data_dir/images/images_normalized (Kaggle), or data_dir/images."""
    data_dir = Path(data_dir)
    for candidate in (data_dir / IMAGE_SUBDIR, data_dir / "images_normalized", data_dir / "images"):
        if candidate.is_dir():
            return candidate
    raise InputError(f"{data_dir}: no images folder (expected {data_dir / IMAGE_SUBDIR})")


def list_images(image_dir: str | os.PathLike) -> list[str]:
    """PNG file names of the images folder, sorted (the order the reference's report.csv lists them in)."""
    return sorted(p.name for p in Path(image_dir).iterdir() if p.suffix.lower() == ".png")


def uid_of_image(name: str) -> int | None:
    """Kaggle image names start with the uid: "2084_IM-0715-1001-0001.dcm.png" is study 2084."""
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else None


def images_by_study(
    image_names: list[str], projections: pd.DataFrame, projections_path: str, skip_missing: bool, notes: dict
) -> dict[int, list[str]]:
    """Group the folder's images by study; every image the projections CSV lists must be there."""
    present = set(image_names)
    missing = sorted(set(projections["filename"]) - present)
    if missing and not skip_missing:
        raise InputError(
            f"{projections_path}: field 'filename': {len(missing)} listed image(s) not in the images folder, "
            f"e.g. {missing[0]} (run data/download.py to verify, or pass --skip-missing)"
        )
    if missing:
        notes["skipped_missing_images"] = len(missing)
        print(
            f"warning: skipping {len(missing)} image(s) listed in {projections_path} but absent, e.g. {missing[0]}"
        )
    grouped: dict[int, list[str]] = {}
    unnamed = 0
    for name in image_names:  # sorted, so each study's list is sorted
        uid = uid_of_image(name)
        if uid is None:
            unnamed += 1
            continue
        grouped.setdefault(uid, []).append(name)
    if unnamed:
        notes["images_without_uid"] = unnamed
        print(f"warning: ignoring {unnamed} image file(s) whose name does not start with a study uid")
    return grouped


def build_reports_table(
    data_dir: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    skip_missing: bool = False,
    images_from_csv: bool = False,
    notes: dict | None = None,
) -> pd.DataFrame:
    """One row per study (uid order): uid, num_images, image_files (';'-joined, sorted), views (';'-joined),
    Problems, MeSH, findings, impression, indication, image, comparison. Text is kept as in the CSV.

    Images are listed from the folder and matched to views with indiana_projections.csv, as the
    reference's report.csv was made (the CSV misses a few files of the folder, e.g. in studies 2084, 2560
    and 3809; their view is "Unknown").

    images_from_csv lists them from indiana_projections.csv instead, so no images folder is needed (for
    text-only work such as eval/baselines.py). The folder's 4 unlisted files are then absent: studies 2084
    and 3809 get another second image, which changes no entry's text and no study's entry count.
    """
    notes = {} if notes is None else notes
    data_dir = Path(data_dir)
    reports_path, projections_path = data_dir / "indiana_reports.csv", data_dir / "indiana_projections.csv"
    reports = read_reports(reports_path)
    projections = read_projections(projections_path)
    if images_from_csv:
        image_dir = projections_path
        image_names = sorted(set(projections["filename"]))
    else:
        image_dir = Path(image_dir) if image_dir else find_image_dir(data_dir)
        image_names = list_images(image_dir)
    grouped = images_by_study(image_names, projections, str(projections_path), skip_missing, notes)
    view_of = dict(zip(projections["filename"], projections["projection"]))

    without_images = [uid for uid in reports["uid"] if uid not in grouped]
    if without_images and not skip_missing:
        raise InputError(
            f"{reports_path}: field 'uid': {len(without_images)} study(ies) have no image in {image_dir}, "
            f"e.g. study {without_images[0]} (pass --skip-missing to skip them)"
        )
    if without_images:
        notes["skipped_studies_without_images"] = len(without_images)
        print(f"warning: skipping {len(without_images)} study(ies) without images, e.g. {without_images[0]}")
    reports = reports[reports["uid"].isin(grouped)].reset_index(drop=True)
    files = [grouped[uid] for uid in reports["uid"]]
    reports["num_images"] = [len(f) for f in files]
    reports["image_files"] = [";".join(f) for f in files]
    reports["views"] = [";".join(view_of.get(name, UNKNOWN_VIEW) for name in f) for f in files]
    return reports[list(TABLE_COLUMNS)]


def read_reference_table(path: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The reference's report.csv as a reports table; views come from data_dir's projections CSV if there."""
    table = read_csv_checked(path, REFERENCE_COLUMNS)
    view_of: dict[str, str] = {}
    projections_path = Path(data_dir or ".") / "indiana_projections.csv"
    if data_dir is not None and projections_path.is_file():
        projections = read_projections(projections_path)
        view_of = dict(zip(projections["filename"], projections["projection"]))
    table["image_files"] = table["image_files"].astype(str)
    table["num_images"] = [len(f.split(";")) for f in table["image_files"]]
    table["views"] = [
        ";".join(view_of.get(n, UNKNOWN_VIEW) for n in f.split(";")) for f in table["image_files"]
    ]
    for column in TABLE_COLUMNS:
        if column not in table.columns:
            table[column] = None
    return table[list(TABLE_COLUMNS)]


def is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def clean_text(value: object, xxxx: str | None = None) -> str | None:
    """Whitespace normalised text, or None when missing/empty (never the string "nan").

    "XXXX" (the anonymisation token) is kept unless a replacement is given.
    """
    if is_missing(value):
        return None
    text = " ".join(str(value).split())
    if not text or text == EXCEL_ERROR:
        return None
    if xxxx is not None:
        text = " ".join(text.replace("XXXX", xxxx).split())
    return text or None


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MIN_LEAK_WORDS = 4  # shorter shared phrases ("None.", "XXXX, XXXX.") are not report text


def holds_report_text(text: str, *report: str | None) -> bool:
    """Whether text holds a sentence of the report (MIN_LEAK_WORDS words or more), or the report is
    quoted in it: a context field must not hand the model its answer."""
    context = normalised(text) or ""
    for part in report:
        for sentence in _SENTENCE_END.split(part or ""):
            sentence = normalised(sentence.strip(" ."))
            if sentence and len(sentence.split()) >= MIN_LEAK_WORDS and sentence in context:
                return True
    return False


def normalised(text: str | None) -> str | None:
    return " ".join(text.split()).lower() if text else None
