"""Shared fixtures. Real public files come from ../shared/data (or $RRG_SHARED_DATA); tests that need
them skip with the reason when they are absent. Everything else is generated here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import shared_path

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in the tests may reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    """Folder holding LLaVA-Med's real SentencePiece tokenizer.model."""
    return shared_path("llava-med-v1.5-mistral-7b", "tokenizer.model").parent


@pytest.fixture(scope="session")
def iu_xray_dir() -> Path:
    return shared_path("iu_xray", "indiana_reports.csv").parent


@pytest.fixture(scope="session")
def xray_paths() -> list[Path]:
    """The 5 real IU X-Ray images in shared data."""
    folder = shared_path("iu_xray", "images")
    return sorted(folder.glob("*.png"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny random HF Llava folder of LLaVA-Med's architecture (56 px images: 16 image tokens)."""
    from rrg.model.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"), tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_original(tmp_path_factory) -> Path:
    """A tiny random checkpoint in the ORIGINAL LLaVA-Med format (real key names, 2 shards + index)."""
    from rrg.model.convert import write_tiny_original_checkpoint

    reference = shared_path("llava-med-v1.5-mistral-7b", "model.safetensors.index.json").parent
    return write_tiny_original_checkpoint(tmp_path_factory.mktemp("original") / "llava-med", reference)


@pytest.fixture(scope="session")
def converted(tiny_original, tmp_path_factory) -> Path:
    """tiny_original converted to an HF Llava folder by rrg.model.convert."""
    from rrg.model.convert import convert_checkpoint

    return convert_checkpoint(tiny_original, tmp_path_factory.mktemp("converted") / "llava-med-hf")


@pytest.fixture
def asked(monkeypatch) -> list[str]:
    """Prompts generation was given; it writes a fixed report for each, and scoring is a stand-in."""
    import rrg.score.card
    from rrg.generate import batch as generate
    from rrg.generate import run as evaluate
    from rrg.io import append_jsonl

    prompts: list[str] = []

    def fake_generate(
        model, processor, items, paths, out, identity, settings, num_workers=0, progress=True, inputs_of=None
    ):
        prompts.extend(entry.prompt for entry, _ in items)
        lines = [
            generate.prediction_line(
                e, names, "Findings: x. Impression: y.", identity, inputs_of(names) if inputs_of else None
            )
            for e, names in items
        ]
        append_jsonl(out, *lines)

    monkeypatch.setattr(evaluate, "load_for_eval", lambda config: (None, None))
    monkeypatch.setattr(evaluate, "generate_predictions", fake_generate)
    monkeypatch.setattr(rrg.score.card, "score_records", lambda records, **kw: {"metrics": {}, "counts": {}})
    monkeypatch.setattr(rrg.score.card, "format_card", lambda card: "card")
    return prompts


@pytest.fixture(scope="module")
def driver():
    """Headless Chromium for the case browser's tests (skipped, saying why, where it is not installed)."""
    from rrg.io import InputError
    from rrg.report.browser import find_chromium, headless_chromium

    try:
        find_chromium()
    except InputError as e:
        pytest.skip(str(e))
    with headless_chromium(1300, 900) as chrome:
        yield chrome
