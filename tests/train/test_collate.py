"""Tokenisation, label masking, the image-token guard, batching and length grouping (rrg.train.collate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrg.data.entries import load_entries
from rrg.model.processor import ImageTokenError, image_token_id, load_processor
from rrg.model.prompts import render_prompt
from rrg.train.collate import (
    IGNORE_INDEX,
    Collator,
    ReportDataset,
    encode_dataset,
    encode_prompt,
    eval_batches,
    length_grouped_batches,
)

PER_IMAGE = 16  # tiny model: 56 px / 14 px patches -> 4 x 4

REPORTS = [
    "Findings: The heart is normal in size. Impression: No acute disease.",
    "Findings: Mild cardiomegaly; small left pleural effusion. Impression: Cardiomegaly with effusion.",
    "Findings: Clear lungs. Impression: Normal chest.",
]


def write_split(folder: Path, reports: list[str], images_per_entry: int = 1) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for i, report in enumerate(reports):
        names = []
        for k in range(images_per_entry):
            name = f"{i}_IM-{k}.png"
            Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / "images" / name)
            names.append(name)
        records.append({"id": str(i), "images": names, "prompt": "Write the report.", "response": report})
    path = folder / "split.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(tiny_model_dir)


def make_batch(processor, folder: Path, reports=REPORTS, views="first", images_per_entry=1, pad_to=1):
    entries = load_entries(write_split(folder, reports, images_per_entry))
    samples = encode_dataset(entries, processor.tokenizer, folder / "images", PER_IMAGE, views)
    dataset = ReportDataset(samples, processor.image_processor)
    collator = Collator(
        processor.tokenizer.pad_token_id,
        image_token_id(processor.tokenizer),
        PER_IMAGE,
        pad_to_multiple_of=pad_to,
    )
    return collator([dataset[i] for i in range(len(dataset))]), samples


@pytest.mark.slow
def test_labels_hold_exactly_the_report_and_eos(processor, tmp_path):
    batch, _ = make_batch(processor, tmp_path)
    tokenizer = processor.tokenizer
    for row, report in enumerate(REPORTS):
        label_ids = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX].tolist()
        assert tokenizer.decode(label_ids) == report + "</s>"
        # Everything before the report (prompt, image tokens) and the padding after it is masked.
        first = (batch["labels"][row] != IGNORE_INDEX).nonzero()[0].item()
        prompt_ids = batch["input_ids"][row][:first].tolist()
        assert prompt_ids[0] == tokenizer.bos_token_id
        assert prompt_ids.count(image_token_id(tokenizer)) == PER_IMAGE
        assert tokenizer.decode(prompt_ids).endswith("[/INST]")


@pytest.mark.slow
def test_batch_is_padded_to_its_longest_sample(processor, tmp_path):
    batch, samples = make_batch(processor, tmp_path)
    lengths = [len(s) for s in samples]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    # On the right, after every real token: training runs attention without a padding mask.
    for row, n in enumerate(lengths):
        assert batch["attention_mask"][row, :n].all() and not batch["attention_mask"][row, n:].any()
    padding = batch["attention_mask"] == 0
    assert (batch["labels"][padding] == IGNORE_INDEX).all()
    assert (batch["input_ids"][padding] == processor.tokenizer.pad_token_id).all()
    assert batch["pixel_values"].shape == (3, 3, 56, 56)


@pytest.mark.slow
def test_padding_rounds_up_and_logit_positions_precede_every_label(processor, tmp_path):
    batch, samples = make_batch(processor, tmp_path, pad_to=8)
    lengths = [len(s) for s in samples]
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and max(lengths) <= width < max(lengths) + 8
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    # The logit at position j predicts token j + 1: the loss needs exactly the j whose next token is a
    # label in some row (computed on the CPU by the collator, so the GPU never stalls the host for it).
    labels = batch["labels"].tolist()
    expected = sorted({j for row in labels for j in range(width - 1) if row[j + 1] != IGNORE_INDEX})
    assert batch["logit_positions"].tolist() == expected


@pytest.mark.slow
def test_prompt_ids_match_the_processor(processor, xray_paths):
    """Training's prompt encoding equals what LlavaProcessor produces for generation."""
    question = "Write the report."
    image = Image.open(xray_paths[0]).convert("RGB")
    expected = processor(text=render_prompt(question, 1), images=[image], return_tensors="pt")["input_ids"][0]
    assert encode_prompt(processor.tokenizer, question, 1, PER_IMAGE) == expected.tolist()


@pytest.mark.slow
def test_views_all_puts_every_image_in_the_prompt(processor, tmp_path):
    batch, samples = make_batch(processor, tmp_path, REPORTS[:2], views="all", images_per_entry=2)
    assert batch["pixel_values"].shape[0] == 4
    for row in range(2):
        assert (batch["input_ids"][row] == image_token_id(processor.tokenizer)).sum() == 2 * PER_IMAGE
    assert all(len(s.image_paths) == 2 for s in samples)


@pytest.mark.slow
def test_guard_fires_when_image_tokens_are_missing(processor, tmp_path):
    entries = load_entries(write_split(tmp_path, REPORTS[:1]))
    (sample,) = encode_dataset(entries, processor.tokenizer, tmp_path / "images", PER_IMAGE)
    token = image_token_id(processor.tokenizer)
    sample.input_ids = [t for t in sample.input_ids if t != token]  # what plain-text "<image>" gives
    sample.labels = sample.labels[: len(sample.input_ids)]
    item = ReportDataset([sample], processor.image_processor)[0]
    collator = Collator(processor.tokenizer.pad_token_id, token, PER_IMAGE)
    with pytest.raises(ImageTokenError, match="0 image tokens"):
        collator([item])


@pytest.mark.slow
def test_guard_fires_when_images_and_tokens_disagree(processor, tmp_path):
    batch_items = ReportDataset(
        encode_dataset(
            load_entries(write_split(tmp_path, REPORTS[:1], 2)),
            processor.tokenizer,
            tmp_path / "images",
            PER_IMAGE,
        ),
        processor.image_processor,
    )
    item = batch_items[0]  # one image in the prompt ("first" view)...
    item["pixel_values"] = torch.cat([item["pixel_values"], item["pixel_values"]])  # ...but two images
    with pytest.raises(ImageTokenError):
        Collator(processor.tokenizer.pad_token_id, image_token_id(processor.tokenizer), PER_IMAGE)([item])


def test_length_grouped_batches_shard_one_global_order():
    lengths = [int(x) for x in np.random.default_rng(1).integers(50, 500, size=401)]
    shards = [length_grouped_batches(lengths, 2, 3, rank, seed=7, epoch=0) for rank in range(3)]
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
    seen = [i for shard in shards for batch in shard for i in batch]
    assert set(seen) == set(range(401))  # everything covered (a few repeated to even the ranks out)
    assert len(seen) - 401 < 2 * 3
    assert shards[0] == length_grouped_batches(lengths, 2, 3, 0, seed=7, epoch=0)  # deterministic
    assert shards[0] != length_grouped_batches(lengths, 2, 3, 0, seed=7, epoch=1)  # reshuffled per epoch
    # Micro-batches of one global step (same index on every rank) have similar lengths.
    spread = np.mean([np.ptp([lengths[i] for s in shards for i in s[k]]) for k in range(len(shards[0]))])
    assert spread < np.ptp(lengths) / 10


def test_eval_batches_count_every_entry_once():
    per_rank = [eval_batches(7, 2, 3, rank) for rank in range(3)]
    assert len({len(b) for b in per_rank}) == 1
    counted = sorted(i for batches in per_rank for batch, counts in batches if counts for i in batch)
    assert counted == list(range(7))
