"""Tables and figures from synthetic result files with the schemas the training and eval scripts write."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from PIL import Image

from rrg.io import InputError
from rrg.report import benchmark_curves, training_curves
from rrg.report import metrics_figure as metrics_plot
from rrg.report import tables as make_tables
from rrg.report.curves import relative_differences
from rrg.report.results import (
    R2GEN_SPLIT,
    REFERENCE_SPLIT_PER_IMAGE,
    REFERENCE_SPLIT_PER_STUDY,
    infer_split_label,
    load_literature,
    load_scores,
    load_train_log,
)
from tests.helpers import assert_png, write_card


def write_log(run_dir: Path, steps: int = 40, eval_every: int = 10, lr: float = 2e-4) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(1, steps + 1):
        lines.append(
            {
                "type": "train",
                "step": step,
                "epoch": step / 20,
                "loss": 2.0 * math.exp(-step / 15) + 0.5,
                "lr": lr * (1 - step / (steps + 1)),
                "grad_norm": 1.0,
                "samples_per_s": 6.5,
                "tokens_per_s": 3100.0,
                "elapsed_s": 10.0 * step,
            }
        )
        if step % eval_every == 0:
            lines.append({"type": "eval", "step": step, "epoch": step / 20, "val_loss": 1.0 + 1 / step})
    path = run_dir / "train_log.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


# ---------------------------------------------------------------------------------------------------
# Literature file
# ---------------------------------------------------------------------------------------------------


def test_literature_file_is_valid_and_every_row_is_sourced():
    rows = load_literature()
    models = {row["model"] for row in rows}
    for expected in ("R2Gen", "R2GenCMN", "PPKED", "Contrastive Attention (CA)", "M2TR (progressive)"):
        assert expected in models
    for row in rows:
        assert all(row["source"][k] for k in ("title", "venue", "year", "table")), row["model"]
        assert row["verification"], f"{row['model']}: say what was (not) verified"
        if row["group"] == "literature":
            assert row["split"] == R2GEN_SPLIT
    reference = [r for r in rows if r["group"] == "reference"]
    assert len(reference) == 1
    assert reference[0]["split"] == REFERENCE_SPLIT_PER_IMAGE
    assert reference[0]["tooling"] == "nltk sentence-level (legacy)"
    assert reference[0]["metrics"] == {"BLEU-4": 0.22, "METEOR": 0.37}


def test_literature_row_without_source_is_rejected(tmp_path):
    rows = load_literature()
    del rows[1]["source"]["table"]
    bad = tmp_path / "literature.json"
    bad.write_text(json.dumps({"rows": rows}))
    with pytest.raises(InputError, match=r"literature\.json: rows\[2\].*source"):
        load_literature(bad)


# ---------------------------------------------------------------------------------------------------
# Comparison table
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_make_tables_writes_markdown_and_png_with_our_rows_and_literature(tmp_path, capsys):
    ref = write_card(tmp_path / "results/reference/lora/scores.json", 1.0, legacy=True)
    r2gen = write_card(tmp_path / "results/r2gen/lora/scores.json", 0.8, ci=False)
    out = tmp_path / "table"
    make_tables.main(
        ["--runs", f"{ref}:Ours (LoRA, reference split)", f"{r2gen}:Ours (R2Gen)", "--out", str(out)]
    )

    md = (out / "table.md").read_text()
    lines = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| ")}
    ours = lines["Ours (LoRA, reference split)"]
    # report section, 3 decimals, bootstrap interval alongside
    assert "| 0.500 [0.480, 0.520] |" in ours and "| 0.200 [0.180, 0.220] |" in ours
    assert REFERENCE_SPLIT_PER_STUDY in ours and "pycocoevalcap corpus-level, normalized text" in ours
    # legacy row: findings section, B-4/METEOR/ROUGE-L renamed into the standard columns, no CIDEr
    legacy = lines["Ours (LoRA, reference split) (legacy metrics)"]
    assert "nltk sentence-level (legacy)" in legacy and "| findings |" in legacy
    assert "| 0.247 | 0.358 | 0.481 | – |" in legacy
    assert "| 0.400 | 0.360 |" in lines["Ours (R2Gen)"] and R2GEN_SPLIT in lines["Ours (R2Gen)"]
    # literature and reference rows with their split labels
    assert "| 0.470 | 0.304 | 0.219 | 0.165 | 0.187 | 0.371 | – |" in lines["R2Gen"]
    assert R2GEN_SPLIT in lines["R2Gen"]
    assert any(REFERENCE_SPLIT_PER_IMAGE in line and "0.220" in line for line in lines.values())
    assert "Rows are comparable only when Split AND Tooling match" in md
    assert "Generating Radiology Reports via Memory-driven Transformer" in md
    assert_png(out / "table.png")
    assert "wrote" in capsys.readouterr().out


def test_run_spec_keeps_colons_in_the_split_label():
    spec = make_tables.parse_run_spec("results/x/scores.json:Ours (LoRA):R2Gen 7:1:2 (test)")
    assert (str(spec.path), spec.name, spec.split) == (
        "results/x/scores.json",
        "Ours (LoRA)",
        "R2Gen 7:1:2 (test)",
    )
    assert make_tables.parse_run_spec("results/x/scores.json").split is None


def test_split_label_comes_from_settings_before_the_path(tmp_path):
    by_path = load_scores(write_card(tmp_path / "results/r2gen/lora/scores.json"))
    assert infer_split_label(by_path) == R2GEN_SPLIT
    by_setting = load_scores(
        write_card(
            tmp_path / "results/r2gen/x/scores.json", split_file="data/reference_test.jsonl", per_image=True
        )
    )
    assert infer_split_label(by_setting) == REFERENCE_SPLIT_PER_IMAGE


# ---------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_curves_overlays_runs_into_a_png(tmp_path):
    write_log(tmp_path / "runs/a")
    write_log(tmp_path / "runs/b", lr=1e-4)
    out = tmp_path / "fig/curves.png"
    training_curves.main(
        [str(tmp_path / "runs/a"), str(tmp_path / "runs/b"), "--out", str(out), "--smooth", "5"]
    )
    assert_png(out)


def test_resumed_log_keeps_the_last_line_per_step(tmp_path):
    path = write_log(tmp_path / "run", steps=5)
    with open(path, "a") as f:  # a resume re-logs step 5
        f.write(json.dumps({**json.loads(path.read_text().splitlines()[-1]), "loss": 9.0}) + "\n")
    log = load_train_log(tmp_path / "run")
    assert log.train["step"].tolist() == [1, 2, 3, 4, 5]
    assert log.train["loss"].iloc[-1] == 9.0


@pytest.mark.slow
def test_metrics_plot_adds_the_image_control_panel(tmp_path):
    plain = write_card(tmp_path / "results/a/scores.json")
    with_control = write_card(tmp_path / "results/b/scores.json", control=True)
    out_plain, out_control = tmp_path / "plain.png", tmp_path / "control.png"
    metrics_plot.main([str(plain), "--out", str(out_plain)])
    metrics_plot.main([str(plain), str(with_control), "--labels", "A", "B", "--out", str(out_control)])
    # one panel per section (3) plus the real-minus-control panel: the figure is a panel taller
    assert assert_png(out_control).height > assert_png(out_plain).height * 1.2


# ---------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_scores_without_metrics_names_the_file(tmp_path, capsys):
    bad = tmp_path / "results/x/scores.json"
    bad.parent.mkdir(parents=True)
    bad.write_text(json.dumps({"counts": {}}))
    with pytest.raises(SystemExit) as exit_info:
        make_tables.main(["--runs", f"{bad}:X", "--out", str(tmp_path / "t")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "'metrics'" in err
    with pytest.raises(SystemExit):
        metrics_plot.main([str(bad), "--out", str(tmp_path / "m.png")])
    assert not (tmp_path / "t" / "table.md").exists()


def test_non_numeric_metric_names_the_field(tmp_path):
    path = write_card(tmp_path / "scores.json")
    card = json.loads(path.read_text())
    card["metrics"]["report"]["BLEU-4"] = "high"
    path.write_text(json.dumps(card))
    with pytest.raises(InputError, match=r"scores\.json: field 'metrics\.report\.BLEU-4'"):
        load_scores(path)


@pytest.mark.slow
def test_malformed_train_log_line_names_file_and_line(tmp_path):
    path = write_log(tmp_path / "run", steps=3, eval_every=100)
    lines = path.read_text().splitlines()
    lines.insert(1, '{"type": "train", "step": 2,')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"train_log\.jsonl:2: malformed JSON"):
        load_train_log(tmp_path / "run")
    with pytest.raises(SystemExit):
        training_curves.main([str(tmp_path / "run"), "--out", str(tmp_path / "c.png")])
    assert not (tmp_path / "c.png").exists()


def test_train_event_missing_a_field_names_line_and_field(tmp_path):
    path = write_log(tmp_path / "run", steps=3, eval_every=100)
    lines = path.read_text().splitlines()
    record = json.loads(lines[2])
    del record["lr"]
    lines[2] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"train_log\.jsonl:3: 'train' event lacks field 'lr'"):
        load_train_log(path)


# --------------------------------------------------------------------------- plot/benchmark_curves.py


def _bench_row(losses, fp8=False, order="abc"):
    config = {"micro_batch": 8, "fp8": fp8}
    return {"micro_batch": 8, "config": config, "losses": losses, "sample_order_sha256": order}


@pytest.mark.slow
def test_benchmark_curves_compare_configurations_on_the_same_samples(tmp_path, monkeypatch):
    curves = benchmark_curves
    report = {"gpu": "Test GPU", "lora": [_bench_row([4.0, 2.0]), _bench_row([4.4, 2.0], fp8=True)]}
    lines, same_samples = curves.curves(report, "lora", "r.json")
    assert [name for name, _ in lines] == ["micro-batch 8 (first)", "fp8"] and same_samples
    eager = {"micro_batch": 8, "compile": False, "log_every": 10}
    assert (
        curves.label(eager, {"micro_batch": 8, "compile": True, "log_every": 1}) == "no compile, log_every 10"
    )
    assert relative_differences(lines[0][1], lines[1][1]) == pytest.approx([0.1, 0.0])
    with pytest.raises(InputError, match="r.json: the lora configurations saw different samples"):
        curves.curves({"lora": [_bench_row([1.0]), _bench_row([1.0], order="other")]}, "lora", "r.json")
    with pytest.raises(InputError, match="r.json: qlora holds 1 configuration"):
        curves.curves({"qlora": [_bench_row([1.0])]}, "qlora", "r.json")
    results = tmp_path / "bench.json"
    results.write_text(json.dumps(report))
    out = tmp_path / "curves.png"
    monkeypatch.setattr(sys, "argv", ["benchmark_curves.py", "--results", str(results), "--out", str(out)])
    curves.main()
    assert Image.open(out).size[0] > 500
