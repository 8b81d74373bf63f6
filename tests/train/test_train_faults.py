"""train_lora.py against faults: a reused or locked output folder, a checkpoint of other settings, damaged
checkpoints, non-finite losses, a kill before the first checkpoint (tiny model, CPU)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rrg.train.settings
from rrg.lock import output_lock
from rrg.train import checkpoints as C
from rrg.train import step as T
from tests.helpers import (
    REPORTS,
    SHORT,
    error_line,
    read_log,
    refused,
    run_training,
    train_lora,
    train_steps,
    write_split,
)

# --------------------------------------------------------------------------- --help (item 6)


def test_help_lists_every_flag_with_its_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per flag: defaults are not wrapped
    with pytest.raises(SystemExit) as stopped:
        rrg.train.settings.parse_config(["--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    blocks, flag = {}, None  # flag -> its help entry, option strings to default, on one line
    for line in text.splitlines():
        if line.startswith("  --"):
            flag = line.split()[0].rstrip(",")
            blocks[flag] = ""
        elif not line.startswith("   "):
            flag = None
        if flag:
            blocks[flag] = " ".join((blocks[flag] + " " + line).split())
    for f in fields(rrg.train.settings.TrainConfig):
        block = blocks.get(f"--{f.name}")
        assert block, f"--{f.name} missing from --help"
        default = "''" if f.default == "" else str(f.default)
        assert block.endswith(f"(default: {default})"), block
        assert len(block) > len(f"--{f.name} (default: {default})") + 20, f"--{f.name} has no help text"
        if f.type in (bool, "bool"):
            assert block.startswith(f"--{f.name}, --no_{f.name} "), block
    config = rrg.train.settings.parse_config(["--no_compile", "--skip_bad", "--no_skip_bad", "--resume"])
    assert (config.compile, config.skip_bad, config.resume) == (False, False, "latest")


# --------------------------------------------------------------------------- a reused folder (items 7, 12, 16)


@pytest.mark.slow
def test_a_previous_run_is_refused_and_overwrite_clears_only_its_files(tiny_model_dir, tmp_path, capsys):
    write_split(tmp_path, REPORTS)
    out = run_training(tiny_model_dir, tmp_path, *SHORT, "--max_steps", "2")
    log = (out / "train_log.jsonl").read_text()
    final = load_file(str(out / "final" / "adapter_model.safetensors"))

    refused(tiny_model_dir, tmp_path, *SHORT, "--max_steps", "2", "--seed", "8")
    line = error_line(capsys)
    assert str(out) in line and "--resume" in line and "--overwrite" in line and "train_log.jsonl" in line
    assert (out / "train_log.jsonl").read_text() == log  # nothing appended, nothing replaced
    assert load_file(str(out / "final" / "adapter_model.safetensors")).keys() == final.keys()

    (out / "notes.txt").write_text("mine")
    (out / "best").mkdir()  # as a run with --val_json leaves it
    out = run_training(tiny_model_dir, tmp_path, *SHORT, "--max_steps", "3", "--seed", "8", "--overwrite")
    assert train_steps(out) == [1, 2, 3]  # one run's lines only
    assert (out / "notes.txt").read_text() == "mine" and not (out / "best").exists()
    assert json.loads((out / "train_config.json").read_text())["seed"] == 8


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_other_settings(tiny_model_dir, tmp_path, capsys):
    write_split(tmp_path, REPORTS)
    out = run_training(tiny_model_dir, tmp_path, *SHORT, "--stop_after_steps", "2", "--lr", "1e-3")
    checkpoint = C.list_checkpoints(out)[-1]
    log = (out / "train_log.jsonl").read_text()

    refused(tiny_model_dir, tmp_path, *SHORT, "--lr", "5e-3", "--seed", "8", "--resume")
    line = error_line(capsys)
    assert "train_config.json" in line and "lr 0.001 -> 0.005" in line and "seed 3 -> 8" in line
    (out / "train_config.json").unlink()  # the checkpoint's own fingerprint says the same
    refused(tiny_model_dir, tmp_path, *SHORT, "--lr", "5e-3", "--resume", str(checkpoint))
    line = error_line(capsys)
    assert str(checkpoint) in line and "lr 0.001 -> 0.005" in line and "seed" not in line
    assert (out / "train_log.jsonl").read_text() == log and C.list_checkpoints(out) == [checkpoint]

    # Settings that do not change the result may change on resume.
    out = run_training(
        tiny_model_dir, tmp_path, *SHORT, "--lr", "1e-3", "--logging_steps", "2", "--save_total_limit", "0",
        "--resume",
    )  # fmt: skip
    assert train_steps(out) == [1, 2, 4, 5]
    saved = json.loads((out / "train_config.json").read_text())["fingerprint"]
    assert saved == C.read_record(C.list_checkpoints(out)[-1])["fingerprint"]
    assert {"lr", "seed", "json_file_sha256", "world_size", "lora_r"} <= set(saved["settings"])
    assert not {"output_dir", "logging_steps", "save_steps", "num_workers", "stop_after_steps"} & set(
        saved["settings"]
    )


def test_rotation_keeps_other_runs_checkpoints(tmp_path):
    """Only this run's checkpoints (its fingerprint) up to its current step are rotated: another run's
    step numbers, higher or lower, cannot push this run's checkpoints out, nor are its own deleted."""
    ours, theirs = C.fingerprint({"seed": 8}), C.fingerprint({"seed": 7})

    def fake_checkpoint(step: int, fingerprint: dict) -> Path:
        folder = tmp_path / "checkpoints" / C.checkpoint_name(step)
        folder.mkdir(parents=True)
        record = {"format": C.FORMAT, "state": {"step": step}, "fingerprint": fingerprint, "files": {}}
        (folder / "state.json").write_text(json.dumps({**record, "checksum": C.json_sha256(record)}))
        return folder

    for step in (2, 3, 28, 30):
        fake_checkpoint(step, theirs)
    for step in (4, 5, 6, 9):  # 9: ahead of this run's step 6 (it resumed from an earlier checkpoint)
        fake_checkpoint(step, ours)
    C.rotate_checkpoints(tmp_path, keep=2, digest=ours["digest"], up_to_step=6)
    assert [C.checkpoint_step(p) for p in C.list_checkpoints(tmp_path)] == [2, 3, 5, 6, 9, 28, 30]


@pytest.mark.slow
def test_sigkill_before_the_first_checkpoint_then_resume(tiny_model_dir, tmp_path):
    """A real kill -9 mid-epoch, before the epoch-end checkpoint: --resume starts over with an empty log."""
    write_split(tmp_path, REPORTS * 6)  # 30 steps of one sample; the first checkpoint at the epoch's end
    args = [
        "--model_path", str(tiny_model_dir), "--json_file", str(tmp_path / "split.jsonl"),
        "--image_dir", str(tmp_path / "images"), "--output_dir", str(tmp_path / "out"),
        "--lora_r", "8", "--lora_alpha", "16", "--num_workers", "0", "--seed", "3", "--batch_size", "1",
        *SHORT,
    ]  # fmt: skip
    repo = Path(train_lora.__file__).parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    process = subprocess.Popen([sys.executable, str(repo / "train_lora.py"), *args], env=env, cwd=repo,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    log = tmp_path / "out" / "train_log.jsonl"
    try:
        deadline = time.monotonic() + 300
        while not (log.exists() and len(log.read_text().splitlines()) >= 2) and process.poll() is None:
            assert time.monotonic() < deadline, "no log line in 300 s"
            time.sleep(0.02)
    finally:
        process.kill()  # SIGKILL
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert C.list_checkpoints(tmp_path / "out") == [] and train_steps(tmp_path / "out")[:2] == [1, 2]
    out = run_training(tiny_model_dir, tmp_path, *SHORT, "--resume")
    assert train_steps(out) == list(range(1, 31))


# --------------------------------------------------------------------------- the lock (item 13)


def _hold(folder: str, ready, release) -> None:
    with output_lock(folder):
        ready.set()
        release.wait(60)


@pytest.mark.slow
def test_a_second_training_into_a_locked_folder_fails_naming_the_holder(tiny_model_dir, tmp_path, capsys):
    write_split(tmp_path, REPORTS[:2])
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path / "out"), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        refused(tiny_model_dir, tmp_path, "--max_steps", "1")
        line = error_line(capsys)
        assert f"pid {holder.pid}" in line and str(tmp_path / "out") in line
        assert C.previous_run(tmp_path / "out") == []  # it wrote nothing
    finally:
        release.set()
        holder.join(60)
    run_training(tiny_model_dir, tmp_path, "--max_steps", "1")  # free again once the holder is gone


# --------------------------------------------------------------------------- damaged checkpoints (item 15)


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # flip bytes in the middle, same size: nothing but the checksum notices
        middle = len(data) // 2
        data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
        path.write_bytes(data)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, how",
    [("adapter_model.safetensors", "truncate"), ("optimizer.pt", "flip"), ("state.json", "truncate")],
)
def test_a_damaged_newest_checkpoint_is_named_and_resume_falls_back(
    tiny_model_dir, tmp_path, capsys, name, how
):
    write_split(tmp_path, REPORTS)
    out = run_training(tiny_model_dir, tmp_path, *SHORT, "--save_steps", "1", "--stop_after_steps", "3")
    newest = out / "checkpoints" / "step-000003"
    damage(newest / name, how)
    capsys.readouterr()
    out = run_training(tiny_model_dir, tmp_path, *SHORT, "--save_steps", "1", "--resume")
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert len(warning) == 1 and str(newest / name) in warning[0] and "falling back" in warning[0]
    assert "resumed from " + str(out / "checkpoints" / "step-000002") in captured.out
    assert train_steps(out) == [1, 2, 3, 4, 5]
    assert all(
        torch.isfinite(t).all() for t in load_file(str(out / "final" / "adapter_model.safetensors")).values()
    )


@pytest.mark.slow
def test_no_intact_checkpoint_is_one_line_naming_it(tiny_model_dir, tmp_path, capsys):
    write_split(tmp_path, REPORTS)
    out = run_training(tiny_model_dir, tmp_path, *SHORT, "--save_steps", "1", "--stop_after_steps", "2")
    first, newest = C.list_checkpoints(out)
    damage(first / "adapter_model.safetensors", "flip")
    refused(tiny_model_dir, tmp_path, *SHORT, "--resume", str(first))  # the one asked for: no fallback
    assert str(first / "adapter_model.safetensors") in error_line(capsys)
    damage(newest / "optimizer.pt", "truncate")
    refused(tiny_model_dir, tmp_path, *SHORT, "--resume")
    line = error_line(capsys)
    assert str(newest) in line and "no earlier intact checkpoint" in line


# --------------------------------------------------------------------------- non-finite values (item 15)


@pytest.mark.slow
@pytest.mark.parametrize("caught_at", ["log line of step 3", "log line of step 4", "validation at step 3"])
def test_a_nan_loss_stops_training_naming_the_step_and_the_last_good_checkpoint(
    tiny_model_dir, tmp_path, capsys, monkeypatch, caught_at
):
    """From the third micro-batch on the loss is NaN (batch 1, no accumulation: step 3). It is caught where
    the loss is read anyway: at a log line (every step, or every 4: still named as step 3), or before a
    validation between log lines (no best/ adapter of NaN weights)."""
    compute_loss, calls = T.compute_loss, []

    def nan_from_step_3(model, batch):
        calls.append(1)
        loss_sum, n = compute_loss(model, batch)
        return (loss_sum * float("nan") if len(calls) >= 3 else loss_sum), n

    monkeypatch.setattr(T, "compute_loss", nan_from_step_3)
    split = write_split(tmp_path, REPORTS)
    args = {
        "log line of step 3": ["--save_steps", "1"],
        "log line of step 4": ["--logging_steps", "4"],
        "validation at step 3": ["--logging_steps", "4", "--val_json", str(split), "--eval_steps", "3"],
    }[caught_at]
    refused(tiny_model_dir, tmp_path, *SHORT, *args)
    line = error_line(capsys)
    assert line.startswith("error: step 3: the loss or the gradient norm is not finite; training stopped")
    out = tmp_path / "out"
    checkpoints = [1, 2] if caught_at == "log line of step 3" else []
    last = out / "checkpoints" / "step-000002" if checkpoints else "none"
    assert f"Last good checkpoint: {last}" in line
    assert not (out / "final").exists() and not (out / "best").exists()
    log = read_log(out) if (out / "train_log.jsonl").exists() else []  # logging every 4 steps: none yet
    assert [r["step"] for r in log] == checkpoints  # no line of a NaN step
    assert [C.checkpoint_step(c) for c in C.list_checkpoints(out)] == checkpoints


@pytest.mark.slow
def test_non_finite_weights_are_never_saved(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """Step 1's loss and gradients are finite, its update is not (one weight made infinite after the
    optimizer's step); the checkpoint after it is refused."""
    build_optimizer = T.build_optimizer

    def overflowing_update(*args, **kwargs):
        optimizer = build_optimizer(*args, **kwargs)
        first = optimizer.param_groups[0]["params"][0]
        optimizer.register_step_post_hook(lambda *_: first.data.view(-1)[0].fill_(float("inf")))
        return optimizer

    monkeypatch.setattr(T, "build_optimizer", overflowing_update)
    write_split(tmp_path, REPORTS)
    refused(tiny_model_dir, tmp_path, *SHORT, "--save_steps", "1", "--warmup_ratio", "0")
    line = error_line(capsys)
    assert line.startswith("error: step 1: the trained weights are not finite")
    assert "Last good checkpoint: none" in line
    assert C.previous_run(tmp_path / "out") == ["train_config.json", "train_log.jsonl"]
