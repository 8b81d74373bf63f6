"""Score generated reports: `python eval/score.py predictions.jsonl --out scores.json`.

Each line of predictions.jsonl holds "id", "prediction" and "reference" (a string or a list of strings),
optionally "study_id" and "images". Prints a small table and writes the JSON metric card.

--r2gen_compat --train_json data/r2gen/train_report.json scores the texts R2Gen's evaluation scores
(references cut to 59 tokens, words seen fewer than 3 times in train as <unk>, no CIDEr; rrg/r2gen_compat.py),
so that rows on the R2Gen split compare with the papers that reuse its code.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from rrg.cli import exits_on_input_error
from rrg.io import InputError, atomic_write_json
from rrg.metrics import format_card, read_predictions, score_records
from rrg.r2gen_compat import R2GenCompat, R2GenVocabulary, annotate_card, whole_text
from rrg.radeval import RadEvalBackend, add_flags, parse_metrics
from rrg.sections import parse_sections


@dataclass
class ScoreConfig:
    predictions: Path
    out: Path | None = None
    overwrite: bool = False  # replace an existing metric card (otherwise it is an error)
    no_normalize: bool = False  # score the text exactly as given instead of R2Gen-normalised text
    legacy: bool = False  # also run the reference paper's metric code (per line; needs nltk WordNet)
    per_image: bool = False  # score every line, as the reference did, instead of one line per study
    bootstrap: int = 0  # resamples for 95% confidence intervals (0: none)
    seed: int = 0
    labeler: str = "offline"  # CheXpert-14 labels for the clinical block: offline | chexbert | none
    uncertain: str = "positive"  # an uncertain label counts as positive (f1chexbert) or negative
    radgraph: bool = False  # also RadGraph-F1 (the radgraph package; downloads its model on first use)
    r2gen_compat: bool = False  # score the texts R2Gen's own evaluation scores (needs train_json)
    train_json: Path | None = None  # train split (or R2Gen's annotation.json): R2Gen's vocabulary
    radeval: str = ""  # RadEval metrics, comma-separated (rrg.radeval.RadEvalFlags holds the flags' help)
    radeval_trust_remote_code: bool = False  # allow RadEval's GREEN (loads remote code)
    radeval_python: str = ""  # RadEval's environment's python


def parse_args(argv: list[str] | None = None) -> ScoreConfig:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("predictions", type=Path, help="JSONL with id, prediction, reference per line")
    parser.add_argument("--out", type=Path, help="metric card (JSON); default: <predictions>.scores.json")
    parser.add_argument("--overwrite", action="store_true", help="replace the metric card if it exists")
    parser.add_argument(
        "--no_normalize", action="store_true", help="score the text as given, not R2Gen-normalised"
    )
    parser.add_argument("--legacy", action="store_true", help="add the reference paper's metrics (per line)")
    parser.add_argument("--per_image", action="store_true", help="score every line, not each study once")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N", help="95%% CIs from N resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument(
        "--labeler",
        choices=("offline", "chexbert", "none"),
        default="offline",
        help="CheXpert-14 labeler of the clinical block: offline (rule-based, no download; default), "
        "chexbert (f1chexbert package, downloads weights) or none (no clinical block)",
    )
    parser.add_argument(
        "--uncertain",
        choices=("positive", "negative"),
        default="positive",
        help="how an uncertain label counts in clinical F1 (default: positive, as f1chexbert does)",
    )
    parser.add_argument(
        "--radgraph", action="store_true", help="add RadGraph-F1 (radgraph package; downloads its model)"
    )
    parser.add_argument(
        "--r2gen_compat",
        action="store_true",
        help="score as R2Gen did: references cut to 59 tokens, rare words as <unk>, no CIDEr (needs --train_json)",
    )
    parser.add_argument(
        "--train_json",
        type=Path,
        help="train split file (or R2Gen's annotation.json) for --r2gen_compat's vocabulary",
    )
    add_flags(parser)
    config = ScoreConfig(**vars(parser.parse_args(argv)))
    try:
        parse_metrics(config.radeval, config.radeval_trust_remote_code)
    except InputError as e:
        parser.error(str(e))
    if config.bootstrap < 0:
        parser.error("--bootstrap must be >= 0")
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
    atomic_write_json(out, card)
    print(format_card(card))
    print(f"metric card: {out}")
    return card


if __name__ == "__main__":
    main(sys.argv[1:])
