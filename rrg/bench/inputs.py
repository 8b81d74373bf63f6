"""The benchmark's inputs: report texts, synthetic images, split entries, a random checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration

import rrg.generate.batch
import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
from rrg.bench.measure import free_gpu
from rrg.data.entries import Entry
from rrg.model.config import llava_med_config
from rrg.model.processor import build_processor, build_tokenizer
from rrg.model.prompts import format_response, report_question
from rrg.model.tiny import generation_config


def real_reports(csv_path: Path, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(findings, impression) of n IU X-Ray studies that have both; the first k are the same for any n."""
    table = pd.read_csv(csv_path)
    table = table.dropna(subset=["findings", "impression"])
    table = table.sample(n=min(n, len(table)), random_state=seed, replace=False)
    return list(zip(table["findings"], table["impression"]))


def synthetic_images(folder: Path, n: int = 16) -> list[str]:
    """Noise PNGs of the Kaggle images' size (512 x 512): preprocessing cost is real, content is not."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"{i}_IM-0000-1001.dcm.png"
        Image.fromarray(rng.integers(0, 256, (512, 512), dtype=np.uint8)).convert("RGB").save(folder / name)
        names.append(name)
    return names


def make_entries(reports: list[tuple[str, str]], images: list[str]) -> list[Entry]:
    return [
        Entry(
            id=str(i),
            study_id=str(i),
            images=[images[i % len(images)]],
            prompt=report_question(),
            response=format_response(f, imp),
            findings=f,
            impression=imp,
        )
        for i, (f, imp) in enumerate(reports)
    ]


def build_random_checkpoint(folder: Path, tokenizer_dir: Path) -> None:
    """The real architecture with random bf16 weights, saved as an HF Llava folder (+ processor)."""
    torch.manual_seed(0)
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
        model = LlavaForConditionalGeneration(llava_med_config())
        torch.set_default_dtype(torch.float32)
    model.generation_config = generation_config()
    model.save_pretrained(folder)
    build_processor(build_tokenizer(tokenizer_dir)).save_pretrained(folder)
    del model
    free_gpu()
