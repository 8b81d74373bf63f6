"""fp32 master weights for bf16 LoRA (rrg.train.optim.MasterWeightAdamW via rrg.train.step.build_optimizer)."""

from __future__ import annotations

import io

import pytest
import torch
from accelerate import Accelerator

from rrg.train import step as T
from rrg.train.optim import MasterWeightAdamW


def lora_a(seed: int = 0) -> torch.nn.Linear:
    """A bf16 LoRA-A of the 7B model's q_proj at its init: r 64 x 4096 inputs, kaiming-uniform as peft
    initialises it (bound 1/sqrt(4096)), so bf16's rounding at this scale is the real one."""
    torch.manual_seed(seed)
    return torch.nn.Linear(4096, 64, bias=False).to(torch.bfloat16)


def set_grad(module: torch.nn.Module, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    grad = (1e-3 * torch.randn(module.weight.shape, generator=generator)).to(torch.bfloat16)
    module.weight.grad = grad.clone()
    return grad


@pytest.mark.parametrize("lr", [2e-5, 1e-6])
def test_master_weights_keep_the_updates_bf16_rounds_away(lr):
    start = lora_a().weight.detach().clone()

    # One plain AdamW step on the bf16 weights (what training did before): many entries do not move.
    plain = lora_a()
    set_grad(plain, 0)
    torch.optim.AdamW(plain.parameters(), lr=lr, weight_decay=0.0).step()
    lost = plain.weight == start
    assert lost.float().mean() > 0.3  # the test bites: bf16 rounds these updates away

    # fp32 AdamW on fp32 copies with the same gradients: what the masters must follow.
    reference = torch.nn.Parameter(start.float())
    ref_optimizer = torch.optim.AdamW([reference], lr=lr, weight_decay=0.0)
    model = lora_a()
    optimizer = T.build_optimizer(model, lr, weight_decay=0.0)
    assert isinstance(optimizer, MasterWeightAdamW)
    (master,) = optimizer.masters
    assert master.dtype == torch.float32
    for step in range(3):
        grad = set_grad(model, step)
        reference.grad = grad.float()
        optimizer.step()
        ref_optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        assert model.weight.grad is None
        if step == 0:  # every entry moved, all those plain bf16 left unchanged included
            assert (master != start.float()).all()
        torch.testing.assert_close(master, reference.detach(), rtol=1e-6, atol=1e-9)
        assert torch.equal(
            model.weight, master.to(torch.bfloat16)
        )  # the model computes with the rounded master


def test_fp32_parameters_get_plain_adamw():
    """CPU runs (fp32 weights): no masters; AdamW on fp32 weights is the same thing."""
    model = torch.nn.Linear(8, 4)
    optimizer = T.build_optimizer(model, 1e-3, 0.0)
    assert type(optimizer) is torch.optim.AdamW


def test_clipping_and_schedule_act_on_the_masters():
    """The clipped gradients are the fp32 ones the step uses; the scheduler sets the masters' learning rate."""
    accelerator = Accelerator(cpu=True)
    model = lora_a()
    optimizer = T.build_optimizer(model, 1e-3, weight_decay=0.0)
    scheduler = T.build_scheduler(optimizer, "constant_with_warmup", total_steps=10, warmup_ratio=0.2)
    grad = set_grad(model, 0)
    norm = T.clip_gradients(accelerator, model, optimizer, max_norm=1e-3)
    (master,) = optimizer.masters
    torch.testing.assert_close(norm, grad.float().norm(), rtol=1e-5, atol=0)
    torch.testing.assert_close(master.grad.norm(), torch.tensor(1e-3), rtol=1e-4, atol=0)
    torch.testing.assert_close(master.grad, grad.float() * (1e-3 / norm), rtol=1e-5, atol=1e-12)

    before = master.clone()
    optimizer.step()  # warmup step 0: lr 0, nothing moves
    assert torch.equal(master, before)
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 / 2)
    set_grad(model, 1)
    optimizer.step()
    assert (master != before).all()


def test_state_dict_carries_the_masters_and_restores_them():
    model = lora_a()
    optimizer = T.build_optimizer(model, 2e-5, weight_decay=0.01)
    for step in range(2):
        set_grad(model, step)
        optimizer.step()
    buffer = io.BytesIO()  # through a file, as a checkpoint does (and weights_only, as resume loads it)
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert [m.dtype for m in state["master_weights"]] == [torch.float32]

    restored_model = lora_a(seed=1)  # other weights: all must come from the state
    restored = T.build_optimizer(restored_model, 2e-5, weight_decay=0.01)
    restored.load_state_dict(state)
    assert torch.equal(restored.masters[0], optimizer.masters[0])
    assert torch.equal(restored_model.weight, model.weight)
    for m in (model, restored_model):
        set_grad(m, 5)
    optimizer.step()
    restored.step()
    assert torch.equal(restored.masters[0], optimizer.masters[0])

    plain_state = torch.optim.AdamW(lora_a().parameters()).state_dict()
    with pytest.raises(ValueError, match="master_weights"):
        restored.load_state_dict(plain_state)


def test_deepspeed_is_told_the_micro_batch_and_nothing_else_is_touched():
    from types import SimpleNamespace

    from rrg.train.step import size_deepspeed_batch

    config = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 1}
    accelerator = SimpleNamespace(
        state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=config))
    )
    size_deepspeed_batch(accelerator, 8)
    assert config == {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 1}
    size_deepspeed_batch(
        SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=None)), 8
    )  # DDP: nothing to do
