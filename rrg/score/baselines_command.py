"""Text-only baselines: `python eval/baselines.py --method constant --out runs/baseline-constant`.

Writes OUT/predictions.jsonl in the eval scripts' schema (score it with eval/score.py, tabulate it with
plot/make_tables.py) and OUT/baseline.json (settings and the counts of every rule-based choice: ties,
missing indications, fallbacks). No model and no images: the reports come from the train split
(rrg/score/baselines.py describes the methods). Deterministic for a given --seed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rrg.cli import RUNS_DIR, exits_on_input_error, flag, parse_flags
from rrg.data.entries import Entry, load_entries
from rrg.data.split_record import split_record
from rrg.io import InputError, atomic_write_json, atomic_write_text
from rrg.score.baselines import METHODS, run_baseline


@dataclass
class BaselineConfig:
    method: str = flag(help="Which baseline.", choices=METHODS)
    json_file: Path = flag(Path("data/test_report.json"), "Split file to predict.")
    train_json: Path = flag(Path("data/train_report.json"), "Split file the reports are taken from.")
    out: Path | None = flag(None, f"Output folder (default: {RUNS_DIR}/baseline-<method>-<json_file stem>).")
    seed: int = flag(0, "Seed of the random method's draws.", ge=0)

    def out_dir(self) -> Path:
        return self.out or Path(RUNS_DIR) / f"baseline-{self.method}-{self.json_file.stem}"


def parse_args(argv: list[str] | None = None) -> BaselineConfig:
    return parse_flags(BaselineConfig, argv, description=__doc__)


def prediction_line(entry: Entry, prediction: str, identity: dict, baseline: dict) -> dict:
    """The keys of rrg.generate.batch's prediction lines (tests check they match), plus what the baseline chose."""
    return {
        "id": entry.id,
        "study_id": entry.study_id,
        "images": entry.images,
        "prompt": entry.prompt,
        "prediction": prediction,
        "reference": entry.response,
        "reference_findings": entry.findings,
        "reference_impression": entry.impression,
        **identity,
        "baseline": baseline,
    }


@exits_on_input_error
def main(argv: list[str] | None = None) -> dict:
    config = parse_args(argv)
    test = load_entries(config.json_file)
    train = load_entries(config.train_json)
    if not test:
        raise InputError(f"{config.json_file}: no entries")
    result = run_baseline(config.method, train, test, seed=config.seed)
    identity = {
        "image_control": "none",
        "generation": {"method": config.method, "seed": config.seed, "train_json": str(config.train_json)},
        "model": f"baseline:{config.method}",
        "adapter": None,
        "split": split_record(config.json_file),  # so the card (eval/score.py) records its split
    }
    lines = []
    for entry in test:
        choice = result.choices[entry.study_id]
        baseline = {"source_study": choice.source_study, "rule": choice.rule}
        lines.append(prediction_line(entry, choice.text, identity, baseline))
    out = config.out_dir()
    predictions = out / "predictions.jsonl"
    # Written whole and renamed into place: a rerun replaces the file, never appends to it.
    atomic_write_text(predictions, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    summary = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "counts": {"test_entries": len(test), **result.counts},
        "predictions": str(predictions),
    }
    summary["settings"]["out"] = str(out)
    atomic_write_json(out / "baseline.json", summary)
    print(
        f"{config.method}: {len(lines)} predictions for {result.counts['test_studies']} studies -> {predictions}"
    )
    print("counts: " + ", ".join(f"{k} {v}" for k, v in summary["counts"].items()))
    return summary
