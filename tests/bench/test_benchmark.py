"""The benchmark's arithmetic and its training loop's bookkeeping (scripts/benchmark.py): loss curves
against the first configuration, the reference experiment's projected wall time, the fp8 option. The timings
themselves need a GPU; the loop runs here on the tiny model, on the CPU."""

from __future__ import annotations

import functools
import re
from dataclasses import asdict
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch

import rrg.train.settings
import rrg.train.setup
from rrg.data.entries import load_entries
from rrg.model.processor import image_token_id, load_processor
from rrg.train.collate import Collator, ReportDataset, encode_dataset
from tests.helpers import PER_IMAGE, REPORTS, write_split

REPO = Path(__file__).resolve().parents[2]


import rrg.bench.markdown  # noqa: E402
import rrg.bench.measure  # noqa: E402
import rrg.bench.reference  # noqa: E402
import rrg.bench.settings  # noqa: E402
import rrg.bench.specs  # noqa: E402
import rrg.bench.training  # noqa: E402


def config(text: str) -> dict:
    return asdict(rrg.bench.specs.TrainSpec.parse(text))


# --------------------------------------------------------------------------- loss curves


def test_curve_difference_is_relative_per_step_over_the_shorter_curve():
    reference = [10.0, 8.0, 6.0, 5.0]
    assert rrg.bench.reference.curve_difference(reference, [10.1, 8.0, 5.94, 99.0], steps=3) == pytest.approx(
        {"steps": 3, "max_rel_diff": 0.01, "mean_rel_diff": 0.02 / 3}
    )
    assert rrg.bench.reference.curve_difference(reference, [10.0, 8.4], steps=50)["steps"] == 2  # the shorter curve
    assert rrg.bench.reference.curve_difference(reference, [10.0, 8.4], steps=50)["max_rel_diff"] == pytest.approx(0.05)
    with pytest.raises(ValueError):
        rrg.bench.reference.curve_difference(reference, [], steps=50)


def test_curves_are_compared_only_on_the_same_samples():
    rows = [
        {"micro_batch": 8, "sample_order_sha256": "a", "losses": [10.0, 9.0]},
        {"micro_batch": 8, "sample_order_sha256": "a", "losses": [10.0, 9.09]},
        {"micro_batch": 16, "sample_order_sha256": "b", "losses": [10.0, 9.0]},
        {"micro_batch": 8, "sample_order_sha256": "a", "error": "OutOfMemoryError: ..."},
    ]
    rrg.bench.reference.compare_curves(rows, steps=50)
    assert "curve_vs_first" not in rows[0]
    assert rows[1]["curve_vs_first"] == pytest.approx(
        {"steps": 2, "max_rel_diff": 0.01, "mean_rel_diff": 0.005}
    )
    assert rows[2]["curve_vs_first"] == {"not_compared": "other samples (micro-batch 16 vs 8)"}
    assert "no loss curve" in rows[3]["curve_vs_first"]["not_compared"]


def test_lora_on_fewer_modules_is_a_measurement_never_a_recipe_or_a_curve():
    """lora=q_proj measures what the seven adapters cost: its flags say so, its curve is not compared with
    the default's (another model), and the projection never takes it as the fastest recipe."""
    spec = rrg.bench.specs.TrainSpec.parse("8+compile+budget=0.7+lora=q_proj/v_proj")
    assert spec.label() == "mb8 compile budget 0.7 LoRA on q_proj, v_proj only"
    assert re.fullmatch(spec.target_modules(), "model.language_model.layers.3.self_attn.v_proj")
    assert not re.fullmatch(spec.target_modules(), "model.language_model.layers.3.mlp.up_proj")
    assert not re.fullmatch(spec.target_modules(), "model.vision_tower.encoder.layers.0.self_attn.q_proj")
    assert rrg.bench.specs.TrainSpec.default().target_modules() == rrg.train.settings.TrainConfig.target_modules
    with pytest.raises(ValueError, match=r"lora= takes q_proj/.*, not \['qkv'\]"):
        rrg.bench.specs.TrainSpec.parse("8+lora=q_proj/qkv")
    rows = [
        {"config": config("8+compile+budget=0.7"), "samples_per_s": 22.0},
        {"config": asdict(spec), "samples_per_s": 24.5},
    ]
    for row in rows:
        row |= {"micro_batch": 8, "sample_order_sha256": "a", "losses": [10.0, 9.0], "warmup_s": 1.0}
        row |= {"real_tokens_per_s": 1.0, "peak_gib": 1.0, "mfu": 0.5}
    assert (
        rrg.bench.specs.train_flags(rows[1], False)
        == r"`--batch_size 8 --target_modules '.*language_model.*\.(q_proj|v_proj)'`"
    )
    rrg.bench.reference.compare_curves(rows, steps=50)
    assert rows[1]["curve_vs_first"] == {"not_compared": "another model: LoRA on other modules"}
    gen = [{"batch_size": 256, "cache": "dynamic", "reports_per_s": 30.0, "peak_gib": 55.0}]
    projection = rrg.bench.reference.experiment_projection({"lora": rows, "generation": gen})
    assert (
        projection["fastest"]["training"]
        == projection["default_recipe"]["training"]
        == "mb8 compile budget 0.7"
    )


def test_gpu_time_is_split_by_kernel_kind_with_flash_attention_as_attention():
    """Flash attention's kernel names carry cutlass/sm90 template types: they count as attention."""
    from types import SimpleNamespace

    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU

    def event(key, us, device=cuda):
        return SimpleNamespace(key=key, device_type=device, self_device_time_total=us)

    class Events(list):
        def table(self, **kwargs):
            return "table"

    events = Events([
        event("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel<Flash_bwd_kernel_traits<cutlass::bfloat16_t, sm90>>", 3000),
        event("nvjet_sm90_tst_192x192_64x3_2x1_v_bz_coopB_NNN", 20000),
        event("triton_poi_fused_add_mul_silu_0", 4000),
        event("void at::native::elementwise_kernel<128, 4>", 1000),
        event("aten::mm", 99000, device=cpu),  # an operator row: its kernels are counted already
    ])  # fmt: skip
    split = rrg.bench.measure.gpu_time_split(SimpleNamespace(key_averages=lambda: events), per=2)
    assert split["gpu_ms_by_kind"] == {"matmul": 10.0, "attention": 1.5, "fused (triton)": 2.0, "other": 0.5}
    assert split["gpu_busy_ms"] == 14.0


# --------------------------------------------------------------------------- projection


def test_projected_wall_time_counts_the_warmups_and_their_work():
    train = {"samples_per_s": 25.0, "warmup_s": 100.0, "warmup_samples": 64}
    gen = {"reports_per_s": 40.0, "warmup_s": 10.0, "warmup_reports": 256}
    p = rrg.bench.reference.projected_wall_time(train, gen)
    assert p["training_s"] == pytest.approx(100 + (10 * 5029 - 64) / 25)
    assert p["generation_s"] == pytest.approx(10 + (1251 - 256) / 40)
    assert p["total_s"] == pytest.approx(p["training_s"] + p["generation_s"])
    older = rrg.bench.reference.projected_wall_time(train, {"reports_per_s": 40.0})  # results from before warm-ups were timed
    assert older["generation_s"] == pytest.approx(1251 / 40) and not older["generation_warmup_measured"]


def report_with_fp8() -> dict:
    default = rrg.bench.specs.TrainSpec.default()
    assert rrg.bench.specs.TrainSpec.parse("8+compile+budget=0.7") == default  # the benchmark's spelling of the default
    rows = [
        {
            "config": config("8+compile+budget=0.7"),
            "samples_per_s": 22.0,
            "warmup_s": 90.0,
            "warmup_samples": 64,
        },
        {"config": config("8+compile+budget=0.7+plain"), "samples_per_s": 22.5, "warmup_s": 10.0},
        {"config": config("8+compile+budget=0.7+fp8"), "samples_per_s": 30.0, "warmup_s": 120.0},
        {"config": config("8+compile+budget=0.7"), "error": "OutOfMemoryError"},
    ]
    for row in rows:
        row |= {"micro_batch": 8, "real_tokens_per_s": 1.0, "peak_gib": 1.0, "mfu": 0.5}
        row |= {"sample_order_sha256": "a", "losses": [10.0, 9.0]} if "error" not in row else {}
    rows[2]["losses"] = [10.0, 9.18]
    rrg.bench.reference.compare_curves(rows, steps=50)
    generation = [
        {
            "batch_size": 256,
            "cache": "dynamic",
            "reports_per_s": 30.0,
            "peak_gib": 55.0,
            "warmup_s": 9.0,
            "warmup_reports": 256,
        },
        {
            "batch_size": 320,
            "cache": "dynamic",
            "reports_per_s": 31.0,
            "peak_gib": 65.0,
            "warmup_s": 11.0,
            "warmup_reports": 320,
        },
    ]
    return {"lora": rows, "generation": generation}


def test_projection_takes_the_default_recipe_and_the_fastest_configuration():
    projection = rrg.bench.reference.experiment_projection(report_with_fp8())
    default, fastest = projection["default_recipe"], projection["fastest"]
    assert default["training"] == "mb8 compile budget 0.7" and default["flags"] == "`--batch_size 8`"
    assert default["training_s"] == pytest.approx(90 + (50290 - 64) / 22.0)  # not the faster plain-AdamW row
    assert default["generation_s"] == pytest.approx(11 + (1251 - 320) / 31.0)  # the fastest generation
    assert fastest["flags"] == "`--batch_size 8 --fp8`"
    assert fastest["training_s"] == pytest.approx(120 + 50290 / 30.0)
    assert rrg.bench.reference.experiment_projection({"lora": report_with_fp8()["lora"]}) is None  # no generation row


def test_summary_and_markdown_show_the_curves_and_the_projection():
    report = report_with_fp8()
    text = rrg.bench.markdown.summary_table(report)
    assert (
        "LoRA mb8 compile budget 0.7 fp8 vs mb8 compile budget 0.7, first 2 steps: max 2.00%, mean 1.00%"
        in text
    )
    minutes = (90 + (50290 - 64) / 22.0 + 11 + (1251 - 320) / 31.0) / 60
    assert f"default recipe (mb8 compile budget 0.7): {minutes:.1f} min" in text
    markdown = rrg.bench.markdown.markdown_table(report)  # no reference phase in this run: no ratios
    assert "| ours `--batch_size 8 --fp8` | 2 | 2.00% | 1.00% |" in markdown
    assert "| ours `--batch_size 8 --fp8` | 30.00 | 1 | 1.0 | 50.0% |  |" in markdown
    assert f"- default recipe (mb8 compile budget 0.7): {minutes:.1f} min" in markdown


# --------------------------------------------------------------------------- the fp8 option


def test_fp8_option_needs_compile_and_bf16_weights(monkeypatch, capsys):
    spec = rrg.bench.specs.TrainSpec.parse("8+compile+fp8")
    assert spec.fp8 and spec.label() == "mb8 compile fp8"
    with pytest.raises(ValueError, match="fp8 needs compile"):
        rrg.bench.specs.TrainSpec.parse("8+fp8")
    cfg = rrg.bench.settings.BenchConfig(train_configs="8+compile", qlora_configs="16+ckpt+compile+fp8")
    with pytest.raises(SystemExit, match="4-bit"):
        rrg.bench.training.training_specs(cfg, {"lora", "qlora"})
    assert [s.fp8 for s in rrg.bench.training.training_specs(cfg, {"lora"})["lora"]] == [False]  # qlora not chosen
    cfg = rrg.bench.settings.BenchConfig(train_configs="8+compile,8+compile+fp8")
    with pytest.raises(SystemExit, match="CUDA GPU with FP8" if find_spec("torchao") else "requirements-fp8"):
        rrg.bench.training.training_specs(cfg, {"lora"})  # this machine has no FP8 GPU: stopped before anything is built
    with pytest.raises(SystemExit, match="unknown training option 'fp9'"):
        rrg.bench.training.training_specs(rrg.bench.settings.BenchConfig(train_configs="8+compile+fp9"), {"lora"})


# --------------------------------------------------------------------------- the training loop


@pytest.fixture
def cpu_benchmark(monkeypatch, tiny_model_dir, tmp_path):
    """our_training on the CPU: no CUDA timing or memory calls, bf16 weights (the benchmark's dtype), fp8
    emulated; the tiny model and 10 samples."""
    for name in ("synchronize", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 0)
    monkeypatch.setattr(rrg.train.setup, "model_dtype", lambda name: torch.bfloat16)
    monkeypatch.setattr(
        rrg.train.setup, "build_model", functools.partial(rrg.train.setup.build_model, fp8_emulate=True)
    )
    processor = load_processor(tiny_model_dir)
    entries = load_entries(write_split(tmp_path, REPORTS * 2))
    dataset = ReportDataset(
        encode_dataset(entries, processor.tokenizer, tmp_path / "images", PER_IMAGE),
        processor.image_processor,
    )
    collator = Collator(processor.tokenizer.pad_token_id, image_token_id(processor.tokenizer), PER_IMAGE)
    cfg = rrg.bench.settings.BenchConfig(train_samples=6, grad_accum=2, num_workers=0)  # 2 warm-up + 3 timed steps of 2 x 1

    def run(spec: str) -> dict:
        return rrg.bench.training.our_training(tiny_model_dir, dataset, collator, cfg, rrg.bench.specs.TrainSpec.parse(spec))

    return run


@pytest.mark.slow
@pytest.mark.skipif(find_spec("torchao") is None, reason="torchao is not installed (requirements-fp8.txt)")
def test_every_configuration_starts_alike_and_logs_one_loss_per_step(cpu_benchmark):
    """Two runs of one configuration give the same curve (the same LoRA init, samples and order, whatever
    ran before); an fp8 one a close curve, on the same samples; one loss per optimizer step, warm-up first."""
    rows = [
        cpu_benchmark(spec)
        for spec in ("1+compile+budget=0.7", "1+compile+budget=0.7", "1+compile+budget=0.7+fp8")
    ]
    assert all("error" not in r for r in rows), [r.get("error") for r in rows]
    assert [len(r["losses"]) for r in rows] == [5, 5, 5] and rows[0]["warmup_steps"] == 2
    assert rows[0]["warmup_samples"] == 4 and rows[0]["samples"] == 6
    rrg.bench.reference.compare_curves(rows, steps=50)
    assert rows[1]["curve_vs_first"] == {"steps": 5, "max_rel_diff": 0.0, "mean_rel_diff": 0.0}
    assert 0 < rows[2]["curve_vs_first"]["max_rel_diff"] < 0.01
    assert rrg.bench.specs.train_flags(rows[2], False) == "`--batch_size 1 --fp8`"


def test_projector_and_finding_weight_configurations_parse_label_and_give_their_flags():
    spec = rrg.bench.specs.TrainSpec.parse("8+compile+budget=0.7+projector+fw=2.5")
    assert spec.train_projector and spec.finding_weight == 2.5
    assert spec.label() == "mb8 compile budget 0.7 projector trained finding weight 2.5"
    row = {"config": asdict(spec)}
    assert "--train_projector" in rrg.bench.specs.train_flags(row, False) and "--finding_weight 2.5" in rrg.bench.specs.train_flags(
        row, False
    )
    assert "projector" not in rrg.bench.specs.TrainSpec.parse("8+compile+budget=0.7").label()
    for bad in ("8+fw=0", "8+fw=-1", "8+fw=inf"):
        with pytest.raises(ValueError, match="fw= takes a finite weight > 0"):
            rrg.bench.specs.TrainSpec.parse(bad)
    fast = rrg.bench.specs.TrainSpec.parse("8+projector+plr=1e-3")
    assert fast.label() == "mb8 projector trained at lr 0.001"
    assert "--projector_lr 0.001" in rrg.bench.specs.train_flags({"config": asdict(fast)}, False)
    with pytest.raises(ValueError, match="plr= needs projector"):
        rrg.bench.specs.TrainSpec.parse("8+plr=1e-3")


@pytest.mark.slow
def test_a_finding_weighted_row_refuses_an_unweighted_dataset(cpu_benchmark):
    with pytest.raises(ValueError, match="the dataset is not finding-weighted"):
        cpu_benchmark("1+fw=2")


@pytest.mark.slow
def test_projector_row_trains_the_projector(cpu_benchmark):
    rows = [cpu_benchmark("1"), cpu_benchmark("1+projector")]
    assert all("error" not in r for r in rows), [r.get("error") for r in rows]
    assert (
        rows[1]["config"]["train_projector"]
        and rows[1]["sample_order_sha256"] == rows[0]["sample_order_sha256"]
    )
    # The same start; then the trained projector moves the curve away from the default's.
    assert rows[1]["losses"][0] == pytest.approx(rows[0]["losses"][0], rel=1e-4)
    assert rows[1]["losses"][-1] != pytest.approx(rows[0]["losses"][-1], rel=1e-4)


def test_align_configuration_parses_labels_gives_its_flag_and_refuses_lora_options():
    spec = rrg.bench.specs.TrainSpec.parse("8+compile+budget=0.7+align")
    assert spec.align_stage and spec.label() == "mb8 compile budget 0.7 align stage (projector alone)"
    assert rrg.bench.specs.train_flags({"config": asdict(spec)}, False) == "`--batch_size 8 --stage align`"
    assert not rrg.bench.specs.TrainSpec.parse("8+compile").align_stage
    for bad in ("8+align+projector", "8+align+lora=q_proj", "8+compile+align+fp8"):
        with pytest.raises(ValueError, match="align trains the projector alone"):
            rrg.bench.specs.TrainSpec.parse(bad)


@pytest.mark.slow
def test_align_row_trains_the_projector_alone(cpu_benchmark):
    rows = [cpu_benchmark("1"), cpu_benchmark("1+align")]
    assert all("error" not in r for r in rows), [r.get("error") for r in rows]
    assert (
        rows[1]["config"]["align_stage"] and rows[1]["sample_order_sha256"] == rows[0]["sample_order_sha256"]
    )
    assert rows[1]["losses"][0] == pytest.approx(rows[0]["losses"][0], rel=1e-4)  # LoRA's B starts at 0
    assert rows[1]["losses"][-1] != pytest.approx(rows[0]["losses"][-1], rel=1e-4)
