"""Samples -> batches: tokenise once at setup, load images in DataLoader workers, pad per batch.

A training sample is

    <s>[INST] <image>x576\\n{question} [/INST] {response}</s>
    |------------ prompt: label -100 ------------|---- labels ----|

Every entry is tokenised once (`encode_dataset`), so epochs never re-tokenise; workers only open and
preprocess images (`ReportDataset.__getitem__`). `Collator` pads a batch to its own longest sample and
runs the image-token guard on every sample. Batches are grouped by length (`length_grouped_batches`)
so little compute goes to padding, and each data-parallel rank takes its share of the same global order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from transformers.trainer_pt_utils import get_length_grouped_indices

from rrg.data.entries import Entry, resolve_image
from rrg.data.images import read_image
from rrg.io import InputError
from rrg.model.processor import check_image_tokens
from rrg.model.prompts import IMAGE_TOKEN, render_prompt

IGNORE_INDEX = -100  # torch CrossEntropyLoss's ignore_index: prompt and padding carry it


def question_of(entry: Entry) -> str:
    # Some reference-format files carry "<image>\n" inside the prompt text; the template places the
    # images itself (one per view), so a literal one here would add image tokens with no image.
    return entry.prompt.replace(IMAGE_TOKEN + "\n", "").replace(IMAGE_TOKEN, "").strip()


def encode_prompt(tokenizer, question: str, n_images: int, per_image: int) -> list[int]:
    """Token ids of `<s>[INST] <image>...\\n{question} [/INST]` with each `<image>` expanded.

    Expanding the text before tokenising is what LlavaProcessor does, so training (here) and
    generation (which may call this or the processor) see identical prompt ids.
    """
    text = render_prompt(question, n_images).replace(IMAGE_TOKEN, IMAGE_TOKEN * per_image)
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if not ids or ids[0] != tokenizer.bos_token_id:
        ids = [tokenizer.bos_token_id, *ids]
    return ids


@dataclass
class EncodedSample:
    input_ids: list[int]
    labels: list[int]
    image_paths: list[str]
    source: str  # "file:line" of the entry, for error messages
    # Loss weight of each position (rrg.train.finding_weights); None: every label weighs 1.
    weights: list[float] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_sample(
    tokenizer,
    prompt_ids: list[int],
    response_ids: list[int],
    image_paths: list[str],
    source: str,
    max_length: int | None = None,
    response_weights: list[float] | None = None,
) -> EncodedSample:
    """prompt + response + `</s>`; labels hold the response and `</s>` only (weights: one per response
    token, `</s>` weighs 1, the prompt 0)."""
    # The response is tokenised on its own (no BOS), exactly the tokens the model must generate
    # after the prompt at inference time; `</s>` teaches it to stop.
    target = [*response_ids, tokenizer.eos_token_id]
    if max_length is not None and len(prompt_ids) + len(target) > max_length:
        keep = max_length - len(prompt_ids)
        if keep < 2:
            raise InputError(
                f"{source}: the prompt alone is {len(prompt_ids)} tokens (image tokens included); "
                f"--max_length {max_length} leaves no room for the report"
            )
        target = target[:keep]  # truncated reports lose their tail (and `</s>`), never image tokens
    weights = None
    if response_weights is not None:
        weights = [0.0] * len(prompt_ids) + [*response_weights, 1.0][: len(target)]
    return EncodedSample(
        input_ids=[*prompt_ids, *target],
        labels=[IGNORE_INDEX] * len(prompt_ids) + target,
        image_paths=list(image_paths),
        source=source,
        weights=weights,
    )


def select_images(entry: Entry, views: str) -> list[str]:
    if views == "first":
        return entry.images[:1]
    if views == "all":
        return list(entry.images)
    raise ValueError(f"views must be 'first' or 'all', got {views!r}")


def encode_dataset(
    entries: Sequence[Entry],
    tokenizer,
    image_dir: str | os.PathLike,
    per_image: int,
    views: str = "first",
    max_length: int | None = None,
    finding_weight: float = 1.0,
) -> list[EncodedSample]:
    """Tokenise every entry once (batched), resolving its image paths. finding_weight != 1 gives the
    tokens of finding sentences that weight (rrg.train.finding_weights)."""
    questions = [question_of(e) for e in entries]
    image_lists = [select_images(e, views) for e in entries]
    prompt_cache: dict[tuple[str, int], list[int]] = {}  # most entries share one question
    for entry in entries:
        if not entry.response.strip():
            raise InputError(f"{entry.source}: entry {entry.id!r} has no report (response) to train on")
    texts = [e.response.strip() for e in entries]
    weighted = finding_weight != 1.0
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=weighted)
    responses = encoded["input_ids"]
    all_weights: list = [None] * len(entries)
    if weighted:
        from rrg.train.finding_weights import response_weights

        all_weights = response_weights(texts, encoded["offset_mapping"], finding_weight)
    samples = []
    for entry, question, images, response_ids, weights in zip(
        entries, questions, image_lists, responses, all_weights
    ):
        key = (question, len(images))
        if key not in prompt_cache:
            prompt_cache[key] = encode_prompt(tokenizer, question, len(images), per_image)
        paths = []
        for name in images:
            try:
                paths.append(str(resolve_image(image_dir, name)))
            except InputError as e:
                raise InputError(f"{entry.source}: {e}") from None
        samples.append(
            encode_sample(
                tokenizer, prompt_cache[key], response_ids, paths, entry.source, max_length, weights
            )
        )
    return samples


def load_image(path: str) -> Image.Image:
    return read_image(path)


class ReportDataset(torch.utils.data.Dataset):
    """Pre-tokenised samples; `__getitem__` (run in DataLoader workers) only loads and preprocesses images."""

    def __init__(self, samples: Sequence[EncodedSample], image_processor):
        self.samples = list(samples)
        self.image_processor = image_processor

    def __len__(self) -> int:
        return len(self.samples)

    def lengths(self) -> list[int]:
        return [len(s) for s in self.samples]

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        images = [load_image(p) for p in sample.image_paths]
        pixel_values = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        item = {
            "input_ids": torch.tensor(sample.input_ids, dtype=torch.long),
            "labels": torch.tensor(sample.labels, dtype=torch.long),
            "pixel_values": pixel_values,
            "source": sample.source,
        }
        if sample.weights is not None:
            item["label_weights"] = torch.tensor(sample.weights, dtype=torch.float32)
        return item


@dataclass
class Collator:
    """Pad to the batch's longest sample and check every sample's image tokens.

    Padding goes on the right, after every real token: training relies on it to run attention
    without a padding mask (rrg.train.step.compute_loss). The batch still carries `attention_mask`, for
    counting tokens.

    pad_to_multiple_of rounds the padded length up (8 in train_lora.py): a compiled layer specialises
    on whether the length is a multiple of 8 (aligned memory), so mixed lengths would compile twice.
    """

    pad_token_id: int
    image_token_id: int
    per_image: int
    pad_to_multiple_of: int = 1

    def __call__(self, items: list[dict]) -> dict:
        for item in items:
            # The guard: a sample whose prompt lost its image tokens would train a text-only model.
            check_image_tokens(
                item["input_ids"],
                item["pixel_values"].shape[0],
                self.image_token_id,
                self.per_image,
                item["source"],
            )
        longest = max(len(item["input_ids"]) for item in items)
        longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(items), longest), dtype=torch.long)
        weighted = "label_weights" in items[0]
        if any(("label_weights" in item) != weighted for item in items):
            raise ValueError("a batch mixes weighted and unweighted samples")
        weights = torch.zeros((len(items), longest), dtype=torch.float32) if weighted else None
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            input_ids[row, :n] = item["input_ids"]
            labels[row, :n] = item["labels"]
            attention_mask[row, :n] = 1
            if weighted:
                weights[row, :n] = item["label_weights"]
        extra = {"label_weights": weights} if weighted else {}
        return {
            **extra,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            # Computed here, on the CPU: on the GPU, `nonzero` would stall the host every micro-batch.
            "logit_positions": label_positions(labels),
            # Llava takes all images of the batch stacked, in the order their tokens appear.
            "pixel_values": torch.cat([item["pixel_values"] for item in items]),
        }


def label_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose logits predict a label: j such that labels[:, j + 1] is not ignored in any row.

    The loss needs logits only there (`logits_to_keep`): the report is ~100 tokens of a ~700-token sample.
    """
    has_target = (labels[:, 1:] != IGNORE_INDEX).any(dim=0)
    return has_target.nonzero().squeeze(-1)


def length_grouped_batches(
    lengths: Sequence[int],
    batch_size: int,
    world_size: int,
    rank: int,
    seed: int,
    epoch: int,
    shuffle: bool = True,
) -> list[list[int]]:
    """This rank's micro-batches (lists of dataset indices) for one epoch.

    The global order depends only on (seed, epoch), so every rank computes the same one and a resumed
    run can skip exactly the batches it already consumed. Samples of similar length are grouped into
    global batches of batch_size x world_size; rank r takes micro-batches r, r + W, r + 2W, ...
    Ranks must run the same number of steps, so the last round is completed by wrapping around
    (as DistributedSampler pads).
    """
    if shuffle:
        generator = torch.Generator().manual_seed(seed + epoch)
        order = get_length_grouped_indices(list(lengths), batch_size * world_size, generator=generator)
    else:
        order = list(range(len(lengths)))
    return shard_batches(
        [order[i : i + batch_size] for i in range(0, len(order), batch_size)], world_size, rank
    )


def shard_batches(batches: list[list[int]], world_size: int, rank: int) -> list[list[int]]:
    padding = -len(batches) % world_size
    batches = batches + [batches[i % len(batches)] for i in range(padding)]
    return batches[rank::world_size]


def eval_batches(n: int, batch_size: int, world_size: int, rank: int) -> list[tuple[list[int], bool]]:
    """This rank's validation batches in file order, each with `counts`: False for the wrap-around
    padding batches that keep ranks in step (they run, so collectives match, but are not counted)."""
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    counts = [True] * len(batches) + [False] * (-len(batches) % world_size)
    return list(zip(shard_batches(batches, world_size, rank), counts[rank::world_size]))
