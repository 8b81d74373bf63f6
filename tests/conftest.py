"""Shared fixtures. Real public files come from ../shared/data (or $RRG_SHARED_DATA); tests that need
them skip with the reason when they are absent. Everything else is generated here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rrg.cli import shared_data_dir

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in the tests may reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data_dir()


def shared_path(*parts: str) -> Path:
    """Path of a file under shared data, or skip the calling test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data file {path} is absent (set RRG_SHARED_DATA to the shared/data folder)")
    return path


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
    from rrg.tiny import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("tiny_llava"), tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_original(tmp_path_factory) -> Path:
    """A tiny random checkpoint in the ORIGINAL LLaVA-Med format (real key names, 2 shards + index)."""
    from rrg.convert import write_tiny_original_checkpoint

    reference = shared_path("llava-med-v1.5-mistral-7b", "model.safetensors.index.json").parent
    return write_tiny_original_checkpoint(tmp_path_factory.mktemp("original") / "llava-med", reference)


@pytest.fixture(scope="session")
def converted(tiny_original, tmp_path_factory) -> Path:
    """tiny_original converted to an HF Llava folder by rrg.convert."""
    from rrg.convert import convert_checkpoint

    return convert_checkpoint(tiny_original, tmp_path_factory.mktemp("converted") / "llava-med-hf")


def free_port() -> int:
    """A free TCP port on the loopback interface (for a gloo process group's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_process_group(rank: int, world: int, port: int) -> None:
    """In a spawned test process: the environment `accelerate launch` would give rank `rank` of `world`
    (gloo on the loopback), one CPU thread each so two processes share the box's cores."""
    import torch

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        OMP_NUM_THREADS="1",  # else accelerate picks a thread count per process
    )
    torch.set_num_threads(1)
