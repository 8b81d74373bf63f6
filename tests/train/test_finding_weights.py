"""--finding_weight: finding sentences' tokens weigh W, the loss is sum(w * CE) / sum(w), exact under
accumulation (tiny model, CPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import rrg.train.fingerprint
import rrg.train.settings
from rrg.data.entries import load_entries
from rrg.model.processor import image_token_id, load_processor
from rrg.train import step as T
from rrg.train.collate import IGNORE_INDEX, Collator, ReportDataset, encode_dataset
from rrg.train.finding_weights import response_weights, sentence_spans
from tests.helpers import PER_IMAGE, REPORTS, lora_grads, lora_model, write_split

W = 3.0


def weighted_batches(tiny_model_dir, folder, weight):
    processor = load_processor(tiny_model_dir)
    entries = load_entries(write_split(folder, REPORTS[:3]))
    samples = encode_dataset(
        entries, processor.tokenizer, folder / "images", PER_IMAGE, finding_weight=weight
    )
    dataset = ReportDataset(samples, processor.image_processor)
    collator = Collator(processor.tokenizer.pad_token_id, image_token_id(processor.tokenizer), PER_IMAGE)
    return samples, [collator([dataset[i]]) for i in range(3)], collator([dataset[i] for i in range(3)])


@pytest.mark.slow
def test_sentence_spans_and_token_weights(tiny_model_dir):
    text = "Findings: The heart is normal in size. Mild cardiomegaly. Impression: Cardiomegaly."
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "Findings: The heart is normal in size.", "Mild cardiomegaly.", "Impression: Cardiomegaly."
    ]  # fmt: skip
    tokenizer = load_processor(tiny_model_dir).tokenizer
    enc = tokenizer([text], add_special_tokens=False, return_offsets_mapping=True)
    (weights,) = response_weights([text], enc["offset_mapping"], W)
    heavy = "".join(
        tokenizer.convert_ids_to_tokens([t for t, w in zip(enc["input_ids"][0], weights) if w == W])
    )
    assert heavy.replace("▁", " ").strip() == "Mild cardiomegaly. Impression: Cardiomegaly."


@pytest.mark.slow
def test_loss_is_the_hand_computed_weighted_mean(tiny_model_dir, tmp_path):
    samples, _, batch = weighted_batches(tiny_model_dir, tmp_path, W)
    assert any(w == W for s in samples for w in s.weights) and any(
        w == 1.0 for s in samples for w in s.weights
    )
    model = lora_model(tiny_model_dir)
    loss_sum, weight_sum = T.compute_loss(model, batch)
    with torch.no_grad():
        logits = model(
            **{k: v for k, v in batch.items() if k not in ("logit_positions", "label_weights", "labels")}
        ).logits
    # By hand: every supervised position's CE from the full logits, weighted, over the summed weights.
    labels, weights = batch["labels"][:, 1:], batch["label_weights"][:, 1:]
    ce = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    mask = labels != IGNORE_INDEX
    expected = (ce * weights * mask).sum() / (weights * mask).sum()
    torch.testing.assert_close(loss_sum / weight_sum, expected, rtol=1e-5, atol=1e-5)
    assert float(weight_sum) == T.count_label_tokens(batch) > int(mask.sum())  # W > 1 adds weight
    # W = 1 is the plain token mean
    _, _, plain = weighted_batches(tiny_model_dir, tmp_path / "plain", 1.0)
    assert "label_weights" not in plain


@pytest.mark.slow
def test_weighted_accumulation_is_exact(tiny_model_dir, tmp_path):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    _, singles, together = weighted_batches(tiny_model_dir, tmp_path, W)
    model = lora_model(tiny_model_dir)
    T.accumulate_gradients(model, singles, accelerator)
    accumulated = lora_grads(model)
    model.zero_grad()
    loss_sum, weight_sum = T.compute_loss(model, together)
    (loss_sum / weight_sum).backward()
    for name, grad in lora_grads(model).items():
        assert (accumulated[name] - grad).norm() <= 1e-4 * grad.norm(), name


def test_finding_weight_enters_the_fingerprint_only_when_set(tmp_path):
    from accelerate import Accelerator

    split = write_split(tmp_path, REPORTS[:2])
    accelerator = Accelerator(cpu=True)
    default = rrg.train.fingerprint.run_fingerprint(rrg.train.settings.TrainConfig(json_file=str(split)), accelerator)
    weighted = rrg.train.fingerprint.run_fingerprint(
        rrg.train.settings.TrainConfig(json_file=str(split), finding_weight=2.0), accelerator
    )
    assert "finding_weight" not in str(default)  # runs started before the flag still resume
    assert "finding_weight" in str(weighted) and weighted != default
