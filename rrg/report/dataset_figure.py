"""One figure describing the IU X-Ray split files: studies per split, views, report lengths, frequent reports.

    python plot/dataset.py --data_dir data/ --out runs/figures/dataset.png

Reads {train,val,test}_report.json (whichever exist) and reports.csv from --data_dir
(written by data/report2json.py).
"""

from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.data.entries import Entry, load_entries
from rrg.data.iu_xray import read_csv_checked
from rrg.data.protocols import SPLIT_NAMES, split_path
from rrg.io import InputError
from rrg.report.results import save_figure

SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


@dataclass
class PlotConfig:
    data_dir: str = flag("data", "Folder holding the split JSONs and reports.csv.", nonempty=True)
    out: str = flag("runs/figures/dataset.png", "PNG to write.", nonempty=True)
    top: int = flag(10, "How many frequent reports to list.", ge=0)


def load_splits(data_dir: Path) -> dict[str, list[Entry]]:
    splits = {
        name: load_entries(split_path(data_dir, name))
        for name in SPLIT_NAMES
        if split_path(data_dir, name).exists()
    }
    if not splits:
        raise InputError(f"{data_dir}: no train/val/test_report.json (run data/report2json.py first)")
    return splits


def one_per_study(entries: list[Entry]) -> list[Entry]:
    """The reference protocol has one entry per image; count each study once."""
    return list({e.study_id: e for e in entries}.values())


def plot_studies(ax, splits: dict[str, list[Entry]]) -> None:
    names = list(splits)
    counts = [len(one_per_study(splits[n])) for n in names]
    bars = ax.bar(names, counts, color=[SPLIT_COLOURS.get(n, "grey") for n in names])
    ax.bar_label(bars, labels=[f"{c:,}" for c in counts], padding=2)
    ax.set_title("Studies per split")
    ax.set_ylabel("studies")
    ax.margins(y=0.15)


def plot_views(ax, splits: dict[str, list[Entry]]) -> None:
    views = sorted({v for entries in splits.values() for e in entries for v in e.views}) or ["(none)"]
    width = 0.8 / len(splits)
    for i, (name, entries) in enumerate(splits.items()):
        counts = Counter(v for e in entries for v in e.views)
        xs = [j + (i - (len(splits) - 1) / 2) * width for j in range(len(views))]
        bars = ax.bar(xs, [counts.get(v, 0) for v in views], width, label=name, color=SPLIT_COLOURS.get(name))
        ax.bar_label(bars, labels=[f"{counts.get(v, 0):,}" for v in views], padding=2, fontsize=8)
    ax.set_xticks(range(len(views)), views)
    ax.set_title("Images per view (in the split files)")
    ax.set_ylabel("images")
    ax.legend()
    ax.margins(y=0.15)


def plot_lengths(ax, splits: dict[str, list[Entry]]) -> None:
    lengths = {
        name: [len(e.response.split()) for e in one_per_study(entries)] for name, entries in splits.items()
    }
    top = max(max(v, default=0) for v in lengths.values())
    bins = range(0, top + 5, 5)
    for name, values in lengths.items():
        # Each study weighs 1/n, so a bin's height is the fraction of the split's studies in it (density=True
        # would divide by the 5-word bin width too) and splits of different sizes compare.
        ax.hist(
            values,
            bins=bins,
            weights=np.full(len(values), 1 / max(len(values), 1)),
            histtype="step",
            linewidth=1.8,
            label=name,
            color=SPLIT_COLOURS.get(name),
        )
    ax.set_title("Report length (findings + impression)")
    ax.set_xlabel("words (bins of 5)")
    ax.set_ylabel("fraction of studies")
    ax.legend()


def plot_frequent_reports(ax, table, top: int) -> None:
    """The most repeated reports over studies that have both sections (what a template model would write)."""
    both = table[table["findings"].notna() & table["impression"].notna()]
    reports = (both["findings"].astype(str) + " | " + both["impression"].astype(str)).map(
        lambda t: " ".join(t.split())
    )
    common = Counter(reports).most_common(top)[::-1]
    labels = [
        textwrap.fill(textwrap.shorten(text, width=150, placeholder=" ..."), width=80) for text, _ in common
    ]
    bars = ax.barh(range(len(common)), [n for _, n in common], color="tab:purple")
    ax.bar_label(bars, padding=2)
    ax.set_yticks(range(len(common)), labels, fontsize=8)
    ax.set_title(f"Most frequent reports (findings | impression), {len(both):,} studies with both sections")
    ax.set_xlabel("studies")
    ax.margins(x=0.08)


@exits_on_input_error
def main(argv: list[str] | None = None) -> int:
    config = parse_flags(PlotConfig, argv, description=__doc__)
    data_dir = Path(config.data_dir)
    splits = load_splits(data_dir)
    table = read_csv_checked(data_dir / "reports.csv", ("uid", "findings", "impression"))
    fig = plt.figure(figsize=(17, 12), layout="constrained")
    # Two sub-figures, so the long report labels below do not squeeze the three panels above.
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.2])
    ax_studies, ax_views, ax_lengths = top.subplots(1, 3)
    plot_studies(ax_studies, splits)
    plot_views(ax_views, splits)
    plot_lengths(ax_lengths, splits)
    plot_frequent_reports(bottom.subplots(), table, config.top)
    fig.suptitle(f"IU X-Ray splits in {data_dir}", fontsize=14)
    out = save_figure(fig, config.out, dpi=110)
    print(f"wrote {out}")
    return 0
