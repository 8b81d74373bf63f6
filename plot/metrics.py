"""Metric bars from score cards: one panel per report section, with bootstrap 95% intervals as error bars,
and (when a card holds an image control) a panel of real-minus-control differences.

    python plot/metrics.py results/reference/lora/scores.json results/reference/zero_shot/scores.json \
        --out results/figures/metrics.png

The control panel answers "does the model use the image?": a report scored against blank or shuffled
images should lose points; a difference near zero means the text is written from the prompt alone.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rrg.cli import exits_on_input_error
from rrg.results import SECTIONS, STANDARD_METRICS, ScoreCard, load_scores, save_figure


@dataclass
class MetricsPlotConfig:
    scores: list[str]
    out: str = "metrics.png"
    labels: list[str] | None = None
    sections: list[str] | None = None


def parse_args(argv: list[str] | None = None) -> MetricsPlotConfig:
    # argparse rather than HfArgumentParser: the score cards are positional arguments.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores", nargs="+", help="scores.json files written by the evaluation.")
    parser.add_argument("--out", default=MetricsPlotConfig.out, help="Output PNG.")
    parser.add_argument("--labels", nargs="+", help="Legend names, one per card (default: results/<name>).")
    parser.add_argument(
        "--sections", nargs="+", help=f"Sections to show (default: those present of {SECTIONS})."
    )
    config = MetricsPlotConfig(**vars(parser.parse_args(argv)))
    if config.labels and len(config.labels) != len(config.scores):
        parser.error(f"--labels has {len(config.labels)} names for {len(config.scores)} cards")
    return config


def _value(table: dict, section: str, metric: str) -> float:
    value = table.get(section, {}).get(metric)
    return float(value) if value is not None else np.nan


def _bar_group(
    ax, values: np.ndarray, errors: np.ndarray | None, labels: list[str], colours: list | None = None
) -> None:
    """Grouped bars: x = metric, one bar per series; `errors` is (series, 2, metric) or None."""
    n_series = len(labels)
    width = 0.8 / max(n_series, 1)
    x = np.arange(len(STANDARD_METRICS))
    colours = colours or plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, label in enumerate(labels):
        offset = (i - (n_series - 1) / 2) * width
        yerr = errors[i] if errors is not None else None
        ax.bar(
            x + offset, values[i], width, label=label, color=colours[i % len(colours)], yerr=yerr, capsize=3
        )
    ax.set_xticks(x, STANDARD_METRICS)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _errors(card: ScoreCard, section: str, values: np.ndarray) -> np.ndarray:
    """(2, metric) distances from the point to the ci95 bounds; 0 where the card has no interval."""
    err = np.zeros((2, len(STANDARD_METRICS)))
    for j, metric in enumerate(STANDARD_METRICS):
        bounds = card.ci95.get(section, {}).get(metric)
        if bounds and np.isfinite(values[j]):
            # max(0, ...): a percentile interval need not contain the corpus-level point estimate.
            err[:, j] = [max(0.0, values[j] - bounds[0]), max(0.0, bounds[1] - values[j])]
    return err


def plot_metrics(
    cards: list[ScoreCard], out: Path, labels: list[str] | None = None, sections: list[str] | None = None
) -> Path:
    labels = labels or [card.name for card in cards]
    present = {s for card in cards for s in card.metrics}
    sections = sections or [s for s in SECTIONS if s in present] + sorted(present - set(SECTIONS))
    controls = [(card, label) for card, label in zip(cards, labels) if card.image_control]
    n_panels = len(sections) + (1 if controls else 0)
    fig, axes = plt.subplots(n_panels, 1, figsize=(14, 3.6 * n_panels), squeeze=False, layout="constrained")
    axes = axes[:, 0]

    for ax, section in zip(axes, sections):
        values = np.array([[_value(c.metrics, section, m) for m in STANDARD_METRICS] for c in cards])
        errors = np.stack([_errors(c, section, v) for c, v in zip(cards, values)])
        _bar_group(ax, values, errors if errors.any() else None, labels)
        has_ci = any(section in c.ci95 for c in cards)
        ax.set_title(f"Section: {section}" + (" (error bars: bootstrap 95% CI)" if has_ci else ""))
        ax.set_ylabel("score (0–1; CIDEr 0–10)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))

    if controls:
        ax = axes[-1]
        series, names = [], []
        for card, label in controls:
            condition = card.image_control.get("condition", "control")
            for section in sections:
                if section in card.image_control["delta"]:
                    series.append([_value(card.image_control["delta"], section, m) for m in STANDARD_METRICS])
                    names.append(f"{label} · {section} · {condition} images")
        # A palette apart from the cards' colours: these bars are (card, section) pairs, not cards.
        _bar_group(ax, np.array(series), None, names, colours=list(plt.cm.Set2.colors))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title("Image control: real images minus control images (> 0: the model uses the image)")
        ax.set_ylabel("score difference (real − control)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))

    axes[-1].set_xlabel("metric")
    fig.suptitle("Report generation metrics on IU X-Ray", fontsize=12, weight="bold")
    return save_figure(fig, out, dpi=130)


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    cards = [load_scores(path) for path in config.scores]
    out = plot_metrics(cards, Path(config.out), config.labels, config.sections)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
