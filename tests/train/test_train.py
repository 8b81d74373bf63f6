"""Loss, gradient accumulation, pre-flight, checkpoints/resume and the train_lora.py recipe (tiny model, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rrg.data.entries import load_entries
from rrg.model.processor import image_token_id, load_processor
from rrg.train import checkpoints as C
from rrg.train import step as T
from rrg.train.collate import Collator, ReportDataset, encode_dataset
from tests.helpers import PER_IMAGE, REPORTS, lora_grads, lora_model, read_log, run_training, write_split

TRAIN_KEYS = {
    "type",
    "step",
    "epoch",
    "loss",
    "lr",
    "grad_norm",
    "samples_per_s",
    "tokens_per_s",
    "elapsed_s",
}


@pytest.fixture(scope="module")
def tiny_batches(tiny_model_dir, tmp_path_factory):
    """Three single-sample batches and the same three samples as one padded batch."""
    folder = tmp_path_factory.mktemp("batches")
    processor = load_processor(tiny_model_dir)
    entries = load_entries(write_split(folder, REPORTS[:3]))
    dataset = ReportDataset(
        encode_dataset(entries, processor.tokenizer, folder / "images", PER_IMAGE), processor.image_processor
    )
    collator = Collator(processor.tokenizer.pad_token_id, image_token_id(processor.tokenizer), PER_IMAGE)
    return [collator([dataset[i]]) for i in range(3)], collator([dataset[i] for i in range(3)])


@pytest.mark.slow
def test_compute_loss_equals_the_full_logits_loss(tiny_model_dir, tiny_batches):
    """Logits only at label positions, CE in fp32: same mean loss as HF's loss over all logits."""
    model = lora_model(tiny_model_dir)
    _, batch = tiny_batches
    loss_sum, n_tokens = T.compute_loss(model, batch)
    with torch.no_grad():
        reference = model(**{k: v for k, v in batch.items() if k != "logit_positions"}).loss
    assert n_tokens == T.count_label_tokens(batch) > 0
    torch.testing.assert_close(loss_sum / n_tokens, reference, rtol=1e-5, atol=1e-5)
    # A batch built elsewhere, without the collator's positions, gets the same loss.
    without = {k: v for k, v in batch.items() if k != "logit_positions"}
    torch.testing.assert_close(T.compute_loss(model, without)[0], loss_sum)


@pytest.mark.slow
def test_compiled_layers_train_like_eager_and_compile_once(tiny_model_dir, tmp_path):
    """--compile: the same losses and LoRA gradients as eager, over batches of different lengths, from
    at most two graphs (the first layer's input needs no gradient, the others' do): no recompilation
    per length or per layer."""
    from torch._dynamo.utils import counters

    processor = load_processor(tiny_model_dir)
    entries = load_entries(write_split(tmp_path, REPORTS))
    dataset = ReportDataset(
        encode_dataset(entries, processor.tokenizer, tmp_path / "images", PER_IMAGE),
        processor.image_processor,
    )
    collator = Collator(
        processor.tokenizer.pad_token_id, image_token_id(processor.tokenizer), PER_IMAGE, pad_to_multiple_of=8
    )
    batches = [collator([dataset[i], dataset[j]]) for i, j in ((0, 2), (1, 3), (4, 4))]
    assert len({b["input_ids"].shape[1] for b in batches}) > 1  # the lengths really differ

    eager, compiled = lora_model(tiny_model_dir), lora_model(tiny_model_dir)
    torch._dynamo.reset()
    counters.clear()
    assert T.compile_decoder_layers(compiled) == 2
    for batch in batches:
        for model in (eager, compiled):
            model.zero_grad()
            T.training_step(model, batch, loss_scale=1.0)
        for (name, a), b in zip(lora_grads(eager).items(), lora_grads(compiled).values()):
            assert (a - b).norm() <= 1e-4 * a.norm(), name
        torch.testing.assert_close(T.compute_loss(compiled, batch)[0], T.compute_loss(eager, batch)[0])
    assert 1 <= counters["stats"]["unique_graphs"] <= 2


@pytest.mark.slow
def test_accumulation_gives_the_gradient_of_the_whole_group(tiny_model_dir, tiny_batches):
    """3 micro-batches of 1 == 1 batch of 3 (token-weighted), and a short group is not down-scaled."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    singles, together = tiny_batches
    model = lora_model(tiny_model_dir)
    stats = T.read_stats(T.accumulate_gradients(model, singles, accelerator))
    accumulated = lora_grads(model)
    model.zero_grad()
    T.accumulate_gradients(model, [together], accelerator)
    for name, grad in lora_grads(model).items():
        # Relative to the tensor's norm: fp32 sums in another order differ by ~1e-6 on some CPUs, while a
        # mis-scaled group would be off by a whole factor.
        assert (accumulated[name] - grad).norm() <= 1e-4 * grad.norm(), name
    assert stats["samples"] == 3 and stats["label_tokens"] == T.count_label_tokens(together)

    # The last, partial group of an epoch (1 micro-batch where 64 were configured): its gradient is
    # that of its own mean loss, not 1/64 of it.
    model.zero_grad()
    T.accumulate_gradients(model, singles[:1], accelerator)
    partial = lora_grads(model)
    model.zero_grad()
    loss_sum, n = T.compute_loss(model, singles[0])
    (loss_sum / n).backward()
    for name, grad in lora_grads(model).items():
        torch.testing.assert_close(partial[name], grad, rtol=1e-5, atol=1e-8)


@pytest.mark.slow
def test_vision_tower_frozen_projector_only_when_asked(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable if "lora_A" in n} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }  # fmt: skip
    with_projector = lora_model(tiny_model_dir, train_projector=True)
    trainable = [n for n, p in with_projector.named_parameters() if p.requires_grad]
    assert any("multi_modal_projector" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)


@pytest.mark.slow
def test_loss_falls_and_outputs_are_laid_out(tiny_model_dir, tmp_path):
    write_split(tmp_path, REPORTS[:3])
    out = run_training(
        tiny_model_dir, tmp_path,
        "--max_steps", "30", "--batch_size", "3", "--gradient_accumulation_steps", "1",
        "--lr", "1e-2", "--lr_scheduler", "constant_with_warmup", "--warmup_ratio", "0.1",
        "--val_json", str(tmp_path / "split.jsonl"), "--eval_steps", "15",
    )  # fmt: skip
    log = read_log(out)
    train = [r for r in log if r["type"] == "train"]
    evals = [r for r in log if r["type"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 31))
    assert all(set(r) == TRAIN_KEYS for r in train)
    assert [(r["step"], set(r)) for r in evals] == [(15, {"type", "step", "epoch", "val_loss"})] + [
        (30, {"type", "step", "epoch", "val_loss"})
    ]
    assert np.mean([r["loss"] for r in train[-5:]]) < np.mean([r["loss"] for r in train[:3]]) - 0.5  # nats
    assert evals[1]["val_loss"] < evals[0]["val_loss"]
    # Warmup (ceil(0.1 * 30) = 3 steps from 0), then constant.
    assert [r["lr"] for r in train[:5]] == pytest.approx([0.0, 1e-2 / 3, 2e-2 / 3, 1e-2, 1e-2])
    config = json.loads((out / "train_config.json").read_text())
    assert config["effective_batch_size"] == 3 and config["total_steps"] == 30 and config["world_size"] == 1
    for adapter in ("best", "final"):
        assert (out / adapter / "adapter_model.safetensors").is_file()
    assert len(C.list_checkpoints(out)) <= 2  # epoch-end checkpoints, save_total_limit 2

    from rrg.model.load import load_adapter, load_base_model

    model = load_adapter(load_base_model(str(tiny_model_dir)), str(out / "final"))
    saved = load_file(str(out / "final" / "adapter_model.safetensors"))
    loaded = {n: p for n, p in model.named_parameters() if "lora_A" in n}
    assert len(loaded) == sum("lora_A" in k for k in saved) > 0


@pytest.mark.slow
def test_partial_last_group_is_a_step_and_epochs_do_not_mix(tiny_model_dir, tmp_path):
    """5 micro-batches with accumulation 2: steps of 2, 2, 1 per epoch; the schedule counts 3 per epoch."""
    write_split(tmp_path, REPORTS)
    out = run_training(tiny_model_dir, tmp_path, "--epochs", "2", "--gradient_accumulation_steps", "2")
    train = [r for r in read_log(out) if r["type"] == "train"]
    assert [r["epoch"] for r in train] == pytest.approx([0.4, 0.8, 1.0, 1.4, 1.8, 2.0])
    assert json.loads((out / "train_config.json").read_text())["total_steps"] == 6
    state = C.read_record(out / "checkpoints" / "step-000003")["state"]
    assert (state["step"], state["epoch"], state["batches_done"]) == (3, 1, 0)
    assert train[-1]["lr"] > 0  # the cosine schedule is sized to 6 steps: lr reaches 0 only after the last


def test_step_window_weights_the_loss_by_tokens_and_starts_over():
    window = T.StepWindow()
    # GROUP_STATS: loss sum, label tokens, input tokens, samples.
    window.add(torch.tensor([10.0, 5, 100, 2], dtype=torch.float64), torch.tensor(1.0))
    window.add(torch.tensor([30.0, 5, 300, 6], dtype=torch.float64), torch.tensor(3.0))
    values = window.read()
    assert values["loss"] == pytest.approx(40 / 10)  # token-weighted, not the mean of 2.0 and 6.0
    assert (values["samples"], values["tokens"], values["grad_norm"]) == (8, 400, pytest.approx(2.0))
    assert values["samples_per_s"] > 0 and values["tokens_per_s"] == pytest.approx(
        50 * values["samples_per_s"]
    )
    window.add(torch.tensor([3.0, 3, 30, 1], dtype=torch.float64), None)  # DeepSpeed: no norm
    values = window.read()
    assert (values["loss"], values["samples"]) == (1.0, 1) and np.isnan(values["grad_norm"])


@pytest.mark.slow
def test_log_lines_every_n_steps_and_before_each_checkpoint(tiny_model_dir, tmp_path):
    """--logging_steps 4 over 2 epochs of 5 steps: lines at 4, 5 (checkpoint), 8, 10; each covers its steps."""
    write_split(tmp_path, REPORTS)
    out = run_training(
        tiny_model_dir, tmp_path, "--epochs", "2", "--gradient_accumulation_steps", "1", "--logging_steps", "4"
    )  # fmt: skip
    train = [r for r in read_log(out) if r["type"] == "train"]
    assert [r["step"] for r in train] == [4, 5, 8, 10]
    state = C.read_record(out / "checkpoints" / "step-000005")["state"]
    assert state["samples_seen"] == 5  # every step before the checkpoint is counted, batch size 1


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_resume_ends_with_the_same_adapter(tiny_model_dir, tmp_path, dtype):
    """bfloat16: the checkpoint carries the fp32 master weights and AdamW state, so the resumed run
    continues from the exact fp32 values, not from the bf16 adapter."""
    args = ("--epochs", "2", "--gradient_accumulation_steps", "2", "--lr", "5e-3", "--weight_decay", "0.01")
    args += ("--dtype", dtype)
    write_split(tmp_path / "a", REPORTS)
    straight = run_training(tiny_model_dir, tmp_path / "a", *args)
    write_split(tmp_path / "b", REPORTS)
    # Killed after step 4 (mid second epoch), then resumed with a bare --resume.
    run_training(tiny_model_dir, tmp_path / "b", *args, "--stop_after_steps", "4")
    assert not (tmp_path / "b" / "out" / "final").exists()
    checkpoint = C.list_checkpoints(tmp_path / "b" / "out")[-1]
    assert checkpoint.name == "step-000004"
    optimizer_state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    if dtype == "bfloat16":
        adapter = load_file(str(checkpoint / "adapter_model.safetensors"))
        masters = optimizer_state["master_weights"]
        assert {t.dtype for t in adapter.values()} == {torch.bfloat16}
        assert {m.dtype for m in masters} == {torch.float32} and len(masters) == len(adapter)
        assert any(not torch.equal(m, m.bfloat16().float()) for m in masters)  # bits bf16 cannot hold
    else:
        assert "master_weights" not in optimizer_state  # fp32: plain AdamW
    resumed = run_training(tiny_model_dir, tmp_path / "b", *args, "--resume")
    a = load_file(str(straight / "final" / "adapter_model.safetensors"))
    b = load_file(str(resumed / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    steps = [r["step"] for r in read_log(resumed) if r["type"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # no duplicated lines from the killed run


@pytest.mark.slow
def test_checkpoint_states_load_with_weights_only(tiny_model_dir, tmp_path):
    write_split(tmp_path, REPORTS[:2])
    out = run_training(tiny_model_dir, tmp_path, "--epochs", "1", "--gradient_accumulation_steps", "1")
    checkpoint = C.list_checkpoints(out)[-1]
    for name in ("optimizer.pt", "scheduler.pt", "rng.pt"):
        assert torch.load(checkpoint / name, weights_only=True)
    rng = torch.load(checkpoint / "rng.pt", weights_only=True)
    C.set_rng_state(rng)  # round-trips


@pytest.mark.slow
def test_preflight_names_the_line_of_a_missing_image(tiny_model_dir, tmp_path, capsys):
    write_split(tmp_path, REPORTS[:4], missing=2)  # entry 3 -> line 3
    with pytest.raises(SystemExit) as stopped:
        run_training(tiny_model_dir, tmp_path, "--max_steps", "1")
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "split.jsonl:3:" in err and "2_IM-0001.png" in err and "--skip_bad" in err
    assert not (tmp_path / "out" / "final").exists()

    out = run_training(tiny_model_dir, tmp_path, "--max_steps", "1", "--skip_bad")
    (skipped,) = [r for r in read_log(out) if r["type"] == "skipped"]
    assert skipped["count"] == 1 and "split.jsonl:3:" in skipped["entries"][0]
    assert json.loads((out / "train_config.json").read_text())["train_entries"] == 3


def test_preflight_reports_unreadable_images_and_malformed_lines(tmp_path):
    path = write_split(tmp_path, REPORTS[:3])
    (tmp_path / "images" / "1_IM-0001.png").write_bytes(b"\x89PNG not really")
    with open(path, "a") as f:
        f.write(json.dumps({"prompt": "Write the report.", "input_image": "0_IM-0001.png"}) + "\n")
    entries, problems = T.preflight_entries(path, tmp_path / "images")
    assert len(entries) == 2
    assert any("split.jsonl:2:" in p and "unreadable" in p for p in problems)
    assert any("split.jsonl:4:" in p and "response" in p for p in problems)


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes 4-bit (QLoRA) layers need a CUDA GPU")
def test_qlora_trains(tiny_model_dir, tmp_path):
    write_split(tmp_path, REPORTS[:2])
    out = run_training(tiny_model_dir, tmp_path, "--max_steps", "2", "--load_in_4bit", "--dtype", "bfloat16")
    assert (out / "final" / "adapter_model.safetensors").is_file()
    assert all(np.isfinite(r["loss"]) for r in read_log(out) if r["type"] == "train")
