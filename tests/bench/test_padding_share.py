"""scripts/padding_share.py: the padding share of train_lora.py's micro-batches (what packing could save)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

from rrg.bench import padding_share as P  # noqa: E402


def test_share_counts_each_batch_padded_to_its_longest_rounded_up_as_the_collator_does():
    # One batch of both samples: 2 x 5 positions, 3 + 5 of them real.
    assert P.padding_share([3, 5], micro_batch=2, epochs=1, multiple=1) == pytest.approx(2 / 10)
    # train_lora.py's Collator rounds up to a multiple of 8: 2 x 8 positions, 8 real.
    assert P.padding_share([3, 5], micro_batch=2, epochs=1) == pytest.approx(8 / 16)
    # Batches of one sample are padded only up to the multiple.
    assert P.padding_share([8, 16, 24], micro_batch=1, epochs=2) == 0.0


def test_lengths_are_the_collators(tmp_path, tokenizer_dir):
    from rrg.data.entries import load_entries
    from rrg.model.processor import build_tokenizer
    from rrg.train.collate import encode_dataset

    images = tmp_path / "img"
    images.mkdir()
    (images / "a.png").write_bytes(b"")
    split = tmp_path / "train.json"
    split.write_text(
        '[{"id": "1", "images": ["a.png"], "prompt": "Write the report.", "response": "No acute disease."},'
        ' {"id": "2", "images": ["a.png"], "prompt": "Write it.", "response": "Heart size normal. Lungs clear."}]'
    )
    entries, tokenizer = load_entries(split), build_tokenizer(tokenizer_dir)
    expected = [len(s) for s in encode_dataset(entries, tokenizer, images, per_image=4)]
    assert P.sample_lengths(entries, tokenizer, "first", 4) == expected


@pytest.mark.slow
def test_bad_flags_are_one_line_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        sys, "argv", ["padding_share.py", "--json_file", "x.json", "--tokenizer_dir", str(tmp_path)]
    )
    with pytest.raises(SystemExit):
        P.main()
    assert capsys.readouterr().err.strip() == f"error: --tokenizer_dir {tmp_path}: no tokenizer.model there"
    monkeypatch.setattr(
        sys,
        "argv",
        ["padding_share.py", "--json_file", "x", "--tokenizer_dir", "t", "--micro_batches", "8,x"],
    )
    with pytest.raises(SystemExit):
        P.main()
    assert "--micro_batches '8,x': comma-separated integers" in capsys.readouterr().err
