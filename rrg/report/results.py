"""Loading and labelling of result files for the plot scripts: score cards, training logs, literature rows.

Every reader validates what the figures and tables rely on and raises InputError naming the file (and
line or field), so a bad file stops a plot with one clear line instead of a KeyError deep in matplotlib.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rrg.io import InputError, iter_jsonl, read_json_object
from rrg.score.ngram import METRICS as STANDARD_METRICS
from rrg.score.ngram import SECTIONS as SECTIONS  # re-exported for the plot scripts

# The reference paper's own metric code names its columns differently; map them onto ours so its
# legacy numbers land in the same table columns.
LEGACY_TO_STANDARD = {
    "B-1": "BLEU-1",
    "B-2": "BLEU-2",
    "B-3": "BLEU-3",
    "B-4": "BLEU-4",
    "METEOR": "METEOR",
    "ROUGE-L": "ROUGE-L",
}

# Split labels shared by our rows and the literature file, so equal labels mean "same test set".
R2GEN_SPLIT = "R2Gen 7:1:2 (test)"
REFERENCE_SPLIT_PER_IMAGE = "reference 80/20 (per image)"
REFERENCE_SPLIT_PER_STUDY = "reference 80/20 (per study)"
UNKNOWN_SPLIT = "unknown split"
CLEAN_SPLIT = "clean"  # data/report2json.py --protocol clean (its fractions are the user's choice)
COCO_TOOLING = "pycocoevalcap corpus-level"
LEGACY_TOOLING = "nltk sentence-level (legacy)"

TRAIN_FIELDS = ("step", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s", "elapsed_s")
EVAL_FIELDS = ("step", "epoch", "val_loss")
LITERATURE_SOURCE_FIELDS = ("title", "venue", "year", "table")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_metric_table(path: Path, where: str, table: Any) -> dict[str, dict[str, float]]:
    """`{section: {metric: number}}`; a non-number is an error naming the field (NaN is kept, shown as '–')."""
    if not isinstance(table, dict) or not table:
        raise InputError(f"{path}: field '{where}' must be a non-empty object of sections")
    for section, metrics in table.items():
        if not isinstance(metrics, dict):
            raise InputError(f"{path}: field '{where}.{section}' must be an object of metric: number")
        for name, value in metrics.items():
            if value is not None and not _is_number(value):
                raise InputError(f"{path}: field '{where}.{section}.{name}' is not a number: {value!r}")
    return table


# ---------------------------------------------------------------------------------------------------
# Score cards
# ---------------------------------------------------------------------------------------------------


@dataclass
class ScoreCard:
    """One results/<name>/scores.json, validated."""

    path: Path
    metrics: dict[str, dict[str, float]]
    ci95: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    legacy: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    image_control: dict[str, Any] | None = None
    clinical: dict[str, Any] | None = None  # the "clinical" block (rrg.score.clinical.f1), validated
    rexrank_bleu: dict[str, Any] | None = None  # ReXrank's BLEU-2 (rrg.score.rexrank_bleu), absent in older cards

    @property
    def name(self) -> str:
        """results/reference/lora/scores.json -> 'reference/lora' (the folder under results/)."""
        parts = self.path.parent.parts
        if "results" in parts:
            tail = parts[len(parts) - parts[::-1].index("results") :]
            if tail:
                return "/".join(tail)
        return self.path.parent.name or str(self.path)


def load_scores(path: str | os.PathLike) -> ScoreCard:
    path = Path(path)
    data = read_json_object(path)
    if "metrics" not in data:
        raise InputError(f"{path}: no 'metrics' field (is this a scores.json from eval?)")
    metrics = _check_metric_table(path, "metrics", data["metrics"])

    ci95 = data.get("ci95") or {}
    if not isinstance(ci95, dict):
        raise InputError(f"{path}: field 'ci95' must be an object")
    # score_records writes null for a section no reference has (e.g. every section but "report" under
    # --r2gen_compat): no intervals, not an error.
    ci95 = {section: intervals for section, intervals in ci95.items() if intervals is not None}
    for section, intervals in ci95.items():
        if not isinstance(intervals, dict):
            raise InputError(f"{path}: field 'ci95.{section}' must be an object of metric: [lo, hi]")
        for name, bounds in intervals.items():
            ok = isinstance(bounds, list) and len(bounds) == 2 and all(_is_number(b) for b in bounds)
            if not ok:
                raise InputError(f"{path}: field 'ci95.{section}.{name}' must be [lo, hi], got {bounds!r}")

    legacy = data.get("legacy")
    if legacy is not None:
        if not isinstance(legacy, dict):
            raise InputError(f"{path}: field 'legacy' must be an object")
        sections = {k: v for k, v in legacy.items() if isinstance(v, dict)}
        if sections:
            _check_metric_table(path, "legacy", sections)

    control = data.get("image_control")
    if control is not None:
        if not isinstance(control, dict) or "delta" not in control:
            raise InputError(f"{path}: field 'image_control' must be an object with a 'delta' field")
        _check_metric_table(path, "image_control.delta", control["delta"])

    clinical = data.get("clinical")
    if clinical is not None:
        _check_clinical(path, clinical)

    return ScoreCard(
        path=path,
        metrics=metrics,
        ci95=ci95,
        legacy=legacy,
        settings=data.get("settings") or {},
        counts=data.get("counts") or {},
        image_control=control,
        clinical=clinical,
        rexrank_bleu=data.get("rexrank_bleu") if isinstance(data.get("rexrank_bleu"), dict) else None,
    )


def _check_clinical(path: Path, block: Any) -> None:
    """The parts of a card's "clinical" block that tables and figures read (rrg.score.clinical.f1 writes it)."""
    if not isinstance(block, dict):
        raise InputError(f"{path}: field 'clinical' must be an object")
    tables = {}
    if "summary" in block:
        tables["summary"] = block["summary"]
    if "radgraph" in block:
        scores = block["radgraph"].get("scores") if isinstance(block["radgraph"], dict) else None
        tables["radgraph.scores"] = scores
    for where, table in tables.items():
        _check_metric_table(path, "clinical", {where: table})
    per = block.get("per_observation")
    if per is not None:
        _check_metric_table(path, "clinical.per_observation", per)
    for name, bounds in (block.get("ci95") or {}).items():
        if name == "per_observation":
            for observation, metrics in bounds.items():
                for metric, pair in metrics.items():
                    _check_interval(path, f"clinical.ci95.per_observation.{observation}.{metric}", pair)
        else:
            _check_interval(path, f"clinical.ci95.{name}", bounds)


def _check_interval(path: Path, where: str, bounds: Any) -> None:
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(_is_number(b) for b in bounds)):
        raise InputError(f"{path}: field '{where}' must be [lo, hi], got {bounds!r}")


def clinical_value(card: ScoreCard, key: str) -> tuple[float | None, list[float] | None]:
    """(value, 95% interval or None) of a clinical summary key ("f1_micro_14", ...) or RadGraph score
    ("radgraph_partial"); (None, None) when the card does not have it."""
    block = card.clinical or {}
    if key.startswith("radgraph_"):
        radgraph = block.get("radgraph") or {}
        return (radgraph.get("scores") or {}).get(key), (radgraph.get("ci95") or {}).get(key)
    return (block.get("summary") or {}).get(key), (block.get("ci95") or {}).get(key)


def infer_split_label(card: ScoreCard) -> str:
    """The test split a card was scored on, from its settings (or, failing that, its results path).

    Cards do not always record the split by name, so the folder convention results/<split>/<run>/
    (results/reference/..., results/r2gen/...) is the fallback; `per_image` tells the reference
    split's two scoring units apart, because per-image and per-study numbers differ.
    """
    settings = card.settings
    recorded = settings.get("split")
    if isinstance(recorded, dict) and recorded.get("protocol"):  # written by rrg.data.split_record
        return _protocol_label(recorded["protocol"], recorded.get("name") or "test", settings)
    hint = " ".join(
        str(settings.get(key, "")) for key in ("split", "split_name", "split_file", "entries", "test_file")
    ).lower()
    if not hint.strip():
        hint = str(card.path).lower()
    if "r2gen" in hint:
        return R2GEN_SPLIT
    if "reference" in hint:
        return REFERENCE_SPLIT_PER_IMAGE if settings.get("per_image", True) else REFERENCE_SPLIT_PER_STUDY
    return UNKNOWN_SPLIT


def _protocol_label(protocol: str, name: str, settings: dict) -> str:
    if protocol == "r2gen":
        return R2GEN_SPLIT.replace("(test)", f"({name})")
    if protocol == "reference":
        return REFERENCE_SPLIT_PER_IMAGE if settings.get("per_image", True) else REFERENCE_SPLIT_PER_STUDY
    return f"{CLEAN_SPLIT} ({name})"


def tooling_label(card: ScoreCard) -> str:
    compat = card.settings.get("r2gen_compat")
    if compat:  # eval/score.py --r2gen_compat: the texts R2Gen's own evaluation scores
        return f"{COCO_TOOLING}, R2Gen-compatible (refs cut to {compat.get('reference_tokens_kept', 59)} tokens, <unk>)"
    if card.settings.get("normalize"):
        return f"{COCO_TOOLING}, normalized text"
    return COCO_TOOLING


def legacy_sections(card: ScoreCard) -> dict[str, dict[str, float]]:
    """The legacy block's per-section metrics, renamed to the standard columns (B-4 -> BLEU-4)."""
    if not card.legacy:
        return {}
    out = {}
    for section, metrics in card.legacy.items():
        if isinstance(metrics, dict):
            out[section] = {LEGACY_TO_STANDARD[k]: v for k, v in metrics.items() if k in LEGACY_TO_STANDARD}
    return out


# ---------------------------------------------------------------------------------------------------
# Training logs
# ---------------------------------------------------------------------------------------------------


@dataclass
class TrainLog:
    path: Path
    train: pd.DataFrame  # columns TRAIN_FIELDS, one row per logged step
    eval: pd.DataFrame  # columns EVAL_FIELDS


def _check_fields(path: Path, line: int, record: dict, fields: tuple[str, ...]) -> None:
    for name in fields:
        if name not in record:
            raise InputError(f"{path}:{line}: '{record['type']}' event lacks field '{name}'")
        if not _is_number(record[name]):
            raise InputError(f"{path}:{line}: field '{name}' is not a number: {record[name]!r}")


def load_train_log(path: str | os.PathLike) -> TrainLog:
    """Read <run_dir>/train_log.jsonl (or the file itself) into train and eval tables, sorted by step.

    A resumed run appends again from its last checkpoint, so a step can appear twice; the later line
    wins, because it is the one that led to the final weights.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "train_log.jsonl"
    rows: dict[str, list[dict]] = {"train": [], "eval": []}
    skipped: dict[str, int] = {}
    for line, record in iter_jsonl(path):
        kind = record.get("type")
        if kind == "train":
            _check_fields(path, line, record, TRAIN_FIELDS)
        elif kind == "eval":
            _check_fields(path, line, record, EVAL_FIELDS)
        else:
            # Other event types (a future "checkpoint" line, say) carry nothing to plot: count them
            # and say so, rather than fail a plot or drop them silently.
            skipped[str(kind)] = skipped.get(str(kind), 0) + 1
            continue
        rows[kind].append(record)
    for kind, count in skipped.items():
        print(f"warning: {path}: skipped {count} line(s) of type {kind!r}", file=sys.stderr)
    if not rows["train"]:
        raise InputError(f"{path}: no 'train' events (an empty or unfinished log?)")

    def table(kind: str, fields: tuple[str, ...]) -> pd.DataFrame:
        df = pd.DataFrame(rows[kind], columns=list(fields))
        return df.drop_duplicates(subset="step", keep="last").sort_values("step").reset_index(drop=True)

    return TrainLog(path=path, train=table("train", TRAIN_FIELDS), eval=table("eval", EVAL_FIELDS))


# ---------------------------------------------------------------------------------------------------
# Literature
# ---------------------------------------------------------------------------------------------------

DEFAULT_LITERATURE = Path(__file__).resolve().parents[2] / "plot" / "literature.json"


def load_literature(path: str | os.PathLike = DEFAULT_LITERATURE) -> list[dict]:
    """Published rows (model, group, split, tooling, section, metrics, source, verified), validated."""
    path = Path(path)
    data = read_json_object(path)
    rows = data.get("rows")
    if not isinstance(rows, list) or not rows:
        raise InputError(f"{path}: field 'rows' must be a non-empty list")
    for i, row in enumerate(rows, start=1):
        where = f"{path}: rows[{i}]"
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected an object")
        for key in ("model", "group", "split", "tooling", "section"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise InputError(f"{where}: field '{key}' must be a non-empty string")
        if row["group"] not in ("reference", "literature"):
            raise InputError(f"{where}: field 'group' must be 'reference' or 'literature'")
        metrics = row.get("metrics")
        if not isinstance(metrics, dict) or not metrics:
            raise InputError(f"{where}: field 'metrics' must be a non-empty object")
        for name, value in metrics.items():
            if name not in STANDARD_METRICS:
                raise InputError(f"{where}: unknown metric '{name}' (expected one of {STANDARD_METRICS})")
            if not _is_number(value) or not math.isfinite(value):
                raise InputError(f"{where}: metric '{name}' is not a number: {value!r}")
        source = row.get("source")
        if not isinstance(source, dict) or any(not source.get(k) for k in LITERATURE_SOURCE_FIELDS):
            raise InputError(f"{where}: field 'source' needs {', '.join(LITERATURE_SOURCE_FIELDS)}")
        if not isinstance(row.get("verified"), bool):
            raise InputError(f"{where}: field 'verified' must be true or false")
    return rows


# ---------------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------------


def format_value(value: float | None, digits: int = 3) -> str:
    """0.16512 -> '0.165'; missing or NaN -> '–' (a dash, so empty cells read as 'not reported')."""
    if value is None or not _is_number(value) or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table from a DataFrame of strings (no `tabulate` dependency)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def save_figure(fig, out: str | os.PathLike, close: bool = True, **savefig_kwargs) -> Path:
    """Write a matplotlib figure atomically (temporary file, then rename) and close it (unless close=False:
    the same figure is saved again, e.g. as PDF)."""
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    fig.savefig(tmp, **savefig_kwargs)
    if close:
        plt.close(fig)
    tmp.replace(out)  # a reader never sees half a PNG
    return out
