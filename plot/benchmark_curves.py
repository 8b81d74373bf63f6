"""Loss curves of the training configurations of one benchmark run (scripts/benchmark.py's results JSON).

    python plot/benchmark_curves.py --results results/benchmark-h200.json --out results/figures/benchmark_curves.png

Top: each configuration's loss at every optimizer step (all configurations of a run see the same samples in
the same order from the same LoRA init, so the curves differ only by the configuration). Bottom: each one's
relative difference from the first configuration, step by step: the issue's "within 1%" test, as a picture.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from rrg.cli import exits_on_input_error
from rrg.io import InputError
from rrg.results import save_figure

# The options of a training configuration (scripts/benchmark.py's TrainSpec) that a legend names.
OPTION_NAMES = {
    "fp8": "--fp8",
    "checkpointing": "--gradient_checkpointing",
    "plain_adamw": "bf16 AdamW",
}


@dataclass
class BenchCurvesConfig:
    results: str = field(metadata={"help": "a results JSON of scripts/benchmark.py"})
    out: str = field(default="benchmark_curves.png", metadata={"help": "output PNG"})
    phase: str = field(default="lora", metadata={"help": "lora or qlora: whose configurations to plot"})


def label(row: dict) -> str:
    config = row.get("config", {})
    options = [name for key, name in OPTION_NAMES.items() if config.get(key)]
    return f"micro-batch {row.get('micro_batch', '?')}" + (
        ", " + ", ".join(options) if options else " (default)"
    )


def curves(report: dict, phase: str, source: str) -> list[tuple[str, list[float]]]:
    """(label, per-step losses) of each configuration of `phase` with losses; InputError if fewer than two."""
    rows = [r for r in report.get(phase, []) if r.get("losses")]
    if len(rows) < 2:
        raise InputError(
            f"{source}: {phase} holds {len(rows)} configuration(s) with losses; two are compared"
        )
    orders = {r.get("sample_order_sha256") for r in rows}
    if len(orders) > 1:
        raise InputError(
            f"{source}: the {phase} configurations saw different samples: their curves do not compare"
        )
    return [(label(r), r["losses"]) for r in rows]


def relative_differences(first: list[float], other: list[float]) -> list[float]:
    return [abs(b - a) / abs(a) for a, b in zip(first, other)]


def plot(lines: list[tuple[str, list[float]]], title: str):
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True, height_ratios=(2, 1))
    for name, losses in lines:
        top.plot(range(1, len(losses) + 1), losses, marker=".", linewidth=1, label=name)
    top.set_ylabel("training loss")
    top.set_title(title)
    top.legend()
    base_name, base = lines[0]
    for name, losses in lines[1:]:
        diffs = [100 * d for d in relative_differences(base, losses)]
        bottom.plot(range(1, len(diffs) + 1), diffs, marker=".", linewidth=1, label=name)
    bottom.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="1%")
    bottom.set_ylabel(f"|difference| from\n{base_name} (%)")
    bottom.set_xlabel("optimizer step")
    bottom.legend()
    fig.tight_layout()
    return fig


@exits_on_input_error
def main() -> None:
    from transformers import HfArgumentParser

    (cfg,) = HfArgumentParser(BenchCurvesConfig).parse_args_into_dataclasses()
    try:
        report = json.loads(Path(cfg.results).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{cfg.results}: cannot read a results JSON ({e})") from None
    lines = curves(report, cfg.phase, cfg.results)
    title = f"{cfg.phase} loss curves, {report.get('gpu', 'GPU')} (same samples, same init)"
    print(f"wrote {save_figure(plot(lines, title), cfg.out, dpi=120)}")


if __name__ == "__main__":
    main()
