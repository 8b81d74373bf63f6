"""--projector_lr: the trained projector's own rate beside LoRA, kept through the schedule, fingerprinted."""

from __future__ import annotations

import pytest
from accelerate import Accelerator

import rrg.train.fingerprint
import rrg.train.settings
import rrg.train.setup
from rrg.io import InputError
from rrg.train import step as T
from tests.helpers import REPORTS, lora_model, write_split


@pytest.mark.slow
def test_projector_gets_its_own_rate_through_the_schedule(tiny_model_dir):
    model = lora_model(tiny_model_dir, train_projector=True)
    optimizer = T.build_optimizer(model, 2e-4, 0.0, None, projector_lr=1e-3)
    ids = {id(p): n for n, p in model.named_parameters()}
    rates = {ids[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}
    projector = {n: r for n, r in rates.items() if T.PROJECTOR in n}
    assert projector and set(projector.values()) == {1e-3}
    assert {r for n, r in rates.items() if T.PROJECTOR not in n} == {2e-4}
    scheduler = T.build_scheduler(optimizer, "cosine", total_steps=10, warmup_ratio=0.2)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    lrs = sorted({g["lr"] for g in optimizer.param_groups})
    assert lrs[1] == pytest.approx(5 * lrs[0])  # the ratio holds
    plain = T.build_optimizer(model, 2e-4, 0.0, None)
    assert {g["lr"] for g in plain.param_groups} == {2e-4}


def test_projector_lr_needs_train_projector_and_is_fingerprinted(tmp_path):
    accelerator = Accelerator(cpu=True)
    with pytest.raises(InputError, match="--projector_lr .* needs --train_projector"):
        rrg.train.setup.check_fp8(rrg.train.settings.TrainConfig(projector_lr=1e-3), accelerator)
    split = str(write_split(tmp_path, REPORTS[:2]))
    default = rrg.train.fingerprint.run_fingerprint(
        rrg.train.settings.TrainConfig(json_file=split, train_projector=True), accelerator
    )
    own = rrg.train.fingerprint.run_fingerprint(
        rrg.train.settings.TrainConfig(json_file=split, train_projector=True, projector_lr=1e-3), accelerator
    )
    assert "projector_lr" not in str(default) and "projector_lr" in str(own)
