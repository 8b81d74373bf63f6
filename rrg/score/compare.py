"""Paired significance between runs on the same studies:

    python eval/compare.py --runs runs/a/predictions.jsonl runs/b [name=runs/c/predictions.jsonl ...] \\
        --out results/compare/a_vs_b

The first run is the baseline; every other run is compared with it (RadEval's compare_systems semantics).
For every metric of the score card (BLEU-1..4, METEOR, ROUGE-L, CIDEr per section, ReXrank's BLEU-2, the
clinical F1 summary) writes the difference with its paired-bootstrap 95% interval and an
approximate-randomization p-value: <out>/compare.json, <out>/compare.md, <out>/compare.png. Runs on
different study sets (or with other references) are refused, the ids named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.io import InputError, atomic_write_json, atomic_write_text
from rrg.score.significance import compare_runs, format_markdown, plot_differences, read_run


@dataclass
class CompareSettings:
    runs: list[str] = flag(
        default_factory=list,
        help="Predictions files or run folders (holding predictions.jsonl), optionally NAME=PATH; the first "
        "is the baseline.",
        nargs="+",
    )
    out: str = flag("compare", "Folder for compare.json, compare.md and compare.png.")
    bootstrap: int = flag(1000, "Paired-bootstrap resamples of the studies.", ge=1)
    permutations: int = flag(1000, "Approximate-randomization trials (RadEval's n_samples).", ge=1)
    seed: int = flag(0, "Seed of the resamples and trials.", ge=0)
    labeler: str = flag(
        "offline",
        "CheXpert-14 labeler for the clinical F1 rows: offline (rules), chexbert (f1chexbert) or none.",
        choices=["offline", "chexbert", "none"],
    )
    uncertain: str = flag("positive", "How an uncertain label counts.", choices=["positive", "negative"])
    meteor: bool = flag(True, "Include METEOR (runs meteor-1.5.jar: needs Java); --no_meteor leaves it out.")
    alpha: float = flag(0.05, "Significance level of the table's * and the figure's colour.", gt=0, lt=1)
    overwrite: bool = flag(False, "Replace the files in --out.")


@exits_on_input_error
def main(argv: list[str] | None = None) -> dict:
    settings = parse_flags(CompareSettings, argv, description=__doc__)
    out = Path(settings.out)
    files = [out / "compare.json", out / "compare.md", out / "compare.png"]
    if any(f.exists() for f in files) and not settings.overwrite:
        raise InputError(
            f"{out}: holds compare.* from an earlier run: pass --overwrite or choose another --out"
        )
    if len(settings.runs) < 2:
        raise InputError("--runs: give two or more runs (the first is the baseline)")
    runs = [read_run(spec) for spec in settings.runs]
    result = compare_runs(
        runs,
        bootstrap=settings.bootstrap,
        permutations=settings.permutations,
        seed=settings.seed,
        labeler=settings.labeler,
        uncertain=settings.uncertain,
        meteor=settings.meteor,
    )
    result["settings"]["alpha"] = settings.alpha
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(files[0], result)
    markdown = format_markdown(result, settings.alpha)
    atomic_write_text(files[1], markdown)
    plot_differences(result, files[2], settings.alpha)
    print(markdown)
    print("wrote " + ", ".join(map(str, files)))
    return result
