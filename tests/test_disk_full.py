"""A full disk (ENOSPC injected into the writers) ends training and eval with one line naming the folder
and what to do ("free space, then --resume"), not an OSError or inline_container.cc traceback."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrg.generate import run as evaluate
from rrg.io import is_disk_full
from tests.helpers import train_lora

TORCH_WRITER_FAILED = (
    "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed"
)


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def write_split(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True)
    lines = []
    for i in range(2):
        Image.fromarray(np.full((48, 64, 3), 40 * i, dtype=np.uint8)).save(folder / "images" / f"{i}_IM-1.png")
        lines.append(
            json.dumps({"id": str(i), "study_id": str(i), "images": [f"{i}_IM-1.png"], "prompt": "Write.",
                        "response": f"Findings: clear {i}. Impression: normal."})
        )  # fmt: skip
    path = folder / "split.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def one_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err, err
    assert "error:" in err, (captured.out[-3000:], err[-3000:])
    line = err[err.rindex("error:") :]  # after the progress bar, if one was drawn on that line
    assert line.count("\n") <= 1, line
    return line.strip()


def train(model_dir: Path, folder: Path) -> None:
    train_lora.main([
        "--model_path", str(model_dir), "--json_file", str(folder / "split.jsonl"),
        "--image_dir", str(folder / "images"), "--output_dir", str(folder / "out"), "--lora_r", "8",
        "--lora_alpha", "16", "--num_workers", "0", "--batch_size", "1", "--gradient_accumulation_steps", "1",
        "--max_steps", "2", "--save_steps", "1",
    ])  # fmt: skip


def test_disk_full_is_told_apart():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(RuntimeError(TORCH_WRITER_FAILED))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("CUDA out of memory"))


@pytest.mark.slow
def test_checkpoint_save_on_a_full_disk_is_one_line(tiny_model_dir, tmp_path, capsys, monkeypatch):
    write_split(tmp_path)

    def full(*args, **kwargs):
        raise RuntimeError(TORCH_WRITER_FAILED)

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(SystemExit) as e:
        train(tiny_model_dir, tmp_path)
    assert e.value.code == 1
    line = one_line(capsys)
    assert str(tmp_path / "out") in line and "free space, then --resume" in line


@pytest.mark.slow
def test_log_write_on_a_full_disk_is_one_line(tiny_model_dir, tmp_path, capsys, monkeypatch):
    write_split(tmp_path)
    monkeypatch.setattr(train_lora, "append_jsonl", no_space)  # the training log is written by the loop
    with pytest.raises(SystemExit) as e:
        train(tiny_model_dir, tmp_path)
    assert e.value.code == 1 and "free space, then --resume" in one_line(capsys)


@pytest.mark.slow
def test_prediction_append_on_a_full_disk_is_one_line(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import rrg.generate.batch

    write_split(tmp_path)
    monkeypatch.setattr(rrg.generate.batch, "append_jsonl", no_space)
    out = tmp_path / "eval" / "predictions.jsonl"
    with pytest.raises(SystemExit) as e:
        evaluate.main([
            "--json_file", str(tmp_path / "split.jsonl"), "--image_dir", str(tmp_path / "images"),
            "--model_path", str(tiny_model_dir), "--out", str(out), "--max_new_tokens", "3",
            "--num_workers", "0", "--no_score",
        ])  # fmt: skip
    assert e.value.code == 1
    line = one_line(capsys)
    assert str(out.parent) in line and "free space, then --resume" in line
