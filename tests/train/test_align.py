"""--stage align (rrg.train.align): the projector alone trains, LLaVA-Rad's defaults, the projector file and its
provenance, resume rules, and a LoRA run that starts from it (--projector_from)."""

from __future__ import annotations

import json

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

import rrg.train.fingerprint
import rrg.train.settings
import rrg.train.setup
from rrg.io import InputError
from rrg.model.load import load_base_model
from rrg.train import align
from tests.helpers import REPORTS, run_training, write_split


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


@pytest.fixture(scope="module")
def aligned(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("align_run")
    write_split(folder, REPORTS[:3])
    # Accumulation 1: three steps (at the stage's 256 the one step would be all warm-up, at rate 0).
    return run_training(
        tiny_model_dir, folder, "--stage", "align", "--lr", "5e-2", "--gradient_accumulation_steps", "1"
    )


@pytest.mark.slow
def test_align_trains_the_projector_alone_with_llava_rad_defaults(tiny_model_dir, aligned):
    config = json.loads((aligned / "train_config.json").read_text())
    assert config["stage"] == "align" and config["lr"] == 5e-2  # a flag given wins over the stage default
    assert (config["lr_scheduler"], config["warmup_ratio"], config["epochs"]) == ("cosine", 0.03, 1)
    assert not any(k in config["fingerprint"]["settings"] for k in align.LORA_ONLY)
    final = aligned / "final"
    assert sorted(p.name for p in final.iterdir()) == [align.INFO_FILE, align.WEIGHTS_FILE]
    info = json.loads((final / align.INFO_FILE).read_text())
    assert info["base_model"] == str(tiny_model_dir)
    assert info["projector_sha256"] == align.sha256(final / align.WEIGHTS_FILE)
    assert info["run_fingerprint"] == config["fingerprint"]["digest"]
    base = load_base_model(str(tiny_model_dir))
    before = weights(base)
    align.load_projector(base, final)
    after = weights(base)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == set(load_file(str(final / align.WEIGHTS_FILE)))
    assert changed and all(align.PROJECTOR_MODULE in n for n in changed)


def test_stage_defaults_reach_a_global_batch_of_256():
    one = align.stage_defaults(rrg.train.settings.TrainConfig(stage="align"), set(), 1)
    assert one.batch_size * one.gradient_accumulation_steps == 256
    cfg = rrg.train.settings.TrainConfig(stage="align", batch_size=8, weight_decay=0.1)
    done = align.stage_defaults(cfg, align.given_flags(["--batch_size", "8", "--weight_decay=0.1"]), 2)
    assert (done.lr, done.epochs, done.gradient_accumulation_steps) == (1e-3, 1, 16)
    assert done.weight_decay == 0.1  # given on the command line: kept
    assert align.given_flags(["--no_compile"]) >= {"compile"}


def test_align_refuses_lora_only_flags(tmp_path):
    accelerator = Accelerator(cpu=True)
    for extra in ({"projector_lr": 1e-3, "train_projector": True}, {"fp8": True}, {"projector_from": "x"}):
        with pytest.raises(InputError, match="--stage align refuses"):
            rrg.train.setup.check_fp8(rrg.train.settings.TrainConfig(stage="align", **extra), accelerator)


@pytest.mark.slow
def test_align_resume_with_other_settings_is_refused(tiny_model_dir, tmp_path, capsys):
    write_split(tmp_path, REPORTS[:3])
    common = ("--stage", "align", "--gradient_accumulation_steps", "1", "--warmup_ratio", "0")
    out = run_training(tiny_model_dir, tmp_path, *common, "--stop_after_steps", "1", "--save_steps", "1")
    step = out / "checkpoints" / "step-000001"
    assert (step / align.WEIGHTS_FILE).is_file() and not (step / "adapter_model.safetensors").exists()
    with pytest.raises(SystemExit):
        run_training(tiny_model_dir, tmp_path, *common, "--lr", "5e-3", "--resume")
    assert "other settings (lr 0.001 -> 0.005)" in capsys.readouterr().err
    run_training(tiny_model_dir, tmp_path, *common, "--resume")
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "train"] == [1, 2, 3]
    # The resumed run's projector equals one trained without the interruption.
    other = tmp_path / "again"
    write_split(other, REPORTS[:3])
    straight = run_training(tiny_model_dir, other, *common)
    a = load_file(str(out / "final" / align.WEIGHTS_FILE))
    b = load_file(str(straight / "final" / align.WEIGHTS_FILE))
    for key in a:
        torch.testing.assert_close(a[key], b[key])


@pytest.mark.slow
def test_lora_from_an_aligned_projector_saves_it_and_fingerprints_it(tiny_model_dir, aligned, tmp_path):
    write_split(tmp_path, REPORTS[:3])
    out = run_training(
        tiny_model_dir,
        tmp_path,
        "--projector_from",
        str(aligned / "final"),
        "--max_steps",
        "2",
        "--lr",
        "1e-3",
    )
    config = json.loads((out / "train_config.json").read_text())
    sha = json.loads((aligned / "final" / align.INFO_FILE).read_text())["projector_sha256"]
    assert config["fingerprint"]["settings"]["projector_from_sha256"] == sha
    saved = load_file(str(out / "final" / "adapter_model.safetensors"))
    start = load_file(str(aligned / "final" / align.WEIGHTS_FILE))
    kept = {k.removeprefix("base_model.model."): v for k, v in saved.items() if align.PROJECTOR_MODULE in k}
    assert kept.keys() == start.keys()  # the projector is in the adapter, frozen: the aligned one
    for key, tensor in start.items():
        torch.testing.assert_close(kept[key], tensor)
    accelerator = Accelerator(cpu=True)
    plain = rrg.train.fingerprint.run_fingerprint(
        rrg.train.settings.TrainConfig(json_file=str(tmp_path / "split.jsonl")), accelerator
    )
    assert not {"stage", "projector_from_sha256"} & set(plain["settings"])  # old runs still resume


@pytest.mark.slow
def test_a_damaged_or_foreign_projector_is_refused(tiny_model_dir, aligned, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(aligned / "final", copy)
    base = load_base_model(str(tiny_model_dir))
    info = json.loads((copy / align.INFO_FILE).read_text())
    (copy / align.INFO_FILE).write_text(json.dumps({**info, "base_config_sha256": "0" * 64}))
    with pytest.raises(InputError, match="another base model"):
        align.load_projector(base, copy)
    with open(copy / align.WEIGHTS_FILE, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\1")
    with pytest.raises(InputError, match="sha256 differs"):
        align.load_projector(base, copy)
