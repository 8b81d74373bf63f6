"""--fp8: torchao's float8 linears for the frozen base weights of LoRA training (tiny model, CPU, torchao's
emulation: FP8-rounded operands, matmuls in high precision, no FP8 GPU needed)."""

from __future__ import annotations

import copy
import functools
import json
import sys
from importlib.util import find_spec
from types import SimpleNamespace

import pytest
import torch

import rrg.train.settings
import rrg.train.setup
from rrg.data.entries import load_entries
from rrg.io import InputError
from rrg.model.kernels import float8 as F8
from rrg.model.processor import image_token_id, load_processor
from rrg.train import step as T
from rrg.train.collate import Collator, ReportDataset, encode_dataset
from tests.helpers import (
    PER_IMAGE,
    REPORTS,
    SHORT,
    error_line,
    lora_model,
    refused,
    run_training,
    train_steps,
    write_split,
)

needs_torchao = pytest.mark.skipif(
    find_spec("torchao") is None, reason="torchao is not installed (pip install -r requirements-fp8.txt)"
)
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
PROJECTIONS += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def expected_names(layers: int, projections=PROJECTIONS) -> set[str]:
    prefix = "base_model.model.model.language_model.layers"
    return {f"{prefix}.{i}.{p}.base_layer" for i in range(layers) for p in projections}


def float8_names(model) -> set[str]:
    from torchao.float8.float8_linear import Float8Linear

    return {name for name, module in model.named_modules() if isinstance(module, Float8Linear)}


@pytest.fixture(scope="module")
def batch(tiny_model_dir, tmp_path_factory) -> dict:
    """The five reports as one padded bf16 batch."""
    folder = tmp_path_factory.mktemp("fp8_batch")
    processor = load_processor(tiny_model_dir)
    entries = load_entries(write_split(folder, REPORTS))
    samples = encode_dataset(entries, processor.tokenizer, folder / "images", PER_IMAGE)
    dataset = ReportDataset(samples, processor.image_processor)
    collator = Collator(processor.tokenizer.pad_token_id, image_token_id(processor.tokenizer), PER_IMAGE)
    return T.move_to(collator([dataset[i] for i in range(len(REPORTS))]), torch.device("cpu"), torch.bfloat16)


@pytest.fixture
def emulated_fp8(monkeypatch):
    """train_lora.main builds its model with torchao's emulation (no FP8 GPU here)."""
    monkeypatch.setattr(
        rrg.train.setup, "build_model", functools.partial(rrg.train.setup.build_model, fp8_emulate=True)
    )


# --------------------------------------------------------------------------- which modules


@pytest.mark.slow
@needs_torchao
def test_only_the_decoders_frozen_base_linears_are_converted(tiny_model_dir):
    """The base layers of the adapted q/k/v/o/gate/up/down of both decoder layers: not LoRA A/B, lm_head,
    CLIP (whose own q/k/v/out projections are linears too), the projector (even when trained), or a
    decoder linear that LoRA does not adapt."""
    model = lora_model(tiny_model_dir, dtype="bfloat16", train_projector=True)
    before = {name: (param, param.requires_grad) for name, param in model.named_parameters()}
    assert F8.convert_frozen_base_linears(model, emulate=True) == 14
    assert float8_names(model) == expected_names(2)
    after = {name: (param, param.requires_grad) for name, param in model.named_parameters()}
    assert after.keys() == before.keys()  # the swap keeps every weight (the same tensor) and its trainability
    assert all(after[n][0] is before[n][0] and after[n][1] == before[n][1] for n in before)

    # Only what LoRA adapts: with q and v adapted, the decoder's other linears stay as they are.
    model = lora_model(
        tiny_model_dir, dtype="bfloat16", target_modules=r".*language_model.*\.(q_proj|v_proj)"
    )
    assert F8.convert_frozen_base_linears(model, emulate=True) == 4
    assert float8_names(model) == expected_names(2, ("self_attn.q_proj", "self_attn.v_proj"))


@pytest.mark.slow
@needs_torchao
def test_unaligned_or_trained_base_linears_stay_bf16(tiny_model_dir):
    """torch._scaled_mm takes dimensions in multiples of 16: an MLP of width 40 keeps its three linears.
    A base weight that is trained (not frozen) keeps its linear too."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    from rrg.model.tiny import tiny_config

    config = tiny_config()
    config.text_config.intermediate_size = 40
    model = LlavaForConditionalGeneration(config).to(torch.bfloat16).requires_grad_(False)
    model = get_peft_model(model, LoraConfig(r=8, target_modules=rrg.train.settings.LANGUAGE_MODEL_TARGETS))
    trained = "base_model.model.model.language_model.layers.0.self_attn.q_proj.base_layer"
    model.get_submodule(trained).weight.requires_grad_(True)  # a trained weight needs its gradient in bf16
    assert F8.convert_frozen_base_linears(model, emulate=True) == 7
    assert float8_names(model) == expected_names(2, PROJECTIONS[:4]) - {trained}


# --------------------------------------------------------------------------- what they compute


@pytest.mark.slow
@needs_torchao
def test_fp8_model_trains_the_lora_weights_only_and_stays_close_to_bf16(tiny_model_dir, batch):
    """Same loss, logits and LoRA gradients as the bf16 model within FP8's rounding; no base gradient.

    Tolerances: e4m3 keeps 3 mantissa bits, so each operand entry is rounded by up to 2^-4 = 6.25% (about
    3% RMS); with both operands of a matmul rounded, its output moves by ~4% of its norm. Measured here:
    logits 4.6%, LoRA gradients up to 9.0%, loss 3.5e-5 (the random model's logits are nearly uniform, so the
    loss hardly moves). Bounds: logits 10%, each LoRA gradient 20%, loss 1% (the benchmark's curve bound).
    The logits must also differ by > 0.5%: FP8 really computes (emulated bf16 would match exactly).
    """
    bf16 = lora_model(tiny_model_dir, dtype="bfloat16")
    fp8 = copy.deepcopy(bf16)
    F8.convert_frozen_base_linears(fp8, emulate=True)
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "logit_positions")}
    results = []
    for model in (bf16, fp8):
        model.zero_grad()
        loss_sum, n_tokens = T.compute_loss(model, batch)
        (loss_sum / n_tokens).backward()
        with torch.no_grad():
            logits = model(**inputs).logits.float()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        frozen_grads = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
        results.append((float(loss_sum.detach() / n_tokens), logits, grads, frozen_grads))
    (loss, logits, grads, _), (loss8, logits8, grads8, frozen8) = results

    assert abs(loss8 - loss) <= 0.01 * loss
    relative = float((logits8 - logits).norm() / logits.norm())
    assert 0.005 < relative < 0.10, relative
    assert frozen8 == []
    assert grads8.keys() == grads.keys() and len(grads) == 28  # A and B of 14 adapted linears
    for name, grad in grads8.items():
        reference = grads[name].float()
        assert grad is not None and grad.abs().sum() > 0, name
        assert float((grad.float() - reference).norm() / reference.norm()) < 0.20, name


# --------------------------------------------------------------------------- refusals


@pytest.mark.slow
def test_refusals_name_the_flag_and_the_reason(tiny_model_dir, tmp_path, capsys, monkeypatch):
    write_split(tmp_path, REPORTS)
    refused(tiny_model_dir, tmp_path, *SHORT, "--fp8", "--load_in_4bit")
    assert "--fp8" in (line := error_line(capsys)) and "--load_in_4bit" in line
    refused(tiny_model_dir, tmp_path, *SHORT, "--fp8", "--no_compile")
    assert "--fp8 needs --compile" in error_line(capsys)
    # No FP8 GPU here, and no emulation: refused before the model is loaded.
    monkeypatch.setattr(rrg.train.setup, "load_base_model", lambda *a, **k: pytest.fail("the model was loaded"))
    refused(tiny_model_dir, tmp_path, *SHORT, "--fp8")
    line = error_line(capsys)
    assert ("CUDA GPU with FP8" in line) if find_spec("torchao") else ("requirements-fp8.txt" in line)
    assert not (tmp_path / "out" / "checkpoints").exists()
    for kind in ("FSDP", "DEEPSPEED"):
        launch = SimpleNamespace(distributed_type=SimpleNamespace(name=kind))
        with pytest.raises(InputError, match=f"untested under {kind}"):
            rrg.train.setup.check_fp8(rrg.train.settings.TrainConfig(fp8=True), launch)
    launch = SimpleNamespace(distributed_type=SimpleNamespace(name="MULTI_GPU"))  # DDP is allowed
    rrg.train.setup.check_fp8(rrg.train.settings.TrainConfig(fp8=True), launch)


def test_missing_torchao_and_gpus_without_fp8_are_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao now raises ImportError
    monkeypatch.setitem(sys.modules, "torchao.float8", None)
    for emulate in (False, True):
        assert "pip install -r requirements-fp8.txt" in F8.float8_problem("cuda:0", emulate)
    monkeypatch.undo()
    if find_spec("torchao") is None:
        pytest.skip("torchao is not installed (pip install -r requirements-fp8.txt): the GPU checks need it")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA GPU is available" in F8.float8_problem("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert F8.float8_problem("cuda:0").endswith("NVIDIA A100-SXM4-80GB has 8.0")
    assert F8.float8_problem("cuda:0", emulate=True) is None
    assert "this run is on cpu" in F8.float8_problem("cpu")
    for capability in ((8, 9), (9, 0), (10, 0)):  # Ada (L4), Hopper (H100/H200), Blackwell
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert F8.float8_problem("cuda:0") is None


# --------------------------------------------------------------------------- resume


@pytest.mark.slow
@needs_torchao
def test_resume_refuses_another_fp8_setting(tiny_model_dir, tmp_path, capsys, emulated_fp8):
    """--fp8 changes the arithmetic: it is in the run's fingerprint, so a run is resumed only with its own
    setting. A run without it has no fp8 entry (runs started before the flag existed still resume)."""
    write_split(tmp_path, REPORTS)
    out = tmp_path / "out"
    train = functools.partial(refused, tiny_model_dir, tmp_path, *SHORT)
    run_training(tiny_model_dir, tmp_path, *SHORT, "--fp8", "--stop_after_steps", "2")
    assert json.loads((out / "train_config.json").read_text())["fingerprint"]["settings"]["fp8"] is True
    train("--resume")  # without --fp8
    assert "fp8 True -> None" in error_line(capsys)
    run_training(tiny_model_dir, tmp_path, *SHORT, "--fp8", "--resume")  # its own setting: continues
    assert train_steps(out) == [1, 2, 3, 4, 5]

    run_training(tiny_model_dir, tmp_path, *SHORT, "--stop_after_steps", "2", "--overwrite")
    assert "fp8" not in json.loads((out / "train_config.json").read_text())["fingerprint"]["settings"]
    train("--fp8", "--resume")
    assert "fp8 None -> True" in error_line(capsys)
