"""Training curves from one or more runs' train_log.jsonl: loss, validation loss, learning rate, throughput.

    python plot/training_curves.py runs/lora_r64 runs/lora_r16 --out results/figures/training_curves.png

Runs are overlaid in the same four panels (one colour per run, legend names the run folder), so two
configurations can be compared at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from rrg.cli import build_parser, check_ranges, exits_on_input_error, flag
from rrg.io import InputError
from rrg.report.results import TrainLog, load_train_log, save_figure


@dataclass
class CurvesConfig:
    run_dirs: list[str] = flag(help="Run folders (each with train_log.jsonl) or log files.", positional=True)
    out: str = flag("runs/figures/training_curves.png", "Output PNG.", nonempty=True)
    labels: list[str] | None = flag(None, "Legend names, one per run (default: folder names).", nargs="+")
    smooth: int = flag(1, "Rolling-mean window (logged steps) for the training loss; 1 = raw.", ge=1)


def parse_args(argv: list[str] | None = None) -> CurvesConfig:
    parser = build_parser(CurvesConfig, description=__doc__)
    (config,) = parser.parse_args_into_dataclasses(args=argv)
    try:
        check_ranges(config)
    except InputError as e:
        parser.exit(2, f"error: {e}\n")
    if config.labels and len(config.labels) != len(config.run_dirs):
        parser.error(f"--labels has {len(config.labels)} names for {len(config.run_dirs)} runs")
    return config


def run_label(log: TrainLog) -> str:
    return log.path.parent.name or str(log.path)


def plot_training_curves(
    logs: list[TrainLog], out: Path, labels: list[str] | None = None, smooth: int = 1
) -> Path:
    labels = labels or [run_label(log) for log in logs]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True, layout="constrained")
    (ax_loss, ax_val), (ax_lr, ax_speed) = axes
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    any_eval = False
    for i, (log, label) in enumerate(zip(logs, labels)):
        colour = colours[i % len(colours)]
        train = log.train
        loss = train["loss"].rolling(smooth, min_periods=1).mean() if smooth > 1 else train["loss"]
        ax_loss.plot(train["step"], loss, color=colour, label=label, linewidth=1.2)
        if len(log.eval):
            any_eval = True
            ax_val.plot(log.eval["step"], log.eval["val_loss"], "o-", color=colour, label=label, markersize=4)
        ax_lr.plot(train["step"], train["lr"], color=colour, label=label, linewidth=1.2)
        ax_speed.plot(train["step"], train["samples_per_s"], color=colour, label=label, linewidth=1.0)
    if not any_eval:
        ax_val.text(
            0.5, 0.5, "no eval events in these logs", ha="center", va="center", transform=ax_val.transAxes
        )

    smooth_note = f" (rolling mean of {smooth})" if smooth > 1 else ""
    ax_loss.set(title=f"Training loss{smooth_note}", ylabel="cross-entropy loss (nats/token)")
    ax_val.set(title="Validation loss", ylabel="cross-entropy loss (nats/token)")
    ax_lr.set(title="Learning rate", ylabel="learning rate")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_speed.set(title="Throughput", ylabel="samples / s")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in axes[1]:
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_tick_params(labelbottom=True)
    fig.suptitle("Training curves: " + ", ".join(labels), fontsize=12, weight="bold")
    return save_figure(fig, out, dpi=130)


@exits_on_input_error
def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    logs = [load_train_log(run) for run in config.run_dirs]
    out = plot_training_curves(logs, Path(config.out), config.labels, config.smooth)
    print(f"wrote {out}")
