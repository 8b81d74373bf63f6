"""What the figures show (not just that they are written): plot/metrics.py's sections without
predictions, CIDEr's own axis and the legend; plot/dataset.py's length histogram; the smoke run's labels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from rrg.data.entries import Entry
from rrg.report import dataset_figure, metrics_figure, tables
from rrg.report.results import load_scores

REPO = Path(__file__).resolve().parents[2]
METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def _card(path: Path, *, predictions_have_sections: bool) -> Path:
    """A card as score_records writes it for 4 studies; without sections, their scores are zeros."""
    scores = {m: 0.3 for m in METRICS} | {"CIDEr": 2.5}
    section = scores if predictions_have_sections else dict.fromkeys(METRICS, 0.0)
    missing = 0 if predictions_have_sections else 4
    card = {
        "metrics": {"report": scores, "findings": section, "impression": section},
        "counts": {
            "scored": 4,
            "missing_findings": {"prediction": missing, "reference": 0},
            "missing_impression": {"prediction": missing, "reference": 0},
            "sections_scored": {"report": 4, "findings": 4, "impression": 4},
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card))
    return path


@pytest.fixture
def drawn(monkeypatch):
    """plot_metrics' figure, kept open instead of saved."""
    module = metrics_figure
    figures = []
    monkeypatch.setattr(module, "save_figure", lambda fig, out, **kw: figures.append(fig) or Path(out))
    yield module, figures
    plt.close("all")


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_sections_no_prediction_has_say_so_instead_of_zero_bars(tmp_path, drawn):
    module, figures = drawn
    card = load_scores(_card(tmp_path / "eval" / "scores.json", predictions_have_sections=False))
    module.plot_metrics([card], tmp_path / "m.png", labels=["Smoke (tiny random model)"])
    report, findings = figures[0].axes[0], figures[0].axes[2]
    assert report.patches and not _texts(report)
    assert len(findings.patches) == 0  # no bars at zero
    assert _texts(findings) == ["no findings sections (Smoke (tiny random model): no prediction has one)"]


def test_a_card_without_a_section_keeps_its_legend_entry_and_draws_nothing(tmp_path, drawn):
    module, figures = drawn
    cards = [
        load_scores(_card(tmp_path / "a" / "scores.json", predictions_have_sections=False)),
        load_scores(_card(tmp_path / "b" / "scores.json", predictions_have_sections=True)),
    ]
    module.plot_metrics(cards, tmp_path / "m.png", labels=["A", "B"])
    findings_cider = figures[0].axes[3]
    legend = [t.get_text() for t in findings_cider.get_legend().get_texts()]
    assert legend == ["A (no findings sections)", "B"]
    heights = [p.get_height() for p in findings_cider.patches]
    assert np.isnan(heights[0]) and heights[1] == 2.5


def test_cider_has_its_own_axis_and_the_legend_uses_the_labels(tmp_path, drawn):
    module, figures = drawn
    card = load_scores(_card(tmp_path / "eval" / "scores.json", predictions_have_sections=True))
    module.plot_metrics([card], tmp_path / "m.png", labels=["Smoke (tiny random model)"])
    unit, cider = figures[0].axes[:2]
    assert [t.get_text() for t in unit.get_xticklabels()] == list(METRICS[:-1])
    assert [t.get_text() for t in cider.get_xticklabels()] == ["CIDEr"]
    assert max(p.get_height() for p in unit.patches) <= 1 and cider.patches[0].get_height() == 2.5
    assert [t.get_text() for t in cider.get_legend().get_texts()] == ["Smoke (tiny random model)"]


def test_metrics_help_has_the_whole_description(capsys):
    module = metrics_figure
    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "a row of real-minus-control differences." in out and "not drawn as zeros." in out


def test_length_histogram_bars_are_fractions_of_studies():
    module = dataset_figure

    def entry(i: int, words: int) -> Entry:
        return Entry(
            id=str(i), study_id=str(i), images=["x.png"], prompt="q", response=" ".join(["w"] * words)
        )

    splits = {"train": [entry(i, n) for i, n in enumerate([3, 7, 8, 12])], "test": [entry(9, 3)]}
    fig, ax = plt.subplots()
    module.plot_lengths(ax, splits)
    heights = {p.get_label(): p.get_xy()[1:-1:2, 1] for p in ax.patches}  # step outline: each bin's height
    assert list(heights["train"]) == [0.25, 0.5, 0.25] and list(heights["test"]) == [1.0, 0.0, 0.0]
    assert ax.get_ylabel() == "fraction of studies"
    plt.close(fig)


def test_smoke_run_names_its_run_and_split_in_the_table_and_figure():
    smoke = (REPO / "scripts" / "smoke.sh").read_text()
    run = re.search(r'^RUN="([^"]+)"', smoke, re.M).group(1)
    split = re.search(r'^SPLIT="([^"]+)"', smoke, re.M).group(1)
    assert 'make_tables.py --runs "$OUT/eval/scores.json:$RUN:$SPLIT"' in smoke
    assert re.search(r'plot/metrics\.py "\$OUT/eval/scores\.json" --labels "\$RUN"', smoke)
    spec = tables.parse_run_spec(f"smoke_out/eval/scores.json:{run}:{split}")
    assert (spec.name, spec.split) == (run, split)
