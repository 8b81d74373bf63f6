"""Score generated reports: `python eval/score.py predictions.jsonl --out scores.json`.

Each line of predictions.jsonl holds "id", "prediction" and "reference" (a string or a list of strings),
optionally "study_id" and "images". Prints a small table and writes the JSON metric card.

--r2gen_compat --train_json data/r2gen/train_report.json scores the texts R2Gen's evaluation scores
(references cut to 59 tokens, words seen fewer than 3 times in train as <unk>, no CIDEr; rrg/score/r2gen_compat.py),
so that rows on the R2Gen split compare with the papers that reuse its code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
from rrg.cli import build_parser, check_ranges, exits_on_input_error, flag
from rrg.data.regions import load_classifier
from rrg.data.sections import parse_sections
from rrg.data.split_record import split_of_records
from rrg.io import InputError, atomic_write_json
from rrg.lock import output_lock
from rrg.score.card import format_card, read_predictions, score_records
from rrg.score.r2gen_compat import R2GenCompat, R2GenVocabulary, annotate_card, whole_text
from rrg.score.radeval import METRICS as RADEVAL_METRICS
from rrg.score.radeval import PYTHON_ENV, RadEvalBackend, parse_metrics
from rrg.score.regions import format_regions_table, score_regions


@dataclass
class ScoreConfig:
    predictions: Path = flag(help="JSONL with id, prediction, reference per line.", positional=True)
    out: Path | None = flag(None, "Metric card (JSON); default: <predictions>.scores.json.")
    overwrite: bool = flag(False, "Replace the metric card if it exists (otherwise it is an error).")
    no_normalize: bool = flag(False, "Score the text as given, not R2Gen-normalised.")
    legacy: bool = flag(False, "Add the reference paper's metrics (per line; needs nltk WordNet).")
    per_image: bool = flag(False, "Score every line, as the reference did, not each study once.")
    bootstrap: int = flag(0, "95%% confidence intervals from N resamples (0: none).", ge=0, metavar="N")
    seed: int = flag(0, "Bootstrap seed.", ge=0)
    labeler: Literal["offline", "chexbert", "none"] = flag(
        "offline",
        "CheXpert-14 labeler of the clinical block: offline (rule-based, no download), chexbert "
        "(f1chexbert package, downloads weights) or none (no clinical block).",
    )
    uncertain: Literal["positive", "negative"] = flag(
        "positive", "How an uncertain label counts in clinical F1 (positive, as f1chexbert does, or negative)."
    )
    radgraph: bool = flag(False, "Add RadGraph-F1 (radgraph package; downloads its model on first use).")
    r2gen_compat: bool = flag(
        False,
        "Score as R2Gen did: references cut to 59 tokens, rare words as <unk>, no CIDEr (needs --train_json).",
    )
    train_json: Path | None = flag(
        None, "Train split file (or R2Gen's annotation.json) for --r2gen_compat's vocabulary."
    )
    regions: bool = flag(
        False,
        "Also score each region (lung/heart/mediastinal/bone/others) separately (structured texts as written, "
        "free text split by rrg.data.regions).",
    )
    region_model: Path | None = flag(None, "Region classifier JSON (default: rrg/data/region_model.json).")
    radeval: str = flag(
        "",
        "Comma-separated RadEval metrics for the card's 'radeval' block: " + ",".join(RADEVAL_METRICS)
        + " (run in RadEval's own environment: bash scripts/install_radeval.sh).",
    )
    radeval_trust_remote_code: bool = flag(
        False,
        "Allow RadEval's GREEN, which LOADS AND RUNS REMOTE CODE from its Hugging Face repository "
        "(trust_remote_code=True); required for --radeval green.",
    )
    radeval_python: str = flag("", f"RadEval's Python (default: ${PYTHON_ENV}, else .venv-radeval/bin/python).")


def parse_args(argv: list[str] | None = None) -> ScoreConfig:
    parser = build_parser(ScoreConfig, description=__doc__)
    (config,) = parser.parse_args_into_dataclasses(args=argv)
    try:
        check_ranges(config)
        parse_metrics(config.radeval, config.radeval_trust_remote_code)
    except InputError as e:
        parser.exit(2, f"error: {e}\n")
    if config.r2gen_compat and config.train_json is None:
        parser.error("--r2gen_compat needs --train_json (R2Gen's vocabulary comes from the train reports)")
    if config.train_json is not None and not config.r2gen_compat:
        parser.error("--train_json is used only with --r2gen_compat")
    if config.r2gen_compat and (config.legacy or config.no_normalize):
        parser.error(
            "--r2gen_compat cannot be combined with --legacy or --no_normalize (it sets the text itself)"
        )
    return config


@exits_on_input_error
def main(argv: list[str] | None = None) -> dict:
    config = parse_args(argv)
    out = config.out or config.predictions.with_suffix(".scores.json")
    # the eval run's lock, held from the "exists" check to the write: two scorings into one folder would
    # both pass the check and the second card would silently replace the first
    with output_lock(out.parent, "scoring"):
        return _score(config, out)


def _score(config: ScoreConfig, out: Path) -> dict:
    if out.exists() and not config.overwrite:  # checked before the slow part
        raise InputError(f"{out} exists: pass --overwrite to replace it, or choose another --out")
    radeval = None
    if config.radeval:
        radeval = RadEvalBackend(
            parse_metrics(config.radeval, config.radeval_trust_remote_code),
            python=config.radeval_python or None,
            trust_remote_code=config.radeval_trust_remote_code,
        )
        radeval.check()  # before the slow part
    records = read_predictions(config.predictions)
    split = split_of_records(records)  # before scoring: lines of two splits are refused at once
    compat = None
    if config.r2gen_compat:
        compat = R2GenCompat(R2GenVocabulary.from_file(config.train_json))
        records = compat.transform(records)
    card = score_records(
        records,
        normalize=not config.no_normalize and compat is None,  # R2Gen's texts are already cleaned
        per_image=config.per_image,
        bootstrap=config.bootstrap,
        seed=config.seed,
        legacy=config.legacy,
        source=str(config.predictions),
        labeler=config.labeler,
        uncertain=config.uncertain,
        radgraph=config.radgraph,
        parse=whole_text if compat else parse_sections,
        radeval=radeval,
    )
    if compat:
        annotate_card(card, compat)
    if config.regions:
        card["regions"] = _region_block(records, config)
    if split is not None:
        card["settings"]["split"] = split
    atomic_write_json(out, card)
    print(format_card(card))
    if config.regions:
        print(format_regions_table(card["regions"]))
    print(f"metric card: {out}")
    return card


def _region_block(records: list[dict], config: ScoreConfig) -> dict:
    classifier = load_classifier(config.region_model) if config.region_model else load_classifier()
    return score_regions(
        records,
        classifier,
        normalize=not config.no_normalize,
        per_image=config.per_image,
        bootstrap=config.bootstrap,
        seed=config.seed,
        labeler=config.labeler,
        uncertain=config.uncertain,
    )
