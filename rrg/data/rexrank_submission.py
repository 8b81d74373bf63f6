"""Write a ReXrank submission file from our predictions:

    python eval/rexrank_submission.py --predictions runs/x/predictions.jsonl \\
        --test_json ../shared/data/rexrank/ReXRank_IUXray_test.json --out submission.json [--section findings]

The output is ReXrank's prediction.json layout: the test file's entries, every field as it is there, plus
`model_prediction`. Each prediction line's "id" must be ReXrank's study key (the rexrank protocol's split
files use them as ids); a study of the test file without a prediction, or a prediction of a study the
test file lacks, is refused with the ids named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.data.rexrank import build_submission, read_rexrank, write_submission
from rrg.io import InputError, iter_jsonl


@dataclass
class SubmissionSettings:
    predictions: str = flag("predictions.jsonl", "Our predictions (JSONL with id and prediction per line).")
    test_json: str = flag("", "ReXrank's test file (e.g. ReXRank_IUXray_test.json).", nonempty=True)
    out: str = flag("submission.json", "Where the submission file goes.")
    section: str = flag(
        "report",
        "What model_prediction holds: report (the whole text) or findings (its findings section, for the "
        "findings board; the whole text when it has no Findings heading).",
        choices=["report", "findings"],
    )
    overwrite: bool = flag(False, "Replace --out if it exists.")


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    settings = parse_flags(SubmissionSettings, argv, description=__doc__)
    out = Path(settings.out)
    if out.exists() and not settings.overwrite:
        raise InputError(f"{out} exists: pass --overwrite to replace it")
    test = read_rexrank(settings.test_json)
    predictions = []
    for line, record in iter_jsonl(settings.predictions):
        if not isinstance(record.get("prediction"), str):
            raise InputError(f"{settings.predictions}:{line}: field 'prediction' must be a string")
        predictions.append(record)
    submission = build_submission(test, predictions, source=settings.predictions, section=settings.section)
    write_submission(out, submission)
    print(f"wrote {out}: {len(submission)} studies")
    return 0
