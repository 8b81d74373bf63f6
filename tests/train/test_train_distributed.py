"""Data-parallel training on CPU: two gloo processes give the same gradients as one process on the same
global batch, train_lora.main runs end to end under two processes (bf16, so with fp32 master weights),
and a locked output folder stops both ranks (neither waits for the other)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from rrg.lock import output_lock
from tests.helpers import PER_IMAGE, free_port, join_process_group
from tests.helpers import REPORTS as ALL_REPORTS

REPORTS = ALL_REPORTS[:4]


def write_split(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i, report in enumerate(REPORTS):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            folder / "images" / f"{i}_IM-1.png"
        )
        lines.append(
            json.dumps({"prompt": "Write the report.", "input_image": f"{i}_IM-1.png", "response": report})
        )
    path = folder / "split.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def single_batches(model_dir: Path, folder: Path) -> list[dict]:
    from rrg.data.entries import load_entries
    from rrg.model.processor import image_token_id, load_processor
    from rrg.train.collate import Collator, ReportDataset, encode_dataset

    processor = load_processor(model_dir)
    entries = load_entries(folder / "split.jsonl")
    dataset = ReportDataset(
        encode_dataset(entries, processor.tokenizer, folder / "images", PER_IMAGE), processor.image_processor
    )
    collator = Collator(processor.tokenizer.pad_token_id, image_token_id(processor.tokenizer), PER_IMAGE)
    return [collator([dataset[i]]) for i in range(len(dataset))]


def lora_model(model_dir: Path, accelerator):
    import rrg.train.settings
    import rrg.train.setup

    config = rrg.train.settings.TrainConfig(model_path=str(model_dir), lora_r=8, lora_alpha=16)
    torch.manual_seed(0)
    model = rrg.train.setup.build_model(config, accelerator)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # non-zero, so every LoRA matrix gets a gradient
            torch.nn.init.normal_(param, std=0.02)
    return model


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def worker(rank: int, world: int, port: int, model_dir: str, folder: str) -> None:
    join_process_group(rank, world, port)
    from accelerate import Accelerator

    from rrg.train import step as T
    from tests.helpers import train_lora

    model_dir, folder = Path(model_dir), Path(folder)
    common = [
        "--model_path", str(model_dir), "--json_file", str(folder / "split.jsonl"),
        "--image_dir", str(folder / "images"), "--epochs", "1", "--batch_size", "1",
        "--gradient_accumulation_steps", "1", "--lora_r", "8", "--lora_alpha", "16", "--num_workers", "0",
    ]  # fmt: skip
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == world
    # The test holds the lock of folder/locked: the main rank is refused, the other must not hang.
    try:
        train_lora.main([*common, "--output_dir", str(folder / "locked")])
    except SystemExit as e:
        (folder / f"locked-rank{rank}.json").write_text(json.dumps({"code": e.code}))

    model = lora_model(model_dir, accelerator)
    model = accelerator.prepare(model)
    # Global batch of 4: rank r accumulates samples 2r and 2r+1 as two micro-batches.
    batches = single_batches(model_dir, folder)[2 * rank : 2 * rank + 2]
    stats = T.read_stats(T.accumulate_gradients(model, batches, accelerator))
    if rank == 0:
        torch.save(
            {"grads": grads(accelerator.unwrap_model(model)), "loss": stats["loss"]}, folder / "ddp.pt"
        )
    accelerator.wait_for_everyone()

    train_lora.main(
        [*common, "--output_dir", str(folder / "out"), "--val_json", str(folder / "split.jsonl")]
        + ["--dtype", "bfloat16"]
    )


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_global_batch(tiny_model_dir, tmp_path):
    from accelerate import Accelerator

    from rrg.train import step as T

    write_split(tmp_path)
    with output_lock(tmp_path / "locked"):
        context = mp.spawn(
            worker, args=(2, free_port(), str(tiny_model_dir), str(tmp_path)), nprocs=2, join=False
        )
        deadline = time.monotonic() + 600
        while not context.join(timeout=5):  # raises if a rank failed
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                pytest.fail("the two ranks did not finish: one waits for the other")
    for rank in range(2):  # both ranks stopped at the locked folder, with status 1
        assert json.loads((tmp_path / f"locked-rank{rank}.json").read_text()) == {"code": 1}
    assert not (tmp_path / "locked" / "train_config.json").exists()

    accelerator = Accelerator(cpu=True)
    model = lora_model(tiny_model_dir, accelerator)
    stats = T.read_stats(T.accumulate_gradients(model, single_batches(tiny_model_dir, tmp_path), accelerator))
    reference = grads(model)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert ddp["grads"].keys() == reference.keys()
    for name, grad in reference.items():
        torch.testing.assert_close(ddp["grads"][name], grad, rtol=1e-4, atol=1e-7)
    assert abs(ddp["loss"] - stats["loss"]) < 1e-5

    # End to end under two processes: 4 samples, batch 1 per rank, no accumulation -> 2 steps.
    out = tmp_path / "out"
    config = json.loads((out / "train_config.json").read_text())
    assert config["world_size"] == 2 and config["effective_batch_size"] == 2 and config["total_steps"] == 2
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "train"] == [1, 2]
    assert [r["step"] for r in log if r["type"] == "eval"] == [2]
    assert (out / "final" / "adapter_model.safetensors").is_file()
    assert (out / "checkpoints" / "step-000002" / "state.json").is_file()
    optimizer_state = torch.load(out / "checkpoints" / "step-000002" / "optimizer.pt", weights_only=True)
    assert {m.dtype for m in optimizer_state["master_weights"]} == {torch.float32}
