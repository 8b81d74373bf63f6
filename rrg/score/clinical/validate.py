"""Validate the offline CheXpert-14 labeler against IU X-Ray's manual MeSH annotations.

    python scripts/validate_labeler.py --data_dir data/iu_xray

Labels the findings + impression of every report in indiana_reports.csv with rrg.score.clinical.labeler, maps its
MeSH field to CheXpert observations (rrg.score.clinical.mesh), and writes per-observation precision, recall
and F1 with counts to results/labeler_validation.json; prints the Markdown table of the README and a
sample of disagreements with the sentences that decided the label. Reports without findings and
impression, and reports whose MeSH is "No Indexing", are counted and left out.

The headline treats an uncertain label as positive, because the MeSH annotators index what a report
calls possible or borderline; the JSON also holds the figures with uncertain as negative.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.io import InputError, atomic_write_json
from rrg.score.clinical.f1 import binarize, confusion_counts, prf
from rrg.score.clinical.labeler import OBSERVATIONS, POSITIVE, UNCERTAIN, label_reports, report_mentions
from rrg.score.clinical.mesh import COVERED, MESH_RULES, mesh_observations

BAR_MICRO_F1 = 0.85
BAR_PER_OBSERVATION = (20, 0.75)  # observations with >= 20 MeSH positives need F1 >= 0.75


@dataclass
class ValidateLabelerSettings:
    data_dir: Path = flag(Path("data/iu_xray"), "folder holding indiana_reports.csv")
    out: Path = flag(Path("results/labeler_validation.json"), "JSON result")
    samples: int = flag(3, "disagreements printed per observation and kind (fp/fn)", ge=0)
    seed: int = flag(0, "seed of the disagreement sample", ge=0)


def parse_args(argv: list[str] | None = None) -> ValidateLabelerSettings:
    return parse_flags(ValidateLabelerSettings, argv, description=__doc__)


def load_reports(data_dir: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    path = data_dir / "indiana_reports.csv"
    if not path.is_file():
        raise InputError(f"{path}: file not found (pass --data_dir, the folder of indiana_reports.csv)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in ("uid", "MeSH", "findings", "impression"):
        if column not in table.columns:
            raise InputError(f"{path}: missing column {column!r}")
    table["text"] = (table["findings"].str.strip() + " " + table["impression"].str.strip()).str.strip()
    mesh = [mesh_observations(m, f"{path}: uid {u}: MeSH") for u, m in zip(table["uid"], table["MeSH"])]
    table["mesh"] = mesh
    counts = {
        "reports": len(table),
        "no_text": int((table["text"] == "").sum()),
        "not_annotated": int(sum(m is None for m in mesh)),
    }
    kept = table[(table["text"] != "") & table["mesh"].notna()].reset_index(drop=True)
    counts["validated"] = len(kept)
    return kept, counts


def mesh_labels(table: pd.DataFrame) -> list[dict[str, str | None]]:
    return [{o: (POSITIVE if o in found else None) for o in OBSERVATIONS} for found in table["mesh"]]


def scores(pred: np.ndarray, ref: np.ndarray) -> dict:
    """Per covered observation and micro over them: precision, recall, F1, tp, fp, fn, MeSH positives."""
    counts = confusion_counts(pred, ref)
    idx = [OBSERVATIONS.index(o) for o in COVERED]
    precision, recall, f1 = prf(counts["tp"], counts["fp"], counts["fn"])
    per = {}
    for j in idx:
        per[OBSERVATIONS[j]] = {
            "precision": round(float(precision[j]), 4),
            "recall": round(float(recall[j]), 4),
            "f1": round(float(f1[j]), 4),
            "tp": int(counts["tp"][j]),
            "fp": int(counts["fp"][j]),
            "fn": int(counts["fn"][j]),
            "mesh_positives": int(ref[:, j].sum()),
            "labeler_positives": int(pred[:, j].sum()),
        }
    totals = {k: counts[k][idx].sum() for k in ("tp", "fp", "fn")}
    p, r, f = prf(totals["tp"], totals["fp"], totals["fn"])
    micro = {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
             **{k: int(v) for k, v in totals.items()}}  # fmt: skip
    return {"micro": micro, "per_observation": per}


def bar_check(result: dict) -> dict:
    n_min, f1_min = BAR_PER_OBSERVATION
    failing = [
        o for o, v in result["per_observation"].items() if v["mesh_positives"] >= n_min and v["f1"] < f1_min
    ]
    return {
        "micro_f1_at_least": BAR_MICRO_F1,
        "per_observation": f"F1 >= {f1_min} where MeSH has >= {n_min} positives",
        "micro_f1_met": result["micro"]["f1"] >= BAR_MICRO_F1,
        "observations_below": failing,
        "met": result["micro"]["f1"] >= BAR_MICRO_F1 and not failing,
    }


def markdown(result: dict, other: dict) -> str:
    rows = ["| observation | MeSH positives | labeler positives | tp | fp | fn | precision | recall | F1 | F1 (uncertain = negative) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for o, v in result["per_observation"].items():
        rows.append(
            f"| {o} | {v['mesh_positives']} | {v['labeler_positives']} | {v['tp']} | {v['fp']} | {v['fn']} | "
            f"{v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {other['per_observation'][o]['f1']:.3f} |"
        )
    m = result["micro"]
    rows.append(
        f"| **micro** | | | {m['tp']} | {m['fp']} | {m['fn']} | {m['precision']:.3f} | {m['recall']:.3f} | "
        f"**{m['f1']:.3f}** | {other['micro']['f1']:.3f} |"
    )
    return "\n".join(rows)


def disagreements(table: pd.DataFrame, pred: np.ndarray, ref: np.ndarray, k: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    chosen = []
    for o in COVERED:
        j = OBSERVATIONS.index(o)
        for kind, rows in (
            ("fp", np.flatnonzero(pred[:, j] & ~ref[:, j])),
            ("fn", np.flatnonzero(~pred[:, j] & ref[:, j])),
        ):
            for i in rng.sample(list(rows), min(k, len(rows))):
                chosen.append({"observation": o, "kind": kind, "row": int(i)})
    texts = [table["text"][c["row"]] for c in chosen]
    for c, found in zip(chosen, report_mentions(texts)):
        row = table.iloc[c["row"]]
        c.update(
            uid=row["uid"],
            mesh=row["MeSH"],
            labeler=[
                f"{m.text} -> {m.label}: {m.sentence}" for m in found if m.observation == c["observation"]
            ],
            text=row["text"],
        )
        del c["row"]
    return chosen


@exits_on_input_error
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    table, counts = load_reports(args.data_dir)
    start = time.perf_counter()
    labels = label_reports(list(table["text"]), progress=True)
    seconds = time.perf_counter() - start
    ref = binarize(mesh_labels(table))
    pred = binarize(labels, "positive")
    result = scores(pred, ref)
    other = scores(binarize(labels, "negative"), ref)
    # How the annotators treat what the labeler calls uncertain: indexed (counted positive) or not.
    uncertain = {
        o: {
            "uncertain": sum(row[o] == UNCERTAIN for row in labels),
            "indexed_by_mesh": int(sum(row[o] == UNCERTAIN and ref[i, j] for i, row in enumerate(labels))),
        }
        for j, o in enumerate(OBSERVATIONS)
        if o in COVERED
    }
    sample = disagreements(table, pred, ref, args.samples, args.seed)
    out = {
        "what": "offline CheXpert-14 labeler (rrg.score.clinical.labeler) vs IU X-Ray's manual MeSH annotations "
        "(rrg.score.clinical.mesh), on findings + impression of each report",
        "command": "python scripts/validate_labeler.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "counts": counts,
        "uncertain_as": "positive",
        "observations_covered": list(COVERED),
        "observations_not_covered": [o for o in OBSERVATIONS if o not in COVERED],
        **result,
        "bar": bar_check(result),
        "uncertain_as_negative": other,
        "uncertain_labels_vs_mesh": uncertain,
        "labelling_seconds": round(seconds, 2),
        "mesh_rules": [
            {
                "heading": r.heading,
                "observation": r.observation,
                "qualifiers": sorted(r.qualifiers),
                "excluded": sorted(r.excluded),
                "why": r.why,
            }
            for r in MESH_RULES
        ],  # fmt: skip
        "disagreement_sample": sample,
    }
    atomic_write_json(args.out, out)
    print(markdown(result, other))
    print(f"\n{counts['validated']} reports validated of {counts['reports']} ({counts['no_text']} without text, "
          f"{counts['not_annotated']} 'No Indexing'); labelled in {seconds:.1f} s; bar met: {out['bar']['met']}")  # fmt: skip
    print(f"\ndisagreements (a sample, {args.samples} per observation and kind):")
    for c in sample:
        print(f"- [{c['kind']}] {c['observation']} uid {c['uid']} MeSH: {c['mesh']}")
        print(f"    labeler: {c['labeler'] or 'no mention'}")
        print(f"    text: {c['text']}")
    print(f"\nwrote {args.out}")
    return out
