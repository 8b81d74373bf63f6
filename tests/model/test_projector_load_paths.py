"""A trained projector is really the one every load path uses (the eval run's loader, the API and the
merge; 4-bit needs CUDA: not testable on the CPU): one trained beside LoRA (--train_projector
--projector_lr), an --stage align run's own output, and a LoRA run started from it (--projector_from)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from rrg.generate.api import ReportGenerator
from rrg.generate.run import EvalConfig, load_for_eval
from rrg.model.load import load_base_model
from rrg.train import align
from tests.helpers import REPORTS, run_training, write_split


def projector(model) -> dict[str, torch.Tensor]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {n: p.detach().float().clone() for n, p in base.model.multi_modal_projector.named_parameters()}


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("projector_run")
    write_split(folder, REPORTS[:3])
    out = run_training(
        tiny_model_dir, folder, "--max_steps", "3", "--batch_size", "3", "--lr", "1e-3",
        "--train_projector", "--projector_lr", "5e-2", "--lr_scheduler", "constant",
    )  # fmt: skip
    return out / "final"


def assert_trained(loaded: dict, frozen: dict) -> None:
    assert loaded.keys() == frozen.keys() and loaded
    assert all(not torch.equal(loaded[n], frozen[n]) for n in loaded), "the projector is the frozen one"


@pytest.mark.slow
def test_every_load_path_uses_the_trained_projector(tiny_model_dir, trained, tmp_path):
    frozen = projector(load_base_model(str(tiny_model_dir)))
    eval_model, _ = load_for_eval(
        EvalConfig(json_file="unused.json", model_path=str(tiny_model_dir), lora_path=str(trained))
    )
    from_eval = projector(eval_model)
    assert_trained(from_eval, frozen)

    api = ReportGenerator.from_pretrained(str(tiny_model_dir), lora_path=str(trained), device="cpu")
    from_api = projector(api.model)
    for name in from_eval:
        torch.testing.assert_close(from_api[name], from_eval[name])

    from rrg.model import merge as merge_lora

    merged_dir = merge_lora.main(
        ["--model_path", str(tiny_model_dir), "--lora_path", str(trained), "--out", str(tmp_path / "merged")]
    )
    merged = projector(LlavaForConditionalGeneration.from_pretrained(merged_dir))
    for name in from_eval:
        torch.testing.assert_close(merged[name], from_eval[name])


def projector_output(model) -> torch.Tensor:
    """What the projector makes of fixed image features (the language model's image tokens)."""
    module = (
        model.get_base_model() if hasattr(model, "get_base_model") else model
    ).model.multi_modal_projector
    features = torch.randn(1, 4, module.linear_1.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return module(features.to(module.linear_1.weight.dtype)).float()


@pytest.fixture(scope="module")
def aligned(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("align_run")
    write_split(folder, REPORTS[:3])
    out = run_training(
        tiny_model_dir, folder, "--stage", "align", "--lr", "5e-2", "--gradient_accumulation_steps", "1"
    )
    return out / "final"


@pytest.fixture(scope="module")
def from_aligned(tiny_model_dir, aligned, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora_from_aligned")
    write_split(folder, REPORTS[:3])
    out = run_training(tiny_model_dir, folder, "--projector_from", str(aligned), "--max_steps", "1")
    return out / "final"


@pytest.mark.slow
@pytest.mark.parametrize("run", ["aligned", "from_aligned"])
def test_every_load_path_uses_the_aligned_projector(tiny_model_dir, aligned, from_aligned, run, tmp_path):
    folder = {"aligned": aligned, "from_aligned": from_aligned}[run]
    base = load_base_model(str(tiny_model_dir))
    frozen, frozen_out = projector(base), projector_output(base)
    align.load_projector(base, aligned)
    expected, expected_out = projector(base), projector_output(base)
    assert_trained(expected, frozen)
    assert not torch.allclose(expected_out, frozen_out)

    eval_model, _ = load_for_eval(
        EvalConfig(json_file="unused.json", model_path=str(tiny_model_dir), lora_path=str(folder))
    )
    api = ReportGenerator.from_pretrained(str(tiny_model_dir), lora_path=str(folder), device="cpu")
    from rrg.model import merge as merge_lora

    merged_dir = merge_lora.main(
        ["--model_path", str(tiny_model_dir), "--lora_path", str(folder), "--out", str(tmp_path / "merged")]
    )
    merged = LlavaForConditionalGeneration.from_pretrained(merged_dir)
    for model in (eval_model, api.model, merged):
        loaded = projector(model)
        for name in expected:
            torch.testing.assert_close(loaded[name], expected[name])
        torch.testing.assert_close(projector_output(model), expected_out)
