"""Every out-of-range flag of training, eval and scoring is refused as it is parsed: one line naming it.

Each case runs the script's real parser (train_lora.main, rrg.generate.run.main, and rrg.score.command.main behind
eval/score.py) and asserts the exit status and the one line; nothing is loaded, so a value that passed would fail the test
later, with another error (a missing file), not hang.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import rrg.train.settings
from rrg.generate import run as evaluate
from tests.helpers import train_lora

REPO = Path(__file__).resolve().parents[2]


def one_line_error(capsys, call) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        call()
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return e.value.code, err.splitlines()[-1] if err else ""


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv, words",
    [
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--lr", "inf"], "--lr must be a finite number (got inf)"),
        (["--lr", "1e39"], "--lr must be <= 1 (got 1e+39)"),
        (["--projector_lr", "2"], "--projector_lr must be <= 1 (got 2.0)"),
        (["--lr", "-1"], "--lr must be > 0"),
        (["--lr", "0"], "--lr must be > 0"),
        (["--batch_size", "0"], "--batch_size must be >= 1"),
        (["--batch_size", "-1"], "--batch_size must be >= 1"),
        (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be >= 1"),
        (["--lora_r", "0"], "--lora_r must be >= 1"),
        (["--lora_alpha", "0"], "--lora_alpha must be > 0"),
        (["--lora_dropout", "1.5"], "--lora_dropout must be < 1"),
        (["--lr_scheduler", "bogus"], "--lr_scheduler/--lr-scheduler: invalid choice: 'bogus'"),
        (["--epochs", "0", "--max_steps", "0"], "--epochs 0 with --max_steps 0 trains nothing"),
        (["--warmup_ratio", "5"], "--warmup_ratio must be <= 1"),
        (["--max_grad_norm", "nan"], "--max_grad_norm must be a finite number"),
        (["--max_steps", "-5"], "--max_steps must be >= 0"),
        (["--num_workers", "-1"], "--num_workers must be >= 0"),
        (["--logging_steps", "0"], "--logging_steps must be >= 1"),
    ],
)
def test_train_flag_out_of_range(argv, words, capsys, tmp_path):
    code, line = one_line_error(capsys, lambda: train_lora.main(["--output_dir", str(tmp_path), *argv]))
    assert code in (1, 2) and words in line, line


def test_train_schedulers_are_transformers_names():
    from transformers import SchedulerType

    assert "cosine" in rrg.train.settings.SCHEDULERS and "linear" in rrg.train.settings.SCHEDULERS
    assert set(rrg.train.settings.SCHEDULERS) <= {s.value for s in SchedulerType}


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv, words",
    [
        (["--limit", "-1"], "--limit must be >= 1"),
        (["--batch_size", "-1"], "--batch_size must be >= 1"),
        (["--batch_size", "0"], "--batch_size must be >= 1"),
        (["--max_new_tokens", "0"], "--max_new_tokens must be >= 1"),
        (["--max_new_tokens", "-1"], "--max_new_tokens must be >= 1"),
        (["--num_beams", "0"], "--num_beams must be >= 1"),
        (["--do_sample", "--temperature", "0"], "--temperature must be > 0"),
        (["--do_sample", "--temperature", "nan"], "--temperature must be a finite number"),
        (["--cache_implementation", "bogus"], "invalid choice: 'bogus'"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--num_workers", "-1"], "--num_workers must be >= 0"),
        (["--bootstrap", "-5"], "--bootstrap must be >= 0"),
    ],
)
def test_eval_flag_out_of_range(argv, words, capsys, tmp_path):
    split = tmp_path / "split.jsonl"
    code, line = one_line_error(capsys, lambda: evaluate.main(["--json_file", str(split), *argv]))
    assert code == 2 and words in line, line


@pytest.mark.slow
def test_eval_lora_needs_its_adapter(capsys, tmp_path):
    code, line = one_line_error(
        capsys, lambda: evaluate.main(["--json_file", str(tmp_path / "s.json")], require_adapter=True)
    )
    assert code != 0 and "--lora_path is required" in line


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv, words",
    [
        (["--bootstrap", "-5"], "--bootstrap must be >= 0"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--labeler", "bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_score_flag_out_of_range(argv, words, capsys, tmp_path):
    from rrg.score import command as score

    code, line = one_line_error(capsys, lambda: score.main([str(tmp_path / "p.jsonl"), *argv]))
    assert code == 2 and words in line, line


def test_score_positional_is_read(tmp_path):
    from rrg.score.command import parse_args

    config = parse_args([str(tmp_path / "p.jsonl"), "--bootstrap", "10"])
    assert config.predictions == tmp_path / "p.jsonl" and config.bootstrap == 10
