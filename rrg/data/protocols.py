"""The split protocols (reference, clean, r2gen): split-file entries per study and their files."""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from rrg.data.entries import Entry
from rrg.data.iu_xray import REFERENCE_IMAGE_PREFIX, UNKNOWN_VIEW, clean_text, holds_report_text, is_missing
from rrg.io import InputError, atomic_write_json, atomic_write_text, read_json_object
from rrg.model.prompts import REFERENCE_PROMPT_PREFIX, format_response, region_question, report_question

PROTOCOLS = ("reference", "r2gen", "clean", "rexrank")


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
    # Region-structured targets: "classifier" (rrg.data.regions) or a region file in WangLab's format
    # (studies it lacks fall back to the classifier, counted in notes); None writes free text.
    regions: str | None = None
    notes: dict = field(default_factory=dict)  # counts the builders report (skips, fallbacks)


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
        from rrg.data.regions import format_region_response  # sklearn, only when asked for

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


def study_regions(uid: str, findings: str | None, config: SplitConfig) -> dict[str, str]:
    """The study's findings by region: from the region file when it has the study, else classified."""
    from rrg.data.regions import load_classifier, split_regions

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
    from rrg.data.entries import study_id_from_filename
    from rrg.data.regions import read_region_file

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
        from rrg.data.rexrank import rexrank_split

        return rexrank_split(table, config)
    raise InputError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")


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
