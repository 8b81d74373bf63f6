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
    rexrank     ReXrank's IU X-Ray board: its test (590) and val (296) files, R2Gen's train split (rrg/rexrank.py)
    clean       a seeded study-level split, a prompt with nothing taken from the report (the default)
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from .entries import Entry
from .io import InputError, atomic_write_json, atomic_write_text, read_json_object
from .prompts import REFERENCE_PROMPT_PREFIX, format_response, region_question, report_question

PROTOCOLS = ("reference", "r2gen", "clean", "rexrank")
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


@dataclass
class ReferenceEntry(Entry):
    """An Entry that also carries the reference format's `input_image` ("./images/images_normalized/x.png")."""

    input_image: str = ""


@dataclass
class SplitConfig:
    seed: int = 42
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)  # clean protocol: train/val/test
    views: str = "frontal"  # "frontal" (one image per study) or "both" (frontal + lateral)
    indication: bool = False  # clean protocol: append the clinical indication to the question
    comparison: bool = False  # append the comparison line (dropped, and counted, where it holds report text)
    xxxx: str | None = None  # replacement for the anonymisation token "XXXX" (None keeps it)
    r2gen_annotation: str | None = None  # path of R2Gen's annotation.json (r2gen and rexrank protocols)
    rexrank_dir: str | None = None  # rexrank protocol: the folder of ReXrank's IU X-Ray JSONs
    board: str = "findings"  # rexrank protocol: "findings" or "findings_impression" (the reference text)
    context: bool = False  # rexrank protocol: ReXrank's context (indication, comparison) in the question
    # Region-structured targets: "classifier" (rrg.regions) or a region file in WangLab's format
    # (studies it lacks fall back to the classifier, counted in notes); None writes free text.
    regions: str | None = None
    notes: dict = field(default_factory=dict)  # counts the builders report (skips, fallbacks)


# ---------------------------------------------------------------- reading


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


# ---------------------------------------------------------------- the reports table


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


# ---------------------------------------------------------------- text


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


def study_files(row: pd.Series) -> tuple[list[str], list[str]]:
    files = str(row["image_files"]).split(";")
    views = str(row["views"]).split(";") if not is_missing(row["views"]) else []
    if len(views) != len(files):
        views = [UNKNOWN_VIEW] * len(files)
    return files, views


def pick_images(row: pd.Series, views_mode: str, notes: dict) -> tuple[list[str], list[str]]:
    """The frontal image (first in file order), plus the first lateral with views="both".

    A study without a frontal image uses its first image instead (counted in the notes).
    """
    files, views = study_files(row)
    frontal = [i for i, v in enumerate(views) if v == "Frontal"]
    lateral = [i for i, v in enumerate(views) if v == "Lateral"]
    if frontal:
        chosen = [frontal[0]]
    else:
        notes["no_frontal_used_first_image"] = notes.get("no_frontal_used_first_image", 0) + 1
        chosen = [0]
    if views_mode == "both":
        other = [i for i in lateral if i not in chosen]
        if other:
            chosen.append(other[0])
        else:
            notes["no_second_view"] = notes.get("no_second_view", 0) + 1
    return [files[i] for i in chosen], [views[i] for i in chosen]


# ---------------------------------------------------------------- protocols


def reference_prompt(row: pd.Series) -> str:
    # Verbatim on purpose: Problems (labels taken from the report) glued to the indication, and a
    # missing indication rendered as "nan" exactly as str(NaN) did in the reference's script.
    indication = "nan" if is_missing(row["indication"]) else str(row["indication"])
    return REFERENCE_PROMPT_PREFIX + str(row["Problems"]) + indication


def reference_entries(row: pd.Series) -> list[Entry]:
    """One entry per image for the first two images; the second image's entry comes first (as the reference)."""
    files, views = study_files(row)
    uid = str(row["uid"])
    common = dict(
        study_id=uid,
        prompt=reference_prompt(row),
        response=f"Findings: {row['findings']} Impression: {row['impression']}",
        findings=str(row["findings"]),
        impression=str(row["impression"]),
        indication=None if is_missing(row["indication"]) else str(row["indication"]),
    )
    order = [1, 0] if len(files) > 1 else [0]
    return [
        ReferenceEntry(
            id=f"{uid}_{k}",
            images=[files[k]],
            views=[views[k]],
            input_image=REFERENCE_IMAGE_PREFIX + files[k],
            **common,
        )
        for k in order
    ]


def reference_split(table: pd.DataFrame) -> dict[str, list[Entry]]:
    """Studies with findings and impression, shuffled with pandas sample(frac=1, random_state=42), 80/20."""
    usable = table[table["findings"].notna() & table["impression"].notna()].reset_index(drop=True)
    shuffled = usable.sample(frac=1, random_state=42)
    n_train = int(0.8 * len(shuffled))
    parts = {"train": shuffled.iloc[:n_train], "test": shuffled.iloc[n_train:]}
    return {
        name: [e for _, row in part.iterrows() for e in reference_entries(row)]
        for name, part in parts.items()
    }


def study_entry(row: pd.Series, config: SplitConfig, findings: str | None, impression: str | None) -> Entry:
    """One entry per study: its chosen image(s), a question without report text, cleaned references."""
    indication = clean_text(row["indication"], config.xxxx)
    comparison = clean_text(row["comparison"], config.xxxx) if config.comparison else None
    if comparison and holds_report_text(comparison, findings, impression):
        config.notes["comparison_dropped_report_text"] = (
            config.notes.get("comparison_dropped_report_text", 0) + 1
        )
        comparison = None
    images, views = pick_images(row, config.views, config.notes)
    context = (indication if config.indication else None, comparison)
    prompt = report_question(*context)
    response = format_response(findings or "", impression or "").strip()
    if config.regions:
        from .regions import format_region_response  # sklearn, only when asked for

        prompt = region_question(*context)
        response = format_region_response(study_regions(str(row["uid"]), findings, config), impression)
    return Entry(
        id=str(row["uid"]),
        study_id=str(row["uid"]),
        images=images,
        views=views,
        prompt=prompt,
        response=response,
        findings=findings,
        impression=impression,
        indication=indication,
        comparison=comparison,
    )


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


def report_text_leaks(entries: list[Entry]) -> int:
    """Entries whose prompt holds a sentence of their own report (the context fields' guard, audited)."""
    return sum(holds_report_text(e.prompt, e.findings, e.impression) for e in entries)


def study_regions(uid: str, findings: str | None, config: SplitConfig) -> dict[str, str]:
    """The study's findings by region: from the region file when it has the study, else classified."""
    from .regions import load_classifier, split_regions

    if config.regions != "classifier":
        by_uid = _region_file_by_uid(config.regions)
        if uid in by_uid:
            config.notes["regions_from_file"] = config.notes.get("regions_from_file", 0) + 1
            return by_uid[uid]
    config.notes["regions_from_classifier"] = config.notes.get("regions_from_classifier", 0) + 1
    return split_regions(findings, load_classifier())


@lru_cache(maxsize=2)
def _region_file_by_uid(path: str) -> dict[str, dict[str, str]]:
    """A WangLab-format region file keyed by study uid ("CXR2384_IM-0942" is uid 2384)."""
    from .entries import study_id_from_filename
    from .regions import read_region_file

    return {study_id_from_filename(k): v for k, v in read_region_file(path).items()}


def clean_entry(row: pd.Series, config: SplitConfig) -> Entry | None:
    """The study's entry, or None when it lacks findings or impression."""
    findings = clean_text(row["findings"], config.xxxx)
    impression = clean_text(row["impression"], config.xxxx)
    if findings is None or impression is None:
        return None
    return study_entry(row, config, findings, impression)


def seeded_study_split(
    uids: list[str], fractions: tuple[float, float, float], seed: int
) -> dict[str, set[str]]:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise InputError(f"split fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(sorted(uids, key=int))
    n_train = round(fractions[0] * len(order))
    n_val = round(fractions[1] * len(order))
    return {
        "train": set(order[:n_train]),
        "val": set(order[n_train : n_train + n_val]),
        "test": set(order[n_train + n_val :]),
    }


def clean_split(table: pd.DataFrame, config: SplitConfig) -> dict[str, list[Entry]]:
    entries = [clean_entry(row, config) for _, row in table.iterrows()]
    usable = [e for e in entries if e is not None]
    config.notes["skipped_without_findings_and_impression"] = len(entries) - len(usable)
    membership = seeded_study_split([e.study_id for e in usable], config.fractions, config.seed)
    return {name: [e for e in usable if e.study_id in uids] for name, uids in membership.items()}


R2GEN_ID = re.compile(r"^CXR(\d+)_")


def read_r2gen_annotation(path: str | os.PathLike) -> dict[str, list[str]]:
    """R2Gen's annotation.json -> {"train"|"val"|"test": [study uid, ...]} ("CXR2384_IM-0942" is uid 2384)."""
    annotation = read_json_object(path)
    splits: dict[str, list[str]] = {}
    for name in ("train", "val", "test"):
        if not isinstance(annotation, dict) or not isinstance(annotation.get(name), list):
            raise InputError(f"{path}: missing field {name!r} (a list of studies)")
        uids = []
        for i, item in enumerate(annotation[name], start=1):
            match = R2GEN_ID.match(str(item.get("id", ""))) if isinstance(item, dict) else None
            if match is None:
                raise InputError(f"{path}: {name} entry {i}: field 'id' is not like 'CXR2384_IM-0942'")
            uids.append(str(int(match.group(1))))
        splits[name] = uids
    return splits


def r2gen_entry(row: pd.Series, config: SplitConfig) -> Entry:
    """Like clean_entry, but a study R2Gen keeps is kept even when Kaggle has no impression for it."""
    findings = clean_text(row["findings"], config.xxxx)
    impression = clean_text(row["impression"], config.xxxx)
    if impression is None:
        config.notes["r2gen_without_impression"] = config.notes.get("r2gen_without_impression", 0) + 1
    if findings is None:
        config.notes["r2gen_without_findings"] = config.notes.get("r2gen_without_findings", 0) + 1
    return study_entry(row, config, findings, impression)


def r2gen_split(table: pd.DataFrame, config: SplitConfig) -> dict[str, list[Entry]]:
    if not config.r2gen_annotation:
        raise InputError("the r2gen protocol needs R2Gen's annotation.json: pass --r2gen-annotation PATH")
    wanted = read_r2gen_annotation(config.r2gen_annotation)
    rows = {str(row["uid"]): row for _, row in table.iterrows()}
    coverage = {}
    splits: dict[str, list[Entry]] = {}
    for name, uids in wanted.items():
        unmapped = [uid for uid in uids if uid not in rows]
        splits[name] = [r2gen_entry(rows[uid], config) for uid in uids if uid in rows]
        coverage[name] = {"annotated": len(uids), "mapped": len(uids) - len(unmapped), "unmapped": unmapped}
        if unmapped:
            print(
                f"warning: r2gen {name}: {len(unmapped)} annotated study(ies) not in the Kaggle data: {unmapped[:10]}"
            )
    config.notes["r2gen_mapping"] = coverage
    return splits


def build_split(
    protocol: str, table: pd.DataFrame, config: SplitConfig | None = None
) -> dict[str, list[Entry]]:
    """Entries per split name for a protocol ("reference", "r2gen" or "clean")."""
    config = config or SplitConfig()
    if protocol == "reference":
        return reference_split(table)
    if protocol == "r2gen":
        return r2gen_split(table, config)
    if protocol == "clean":
        return clean_split(table, config)
    if protocol == "rexrank":
        from .rexrank import rexrank_split

        return rexrank_split(table, config)
    raise InputError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")


# ---------------------------------------------------------------- audit


def split_counts(entries: list[Entry]) -> dict:
    views = Counter(v for e in entries for v in e.views)
    study_views: dict[str, set[str]] = {}
    for e in entries:
        study_views.setdefault(e.study_id, set()).update(e.views)
    return {
        "studies": len({e.study_id for e in entries}),
        "entries": len(entries),
        "images": len({image for e in entries for image in e.images}),
        "views": dict(sorted(views.items())),
        # Studies with no frontal image get another view (pick_images): said, never silent.
        "studies_without_frontal": sum(1 for v in study_views.values() if v and "Frontal" not in v),
    }


def holds_phrase(text: str, phrase: str) -> bool:
    """phrase occurs in text starting at a word start ("normal" is not in "abnormal").

    Only the start is checked: the reference glues the indication (or "nan") right after the labels.
    """
    return re.search(rf"(?<!\w){re.escape(phrase)}", text) is not None


def label_leaks(entries: list[Entry], labels: dict[str, dict[str, str]]) -> dict:
    """Entries whose prompt holds their study's Problems or MeSH text (labels extracted from the report).

    The indication is taken out of the prompt first: it is history known before the exam, not a leak,
    even when it happens to contain a label's words.
    """
    out = {}
    for column in ("Problems", "MeSH"):
        hits = 0
        for e in entries:
            label = labels.get(e.study_id, {}).get(column)
            prompt = e.prompt.replace(e.indication, " ") if e.indication else e.prompt
            hits += bool(label) and holds_phrase(prompt, label)
        out[f"{column}_in_prompt"] = hits
    return out


def shared_texts(train: list[Entry], test: list[Entry], key) -> dict:
    """Test studies whose text (findings, or the whole report) appears verbatim in a train study."""
    train_texts = {key(e) for e in train if key(e)}
    test_by_study = {e.study_id: key(e) for e in test if key(e)}
    hits = [uid for uid, text in test_by_study.items() if text in train_texts]
    return {
        "test_studies": len(hits),
        "fraction_of_test": round(len(hits) / max(len(test_by_study), 1), 4),
        "distinct_texts": len({test_by_study[uid] for uid in hits}),
    }


def normalised(text: str | None) -> str | None:
    return " ".join(text.split()).lower() if text else None


def table_counts(table: pd.DataFrame) -> dict:
    findings = table["findings"].map(clean_text).notna()
    impression = table["impression"].map(clean_text).notna()
    return {
        "studies": len(table),
        "with_findings": int(findings.sum()),
        "with_impression": int(impression.sum()),
        "with_findings_and_impression": int((findings & impression).sum()),
        "images": int(table["num_images"].sum()),
    }


def leak_audit(splits: dict[str, list[Entry]], table: pd.DataFrame) -> dict:
    """Label-derived text in prompts, reports shared between train and test, studies in several splits, counts."""
    labels = {
        str(row["uid"]): {c: str(row[c]).strip() for c in ("Problems", "MeSH") if not is_missing(row[c])}
        for _, row in table.iterrows()
    }
    owners: dict[str, set[str]] = {}
    for name, entries in splits.items():
        for e in entries:
            owners.setdefault(e.study_id, set()).add(name)
    in_several = sorted((uid for uid, names in owners.items() if len(names) > 1), key=int)
    audit: dict = {
        "table": table_counts(table),
        "splits": {name: split_counts(entries) for name, entries in splits.items()},
        "label_fields_in_prompts": {name: label_leaks(entries, labels) for name, entries in splits.items()},
        "studies_in_several_splits": {"count": len(in_several), "uids": in_several[:50]},
    }
    train, test = splits.get("train", []), splits.get("test", [])
    audit["train_test_shared_text"] = {
        "findings": shared_texts(train, test, lambda e: normalised(e.findings)),
        "report": shared_texts(train, test, lambda e: normalised(f"{e.findings} {e.impression}")),
    }
    leaks = sum(v for counts in audit["label_fields_in_prompts"].values() for v in counts.values())
    audit["label_leak"] = leaks > 0
    audit["report_text_in_prompts"] = {name: report_text_leaks(entries) for name, entries in splits.items()}
    return audit


def format_audit(audit: dict) -> str:
    """A short human-readable summary of leak_audit's result."""
    lines = [f"studies in table: {audit['table']}"]
    for name, counts in audit["splits"].items():
        leaks = audit["label_fields_in_prompts"][name]
        lines.append(
            f"{name:>5}: {counts['studies']} studies, {counts['entries']} entries, {counts['images']} images, "
            f"views {counts['views']}; prompts holding Problems {leaks['Problems_in_prompt']}, MeSH {leaks['MeSH_in_prompt']}"
        )
        if counts.get("studies_without_frontal"):
            lines.append(
                f"       {counts['studies_without_frontal']} {name} studies have no frontal image: "
                "they use a lateral (or unlabelled) view instead"
            )
    lines.append(f"studies in several splits: {audit['studies_in_several_splits']['count']}")
    shared = audit["train_test_shared_text"]
    lines.append(
        f"test studies whose text is verbatim in train: findings {shared['findings']['test_studies']} "
        f"({shared['findings']['fraction_of_test']:.1%}), whole report {shared['report']['test_studies']} "
        f"({shared['report']['fraction_of_test']:.1%})"
    )
    if audit["label_leak"]:
        lines.append("LEAK: prompts contain label fields derived from the report (Problems/MeSH)")
    return "\n".join(lines)


# ---------------------------------------------------------------- writing

SPLIT_NAMES = ("train", "val", "test")


def split_path(out_dir: str | os.PathLike, name: str) -> Path:
    return Path(out_dir) / f"{name}_report.json"


def write_splits(
    splits: dict[str, list[Entry]], table: pd.DataFrame, audit: dict, out_dir: str | os.PathLike
) -> list[Path]:
    """Write {split}_report.json (JSON arrays), reports.csv and leak_audit.json atomically.

    A split file this protocol does not have (e.g. val for reference) is removed, so an older run's
    file cannot be mixed with this one's.
    """
    out_dir = Path(out_dir)
    written = []
    for name in SPLIT_NAMES:
        path = split_path(out_dir, name)
        if name in splits:
            atomic_write_json(path, [e.to_json() for e in splits[name]], indent=1)
            written.append(path)
        elif path.exists():
            path.unlink()
            print(f"note: removed {path} (left by an earlier run; this protocol has no {name} split)")
    atomic_write_text(out_dir / "reports.csv", table.to_csv(index=False))
    atomic_write_json(out_dir / "leak_audit.json", audit)
    return [*written, out_dir / "reports.csv", out_dir / "leak_audit.json"]
