"""Variants of the sentence-to-region classifier, chosen on train, scored on val (prints a table).

    python scripts/region_variants.py    # 7 minutes on 2 shared CPU cores

Each variant is a one-vs-rest logistic regression (as rrg.data.regions.fit) on TF-IDF features: word 1-2-grams
(the committed model), plus character 2-5-grams, plus the previous sentence's words (prefixed "p"), at
several C. Each is scored by 5-fold cross-validation on the train sentences, grouped by study (what a
choice may look at), and once on val (sentence accuracy: the best region is a gold region). Nothing is
written: rrg/data/region_model.json stays what scripts/validate_regions.py fits.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_union
from sklearn.preprocessing import MultiLabelBinarizer
from tqdm.auto import tqdm

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.data.regions import REGIONS, gold_units, normalise, read_region_file
from rrg.io import InputError, read_json_object

VARIANTS = [  # (features, previous sentence, C)
    ("word", False, 3.0),
    ("word", False, 10.0),
    ("word", False, 30.0),
    ("word+char", False, 3.0),
    ("word+char", False, 10.0),
    ("word+char", False, 30.0),
    ("word", True, 3.0),
    ("word", True, 10.0),
    ("word+char", True, 3.0),
    ("word+char", True, 10.0),
]


@dataclass
class Settings:
    regions: str = flag(
        "../shared/data/wanglab/region_annotations_trainval.json", "WangLab's region file (train + val)"
    )
    annotation: str = flag("../shared/data/iu_xray/r2gen_annotation.json", "R2Gen's annotation.json")
    folds: int = flag(5, "cross-validation folds on train (grouped by study)", ge=2)


def units(raw: dict, regions: dict, reports: dict, split: str) -> tuple[list, list[str]]:
    """The split's (sentence, gold) units in report order, and each one's study id."""
    out, studies = [], []
    for item in raw[split]:
        found, _ = gold_units(regions, reports, [item])
        out += found
        studies += [item["id"]] * len(found)
    return out, studies


def texts(found: list, studies: list[str], previous: bool) -> list[str]:
    out = []
    for i, (sentence, _) in enumerate(found):
        text = normalise(sentence)
        if previous and i and studies[i - 1] == studies[i]:
            text += " " + " ".join("p" + w for w in normalise(found[i - 1][0]).split())
        out.append(text)
    return out


def vectorizer(features: str):
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    if features == "word":
        return words
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
    return make_union(words, chars)


def accuracy(x_fit, y_fit, x_test, gold, features: str, c: float) -> float:
    vec = vectorizer(features)
    model = OneVsRestClassifier(LogisticRegression(C=c, max_iter=3000)).fit(vec.fit_transform(x_fit), y_fit)
    best = model.predict_proba(vec.transform(x_test)).argmax(axis=1)
    return float(np.mean([REGIONS[b] in g for b, g in zip(best, gold, strict=True)]))


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    args = parse_flags(Settings, argv, description=__doc__)
    raw = read_json_object(args.regions)
    if not {"train", "val"} <= set(raw):
        raise InputError(f"{args.regions}: expected 'train' and 'val' lists")
    regions = read_region_file(args.regions)
    reports = {e["id"]: e["report"] for split in read_json_object(args.annotation).values() for e in split}
    train, train_studies = units(raw, regions, reports, "train")
    val, val_studies = units(raw, regions, reports, "val")
    y = MultiLabelBinarizer(classes=list(REGIONS)).fit_transform([set(g) for _, g in train])
    train_gold, val_gold = [g for _, g in train], [g for _, g in val]
    print(f"{'features':10} {'previous':>8} {'C':>5} {'CV train':>9} {'val':>7}")
    for features, previous, c in tqdm(VARIANTS, desc="variants"):
        x, x_val = texts(train, train_studies, previous), texts(val, val_studies, previous)
        folds = GroupKFold(args.folds).split(x, groups=train_studies)
        cv = np.mean(
            [
                accuracy([x[i] for i in a], y[a], [x[i] for i in b], [train_gold[i] for i in b], features, c)
                for a, b in folds
            ]
        )
        score = accuracy(x, y, x_val, val_gold, features, c)
        tqdm.write(f"{features:10} {str(previous):>8} {c:>5g} {cv:>9.4f} {score:>7.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
