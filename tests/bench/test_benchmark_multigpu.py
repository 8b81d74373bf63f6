"""The multi-GPU benchmark's arithmetic (scripts/benchmark_multigpu.py): what it reads from a launch's
files. The launches themselves need GPUs; these parts do not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

from rrg.bench import multigpu as B  # noqa: E402


def test_generation_rate_times_each_process_from_its_own_first_batch():
    # Two processes, batches of 2 reports a second: rank 0 from t=1, rank 1 (slower to load) from t=2.9; each
    # makes 2 reports/s after its first batch, 4 together. Timing all lines from the first file's first batch
    # would count rank 1's first batch inside the window: (12 - 2) / 3.9 = 2.6.
    r0, r1 = "predictions.jsonl.rank0", "predictions.jsonl.rank1"
    samples = [
        (0.0, {}),
        (1.0, {r0: 2, r1: 0}),
        (2.0, {r0: 4, r1: 0}),
        (2.9, {r0: 4, r1: 2}),
        (3.0, {r0: 6, r1: 2}),
        (3.9, {r0: 6, r1: 4}),
        (4.9, {r0: 6, r1: 6}),
        (5.0, {"predictions.jsonl": 12}),  # merged: the parts are gone
    ]
    assert B.steady_rate(samples) == pytest.approx((4.0, 8))
    one = [
        (0.0, {}),
        (1.0, {"predictions.jsonl": 3}),
        (2.0, {"predictions.jsonl": 6}),
        (3.0, {"predictions.jsonl": 9}),
    ]
    assert B.steady_rate(one) == pytest.approx((3.0, 6))
    assert B.steady_rate([(0.0, {}), (1.0, {"predictions.jsonl": 3})]) is None  # one batch: nothing timed


def test_train_figures_count_effective_batches_after_the_warm_up(tmp_path):
    lines = [{"type": "train", "step": s, "loss": 10.0 - s, "elapsed_s": 60.0 + 2.0 * s} for s in range(1, 9)]
    lines.insert(4, {"type": "eval", "step": 4, "val_loss": 7.5})
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    figures = B.train_figures(tmp_path, warmup=2, effective_batch=64)
    assert figures["samples_per_s"] == pytest.approx(64 * 6 / (76.0 - 64.0))  # steps 3..8 after step 2
    assert figures["losses"] == [9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0]
    assert figures["val_losses"] == [7.5] and figures["first_step_elapsed_s"] == 62.0


def test_commands_are_what_a_user_types():
    assert B.command("train_lora.py", ["--x"], 1, "ddp")[1:] == ["train_lora.py", "--x"]
    cmd = B.command("train_lora.py", ["--x"], 4, "zero2")
    assert cmd[cmd.index("--config_file") + 1] == "scripts/accelerate/deepspeed_zero2.yaml"
    assert cmd[cmd.index("--num_processes") + 1] == "4" and cmd[-2:] == ["train_lora.py", "--x"]


def test_committed_results_render():
    table = B.markdown_tables(json.loads((REPO / "results" / "benchmark-h200x4.json").read_text()))
    assert "| ddp | 4 | 8 x 2 | 87.84 | 92% |" in table and "| 4 GPUs | 140.8 | 97% |" in table
    assert (
        "final adapter 1.02e-03 from the uninterrupted run's (relative L2), a second uninterrupted launch 1.02e-03"
        in table
    )
    table = B.markdown_tables(json.loads((REPO / "results" / "benchmark-h200x2.json").read_text()))
    assert "| ddp, QLoRA | 2 | 8 x 4 | 26.34 |  | 14.2 |" in table  # the QLoRA launch's own row
    assert "| 2 GPUs | 72.1 | 99% |" in table


def test_resume_phase_passes_its_flags_to_every_launch(monkeypatch, tmp_path):
    commands = []

    def fake_launch(cmd, log, watch, timeout):
        commands.append(cmd)
        return {"returncode": 0 if len(commands) < 3 else 1, "wall_s": 1.0}  # the resumed launch fails

    monkeypatch.setattr(B, "run_launch", fake_launch)
    cfg = B.MultiBenchConfig(steps=6, resume_flags="--no_compile --num_workers 2")
    paths = {k: tmp_path / k for k in ("model", "train", "val", "images")}
    result = B.resume_phase(cfg, paths, tmp_path, 2)
    assert len(commands) == 3 and result["resumed"]["returncode"] == 1 and "final_adapter" not in result
    for cmd in commands:
        assert cmd[-3:] == ["--no_compile", "--num_workers", "2"]
    assert "--stop_after_steps" in commands[1] and "--resume" in commands[2]


def test_adapter_difference_reports_the_relative_change(tmp_path):
    import torch
    from safetensors.torch import save_file

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    save_file({"x": torch.full((4,), 3.0), "y": torch.zeros(1)}, tmp_path / "a" / "adapter_model.safetensors")
    save_file(
        {"x": torch.full((4,), 3.0), "y": torch.full((1,), 2.0)}, tmp_path / "b" / "adapter_model.safetensors"
    )
    found = B.adapter_difference(tmp_path / "a", tmp_path / "b")
    # over all weights together: ||(0, 0, 0, 0, 2)|| / ||(3, 3, 3, 3, 0)|| = 2 / 6 (per tensor: 0 and inf)
    assert found["relative_l2"] == pytest.approx(1 / 3) and found["max_abs_diff"] == 2.0
    assert found["tensors"] == 2 and found["max_abs_weight"] == 3.0


COMPARED = {"same_keys": True, "relative_l2": 1e-3}  # an adapter_difference result


def fake_resume_launches(monkeypatch, failing: int | None) -> list[list[str]]:
    """run_launch, train_figures and adapter_difference stand-ins; launch number `failing` (1-based) fails."""
    commands: list[list[str]] = []

    def fake_launch(cmd, log, watch, timeout):
        commands.append(cmd)
        return {"returncode": 1 if len(commands) == failing else 0, "wall_s": 1.0}

    monkeypatch.setattr(B, "run_launch", fake_launch)
    monkeypatch.setattr(B, "train_figures", lambda out, warmup, batch: {"losses": [1.0], "val_losses": []})
    monkeypatch.setattr(B, "adapter_difference", lambda a, b: {"compared": (a.parent.name, b.parent.name)})
    return commands


@pytest.mark.parametrize("failing", [None, 4])
def test_resume_phase_repeats_the_uninterrupted_run_as_its_noise_floor(monkeypatch, tmp_path, failing):
    commands = fake_resume_launches(monkeypatch, failing)
    for name in ("resume-full-2", "resume-parts-2"):
        (tmp_path / "runs" / name).mkdir(parents=True)
    paths = {k: tmp_path / k for k in ("model", "train", "val", "images")}
    result = B.resume_phase(B.MultiBenchConfig(steps=6), paths, tmp_path, 2)
    assert len(commands) == 4 and "--resume" in commands[2]
    assert commands[3][commands[3].index("--output_dir") + 1].endswith("resume-again-2")
    # The resumed run's comparison stands whether or not the repeat succeeds.
    assert result["final_adapter"] == {"compared": ("resume-full-2", "resume-parts-2")}
    if failing:
        assert result["uninterrupted_again"]["returncode"] == 1 and "noise_floor_final_adapter" not in result
        assert "a second uninterrupted launch not run" in B.resume_summary(
            result | {"final_adapter": COMPARED}
        )
    else:
        assert result["noise_floor_final_adapter"] == {"compared": ("resume-full-2", "resume-again-2")}


@pytest.mark.slow
def test_gpu_scripts_import_without_the_scorers():
    """The GPU benchmarks run where pycocoevalcap is not installed: importing them must not need it."""
    import subprocess

    code = (
        "import sys; sys.modules['pycocoevalcap'] = None; "
        "import rrg.bench.main, rrg.bench.multigpu, rrg.bench.reference, train_lora; "
        "assert abs(rrg.bench.reference.curve_difference([2.0, 4.0], [2.2, 4.0], 2)['max_rel_diff'] - 0.1) < 1e-9"
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
