"""The metric card region by region: every metric of the card (n-gram, clinical, intervals) on the
lung / heart / mediastinal / bone / others text of each study.

A region-structured text ("Lung: ...\\nHeart: ...") is read as written; a free-text one has its
Findings (its whole body when it has no Findings heading) split into regions by the same sentence
classifier that builds the structured targets (rrg.data.regions), so a plain model and a structured one
are compared region by region on the same footing. A study counts for a region when its reference
has text there; an empty predicted region is scored as empty.
"""

from __future__ import annotations

from collections.abc import Callable

from rrg.data.regions import REGIONS, RegionClassifier, regions_of_text
from rrg.data.sections import parse_sections
from rrg.score.card import score_records
from rrg.score.ngram import METRICS

SUMMARY_METRICS = ("BLEU-4", "ROUGE-L", "CIDEr")


def _region_texts(text: str, classifier: RegionClassifier) -> tuple[dict[str, str], bool]:
    regions, structured = regions_of_text(_before_impression(text), classifier)
    if structured:
        return regions, True
    sections = parse_sections(text)
    findings = sections.findings if sections.findings is not None else sections.body
    return regions_of_text(findings, classifier)[0], False


def _before_impression(text: str) -> str:
    """A structured text's region lines: what comes before its "Impression:" line."""
    lines = text.splitlines()
    for k, line in enumerate(lines):
        if line.strip().lower().startswith("impression:"):
            return "\n".join(lines[:k])
    return text


def score_regions(
    records: list[dict], classifier: RegionClassifier, score: Callable[..., dict] = score_records, **kwargs
) -> dict:
    """{"regions": {region: card or None}, "counts": ...}; kwargs go to score_records (bootstrap,
    labeler, seed...). Each record's first reference is its region reference."""
    per_region: dict[str, list[dict]] = {r: [] for r in REGIONS}
    structured = {"prediction": 0, "reference": 0}
    for record in records:
        refs = record["reference"]
        reference = refs if isinstance(refs, str) else refs[0]
        pred, pred_structured = _region_texts(record["prediction"], classifier)
        ref, ref_structured = _region_texts(reference, classifier)
        structured["prediction"] += pred_structured
        structured["reference"] += ref_structured
        for region in REGIONS:
            if ref[region].strip():
                keep = {k: record[k] for k in ("id", "study_id", "images", "_where") if k in record}
                per_region[region].append({**keep, "prediction": pred[region], "reference": ref[region]})
    cards = {
        region: score(rows, **kwargs, source=f"region {region}") if rows else None
        for region, rows in per_region.items()
    }
    return {
        "regions": cards,
        "counts": {
            "records": len(records),
            "structured": structured,
            "studies_with_reference_text": {r: len(v) for r, v in per_region.items()},
        },
        "notes": [
            "free-text predictions and references: Findings split into regions by rrg.data.regions' classifier",
            "a study counts for a region when its reference has text there",
        ],
    }


def region_rows(block: dict) -> list[dict]:
    """One row per region: study count, the summary n-gram metrics (with intervals), clinical micro F1."""
    rows = []
    for region in REGIONS:
        card = block["regions"].get(region)
        if card is None:
            continue
        row = {"region": region, "studies": card["counts"]["scored"]}
        ci = (card.get("ci95") or {}).get("report") or {}
        for metric in METRICS:
            row[metric] = card["metrics"]["report"][metric]
            if metric in ci:
                row[f"{metric} ci95"] = ci[metric]
        clinical = card.get("clinical", {})
        if "summary" in clinical:
            for key, value in clinical["summary"].items():
                row[f"clinical {key}"] = value
                if key in clinical.get("ci95", {}):
                    row[f"clinical {key} ci95"] = clinical["ci95"][key]
        rows.append(row)
    return rows


def format_regions_table(block: dict) -> str:
    rows = region_rows(block)
    keys = [*SUMMARY_METRICS, "clinical f1_micro_14", "clinical f1_micro_5"]
    lines = [f"{'region':<12}{'studies':>8}" + "".join(f"{k.removeprefix('clinical '):>22}" for k in keys)]
    for row in rows:
        cells = []
        for key in keys:
            value, ci = row.get(key), row.get(f"{key} ci95")
            cell = "-" if value is None else f"{value:.4f}"
            if ci:
                cell += f" [{ci[0]:.2f}-{ci[1]:.2f}]"
            cells.append(cell)
        lines.append(f"{row['region']:<12}{row['studies']:>8}" + "".join(f"{c:>22}" for c in cells))
    counts = block["counts"]["structured"]
    lines.append(
        f"region-structured: {counts['prediction']} predictions, {counts['reference']} references "
        f"of {block['counts']['records']} (the rest split by the sentence classifier)"
    )
    return "\n".join(lines)
