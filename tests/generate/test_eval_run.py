"""The eval run (rrg.generate.run) around generation: the reference protocol's eval prompt, and one run per
output folder. Generation itself is replaced by a stand-in that records what it was asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rrg.data.entries import load_entries
from rrg.generate import run as evaluate
from rrg.io import read_jsonl
from rrg.model.prompts import REFERENCE_EVAL_INSTRUCTION
from rrg.train.collate import question_of
from tests.helpers import REFERENCE_PROMPT, _args, _split

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["reference", "paper"])
def test_reference_entries_are_asked_with_the_papers_eval_instruction(tmp_path, asked, shape):
    json_file, images = _split(tmp_path, shape)
    out = tmp_path / "run" / "predictions.jsonl"
    evaluate.main(_args(json_file, images, out))
    assert asked == [REFERENCE_PROMPT + REFERENCE_EVAL_INSTRUCTION] * 2
    assert REFERENCE_EVAL_INSTRUCTION.startswith(" The Findings and Impression sections must be logically")
    assert [r["prompt"] for r in read_jsonl(out)] == asked  # the lines say what was asked
    # Training reads the same file without it, as the reference trained.
    assert {question_of(e) for e in load_entries(json_file)} == {REFERENCE_PROMPT}


@pytest.mark.slow
def test_other_protocols_are_asked_their_prompt_unchanged(tmp_path, asked):
    json_file, images = _split(tmp_path, "clean")
    evaluate.main(_args(json_file, images, tmp_path / "run" / "predictions.jsonl"))
    assert asked == [REFERENCE_PROMPT] * 2


@pytest.mark.slow
def test_resume_refuses_lines_asked_with_another_prompt(tmp_path, asked, capsys):
    """Predictions made before the instruction was added are not continued as if they were this run's."""
    json_file, images = _split(tmp_path, "reference")
    out = tmp_path / "run" / "predictions.jsonl"
    evaluate.main(_args(json_file, images, out, "--limit", "1"))
    line = read_jsonl(out)[0]
    out.write_text(json.dumps({**line, "prompt": REFERENCE_PROMPT}) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(_args(json_file, images, out, "--resume"))
    assert exit_info.value.code == 1
    assert f"{out}:1: made with another prompt" in capsys.readouterr().err


@pytest.mark.slow
def test_a_second_eval_into_the_same_folder_fails_naming_the_holder(tmp_path, asked, capsys):
    json_file, images = _split(tmp_path, "clean")
    out = tmp_path / "run" / "predictions.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom rrg.lock import output_lock\n"
         f"with output_lock({str(out.parent)!r}, 'eval'):\n    print('ready', flush=True)\n    sys.stdin.read()"],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(_args(json_file, images, out))
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"(pid {holder.pid})" in err and str(out.parent) in err
        assert asked == [] and not out.exists()  # nothing generated, nothing written
    finally:
        holder.communicate("", timeout=30)
    evaluate.main(_args(json_file, images, out))  # free again once the holder has finished
    assert len(read_jsonl(out)) == 2


@pytest.mark.slow
def test_liger_where_it_cannot_run_is_one_line_before_anything_is_generated(
    tmp_path, asked, capsys, monkeypatch
):
    json_file, images = _split(tmp_path, "clean")
    out = tmp_path / "run" / "predictions.jsonl"
    checked = []
    monkeypatch.setattr(evaluate, "liger_problem", lambda device: checked.append(device) or "--liger needs X")
    for extra, message in [
        (["--liger", "--cache_implementation", "static"], "--liger with --cache_implementation static"),
        (["--liger"], "--liger needs X"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            evaluate.main(_args(json_file, images, out, *extra))
        assert exit_info.value.code == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
    assert [d.type for d in checked] == ["cpu"]  # this process's device, asked once the flags are sound
    assert asked == [] and not out.exists()


@pytest.mark.slow
def test_liger_reaches_every_generation_call_and_resume_keeps_to_the_setting(
    tmp_path, asked, capsys, monkeypatch
):
    """--liger reaches generation as settings.liger (rrg.generate.batch binds the kernels for it, and its lines
    say so); lines made before the flag existed (no "liger" key) continue a run without it, and a resume
    never mixes the two."""
    seen = []
    generate_predictions = evaluate.generate_predictions  # the fixture's stand-in

    def recording(model, processor, items, paths, out, identity, settings, *args, **kwargs):
        seen.append(settings.liger)
        generate_predictions(model, processor, items, paths, out, identity, settings, *args, **kwargs)

    monkeypatch.setattr(evaluate, "generate_predictions", recording)
    monkeypatch.setattr(evaluate, "liger_problem", lambda device: None)
    json_file, images = _split(tmp_path, "clean")
    out = tmp_path / "run" / "predictions.jsonl"
    evaluate.main(_args(json_file, images, out, "--liger", "--image_control", "blank"))
    assert seen == [True, True]  # the real images, then the blank control
    assert [r["generation"]["liger"] for r in read_jsonl(out)] == [True, True]
    with pytest.raises(SystemExit):
        evaluate.main(_args(json_file, images, out, "--resume", "--image_control", "blank"))  # no --liger
    assert f"{out}:1: made with other settings" in capsys.readouterr().err

    old = tmp_path / "old" / "predictions.jsonl"
    evaluate.main(_args(json_file, images, old, "--limit", "1"))
    line = read_jsonl(old)[0]
    del line["generation"]["liger"]  # as written before the flag existed
    old.write_text(json.dumps(line) + "\n")
    evaluate.main(_args(json_file, images, old, "--resume"))
    assert [r["id"] for r in read_jsonl(old)] == ["10", "11"]
    with pytest.raises(SystemExit):
        evaluate.main(_args(json_file, images, old, "--resume", "--liger"))
    assert f"{old}:1: made with other settings" in capsys.readouterr().err
