"""What a run is made from: a resume refuses another split file, adapter or image set (eval and training);
image names stay inside --image_dir; malformed split fields, uids and files are one line naming them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rrg.data.entries import load_entries, resolve_image
from rrg.data.iu_xray import read_reports
from rrg.generate import run as evaluate
from rrg.io import InputError, read_json_records, read_jsonl
from rrg.score.card import read_predictions
from rrg.train import checkpoints as C
from tests.helpers import (
    REPORTS,
    SHORT,
    _args,
    _split,
    error_line,
    refused,
    run_training,
    write_split,
)

REPO = Path(__file__).resolve().parents[2]


def _refused_eval(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        evaluate.main(list(args))
    assert stopped.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _adapter(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


# --------------------------------------------------------------------------- eval --resume


@pytest.mark.slow
def test_eval_resume_refuses_a_replaced_adapter(tmp_path, asked, capsys):  # noqa: F811
    json_file, images = _split(tmp_path, "clean")
    adapter = _adapter(tmp_path / "lora", b"first adapter")
    out = tmp_path / "run" / "predictions.jsonl"
    evaluate.main(_args(json_file, images, out, "--lora_path", str(adapter), "--limit", "1"))
    (adapter / "adapter_model.safetensors").write_bytes(b"another adapter")  # same folder, new weights
    err = _refused_eval(capsys, *_args(json_file, images, out, "--lora_path", str(adapter), "--resume"))
    assert f"{out}:1: made from another adapter weights" in err
    assert [r["id"] for r in read_jsonl(out)] == ["10"]  # nothing appended


@pytest.mark.slow
def test_eval_resume_refuses_changed_references_and_another_split_file(tmp_path, asked, capsys):  # noqa: F811
    json_file, images = _split(tmp_path, "clean")
    out = tmp_path / "run" / "predictions.jsonl"
    evaluate.main(_args(json_file, images, out, "--limit", "1"))
    records = json.loads(json_file.read_text())
    records[1]["response"] = "Findings: effusion. Impression: effusion."  # a reference of the split changed
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(records))
    err = _refused_eval(capsys, *_args(changed, images, out, "--resume"))
    assert f"{out}:1: made from another split file" in err
    other = tmp_path / "other_split.json"  # another split, same image folder, same --out
    other.write_text(json.dumps([{**records[0], "id": "99"}]))
    assert "made from another split file" in _refused_eval(capsys, *_args(other, images, out, "--resume"))
    # The same inputs resume, --limit raised (the split file is the same file).
    evaluate.main(_args(json_file, images, out, "--resume"))
    assert [r["id"] for r in read_jsonl(out)] == ["10", "11"]


@pytest.mark.slow
def test_eval_resume_refuses_another_image_dir_with_other_images(tmp_path, asked, capsys):  # noqa: F811
    json_file, images = _split(tmp_path, "clean")
    out = tmp_path / "run" / "predictions.jsonl"
    evaluate.main(_args(json_file, images, out, "--limit", "1"))
    other = tmp_path / "other_images"
    other.mkdir()
    for path in images.iterdir():
        Image.new("RGB", (16, 16), "white").save(other / path.name)  # same names, other pictures
    err = _refused_eval(capsys, *_args(json_file, other, out, "--resume"))
    assert f"{out}:1: made from another images" in err
    copy = tmp_path / "copy"  # an exact copy (size and mtime kept): the same data, resumes
    shutil.copytree(images, copy, copy_function=shutil.copy2)
    evaluate.main(_args(json_file, copy, out, "--resume"))
    assert len(read_jsonl(out)) == 2


@pytest.mark.slow
def test_eval_resume_of_lines_without_recorded_inputs_goes_on_and_says_so(tmp_path, asked, capsys):  # noqa: F811
    json_file, images = _split(tmp_path, "clean")
    out = tmp_path / "run" / "predictions.jsonl"
    evaluate.main(_args(json_file, images, out, "--limit", "1"))
    line = read_jsonl(out)[0]
    del line["inputs"]  # as written before lines recorded their inputs
    out.write_text(json.dumps(line) + "\n")
    capsys.readouterr()
    evaluate.main(_args(json_file, images, out, "--resume"))
    assert "1 line(s) written before prediction lines recorded their inputs" in capsys.readouterr().out
    assert [("inputs" in r) for r in read_jsonl(out)] == [False, True]


@pytest.mark.slow
def test_a_killed_merges_temporary_file_is_removed_on_the_next_run(tmp_path, asked, capsys):  # noqa: F811
    json_file, images = _split(tmp_path, "clean")
    out = tmp_path / "run" / "predictions.jsonl"
    out.parent.mkdir()
    leftover = out.parent / ".predictions.jsonl.k3j_9xq2.tmp"  # what rrg.io.atomic_write_text names it
    leftover.write_text("half a merge")
    mine = out.parent / ".predictions.jsonl.notes.tmp"  # not a name our code makes: kept
    mine.write_text("mine")
    evaluate.main(_args(json_file, images, out))
    assert not leftover.exists() and mine.exists()
    assert f"note: removed {leftover}" in capsys.readouterr().out


# --------------------------------------------------------------------------- train --resume


@pytest.mark.slow
def test_train_resume_refuses_another_image_dir(tiny_model_dir, tmp_path, capsys):
    write_split(tmp_path, REPORTS)
    run_training(tiny_model_dir, tmp_path, *SHORT, "--stop_after_steps", "2")
    other = tmp_path / "other_images"
    other.mkdir()
    for path in (tmp_path / "images").iterdir():
        Image.new("RGB", (64, 48), "white").save(other / path.name)
    refused(tiny_model_dir, tmp_path, *SHORT, "--resume", "--image_dir", str(other))
    line = error_line(capsys)
    assert "train_config.json" in line and "images_sha256" in line


def test_a_fingerprint_from_before_images_entered_it_resumes_with_a_warning(tmp_path, capsys):
    new = C.fingerprint({"lr": 1e-3, "images_sha256": "abc"})
    C.check_fingerprint(C.fingerprint({"lr": 1e-3}), new, "old/state.json")
    assert "images_sha256 entered the fingerprint: not checked" in capsys.readouterr().out
    with pytest.raises(InputError, match="images_sha256 'abc' -> 'def'"):
        C.check_fingerprint(new, C.fingerprint({"lr": 1e-3, "images_sha256": "def"}), "x")


# --------------------------------------------------------------------------- images inside --image_dir


@pytest.mark.parametrize("name", ["../secret.png", "/etc/hostname", "a/../../secret.png"])
def test_image_names_outside_the_image_folder_are_refused_naming_the_entry(tmp_path, name):
    split = tmp_path / "split.json"
    split.write_text(json.dumps([{"id": "7", "images": [name], "prompt": "p", "response": "r"}]))
    with pytest.raises(InputError) as error:
        load_entries(split)
    assert f"{split}: entry 1: field 'images': {name!r} points outside the image folder" in str(error.value)
    with pytest.raises(InputError, match="outside the image folder"):
        resolve_image(tmp_path, name)  # names from elsewhere (predictions' "images") too


def test_eval_refuses_an_entry_pointing_outside_the_image_dir(tmp_path, asked, capsys):  # noqa: F811
    json_file, images = _split(tmp_path, "clean")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    records = json.loads(json_file.read_text())
    records[1]["images"] = ["../outside.png"]
    json_file.write_text(json.dumps(records))
    err = _refused_eval(capsys, *_args(json_file, images, tmp_path / "run" / "p.jsonl"))
    assert f"{json_file}: entry 2: field 'images': '../outside.png' points outside" in err


def test_a_same_named_file_in_the_working_directory_does_not_win(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "1_IM.png")
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (4, 4)).save(tmp_path / "1_IM.png")
    assert resolve_image(folder, "1_IM.png") == folder / "1_IM.png"


@pytest.mark.slow
def test_training_refuses_an_entry_pointing_outside_the_image_dir(tiny_model_dir, tmp_path, capsys):
    split = write_split(tmp_path, REPORTS)
    lines = split.read_text().splitlines()
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    lines[2] = json.dumps({**json.loads(lines[2]), "input_image": "../outside.png"})
    split.write_text("\n".join(lines) + "\n")
    refused(tiny_model_dir, tmp_path, *SHORT)
    line = error_line(capsys)
    assert f"{split}:3: field 'input_image': '../outside.png' points outside the image folder" in line


# --------------------------------------------------------------------------- malformed fields and files


@pytest.mark.parametrize(
    "views, shown", [("Frontal", "'Frontal'"), (5, "5"), (["Frontal", 3], "['Frontal', 3]")]
)
def test_views_not_a_list_of_strings_is_one_line(tmp_path, views, shown):
    split = tmp_path / "split.jsonl"
    split.write_text(
        json.dumps({"id": "1", "images": ["a.png"], "views": views, "prompt": "p", "response": "r"})
    )
    with pytest.raises(InputError) as error:
        load_entries(split)
    assert (
        str(error.value)
        == f"{split}:1: field 'views' must be a list of strings such as [\"Frontal\"], got {shown}"
    )


@pytest.mark.parametrize("field", ["id", "study_id"])
def test_a_fractional_id_is_refused(tmp_path, field):
    split = tmp_path / "split.jsonl"
    split.write_text(json.dumps({field: 1.5, "images": ["a.png"], "prompt": "p", "response": "r"}))
    with pytest.raises(
        InputError, match=rf"{split}:1: field '{field}' must be a string or an integer, got 1.5"
    ):
        load_entries(split)


def test_a_fractional_uid_in_the_reports_csv_is_refused(tmp_path):
    path = tmp_path / "indiana_reports.csv"
    columns = ["uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression"]
    pd.DataFrame([[1, *"abcdefg"], [1.5, *"abcdefg"]], columns=columns).to_csv(path, index=False)
    with pytest.raises(InputError, match=rf"{path}:3: field 'uid' is not a whole number \(1.5\)"):
        read_reports(path)


def test_deeply_nested_json_and_a_folder_given_as_a_file_are_one_line(tmp_path):
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000)
    with pytest.raises(InputError, match=f"{nested}: JSON nested too deeply"):
        read_json_records(nested)
    jsonl = tmp_path / "nested.jsonl"
    jsonl.write_text('{"a": ' + "[" * 100_000 + "\n")
    with pytest.raises(InputError, match=f"{jsonl}:1: JSON line nested too deeply"):
        load_entries(jsonl)
    with pytest.raises(InputError, match=f"{tmp_path}: is a folder, not a file"):
        load_entries(tmp_path)
    with pytest.raises(InputError, match=f"{tmp_path}: is a folder, not a file"):
        read_predictions(tmp_path)  # eval/score.py's reader


@pytest.mark.slow
def test_score_cli_on_a_folder_is_one_line(tmp_path):
    repo = REPO
    env = {**os.environ, "PYTHONPATH": str(repo)}  # this checkout's rrg, not an installed one
    result = subprocess.run(
        [sys.executable, str(repo / "eval" / "score.py"), str(tmp_path), "--out", str(tmp_path / "card.json")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {tmp_path}: is a folder, not a file"


def test_a_decompression_bomb_in_eval_is_one_line_before_any_model(tmp_path, asked, capsys, monkeypatch):  # noqa: F811
    json_file, images = _split(tmp_path, "clean")
    # PIL's limit scaled down (a 20000 x 20000 PNG against the real one takes 400 MB to write here).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    name = sorted(images.iterdir())[0].name
    Image.fromarray(np.zeros((100, 100), dtype=np.uint8)).save(images / name)
    err = _refused_eval(capsys, *_args(json_file, images, tmp_path / "run" / "p.jsonl"))
    assert f"{json_file}: entry 1 (id '10'): unreadable image" in err and "DecompressionBombError" in err
    assert asked == []


# --------------------------------------------------------------------------- the case browser


def _browse_module():
    from rrg.report import browse

    return browse


def _browse_run(tmp_path: Path) -> tuple[Path, Path]:
    """One run on the three shared studies, its images copied into tmp_path/images (to be damaged)."""
    from tests.helpers import shared_path, write_runs

    source = shared_path("iu_xray", "images")
    images = tmp_path / "images"
    shutil.copytree(source, images)
    lora, _ = write_runs(tmp_path / "runs")
    return lora, images


def test_browser_refuses_an_image_name_outside_the_image_dir(tmp_path):
    lora, images = _browse_run(tmp_path)
    predictions = lora / "predictions.jsonl"
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    lines[1]["images"] = ["../../../../../../etc/hostname"]
    predictions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    browse = _browse_module()
    with pytest.raises(InputError) as error:
        browse.build_page([lora], tmp_path / "page" / "index.html", image_dir=images)
    assert str(error.value).startswith(
        f"{predictions}:2: field 'images': '../../../../../../etc/hostname' points"
    )
    assert not (tmp_path / "page" / "index.html").exists()


@pytest.mark.parametrize("damage", ["truncated", "not an image", "huge"])
def test_browser_shows_an_unreadable_image_as_a_counted_placeholder(tmp_path, damage, capsys, monkeypatch):
    lora, images = _browse_run(tmp_path)
    victim = sorted(images.iterdir())[0]
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:200])
    elif damage == "not an image":
        victim.write_text("hello")
    else:  # over PIL's decompression-bomb limit, scaled down as in the eval test
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # the shared X-rays stay below it
        Image.fromarray(np.zeros((1500, 1500), dtype=np.uint8)).save(victim)
    browse = _browse_module()
    for thumbnail_px in (0, 64):
        out = browse.build_page(
            [lora], tmp_path / "page" / "index.html", image_dir=images, thumbnail_px=thumbnail_px
        )
        shown = [i for c in _page_data(out)["cases"] for i in c["images"] if i["name"] == victim.name]
        assert shown and all(i["src"] is None and i["unreadable"] for i in shown)
        assert f"warning: {len(shown)} image(s) unreadable, shown as a placeholder" in capsys.readouterr().out


def _page_data(page: Path) -> dict:
    import re

    html = page.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))
