"""Fit the sentence-to-region classifier (rrg.data.regions) on WangLab's GPT-4o region splits of the R2Gen
train studies and validate it on the val studies.

    python scripts/validate_regions.py \\
        --regions ../shared/data/wanglab/region_annotations_trainval.json \\
        --annotation ../shared/data/iu_xray/r2gen_annotation.json

Writes the model to rrg/data/region_model.json and the validation to results/region_classifier.json, and
prints the table. The unit is a sentence of the report as R2Gen's annotation holds it (what the
classifier meets at run time); its gold regions are those of the GPT-4o sentences drawn from it
(rrg.data.regions.gold_sentences). Sentences GPT-4o put nowhere are counted and left out.

- sentence accuracy: the classifier's best region is one of the sentence's gold regions;
- exact-set accuracy: its region set equals the gold set;
- per region: precision and recall over (sentence, region) pairs of the region sets.
The same figures are given for a ten-line keyword rule, and for "consistency": how often the gold set
of a val sentence equals the most frequent gold set of the same normalised sentence in train.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.data.regions import (
    MODEL_PATH,
    REGIONS,
    fit,
    gold_units,
    normalise,
    read_region_file,
    save_classifier,
)
from rrg.io import InputError, atomic_write_json, read_json_object


@dataclass
class Settings:
    regions: str = flag(
        "../shared/data/wanglab/region_annotations_trainval.json", "WangLab's region file (train + val)"
    )
    annotation: str = flag("../shared/data/iu_xray/r2gen_annotation.json", "R2Gen's annotation.json")
    model_out: str = flag(str(MODEL_PATH), "where the fitted model goes")
    out: str = flag("results/region_classifier.json", "the validation result")
    examples: int = flag(25, "disagreements kept in the result", ge=0)


def keyword_rule(sentence: str) -> tuple[str, ...]:
    """The baseline: the first region whose word appears (ten lines, as the issue's rule)."""
    s = sentence.lower()
    for region, words in (
        ("heart", ("heart", "cardi")),
        ("mediastinal", ("mediastin", "hilar", "hilum", "aort", "trachea")),
        ("lung", ("lung", "pleura", "pneumothorax", "effusion", "airspace", "opacit", "atelecta")),
        ("bone", ("bone", "bony", "spine", "osseous", "rib", "skelet", "degenerative", "vertebr")),
    ):
        if any(w in s for w in words):
            return (region,)
    return ("others",)


def score(predicted: list[tuple[str, ...]], gold: list[frozenset[str]]) -> dict:
    top = sum(p[0] in g for p, g in zip(predicted, gold, strict=True))
    exact = sum(set(p) == g for p, g in zip(predicted, gold, strict=True))
    per_region = {}
    for r in REGIONS:
        tp = sum(r in p and r in g for p, g in zip(predicted, gold, strict=True))
        n_pred = sum(r in p for p in predicted)
        n_gold = sum(r in g for g in gold)
        per_region[r] = {
            "precision": round(tp / n_pred, 4) if n_pred else None,
            "recall": round(tp / n_gold, 4) if n_gold else None,
            "gold": n_gold,
            "predicted": n_pred,
        }
    return {
        "sentence_accuracy": round(top / len(gold), 4),
        "exact_set_accuracy": round(exact / len(gold), 4),
        "per_region": per_region,
    }


def _most_frequent(counts: Counter):
    """The most frequent key; ties go to the smallest in sorted order (set order varies between runs)."""
    return min(counts, key=lambda k: (-counts[k], sorted(k) if isinstance(k, frozenset) else k))


def disagreement_kinds(units: list, predicted: list[tuple[str, ...]]) -> dict:
    kinds = Counter()
    for (_, gold), p in zip(units, predicted, strict=True):
        if p[0] not in gold:
            kinds[f"{'+'.join(sorted(gold))} called {p[0]}"] += 1
    return dict(kinds.most_common())


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    args = parse_flags(Settings, argv, description=__doc__)
    raw = read_json_object(args.regions)
    if not {"train", "val"} <= set(raw):
        raise InputError(f"{args.regions}: expected 'train' and 'val' lists")
    regions = read_region_file(args.regions)
    annotation = read_json_object(args.annotation)
    reports = {e["id"]: e["report"] for split in annotation.values() for e in split}
    train, train_unassigned = gold_units(regions, reports, raw["train"])
    val, val_unassigned = gold_units(regions, reports, raw["val"])

    classifier = fit([s for s, _ in train], [g for _, g in train])
    save_classifier(classifier, args.model_out)
    predicted = classifier.regions_of([s for s, _ in val])
    gold = [g for _, g in val]
    baseline = [keyword_rule(s) for s, _ in val]

    train_sets: dict[str, Counter] = defaultdict(Counter)
    for s, g in train:
        train_sets[normalise(s)][g] += 1
    seen = [(s, g) for s, g in val if normalise(s) in train_sets]
    consistent = sum(_most_frequent(train_sets[normalise(s)]) == g for s, g in seen)
    # The most frequent single region of the same sentence in train: a memorising oracle's best guess.
    region_counts = {
        k: Counter(r for g, n in c.items() for r in g for _ in range(n)) for k, c in train_sets.items()
    }
    oracle_top = sum(_most_frequent(region_counts[normalise(s)]) in g for s, g in seen)
    two_region = [(s, g) for s, g in val if len(g) > 1]

    result = {
        "what": "sentence-to-region classifier (rrg/data/regions.py) against WangLab's GPT-4o splits, R2Gen val",
        "command": "python scripts/validate_regions.py",
        "train_sentences": len(train),
        "val_sentences": len(val),
        "left_out_unassigned": {"train": train_unassigned, "val": val_unassigned},
        "classifier": score(predicted, gold),
        "keyword_rule": score(baseline, gold),
        "gold_consistency": {
            "val_sentences_also_in_train": len(seen),
            "same_gold_set_as_train_majority": round(consistent / len(seen), 4) if seen else None,
            "train_majority_region_in_val_gold": round(oracle_top / len(seen), 4) if seen else None,
            "classifier_sentence_accuracy_on_these": round(
                sum(p[0] in g for (s, g), p in zip(val, predicted, strict=True) if normalise(s) in train_sets)
                / len(seen),
                4,
            )
            if seen
            else None,
        },
        "two_region_sentences": {
            "val": len(two_region),
            "classifier_exact": round(
                sum(set(p) == g for p, g in zip(predicted, gold, strict=True) if len(g) > 1)
                / len(two_region),
                4,
            )
            if two_region
            else None,
        },
        "disagreements": disagreement_kinds(val, predicted),
        "examples": [
            {"sentence": s, "gold": sorted(g), "predicted": list(p)}
            for (s, g), p in zip(val, predicted, strict=True)
            if set(p) != g
        ][: args.examples],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(f"{'':12} {'classifier':>22} {'keyword rule':>22}")
    for key in ("sentence_accuracy", "exact_set_accuracy"):
        print(f"{key:24} {result['classifier'][key]:>10} {result['keyword_rule'][key]:>22}")
    for r in REGIONS:
        c, k = result["classifier"]["per_region"][r], result["keyword_rule"]["per_region"][r]
        print(f"{r:12} P {c['precision']} R {c['recall']}   |   P {k['precision']} R {k['recall']}")
    print(f"gold consistency (val sentence seen in train): {result['gold_consistency']}")
    print(f"wrote {args.model_out}, {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
