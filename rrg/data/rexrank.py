"""ReXrank (rajpurkarlab/ReXrank): its test files as split entries, and our predictions as its submission file.

ReXrank publishes its test sets as JSON objects keyed by study (`CXR3030_IM-1405` for IU X-Ray, a MIMIC-CXR
study id, `patient64620_study1` for CheXpert Plus), each entry holding `image_path` (a list), `section_findings`,
`section_impression`, `context` and a few more fields. A submission is the test file's entries with one field
added, `model_prediction`.

Two boards per data set: "findings" (the reference is the findings section alone) and "findings_impression"
("Findings: ... Impression: ..."). For IU X-Ray the image paths are R2Gen's (`CXR3030_IM-1405/0.png`): image k
of a study is the k-th of its Kaggle files in name order (`3030_IM-1405-1001.dcm.png`, `3030_IM-1405-2001.dcm.png`);
ReXrank's `frontal_lateral` agrees with the Kaggle projections wherever both list every image.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from rrg.data.entries import Entry
from rrg.data.sections import parse_sections
from rrg.io import InputError, atomic_write_json, read_json_object
from rrg.model.prompts import REPORT_QUESTION, format_response

BOARDS = ("findings", "findings_impression")
IU_XRAY_FILES = {"test": "ReXRank_IUXray_test.json", "val": "ReXRank_IUXray_valid.json"}
DATASET_FILES = {
    "iu_xray": "ReXRank_IUXray_test.json",
    "mimic_cxr": "ReXRank_MIMICCXR_test.json",
    "chexpert_plus": "ReXRank_CheXpertPlus.json",
}
PREDICTION_FIELD = "model_prediction"
R2GEN_IMAGE = re.compile(r"^(CXR(\d+)_[^/]+)/(\d+)\.png$")
_CONTEXT_TAGS = re.compile(r"</?context>")


def read_rexrank(path: str | os.PathLike) -> dict[str, dict]:
    """A ReXrank JSON: {study key: entry}; every entry needs a list `image_path`."""
    data = read_json_object(path)
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: expected a JSON object of studies (ReXrank's layout)")
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise InputError(f"{path}: study {key!r}: expected an object")
        images = entry.get("image_path")
        if not isinstance(images, list) or not images or not all(isinstance(x, str) for x in images):
            raise InputError(f"{path}: study {key!r}: field 'image_path' must be a non-empty list of paths")
    return data


def section_text(value: object) -> str | None:
    """A ReXrank section as one line of text, or None (missing, NaN, empty or "None.")."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())
    return text if text and text.lower() not in ("none", "none.", "nan") else None


def context_text(entry: Mapping) -> str | None:
    """ReXrank's `context` (indication, comparison; age and sex for MIMIC-CXR), tags stripped."""
    value = entry.get("context")
    if not isinstance(value, str):
        return None
    return " ".join(_CONTEXT_TAGS.sub(" ", value).split()) or None


FINDINGS_QUESTION = "You are a radiologist. Write the Findings section of the report for this chest X-ray."


def question(context: str | None, board: str = "findings_impression") -> str:
    """The board's question (the findings board asks for findings alone), ReXrank's context appended."""
    base = FINDINGS_QUESTION if board == "findings" else REPORT_QUESTION
    return f"{base} {context}" if context else base


def board_response(findings: str | None, impression: str | None, board: str) -> str | None:
    """The reference text of a board, or None when the study has nothing for it."""
    if board not in BOARDS:
        raise InputError(f"unknown ReXrank board {board!r} (choose from {', '.join(BOARDS)})")
    if board == "findings":
        return findings
    if findings is None and impression is None:
        return None
    return format_response(findings or "", impression or "").strip()


def kaggle_image(r2gen_path: str, image_files: Mapping[str, Sequence[str]], where: str) -> str:
    """`CXR3030_IM-1405/0.png` -> `3030_IM-1405-1001.dcm.png`: the 0th, in name order, of study 3030's Kaggle
    files that start with `3030_IM-1405-`."""
    match = R2GEN_IMAGE.match(r2gen_path)
    if match is None:
        raise InputError(f"{where}: image path {r2gen_path!r} is not like 'CXR3030_IM-1405/0.png'")
    stem, index = match.group(1)[3:], int(match.group(3))
    files = sorted(
        f for f in image_files.get(match.group(2).lstrip("0") or "0", []) if f.startswith(stem + "-")
    )
    if index >= len(files):
        raise InputError(
            f"{where}: image {r2gen_path!r}: the Kaggle data has {len(files)} image(s) named {stem}-*"
        )
    return files[index]


def uid_of_key(key: str) -> str:
    match = re.match(r"^CXR(\d+)_", key)
    if match is None:
        raise InputError(f"study key {key!r} is not like 'CXR3030_IM-1405'")
    return str(int(match.group(1)))


def iu_xray_entries(
    path: str | os.PathLike,
    image_files: Mapping[str, Sequence[str]],
    view_of: Mapping[str, str],
    *,
    board: str,
    context: bool,
    views: str = "frontal",
    notes: dict | None = None,
) -> list[Entry]:
    """ReXrank's IU X-Ray test or validation file as entries (id: ReXrank's key, study_id: the Kaggle uid).

    References are ReXrank's own section texts; images are the Kaggle files R2Gen's paths name, the frontal
    one first (and a lateral with views="both").
    """
    from rrg.data.protocols import (
        pick_images,  # data imports nothing of this module; the import is local to stay so
    )

    notes = {} if notes is None else notes
    entries = []
    for key, record in read_rexrank(path).items():
        where = f"{path}: study {key!r}"
        files = [kaggle_image(p, image_files, where) for p in record["image_path"]]
        row = {"image_files": ";".join(files), "views": ";".join(view_of.get(f, "Unknown") for f in files)}
        images, chosen_views = pick_images(row, views, notes)
        findings = section_text(record.get("section_findings"))
        impression = section_text(record.get("section_impression"))
        response = board_response(findings, impression, board)
        if response is None:
            notes["rexrank_without_board_text"] = notes.get("rexrank_without_board_text", 0) + 1
            continue
        entries.append(
            Entry(
                id=key,
                study_id=uid_of_key(key),
                images=images,
                views=chosen_views,
                prompt=question(context_text(record) if context else None, board),
                response=response,
                findings=findings,
                impression=impression,
                indication=context_text(record),
            )
        )
    return entries


def board_entries(
    path: str | os.PathLike, image_root: str | os.PathLike | None, *, board: str, context: bool
) -> list[Entry]:
    """Any ReXrank file (MIMIC-CXR, CheXpert Plus, IU X-Ray) as entries whose images are paths under
    image_root (checked to exist when image_root is given; kept relative, as ReXrank writes them, when not).
    """
    root = Path(image_root) if image_root is not None else None
    entries, missing = [], []
    for key, record in read_rexrank(path).items():
        images = [p.lstrip("/") for p in record["image_path"]]
        if root is not None:
            missing += [str(root / p) for p in images if not (root / p).is_file()]
        findings = section_text(record.get("section_findings"))
        impression = section_text(record.get("section_impression"))
        response = board_response(findings, impression, board)
        if response is None:
            continue
        views = record.get("frontal_lateral")
        entries.append(
            Entry(
                id=key,
                study_id=key,
                images=images,
                views=list(views) if isinstance(views, list) and len(views) == len(images) else [],
                prompt=question(context_text(record) if context else None, board),
                response=response,
                findings=findings,
                impression=impression,
                indication=context_text(record),
            )
        )
    if missing:
        raise InputError(
            f"{path}: {len(missing)} image(s) not under {root}, e.g. {missing[0]} (name the folder ReXrank's "
            "image paths are relative to)"
        )
    return entries


# ---------------------------------------------------------------- submission


def prediction_text(prediction: str, section: str) -> str:
    """What goes into `model_prediction`: the whole text, or its findings section (the findings board)."""
    if section == "findings":
        findings = parse_sections(prediction).findings
        return findings if findings is not None else prediction
    return prediction


def build_submission(
    test: Mapping[str, dict], predictions: Sequence[dict], *, source: str, section: str = "report"
) -> dict[str, dict]:
    """The test file's entries (their fields, in their order) plus `model_prediction`, in the test file's order.

    predictions: records with "id" (ReXrank's key) and "prediction". Refuses a study predicted twice, a
    study of the test file without a prediction and a prediction of a study the test file lacks, naming them.
    """
    by_key: dict[str, str] = {}
    repeated = []
    for record in predictions:
        key = str(record.get("id"))
        if key in by_key:
            repeated.append(key)
        by_key[key] = record["prediction"]
    if repeated:
        raise InputError(f"{source}: {len(repeated)} study(ies) predicted more than once: {repeated[:10]}")
    missing = [k for k in test if k not in by_key]
    extra = [k for k in by_key if k not in test]
    if missing or extra:
        raise InputError(
            f"{source}: predictions do not match the test file: {len(missing)} study(ies) missing "
            f"{missing[:10]}, {len(extra)} not in it {extra[:10]}"
        )
    return {k: {**entry, PREDICTION_FIELD: prediction_text(by_key[k], section)} for k, entry in test.items()}


def write_submission(path: str | os.PathLike, submission: dict[str, dict]) -> None:
    atomic_write_json(path, submission, indent=2)


# ---------------------------------------------------------------- the IU X-Ray protocol


def kaggle_context(row: Mapping) -> str | None:
    """ReXrank's context for a Kaggle study ("Indication: ... Comparison: ..."), for the train split."""
    from rrg.data.iu_xray import clean_text

    parts = [
        f"{label}: {text}"
        for label, column in (("Indication", "indication"), ("Comparison", "comparison"))
        if (text := clean_text(row.get(column))) is not None
    ]
    return " ".join(parts) or None


def rexrank_split(table, config) -> dict[str, list[Entry]]:
    """train: R2Gen's train studies from the Kaggle table; val and test: ReXrank's IU X-Ray files.

    config: rrg.data.protocols.SplitConfig with rexrank_dir, board, context (and r2gen_annotation for train).
    """
    from rrg.data.protocols import r2gen_split

    if not config.rexrank_dir:
        raise InputError("the rexrank protocol needs ReXrank's JSON files: pass --rexrank_dir FOLDER")
    folder = Path(config.rexrank_dir)
    for name in IU_XRAY_FILES.values():
        if not (folder / name).is_file():
            raise InputError(f"{folder / name}: file not found (ReXrank's IU X-Ray test and valid JSONs)")
    image_files = {str(row["uid"]): str(row["image_files"]).split(";") for _, row in table.iterrows()}
    view_of = {
        name: view
        for _, row in table.iterrows()
        for name, view in zip(str(row["image_files"]).split(";"), str(row["views"]).split(";"))
    }
    notes = config.notes
    train = []
    rows = {str(row["uid"]): row for _, row in table.iterrows()}
    for e in r2gen_split(table, config)["train"]:
        response = board_response(e.findings, e.impression, config.board)
        if response is None:
            notes["train_without_board_text"] = notes.get("train_without_board_text", 0) + 1
            continue
        e.response = response
        e.prompt = question(kaggle_context(rows[e.study_id]) if config.context else None, config.board)
        train.append(e)
    splits = {"train": train}
    for name, file in IU_XRAY_FILES.items():
        splits[name] = iu_xray_entries(
            folder / file,
            image_files,
            view_of,
            board=config.board,
            context=config.context,
            views=config.views,
            notes=notes,
        )
    in_both = sorted({e.study_id for e in train} & {e.study_id for n in ("val", "test") for e in splits[n]})
    if in_both:
        raise InputError(
            f"{config.r2gen_annotation}: train studies also in ReXrank's val/test: {in_both[:10]}"
        )
    return {name: splits[name] for name in ("train", "val", "test")}
