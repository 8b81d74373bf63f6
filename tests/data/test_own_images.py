"""The user's own images (rrg.data.own_images, report2json --dataset images) and an eval run without references."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rrg.data.entries import load_entries
from rrg.data.own_images import csv_entries, folder_entries
from rrg.generate import batch as generate
from rrg.generate import run as evaluate
from rrg.io import InputError, append_jsonl, read_jsonl
from rrg.train.collate import encode_dataset
from tests.dataset_fixtures import gradient, make_dicom, save_jpg, save_png


def image_folder(root):
    save_png(root / "a.png", np.zeros((8, 8), dtype=np.uint8))
    save_png(root / "sub" / "b16.png", gradient(high=4095))
    save_jpg(root / "c.jpg")
    make_dicom(root / "d.dcm", gradient(high=4095), "MONOCHROME1", 12)
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_becomes_entries_without_reports(tmp_path):
    folder = image_folder(tmp_path / "mine")
    entries = folder_entries(folder)
    assert [e.images for e in entries] == [["a.png"], ["c.jpg"], ["d.dcm"], ["sub/b16.png"]]
    assert [e.id for e in entries] == ["a", "c", "d", "sub/b16"]
    assert all(e.response == "" for e in entries)


def test_bad_image_in_folder_is_one_line(tmp_path):
    folder = image_folder(tmp_path / "mine")
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InputError, match="broken.png"):
        folder_entries(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no image files"):
        folder_entries(tmp_path / "empty")


def test_csv_with_reports_and_indications(tmp_path):
    folder = image_folder(tmp_path / "mine")
    csv = folder / "list.csv"
    csv.write_text(
        "image,report,indication\n"
        "a.png,Findings: Clear lungs. Impression: Normal.,Cough\n"
        'c.jpg;d.dcm,"No acute process.",\n'
    )
    entries = csv_entries(csv, None, indication=True)
    assert entries[0].response == "Findings: Clear lungs. Impression: Normal." and "Indication: Cough" in entries[0].prompt
    assert entries[1].images == ["c.jpg", "d.dcm"] and entries[1].findings == "No acute process."
    csv.write_text("image\n../escape.png\n")
    with pytest.raises(InputError, match=r"list.csv:2: image path '../escape.png'"):
        csv_entries(csv, None, indication=False)
    csv.write_text("image\nmissing.png\n")
    with pytest.raises(InputError, match=r"list.csv:2: .*missing.png: image not found"):
        csv_entries(csv, None, indication=False)


@pytest.mark.slow
def test_cli_then_eval_generates_and_says_scoring_is_skipped(tmp_path, monkeypatch, capsys):
    from rrg.data.report2json import main

    folder = image_folder(tmp_path / "mine")
    out = tmp_path / "split"
    assert main(["--dataset", "images", "--data_dir", str(folder), "--out", str(out)]) == 0
    split = out / "test_report.json"
    assert all("response" in r and r["response"] == "" for r in json.loads(split.read_text()))

    def fake_generate(model, processor, items, paths, out, identity, settings, num_workers=0, progress=True,
                      inputs_of=None):
        for _, names in items:  # the images really decode through the shared reader
            assert all(generate.load_image(folder / n).mode == "RGB" for n in names)
        append_jsonl(out, *(generate.prediction_line(e, n, "Findings: x. Impression: y.", identity) for e, n in items))

    def no_scoring(*args, **kwargs):
        raise AssertionError("scored entries without references")

    import rrg.score.card

    monkeypatch.setattr(evaluate, "load_for_eval", lambda config: (None, None))
    monkeypatch.setattr(evaluate, "generate_predictions", fake_generate)
    monkeypatch.setattr(rrg.score.card, "score_records", no_scoring)
    predictions = tmp_path / "run" / "predictions.jsonl"
    evaluate.main(["--json_file", str(split), "--image_dir", str(folder), "--out", str(predictions), "--num_workers", "0"])
    assert len(read_jsonl(predictions)) == 4
    printed = capsys.readouterr().out
    assert "scoring skipped" in printed and "not scored: the entries have no reference reports" in printed


def test_mixed_references_and_training_without_a_report_are_refused(tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps([
        {"id": "1", "images": ["a.png"], "prompt": "q", "response": "Findings: a."},
        {"id": "2", "images": ["b.png"], "prompt": "q"},
    ]))
    entries = load_entries(split)
    with pytest.raises(InputError, match="entry '2' has no reference report"):
        evaluate.has_references(entries, split)
    with pytest.raises(InputError, match="entry '2' has no report \\(response\\) to train on"):
        encode_dataset(entries[1:], tokenizer=None, image_dir=tmp_path, per_image=1)
