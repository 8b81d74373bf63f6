"""The table of scripts/baselines_mimic_chexpert.sh: each method's scores per section, from its metric cards.

    python scripts/baselines_mimic_chexpert_table.py results/baselines/rexrank_mimic_cxr constant random reference_copy

Writes FOLDER/table.md (BLEU-4, METEOR, ROUGE-L, CIDEr with 95% bootstrap intervals, and the offline
labeler's CheXpert-14 micro F1) from FOLDER/<method>.scores.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rrg.cli import exits_on_input_error  # noqa: E402
from rrg.io import InputError, atomic_write_text, read_json_object  # noqa: E402

METRICS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
TITLES = {
    "rexrank_mimic_cxr": "ReXrank MIMIC-CXR test (2,347 studies)",
    "rexrank_chexpert_plus": "ReXrank CheXpert Plus (200 studies)",
}


def cell(card: dict, section: str, metric: str) -> str:
    value = card["metrics"].get(section, {}).get(metric)
    if value is None:
        return "–"
    low, high = card.get("ci95", {}).get(section, {}).get(metric, (None, None))
    return f"{value:.3f} [{low:.3f}, {high:.3f}]" if low is not None else f"{value:.3f}"


def table(folder: Path, methods: list[str]) -> str:
    lines = [
        f"# {TITLES.get(folder.name, folder.name)}: text-only baselines",
        "",
        "Report pool of constant and random: IU X-Ray's clean-protocol train split (2,332 studies; no train split of "
        "this dataset is available here). reference_copy: the test reference itself (the scorer's maximum). "
        "nearest_indication and prompt_oracle were not run (they need this dataset's train split). "
        "Scores: eval/score.py, pycocoevalcap corpus-level on R2Gen-normalised text, 95% bootstrap intervals; "
        "F1-14: the offline rule-based CheXpert labeler, micro F1 (report section only).",
        "",
        "| method | section | studies | " + " | ".join(METRICS) + " | F1-14 micro |",
        "|---|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    for method in methods:
        path = folder / f"{method}.scores.json"
        if not path.is_file():
            raise InputError(f"{path}: not found (run scripts/baselines_mimic_chexpert.sh)")
        card = read_json_object(path)
        scored = card["counts"]["sections_scored"]
        for section in ("report", "findings", "impression"):
            f1 = card["clinical"]["summary"]["f1_micro_14"] if section == "report" else None
            lines.append(
                f"| {method} | {section} | {scored.get(section, 0)} | "
                + " | ".join(cell(card, section, m) for m in METRICS)
                + f" | {'–' if f1 is None else f'{f1:.3f}'} |"
            )
    return "\n".join(lines) + "\n"


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] in ("-h", "--help"):
        print(f"usage: {Path(__file__).name} FOLDER METHOD [METHOD ...]\n\n{__doc__}")
        return 0 if args[:1] in (["-h"], ["--help"]) else 2
    folder = Path(args[0])
    atomic_write_text(folder / "table.md", table(folder, args[1:]))
    print(f"wrote {folder / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
