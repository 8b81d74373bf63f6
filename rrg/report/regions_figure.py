"""Region breakdown of score cards made with `eval/score.py --regions`: one panel per metric
(BLEU-4, ROUGE-L, CIDEr, clinical micro F1 over 14 observations), one group of bars per region, one bar
per card, bootstrap 95% intervals as error bars when the cards have them.

    python plot/regions.py --scores plain/scores.json regions/scores.json --labels plain structured \\
        --out results/figures/regions.png

Also prints the rows as a Markdown table (region, studies, metric [interval] per card).
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.data.regions import REGIONS
from rrg.io import InputError, read_json_object
from rrg.report.results import save_figure
from rrg.score.regions import region_rows

PANELS = ("BLEU-4", "ROUGE-L", "CIDEr", "clinical f1_micro_14")


@dataclass
class Settings:
    scores: list[str] = flag(help="score cards with a 'regions' block", nargs="+", default_factory=list)
    labels: list[str] | None = flag(None, "one label per card (default: the file names)", nargs="+")
    out: str = flag("regions.png", "the figure")


def load_rows(path: str) -> dict[str, dict]:
    card = read_json_object(path)
    if "regions" not in card:
        raise InputError(f"{path}: no 'regions' block (score it with eval/score.py --regions)")
    return {row["region"]: row for row in region_rows(card["regions"])}


def markdown(tables: list[dict[str, dict]], labels: list[str]) -> str:
    head = "| region | " + " | ".join(f"{label} {m}" for label in labels for m in PANELS) + " |"
    lines = [head, "|" + "---|" * (1 + len(labels) * len(PANELS))]
    for region in REGIONS:
        cells = []
        for table in tables:
            row = table.get(region, {})
            for m in PANELS:
                value, ci = row.get(m), row.get(f"{m} ci95")
                cells.append(
                    "-" if value is None else f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                )
        lines.append(f"| {region} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(tables: list[dict[str, dict]], labels: list[str], out: str) -> None:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6), squeeze=False)
    x = np.arange(len(REGIONS))
    width = 0.8 / len(tables)
    for ax, metric in zip(axes[0], PANELS, strict=True):
        for k, (table, label) in enumerate(zip(tables, labels, strict=True)):
            values = [table.get(r, {}).get(metric) for r in REGIONS]
            heights = [np.nan if v is None else v for v in values]
            cis = [table.get(r, {}).get(f"{metric} ci95") for r in REGIONS]
            err = np.array(
                [[h - c[0], c[1] - h] if c else [0, 0] for h, c in zip(heights, cis, strict=True)]
            ).T
            ax.bar(x + (k - (len(tables) - 1) / 2) * width, heights, width, yerr=err, capsize=2, label=label)
        ax.set_xticks(x, REGIONS, rotation=30)
        ax.set_title(metric.replace("clinical ", "clinical "))
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    studies = {r: tables[0].get(r, {}).get("studies", 0) for r in REGIONS}
    fig.suptitle(
        "Scores by region (studies with reference text: "
        + ", ".join(f"{r} {n}" for r, n in studies.items())
        + ")",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, out, dpi=120)


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    args = parse_flags(Settings, argv, description=__doc__)
    if not args.scores:
        raise InputError("give at least one score card")
    labels = args.labels or args.scores
    if len(labels) != len(args.scores):
        raise InputError(f"--labels: {len(labels)} labels for {len(args.scores)} score cards")
    tables = [load_rows(p) for p in args.scores]
    plot(tables, labels, args.out)
    print(markdown(tables, labels))
    print(f"wrote {args.out}")
    return 0
