"""The text-only baselines per protocol: BLEU-4 beside clinical F1-14 and F1-5 (figure), every headline metric (table).

    python plot/baselines.py --root results/baselines --summary results/baselines/summary.md

Reads ROOT/<protocol>/<method>.scores.json (and, where present, .r2gen_compat and .legacy cards) as
scripts/baselines.sh writes them. A template report that scores well on BLEU and poorly on clinical F1 is
the point to see: n-gram overlap rewards the dataset's repetitive normal reports. Clinical F1 comes from the
card's clinical block when the card has one (see CLINICAL_F1) and shows as "n/a" otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.io import InputError, atomic_write_text, read_json_object
from rrg.report.results import (
    R2GEN_SPLIT,
    format_value,
    legacy_sections,
    load_literature,
    load_scores,
    save_figure,
)
from rrg.score.baselines import METHODS
from rrg.score.clinical.f1 import LABELER_NAMES

PROTOCOLS = ("clean", "r2gen", "reference")
PROTOCOL_TITLES = {
    "clean": "clean (study-level 70/10/20, no report text in the prompt)",
    "r2gen": "r2gen (R2Gen's 2,069 / 296 / 590 split)",
    "reference": "reference (the paper's 80/20, Problems labels in the prompt)",
}
SUMMARY_METRICS = ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
# The clinical F1s shown, and where a score card's clinical block (rrg.score.clinical.f1) holds them. Micro F1 over
# the 14 observations is dominated by No Finding, which a "normal" template gets right; over the 5 most used
# findings it asks whether the abnormal findings are right (a template scores 0).
CLINICAL_F1 = {
    "F1-14 micro": ("clinical", "summary", "f1_micro_14"),
    "F1-5 micro": ("clinical", "summary", "f1_micro_5"),
}


def clinical_f1(card: dict) -> dict[str, float | None]:
    """The card's clinical F1s (CLINICAL_F1's names), None where the card has no clinical block."""
    out: dict[str, float | None] = {}
    for name, path in CLINICAL_F1.items():
        value = card
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and (
            not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
        ):
            raise InputError(f"clinical F1 at {'.'.join(path)} is not a number: {value!r}")
        out[name] = None if value is None else float(value)
    return out


@dataclass
class BaselinesPlotConfig:
    root: Path = flag(Path("results/baselines"), "folder of <protocol>/<method>.scores.json")
    out: Path = flag(Path("results/baselines/baselines.png"), "PNG to write")
    summary: Path | None = flag(None, "also write this Markdown table (None: no table)")


def parse_args(argv: list[str] | None = None) -> BaselinesPlotConfig:
    return parse_flags(BaselinesPlotConfig, argv, description=__doc__)


@dataclass
class Row:
    protocol: str
    method: str
    scoring: str
    metrics: dict[str, float | None]
    clinical: dict[str, float | None]
    labeler: str | None = None  # the clinical block's labeler (a card without one: None)


def card_path(root: Path, protocol: str, method: str, kind: str = "") -> Path:
    return root / protocol / f"{method}{'.' + kind if kind else ''}.scores.json"


def labeler_of(card: dict) -> str | None:
    clinical = card.get("clinical")
    return clinical.get("labeler") if isinstance(clinical, dict) else None


def labeler_names(rows: list[Row]) -> str:
    """How the tables and the figure name the clinical F1s' labeler: offline figures are never to be set
    beside CheXbert's (docs/leaderboard-metrics.md)."""
    names = sorted({LABELER_NAMES.get(r.labeler, r.labeler) for r in rows if r.labeler and r.labeler != "none"})
    return " / ".join(names) or "no labeler"


def load_rows(root: Path) -> list[Row]:
    """Standard rows for every protocol and method, plus R2Gen-compatible and legacy rows where present."""
    rows = []
    found = False
    for protocol in PROTOCOLS:
        for method in METHODS:
            path = card_path(root, protocol, method)
            if not path.exists():
                continue
            found = True
            card = load_scores(path)
            raw = read_json_object(path)
            rows.append(
                Row(protocol, method, "standard", card.metrics["report"], clinical_f1(raw), labeler_of(raw))
            )
            compat = card_path(root, protocol, method, "r2gen_compat")
            if compat.exists():
                metrics = load_scores(compat).metrics["report"]
                raw = read_json_object(compat)
                rows.append(Row(protocol, method, "R2Gen-compatible", metrics, clinical_f1(raw), labeler_of(raw)))
            legacy = card_path(root, protocol, method, "legacy")
            if legacy.exists():
                metrics = legacy_sections(load_scores(legacy)).get("findings", {})
                no_clinical = dict.fromkeys(CLINICAL_F1)
                rows.append(Row(protocol, method, "legacy, per image (findings)", metrics, no_clinical))
    if not found:
        raise InputError(f"{root}: no <protocol>/<method>.scores.json (run scripts/baselines.sh first)")
    return rows


def summary_markdown(rows: list[Row]) -> str:
    header = ["protocol", "method", "scoring", *SUMMARY_METRICS, *(f"{n}, {labeler_names(rows)}" for n in CLINICAL_F1)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * (len(header) - 3)]
    for row in rows:
        cells = [format_value(row.metrics.get(m)) for m in SUMMARY_METRICS]
        clinical = ["n/a" if v is None else format_value(v) for v in row.clinical.values()]
        lines.append("| " + " | ".join([row.protocol, row.method, row.scoring, *cells, *clinical]) + " |")
    note = (
        "Report section, one line per study, pycocoevalcap corpus-level, R2Gen-normalised text ('standard'); "
        "'R2Gen-compatible' = eval/score.py --r2gen_compat (references cut to 59 tokens, rare words as <unk>, no "
        "CIDEr); 'legacy' = the reference paper's metric code on every line, findings section (its own "
        "BLEU and METEOR; no CIDEr). '–' = not computed. Clinical F1: CheXpert labels of the offline labeler, "
        "micro F1 over the 14 observations and over the 5 most used (uncertain = positive); 'n/a' = no clinical "
        "block in the card."
    )
    return "\n".join(lines) + "\n\n" + note + "\n"


def literature_band(split: str) -> tuple[float, float, list[str]] | None:
    """(lowest, highest, models) of the published BLEU-4 on a split (plot/literature.json), if any."""
    rows = [r for r in load_literature() if r["split"] == split and "BLEU-4" in r["metrics"]]
    if not rows:
        return None
    values = [r["metrics"]["BLEU-4"] for r in rows]
    return min(values), max(values), [r["model"] for r in rows]


def panel_rows(rows: list[Row], protocol: str) -> tuple[list[Row], str]:
    """The rows a panel shows: R2Gen-compatible scores where the protocol has them (they compare with the
    published R2Gen-split numbers), standard scores otherwise."""
    compat = [r for r in rows if r.protocol == protocol and r.scoring == "R2Gen-compatible"]
    if compat:
        return compat, "BLEU-4 R2Gen-compatible"
    return [r for r in rows if r.protocol == protocol and r.scoring == "standard"], "BLEU-4"


def plot_baselines(rows: list[Row], out: Path) -> Path:
    protocols = [p for p in PROTOCOLS if any(r.protocol == p for r in rows)]
    fig, axes = plt.subplots(
        1, len(protocols), figsize=(5.2 * len(protocols), 4.8), squeeze=False, sharey=True
    )
    width = 0.27
    colours = {"F1-14 micro": "tab:orange", "F1-5 micro": "tab:green"}
    # The reference copy scores 1 by construction: clip its bars so the baselines stay readable.
    others = [
        v
        for r in rows
        if r.method != "reference_copy"
        for v in (r.metrics.get("BLEU-4"), *r.clinical.values())
        if v is not None
    ]
    top = max(0.3, 1.3 * max(others, default=0.0))
    legend_band = "published models on the R2Gen split"
    for ax, protocol in zip(axes[0], protocols):
        mine, bleu_name = panel_rows(rows, protocol)
        x = np.arange(len(mine))
        for i, row in enumerate(mine):
            series = [(x[i] - width, row.metrics.get("BLEU-4"), "tab:blue")]
            series += [(x[i] + k * width, row.clinical[n], colours[n]) for k, n in enumerate(CLINICAL_F1)]
            for position, value, colour in series:
                if value is None:  # an outline where the bar would be, so the gap reads as "not measured"
                    ax.bar(position, 0.02 * top, width, fill=False, hatch="///", edgecolor=colour)
                    ax.text(position, 0.025 * top, "n/a", ha="center", va="bottom", fontsize=7, color=colour)
                    continue
                if value > top:  # clipped: the value written inside the bar
                    ax.bar(position, top, width, color=colour, hatch="//")
                    ax.text(position, 0.5 * top, f"{format_value(value)} ↑", rotation=90, ha="center",
                            va="center", fontsize=8, color="white", weight="bold")  # fmt: skip
                    continue
                ax.bar(position, value, width, color=colour)
                ax.text(
                    position, value + 0.01 * top, format_value(value), ha="center", va="bottom", fontsize=7
                )
        band = literature_band(R2GEN_SPLIT) if protocol == "r2gen" else None
        if band:
            ax.axhspan(band[0], band[1], color="grey", alpha=0.3, zorder=0)
            legend_band = f"published models on the R2Gen split, BLEU-4 {band[0]:.3f}–{band[1]:.3f}"
        ax.set_xticks(x, [r.method.replace("_", "\n") for r in mine], fontsize=8)
        ax.set_title(f"{PROTOCOL_TITLES[protocol]}\nblue: {bleu_name}", fontsize=9)
        ax.set_ylim(0, top)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0][0].set_ylabel("score (report, one line per study)")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color="tab:blue"),
        *(plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()),
        plt.Rectangle((0, 0), 1, 1, fill=False, hatch="///", edgecolor="grey"),
        plt.Rectangle((0, 0), 1, 1, color="grey", alpha=0.3),
    ]
    labels = ["BLEU-4", *(f"{n}, {labeler_names(rows)}" for n in colours), "not in the card (n/a)", legend_band]
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(
        "Text-only baselines on IU X-Ray: no image, reports taken from the train split (↑: bar clipped)",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save_figure(fig, out, dpi=130)


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    rows = load_rows(config.root)
    out = plot_baselines(rows, config.out)
    print(f"wrote {out}")
    if config.summary:
        atomic_write_text(config.summary, summary_markdown(rows))
        print(f"wrote {config.summary}")
