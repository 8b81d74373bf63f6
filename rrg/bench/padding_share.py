"""The padding share of train_lora.py's micro-batches (what packing could save)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
from rrg.cli import exits_on_input_error, flag, parse_flags
from rrg.data.entries import load_entries
from rrg.io import InputError
from rrg.train.collate import encode_prompt, length_grouped_batches, question_of, select_images

REPO = Path(__file__).resolve().parents[2]


TRAIN_SEED = 42  # train_lora.py's --seed default (its sample order)
PAD_TO_MULTIPLE_OF = 8  # train_lora.py's Collator


@dataclass
class PaddingConfig:
    json_file: str = flag(help="A split file (data/report2json.py's train_report.json).", nonempty=True)
    tokenizer_dir: str = flag(help="Folder with the LLaVA-Med tokenizer (tokenizer.model).", nonempty=True)
    micro_batches: str = flag("8,16", "Comma-separated micro-batch sizes.")
    views: str = flag("first", "train_lora.py --views: first or all.", choices=["first", "all"])
    image_tokens: int = flag(576, "Tokens an image (LLaVA-Med v1.5: 576).", ge=1)
    epochs: int = flag(3, "Epochs of length-grouped shuffles to average over.", ge=1)
    seed: int = flag(TRAIN_SEED, "train_lora.py --seed (the sample order).", ge=0)


def sample_lengths(entries, tokenizer, views: str, per_image: int) -> list[int]:
    """Token count of each training sample: prompt ids + report ids + `</s>` (rrg.train.collate.encode_sample)."""
    prompts: dict[tuple[str, int], int] = {}
    reports = tokenizer([e.response.strip() for e in entries], add_special_tokens=False)["input_ids"]
    lengths = []
    for entry, report in zip(entries, reports):
        key = (question_of(entry), len(select_images(entry, views)))
        if key not in prompts:
            prompts[key] = len(encode_prompt(tokenizer, key[0], key[1], per_image))
        lengths.append(prompts[key] + len(report) + 1)
    return lengths


def padding_share(
    lengths: list[int],
    micro_batch: int,
    epochs: int,
    seed: int = TRAIN_SEED,
    multiple: int = PAD_TO_MULTIPLE_OF,
) -> float:
    """Padded positions / all positions of the micro-batches train_lora.py would build (one process)."""
    real = padded = 0
    for epoch in range(epochs):
        for batch in length_grouped_batches(lengths, micro_batch, 1, 0, seed=seed, epoch=epoch):
            longest = -(-max(lengths[i] for i in batch) // multiple) * multiple
            real += sum(lengths[i] for i in batch)
            padded += longest * len(batch)
    return (padded - real) / padded


@exits_on_input_error
def main() -> None:
    from rrg.model.processor import build_tokenizer

    cfg = parse_flags(PaddingConfig, description=__doc__)
    try:
        micro_batches = [int(x) for x in cfg.micro_batches.split(",")]
    except ValueError:
        raise InputError(f"--micro_batches {cfg.micro_batches!r}: comma-separated integers") from None
    if not (Path(cfg.tokenizer_dir) / "tokenizer.model").is_file():
        raise InputError(f"--tokenizer_dir {cfg.tokenizer_dir}: no tokenizer.model there")
    entries = load_entries(cfg.json_file)
    lengths = sample_lengths(entries, build_tokenizer(Path(cfg.tokenizer_dir)), cfg.views, cfg.image_tokens)
    print(f"{cfg.json_file}: {len(lengths)} samples, {sum(lengths) / len(lengths):.1f} tokens on average")
    for micro_batch in micro_batches:
        share = padding_share(lengths, micro_batch, cfg.epochs, cfg.seed)
        print(f"micro-batch {micro_batch}: padding {100 * share:.2f}% of the tokens ({cfg.epochs} epochs)")
