"""eval/ask.py on the tiny model through the real command: an image in, an answer out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rrg.generate.api import ReportGenerator
from rrg.model.prompts import DIFFERENTIAL_QUESTION, REPORT_QUESTION, task_question

ROOT = Path(__file__).resolve().parents[2]


def ask(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "eval" / "ask.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_task_prompts():
    assert task_question("report") == REPORT_QUESTION
    assert task_question("differential", indication="Cough.") == f"{DIFFERENTIAL_QUESTION} Indication: Cough."
    assert task_question("question", " Is there an effusion? ") == "Is there an effusion?"
    with pytest.raises(ValueError, match="needs a question"):
        task_question("question")


@pytest.mark.slow
def test_command_prints_what_the_api_generates_for_each_image(tiny_model_dir, xray_paths):
    images = [str(xray_paths[0]), str(xray_paths[2])]
    result = ask(*images, "--model_path", str(tiny_model_dir), "--max_new_tokens", "6", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    generator = ReportGenerator.from_pretrained(str(tiny_model_dir), device="cpu")
    expected = [generator.report(p, max_new_tokens=6) for p in images]
    assert result.stdout == "".join(f"== {p} ==\n{a}\n\n" for p, a in zip(images, expected, strict=True))

    question = ask(images[0], "--model_path", str(tiny_model_dir), "--max_new_tokens", "6", "--device", "cpu",
                   "--task", "question", "--question", "Is there a pneumothorax?")  # fmt: skip
    assert question.returncode == 0, question.stderr[-2000:]
    assert (
        question.stdout
        == f"== {images[0]} ==\n{generator.ask(images[0], 'Is there a pneumothorax?', max_new_tokens=6)}\n\n"
    )


@pytest.mark.slow
def test_bad_input_is_one_line(tmp_path):
    missing = ask(str(tmp_path / "nope.png"), "--model_path", "unused")
    assert (
        missing.returncode == 1
        and missing.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nope.png'}: image file not found"
    )
    no_question = ask(str(tmp_path / "nope.png"), "--task", "question")
    assert no_question.returncode == 2 and "--task question needs --question" in no_question.stderr
    bad_range = ask(str(tmp_path / "nope.png"), "--max_new_tokens", "0")
    assert bad_range.returncode == 2 and "--max_new_tokens" in bad_range.stderr
