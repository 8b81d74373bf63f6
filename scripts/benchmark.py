"""GPU benchmark: the reference paper's recipe beside ours, on the exact LLaVA-Med-v1.5-Mistral-7B architecture.

    python scripts/benchmark.py                        # every phase, one process
    python scripts/benchmark.py --phases lora,qlora    # some phases (also: reference, generation, diagnose, gen_diagnose,
                                                       # decoder_agreement)
    python scripts/benchmark.py --quick                # a smoke check of every phase, not figures to report
    python scripts/benchmark.py --markdown results/benchmark-h100.json   # the README table, no GPU

Random weights (speed does not depend on them, and none can be downloaded on a benchmark box): the
model is built from rrg.tiny.llava_med_config() at the real sizes, saved once, and then loaded by OUR
loader (rrg.model.load_base_model) for each phase. Samples are real IU X-Ray reports tokenised with the
real tokenizer (576 image tokens + prompt + report: 694 tokens on average); images are synthetic 512x512 PNGs.

Phases, in one process, one report (results/benchmark-<gpu>.json, a table at the end):
  1. reference recipe: fp16 weights, eager attention, batch 1, every sample padded to 2,048 tokens, no
     attention mask, autocast + GradScaler, LoRA r64/a128/dropout 0.05 on q,k,v,o,gate,up,down matched by
     name everywhere (CLIP too), peft's default fp32 adapters; generation batch 1, sampling T=0.2.
  2. our LoRA training (train_lora.py's build_model, collator, sampler and accumulate_gradients) over
     --train_configs, e.g. "8,16+ckpt+compile,8+compile+budget=0.7+log=10" (micro-batch, then options:
     ckpt, compile, budget=X activation memory budget, log=N steps per log line, fp8 (--fp8; with compile),
     lora=q_proj/v_proj (LoRA on these decoder projections only: what the seven adapters cost),
     projector (--train_projector), plr=X (--projector_lr X, with projector), fw=W (--finding_weight W: its loss curve is the weighted mean),
     align (--stage align: the projector alone, no LoRA, at lr 1e-3));
  3. our QLoRA training (bitsandbytes nf4) over --qlora_configs;
  4. our batched generation (rrg.generate.generate_predictions, the eval scripts' path) of
     100-token reports over --gen_configs (batch size[:KV cache[@compile backend]][+workers=N][+liger][+graphs|+generate]);
     each configuration after the first of its batch size is compared with that first one: the share of identical reports
     and where the others first differ (`agreement`; e.g. "256,256:static": the static cache against ours).
Diagnostics, on request: diagnose (data loader alone, one training micro-batch alone, a profile) and
gen_diagnose (one generation batch: prompt pass vs decode steps, per attention, KV cache and padding),
decoder_agreement (decoder graphs against generate() on one batch, with the logit margin where they part).
Compiled configurations pay their compilation in the warm-up; graphs_compiled_while_timed shows none
happened inside the timed window.

Loss curves: every training configuration starts from the same LoRA init (train_lora.py's seed) and, for one
micro-batch size, meets the same samples in the same order; `losses` holds one loss per optimizer step,
the 2 warm-up steps first. Each configuration after the first of its phase gets `curve_vs_first`: the max
and mean relative difference of its first --curve_steps losses from the first configuration's (the speed
issue's "within 1% of the default" test). 50 steps of micro-batch 8 x 4: --train_samples 1600 (2 warm-up
and 50 timed steps; the first 50 are compared). The weights are random, so these curves show FP8's rounding on this
architecture, not on the trained LLaVA-Med weights.
Projection: the wall time of the reference experiment (10 epochs of 5,029 samples, 1,251 generations) at
the fastest measured rate of train_lora.py's default recipe and of generation, plus their measured
warm-ups (compilation included); also at the fastest training configuration measured. Model loading, data
preparation, validation and checkpoints are not in it.
Needs the shared data (tokenizer.model and indiana_reports.csv): $RRG_SHARED_DATA or ../shared/data.
"""

from __future__ import annotations

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print

# isort: split
import os

# The same allocator setting as train_lora.py (see there), before torch initialises CUDA.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import gc
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate.utils import set_seed
from PIL import Image
from transformers import CompileConfig, DynamicCache, LlavaForConditionalGeneration

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # train_lora.py (the recipe) lives at the top level, not in rrg/

import rrg.generate  # noqa: E402
import train_lora  # noqa: E402
from rrg import align  # noqa: E402
from rrg import train as T  # noqa: E402
from rrg.attention import ATTENTION  # noqa: E402
from rrg.cli import flag, parse_flags, shared_data_dir  # noqa: E402
from rrg.collate import Collator, ReportDataset, encode_dataset, length_grouped_batches  # noqa: E402
from rrg.curves import relative_differences  # noqa: E402
from rrg.entries import Entry, resolve_image  # noqa: E402
from rrg.evaluate import EvalConfig  # noqa: E402
from rrg.float8 import float8_problem  # noqa: E402
from rrg.fused import liger_problem  # noqa: E402
from rrg.generate import GenerationSettings, encode_batch, generate_predictions, study_loader  # noqa: E402
from rrg.graph_decode import GreedyDecoder, GreedyRules  # noqa: E402
from rrg.io import InputError, atomic_write_json, read_jsonl  # noqa: E402
from rrg.kv_cache import PreallocatedCache  # noqa: E402
from rrg.model import load_base_model, load_processor  # noqa: E402
from rrg.processor import build_processor, build_tokenizer, image_token_id, tokens_per_image  # noqa: E402
from rrg.prompts import format_response, render_prompt, report_question  # noqa: E402
from rrg.tiny import generation_config, llava_med_config  # noqa: E402

DECODER_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
H100_BF16_DENSE_FLOPS = 989e12  # datasheet peak (SXM); MFU is reported against it (fp8 rows' too)
REFERENCE_NAMES = list(DECODER_PROJECTIONS)  # the reference matched these names everywhere (CLIP too)


@dataclass
class BenchConfig:
    out: str = flag("", "Results JSON ('': results/benchmark-<gpu>.json).")
    quick: bool = flag(False, "Fewer samples and configurations: a smoke check, not figures to report.")
    shared_data: str = flag(str(shared_data_dir()), "Shared data folder ($RRG_SHARED_DATA or ../shared/data).")
    workdir: str = flag("", "Where the random checkpoint is written ('': a temporary folder).")
    train_configs: str = flag(
        "8+compile+budget=0.7,8+compile+budget=0.7+plain",
        "Training configurations, comma-separated: micro-batch, then '+'-joined options: ckpt (gradient "
        "checkpointing), compile (train_lora.py --compile), budget=X (--activation_memory_budget X), log=N "
        "(--logging_steps N), plain (torch's AdamW on the bf16 LoRA weights, no fp32 master: the optimizer "
        "before rrg.optim, for comparison), fp8 (--fp8: FP8 frozen base matmuls; needs compile), "
        "lora=q_proj/v_proj (LoRA on these decoder projections only).",
    )
    qlora_configs: str = flag("16+ckpt+compile", "QLoRA training configurations (as --train_configs).")
    train_samples: int = flag(256, "Timed samples per configuration (after warm-up).", ge=1)
    grad_accum: int = flag(4, "Micro-batches per optimizer step in the timed loop.", ge=1)
    curve_steps: int = flag(
        50, "Optimizer steps (the 2 warm-up steps first) of each loss curve compared with the first's.", ge=0
    )
    reference_samples: int = flag(12, "Timed samples of the reference recipe (it is slow: keep it short).", ge=1)
    gen_configs: str = flag(
        "256,320",
        "Generation settings, comma-separated: batch size[:KV cache implementation[@torch.compile backend of "
        "its decode step]][+workers=N (loader workers)][+liger (Liger's RMSNorm and SwiGLU kernels)], e.g. "
        "256,256:static,256:static@cudagraphs,256+liger.",
    )
    gen_workers: int = flag(
        EvalConfig.num_workers, "Loader workers where --gen_configs names none (eval's default).", ge=0
    )
    loader_workers: str = flag("4,8", "Worker counts for which the eval loader alone is timed.")
    gen_reports: int = flag(1280, "Reports per batch-size setting (a multiple of each batch size).", ge=1)
    reference_gen_reports: int = flag(2, "Reports generated with the reference recipe.", ge=1)
    new_tokens: int = flag(100, "Every report is forced to exactly this length.", ge=1)
    gen_diagnose_batch: int = flag(128, "Batch size of the generation diagnosis.", ge=1)
    gen_diagnose_variants: str = flag("", "Comma-separated names (prompts/attention/cache); '': all.")
    num_workers: int = flag(8, "Training loader workers.", ge=0)
    train_profile: bool = flag(False, "Profile two accumulation groups of each training configuration.")
    trace_dir: str = flag("", "With --train_profile: write each profile there as a gzipped Chrome trace.")
    phases: str = flag("reference,lora,qlora,generation", "Comma-separated phases; also: diagnose.")
    markdown: str = flag("", "Print the Markdown table of an existing results JSON (no GPU needed) and exit.")


# --------------------------------------------------------------------------- inputs


def real_reports(csv_path: Path, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(findings, impression) of n IU X-Ray studies that have both; the first k are the same for any n."""
    table = pd.read_csv(csv_path)
    table = table.dropna(subset=["findings", "impression"])
    table = table.sample(n=min(n, len(table)), random_state=seed, replace=False)
    return list(zip(table["findings"], table["impression"]))


def synthetic_images(folder: Path, n: int = 16) -> list[str]:
    """Noise PNGs of the Kaggle images' size (512 x 512): preprocessing cost is real, content is not."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"{i}_IM-0000-1001.dcm.png"
        Image.fromarray(rng.integers(0, 256, (512, 512), dtype=np.uint8)).convert("RGB").save(folder / name)
        names.append(name)
    return names


def make_entries(reports: list[tuple[str, str]], images: list[str]) -> list[Entry]:
    return [
        Entry(
            id=str(i),
            study_id=str(i),
            images=[images[i % len(images)]],
            prompt=report_question(),
            response=format_response(f, imp),
            findings=f,
            impression=imp,
        )
        for i, (f, imp) in enumerate(reports)
    ]


def build_random_checkpoint(folder: Path, tokenizer_dir: Path) -> None:
    """The real architecture with random bf16 weights, saved as an HF Llava folder (+ processor)."""
    torch.manual_seed(0)
    with torch.device("cuda"):
        torch.set_default_dtype(torch.bfloat16)
        model = LlavaForConditionalGeneration(llava_med_config())
        torch.set_default_dtype(torch.float32)
    model.generation_config = generation_config()
    model.save_pretrained(folder)
    build_processor(build_tokenizer(tokenizer_dir)).save_pretrained(folder)
    del model
    free_gpu()


# --------------------------------------------------------------------------- measurement


def free_gpu() -> None:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30


@contextmanager
def timed() -> dict:
    result: dict = {}
    torch.cuda.synchronize()
    start = time.perf_counter()
    yield result
    torch.cuda.synchronize()
    result["s"] = time.perf_counter() - start


def gpu_time_split(prof, per: int) -> dict:
    """GPU kernel time of a profile by kind, in ms per `per` (samples, steps), and the top kernels.

    Kernels only: an operator's row repeats the time of the kernels it launched.
    """
    kinds = {"matmul": 0.0, "attention": 0.0, "fused (triton)": 0.0, "other": 0.0}
    events = prof.key_averages()
    for e in events:
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        name = e.key.lower()
        # Attention first: flash attention's kernel names carry cutlass and sm90 template types too.
        if any(s in name for s in ("flash", "fmha", "attention")):
            kind = "attention"
        elif any(s in name for s in ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90")):
            kind = "matmul"
        elif name.startswith("triton"):
            kind = "fused (triton)"
        else:
            kind = "other"
        kinds[kind] += e.self_device_time_total / 1000 / per
    return {
        "gpu_busy_ms": sum(kinds.values()),
        "gpu_ms_by_kind": kinds,
        "top_kernels": events.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=60),
    }


def param_counts(model) -> dict[str, int]:
    counts = {"decoder": 0, "lm_head": 0, "vision": 0}
    for name, p in model.named_parameters():
        n = p.numel() * (2 if p.dtype == torch.uint8 else 1)  # bnb packs two 4-bit weights per byte
        if "lm_head" in name:
            counts["lm_head"] += n
        elif "vision_tower" in name:
            counts["vision"] += n
        elif "embed_tokens" not in name:  # a lookup, no FLOPs
            counts["decoder"] += n
    return counts


def training_flops(
    params: dict[str, int], tokens: int, label_tokens: int, images: int, vision_tokens: int
) -> float:
    """Model FLOPs of LoRA steps without recomputation.

    Frozen weights need the forward (2 FLOPs/param/token) and the input gradient (2 more), not the
    weight gradient: 4 x params x tokens for the decoder, lm_head only at label positions, and a
    forward-only frozen vision tower. Attention scores and LoRA's own small matmuls are left out.
    """
    return (
        4 * params["decoder"] * tokens
        + 4 * params["lm_head"] * label_tokens
        + 2 * params["vision"] * vision_tokens * images
    )


# --------------------------------------------------------------------------- 1. the reference recipe


def reference_training(model_dir: Path, samples, cfg: BenchConfig, pad_id: int) -> dict:
    """bs 1, padded to 2,048, no attention mask, fp16 + autocast + GradScaler, fp32 LoRA everywhere."""
    from peft import LoraConfig, get_peft_model

    model = LlavaForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float16, attn_implementation="eager", device_map={"": 0}
    )
    model.requires_grad_(False)
    lora = LoraConfig(
        r=64, lora_alpha=128, lora_dropout=0.05, target_modules=REFERENCE_NAMES, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, lora)  # peft's default: fp32 adapter weights
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    scaler = torch.amp.GradScaler("cuda")
    processor = load_processor(str(model_dir))
    pixel_cache = {}

    def step(sample, i: int) -> None:
        ids = torch.full((1, 2048), pad_id, dtype=torch.long)
        labels = torch.full((1, 2048), -100, dtype=torch.long)
        ids[0, : len(sample)] = torch.tensor(sample.input_ids)
        labels[0, : len(sample)] = torch.tensor(sample.labels)
        path = sample.image_paths[0]
        if path not in pixel_cache:
            pixel_cache[path] = processor.image_processor(
                images=[Image.open(path).convert("RGB")], return_tensors="pt"
            )["pixel_values"]
        with torch.autocast("cuda", dtype=torch.float16):
            out = model(
                input_ids=ids.cuda(), pixel_values=pixel_cache[path].cuda().half(), labels=labels.cuda()
            )
        scaler.scale(out.loss / cfg.grad_accum).backward()
        if (i + 1) % cfg.grad_accum == 0:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()

    warmup = 2
    for i, sample in enumerate(samples[:warmup]):
        step(sample, i)
    torch.cuda.reset_peak_memory_stats()
    timed_samples = samples[warmup : warmup + cfg.reference_samples]
    with timed() as t:
        for i, sample in enumerate(timed_samples):
            step(sample, i)
    n = len(timed_samples)
    tokens = sum(len(s) for s in timed_samples)
    result = {
        "samples_per_s": n / t["s"],
        "real_tokens_per_s": tokens / t["s"],
        "padded_tokens_per_s": 2048 * n / t["s"],
        "peak_gib": peak_gib(),
        "samples": n,
    }
    # The reference computes all 2,048 positions, logits included: its MFU counts padding as work.
    flops = training_flops(param_counts(model), 2048 * n, 2048 * n, n, 577)
    result["mfu_padded"] = flops / t["s"] / H100_BF16_DENSE_FLOPS
    model = model.merge_and_unload()  # generation as the reference evaluates: merged fp16 model
    result["generation"] = reference_generation(model, processor, samples, cfg)
    return result  # the caller frees the GPU once these locals are gone


@torch.inference_mode()
def reference_generation(model, processor, samples, cfg: BenchConfig) -> dict:
    """Batch 1, sampling at T=0.2, fp16, eager attention: the reference's eval loop."""
    model.eval()
    model.generation_config.min_new_tokens = cfg.new_tokens

    def one(sample) -> None:
        image = Image.open(sample.image_paths[0]).convert("RGB")
        inputs = processor(text=[render_prompt(report_question())], images=[[image]], return_tensors="pt").to(
            "cuda"
        )
        inputs["pixel_values"] = inputs["pixel_values"].half()
        model.generate(
            **inputs, do_sample=True, temperature=0.2, max_new_tokens=cfg.new_tokens, pad_token_id=0
        )

    one(samples[0])
    with timed() as t:
        for sample in samples[: cfg.reference_gen_reports]:
            one(sample)
    return {"reports_per_s": cfg.reference_gen_reports / t["s"], "batch_size": 1}


# --------------------------------------------------------------------------- 2./3. our training


@dataclass
class TrainSpec:
    """One training configuration of the sweep, e.g. "16+compile+budget=0.3"."""

    micro_batch: int
    checkpointing: bool = False
    compile: bool = False
    budget: float = 1.0
    # plain: torch's AdamW straight on the bf16 LoRA weights (before fp32 master weights), for comparison
    plain_adamw: bool = False
    # Steps per log line: train_lora.py reads the loss back from the GPU (a wait) only for those
    log_every: int = train_lora.TrainConfig.logging_steps
    fp8: bool = False  # train_lora.py --fp8: FP8 matmuls for the frozen base weights (rrg.float8)
    # lora=q_proj/v_proj: LoRA on these decoder projections only ("": all seven, the default). Measures
    # what the adapters cost: the gradient still flows through every layer, only the adapters differ.
    lora_modules: str = ""
    train_projector: bool = False  # projector: train_lora.py --train_projector (peft modules_to_save)
    # fw=W: train_lora.py --finding_weight W (its loss is the weighted mean, so its curve is another quantity)
    finding_weight: float = 1.0
    projector_lr: float = 0.0  # plr=X: train_lora.py --projector_lr X (needs projector)
    # align: train_lora.py --stage align (the projector alone, no LoRA, at the stage's lr 1e-3; rrg.align)
    align_stage: bool = False

    @classmethod
    def parse(cls, text: str) -> TrainSpec:
        head, *options = text.strip().split("+")
        spec = cls(micro_batch=int(head))
        for option in options:
            if option == "ckpt":
                spec.checkpointing = True
            elif option == "compile":
                spec.compile = True
            elif option == "plain":
                spec.plain_adamw = True
            elif option.startswith("log="):
                spec.log_every = int(option.split("=", 1)[1])
            elif option.startswith("budget="):
                spec.budget = float(option.split("=", 1)[1])
            elif option == "fp8":
                spec.fp8 = True
            elif option == "projector":
                spec.train_projector = True
            elif option == "align":
                spec.align_stage = True
            elif option.startswith("plr="):
                spec.projector_lr = float(option.split("=", 1)[1])
                if not 0 < spec.projector_lr < float("inf"):
                    raise ValueError(f"{text!r}: plr= takes a finite rate > 0")
            elif option.startswith("fw="):
                spec.finding_weight = float(option.split("=", 1)[1])
                if not spec.finding_weight > 0 or spec.finding_weight == float("inf"):
                    raise ValueError(f"{text!r}: fw= takes a finite weight > 0")
            elif option.startswith("lora="):
                spec.lora_modules = option.split("=", 1)[1]
                unknown = set(spec.lora_modules.split("/")) - set(DECODER_PROJECTIONS)
                if unknown:
                    raise ValueError(
                        f"{text!r}: lora= takes {'/'.join(DECODER_PROJECTIONS)}, not {sorted(unknown)}"
                    )
            else:
                raise ValueError(
                    f"unknown training option {option!r} in {text!r} "
                    "(ckpt, compile, budget=X, log=N, plain, fp8, lora=NAMES, projector, plr=X, fw=W, align)"
                )
        if spec.projector_lr and not spec.train_projector:
            raise ValueError(
                f"{text!r}: plr= needs projector (train_lora.py refuses --projector_lr without it)"
            )
        if spec.align_stage and (spec.train_projector or spec.projector_lr or spec.lora_modules or spec.fp8):
            raise ValueError(
                f"{text!r}: align trains the projector alone (no LoRA): it takes no projector, plr=, lora= or fp8"
            )
        if spec.fp8 and not spec.compile:
            raise ValueError(f"{text!r}: fp8 needs compile (train_lora.py refuses --fp8 without --compile)")
        return spec

    @classmethod
    def default(cls) -> TrainSpec:
        """train_lora.py's default recipe."""
        recipe = train_lora.TrainConfig
        return cls(
            micro_batch=recipe.batch_size,
            checkpointing=recipe.gradient_checkpointing,
            compile=recipe.compile,
            budget=recipe.activation_memory_budget,
            log_every=recipe.logging_steps,
            fp8=recipe.fp8,
        )

    def label(self) -> str:
        parts = [f"mb{self.micro_batch}", "ckpt" if self.checkpointing else ""]
        parts += ["compile" if self.compile else "", f"budget {self.budget:g}" if self.budget < 1 else ""]
        default_log = train_lora.TrainConfig.logging_steps
        parts += [f"log every {self.log_every}" if self.log_every != default_log else ""]
        parts += ["bf16 AdamW, no fp32 master" if self.plain_adamw else "", "fp8" if self.fp8 else ""]
        parts += [f"LoRA on {self.lora_modules.replace('/', ', ')} only" if self.lora_modules else ""]
        parts += ["projector trained" if self.train_projector else ""]
        parts += ["align stage (projector alone)" if self.align_stage else ""]
        parts += [f"at lr {self.projector_lr:g}" if self.projector_lr else ""]
        parts += [f"finding weight {self.finding_weight:g}" if self.finding_weight != 1 else ""]
        return " ".join(p for p in parts if p)

    def target_modules(self) -> str:
        """train_lora.py's --target_modules for this configuration."""
        if not self.lora_modules:
            return train_lora.TrainConfig.target_modules
        every = "|".join(DECODER_PROJECTIONS)
        assert every in train_lora.LANGUAGE_MODEL_TARGETS  # the default regex, with fewer names
        return train_lora.LANGUAGE_MODEL_TARGETS.replace(every, self.lora_modules.replace("/", "|"))


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def our_training(
    model_dir: Path, dataset, collator, cfg: BenchConfig, spec: TrainSpec, load_in_4bit=False
) -> dict:
    """train_lora.py's model setup and accumulation step, timed over cfg.train_samples samples."""
    from accelerate import Accelerator

    recipe = train_lora.TrainConfig(
        model_path=str(model_dir),
        load_in_4bit=load_in_4bit,
        gradient_checkpointing=spec.checkpointing,
        compile=spec.compile,
        activation_memory_budget=spec.budget,
        batch_size=spec.micro_batch,
        gradient_accumulation_steps=cfg.grad_accum,
        num_workers=cfg.num_workers,
        fp8=spec.fp8,
        target_modules=spec.target_modules(),
        train_projector=spec.train_projector,
        projector_lr=spec.projector_lr,
        finding_weight=spec.finding_weight,
        stage="align" if spec.align_stage else "lora",
        lr=align.DEFAULTS["lr"] if spec.align_stage else train_lora.TrainConfig.lr,
    )
    weighted = dataset.samples[0].weights is not None
    if weighted != (spec.finding_weight != 1):  # a weighted row must never time an unweighted loss
        raise ValueError(f"{spec.label()}: the dataset is {'' if weighted else 'not '}finding-weighted")
    torch._dynamo.reset()  # a graph compiled under another configuration must not be reused
    accelerator = Accelerator()
    set_seed(recipe.seed)  # as train_lora.py: every configuration starts from the same LoRA init
    model = train_lora.build_model(recipe, accelerator)
    optimizer = T.build_optimizer(  # fp32 masters
        model, recipe.lr, recipe.weight_decay, accelerator, recipe.projector_lr or None
    )
    if spec.plain_adamw:
        optimizer = torch.optim.AdamW(
            optimizer.model_params, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=True
        )
    model, optimizer = accelerator.prepare(model, optimizer)
    dtype = torch.bfloat16
    batches = length_grouped_batches(dataset.lengths(), spec.micro_batch, 1, 0, seed=0, epoch=0)
    loader = iter(train_lora.make_loader(dataset, batches, collator, recipe, pin_memory=True))
    warmup_groups = 2
    timed_groups = max(1, cfg.train_samples // (spec.micro_batch * cfg.grad_accum))
    needed = (warmup_groups + timed_groups + (2 if cfg.train_profile else 0)) * cfg.grad_accum

    window, steps = T.StepWindow(), 0

    def group_step() -> torch.Tensor:
        nonlocal steps
        group = [next(loader) for _ in range(cfg.grad_accum)]
        stats = T.accumulate_gradients(model, group, accelerator, dtype)
        grad_norm = T.clip_gradients(accelerator, model, optimizer, 1.0)  # the fp32 master gradients
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window.add(stats, grad_norm)
        steps += 1
        if steps % spec.log_every == 0:  # train_lora.py's log line: reading it waits for the GPU
            window.read()
        return stats

    result = {
        "config": asdict(spec),
        "micro_batch": spec.micro_batch,
        "gradient_checkpointing": spec.checkpointing,
        # The same for every configuration of this micro-batch in this run: the same samples, in order.
        "sample_order_sha256": hashlib.sha256(json.dumps(batches).encode()).hexdigest(),
    }
    try:
        if needed > len(batches):
            raise ValueError(
                f"{needed} micro-batches of {spec.micro_batch} needed, the sample pool holds {len(batches)}: "
                "lower --train_samples"
            )
        with timed() as warm:
            warmup = [T.read_stats(group_step()) for _ in range(warmup_groups)]
        losses = [stats["loss"] for stats in warmup]  # one per optimizer step from the first
        graphs = compiled_graphs()
        torch.cuda.reset_peak_memory_stats()
        totals = {"samples": 0, "tokens": 0, "label_tokens": 0}
        with timed() as t:
            group_stats = [group_step() for _ in range(timed_groups)]  # read after the timed loop
        for stats in map(T.read_stats, group_stats):
            losses.append(stats["loss"])
            for key in totals:
                totals[key] += int(stats[key])
        result |= {
            "samples_per_s": totals["samples"] / t["s"],
            "real_tokens_per_s": totals["tokens"] / t["s"],
            "peak_gib": peak_gib(),
            "samples": totals["samples"],
            "warmup_s": warm["s"],  # compilation included
            "warmup_steps": warmup_groups,
            "warmup_samples": int(sum(stats["samples"] for stats in warmup)),
            "graphs_compiled": graphs,
            "graphs_compiled_while_timed": compiled_graphs() - graphs,  # 0: no recompilation in the window
            "losses": losses,
        }
        flops = training_flops(
            param_counts(model), totals["tokens"], totals["label_tokens"], totals["samples"], 577
        )
        result["mfu"] = flops / t["s"] / H100_BF16_DENSE_FLOPS
        if cfg.train_profile:  # where a group's GPU time goes, per sample; wall time beside it
            activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            with timed() as wall, torch.profiler.profile(activities=activities) as prof:
                stats = [group_step() for _ in range(2)]
            samples = sum(T.read_stats(s)["samples"] for s in stats)
            result["profile"] = {"wall_ms": 1000 * wall["s"] / samples} | gpu_time_split(prof, samples)
            if cfg.trace_dir:
                trace = Path(cfg.trace_dir) / f"train-{spec.label().replace(' ', '-')}.json.gz"
                trace.parent.mkdir(parents=True, exist_ok=True)
                prof.export_chrome_trace(str(trace))  # gzipped: the profiler reads the suffix
            print(result["profile"].pop("top_kernels"), flush=True)
    except Exception as e:  # out of memory, a compile failure: record it and go on with the sweep
        result["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    print(("QLoRA " if load_in_4bit else "LoRA ") + spec.label() + ":", json.dumps(result), flush=True)
    return result  # the caller frees the GPU once these locals are gone


# --------------------------------------------------------------------------- 4. our generation


@contextmanager
def batch_timeline():
    """(start, end) of each generate call the eval loop makes inside this block.

    The calls return decoded text, so each end is after the GPU finished its batch; the time outside
    the calls is the loop's own (waiting for the next batch, writing lines).
    """
    original = rrg.generate.generate_from_inputs
    calls: list[tuple[float, float]] = []

    def recorded(*args, **kwargs):
        start = time.perf_counter()
        texts = original(*args, **kwargs)
        calls.append((start, time.perf_counter()))
        return texts

    rrg.generate.generate_from_inputs = recorded  # generate_predictions looks it up at each call
    try:
        yield calls
    finally:
        rrg.generate.generate_from_inputs = original


def timeline_summary(calls: list[tuple[float, float]], start: float, end: float) -> dict:
    """How a timed eval run splits: before the first batch, inside generate, between batches, after."""
    inside = [b - a for a, b in calls]
    between = [calls[i + 1][0] - calls[i][1] for i in range(len(calls) - 1)]
    return {
        "batches": len(calls),
        "before_first_batch_s": calls[0][0] - start,  # worker start, the first batch's preprocessing
        "generate_s_per_batch": float(np.mean(inside)),
        "between_batches_s": float(np.mean(between)) if between else 0.0,
        "after_last_batch_s": end - calls[-1][1],
    }


def eval_loader_timings(entries, image_dir: Path, image_processor, cfg: BenchConfig) -> list[dict]:
    """The eval loader alone, for each of cfg.loader_workers, batches of the first generation setting."""
    items = [(e, e.images) for e in entries[: cfg.gen_reports]]
    paths = {e.images[0]: resolve_image(image_dir, e.images[0]) for e in entries}
    batch_size = GenSpec.parse(cfg.gen_configs.split(",")[0], cfg.gen_workers).batch_size
    rows = []
    for workers in [int(w) for w in cfg.loader_workers.split(",") if w]:
        rows.append(loader_timing(items, paths, image_processor, batch_size, workers))
        print("eval loader:", json.dumps(rows[-1]), flush=True)
    return rows


def loader_timing(items, paths, image_processor, batch_size: int, workers: int) -> dict:
    """The eval loader alone (no GPU work): time to its first batch, and studies/s over all items."""
    loader = study_loader(items, paths, image_processor, batch_size, workers, torch.device("cuda"))
    start = time.perf_counter()
    first = None
    for i, (_, _, pixels) in enumerate(loader, 1):
        if isinstance(pixels, str):
            raise RuntimeError(pixels)
        if i == batch_size:
            first = time.perf_counter() - start
    return {
        "workers": workers,
        "first_batch_s": first,
        "studies_per_s": len(items) / (time.perf_counter() - start),
    }


@dataclass
class GenSpec:
    """One generation configuration of the sweep, e.g. "256:static+workers=8"."""

    batch_size: int
    cache: str | None = None  # GenerationSettings.cache_implementation (None: rrg.kv_cache)
    workers: int = EvalConfig.num_workers  # loader workers
    # With the static cache: the torch.compile backend of generate's decode step (None: transformers'
    # default, inductor with CUDA graphs). "cudagraphs" captures CUDA graphs of the eager kernels,
    # without inductor's code generation: the speed issue's "graphs without the per-shape compile".
    compile_backend: str | None = None
    # eval --liger (GenerationSettings.liger): Liger's kernels for the prompt pass's RMSNorms and MLPs
    liger: bool = False
    # eval --decoder: "graphs" (rrg.graph_decode) or "generate"; None: GenerationSettings' choice
    decoder: str | None = None

    @classmethod
    def parse(cls, text: str, workers: int = EvalConfig.num_workers) -> GenSpec:
        head, *options = text.strip().split("+")
        size, *cache = head.split(":")
        cache_name, _, backend = cache[0].partition("@") if cache else (None, "", "")
        if backend and cache_name != "static":
            raise ValueError(f"a compile backend (@{backend}) needs the static cache, in {text!r}")
        spec = cls(batch_size=int(size), cache=cache_name, workers=workers, compile_backend=backend or None)
        for option in options:
            if option.startswith("workers="):
                spec.workers = int(option.split("=", 1)[1])
            elif option == "liger":
                spec.liger = True
            elif option in ("graphs", "generate"):
                spec.decoder = option
            else:
                raise ValueError(
                    f"unknown generation option {option!r} in {text!r} (workers=N, liger, graphs, generate)"
                )
        try:  # the settings eval would make of it: combinations they refuse are refused here, up front
            GenerationSettings(cache_implementation=spec.cache, liger=spec.liger, decoder=spec.decoder)
        except InputError as e:
            raise ValueError(f"{text!r}: {e}") from None
        return spec


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position at which two token sequences differ (where the shorter one ends, when it is
    the start of the other); None when they are equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def agreement(reference: list[str], other: list[str], tokenize) -> dict:
    """How far `other`'s reports are from `reference`'s (the same prompts, in order), on their tokens
    (re-tokenised from the texts): the share of identical reports, and for the others the position of
    the first token that differs (mean and median over the differing reports only)."""
    if len(reference) != len(other):
        raise ValueError(f"{len(reference)} reference reports but {len(other)} to compare")
    differences = (first_difference(tokenize(a), tokenize(b)) for a, b in zip(reference, other))
    positions = [p for p in differences if p is not None]
    return {
        "reports": len(reference),
        "identical": len(reference) - len(positions),
        "identical_share": (len(reference) - len(positions)) / len(reference) if reference else float("nan"),
        "mean_first_difference_token": float(np.mean(positions)) if positions else None,
        "median_first_difference_token": float(np.median(positions)) if positions else None,
    }


def with_agreement(rows: list[dict], texts: list[list[str] | None], tokenize) -> None:
    """Give each row after the first of its batch size (both without error) its agreement with that first
    (rows that have one keep it)."""
    first: dict[int, int] = {}
    for i, row in enumerate(rows):
        if texts[i] is None:
            continue
        if row["batch_size"] not in first:
            first[row["batch_size"]] = i
            continue
        if "agreement" in row:
            continue
        j = first[row["batch_size"]]
        row["agreement"] = {
            "with": gen_label(rows[j]),
            "with_row": j,
            **agreement(texts[j], texts[i], tokenize),
        }


def decode_compile_config(backend: str | None) -> CompileConfig:
    """generate()'s compilation of static-cache decode steps: transformers' default, or another backend.

    Backends other than inductor take no mode; their shapes are static (one graph per batch shape: a
    benchmark configuration has one batch size)."""
    if backend is None or backend == "inductor":
        return CompileConfig()
    return CompileConfig(backend=backend, mode="default", dynamic=False)


def our_generation(
    model_dir: Path, entries, image_dir: Path, cfg: BenchConfig, on_row: Callable[[list[dict]], None]
) -> list[dict]:
    """The eval scripts' path: rrg.generate.generate_predictions (DataLoader workers preprocess the next
    batch while this one generates; each report appended to a JSONL). The texts of each configuration are
    kept to compare with the first configuration of the same batch size (`agreement`). `on_row` gets the
    rows so far after each configuration (the report is written at once: a later kill loses nothing)."""

    model = load_base_model(str(model_dir), device_map={"": 0})
    model.eval()
    model.generation_config.min_new_tokens = cfg.new_tokens  # random weights: force full-length reports
    processor = load_processor(str(model_dir))
    items = [(e, e.images) for e in entries[: cfg.gen_reports]]
    paths = {e.images[0]: resolve_image(image_dir, e.images[0]) for e in entries}
    results: list[dict] = []
    texts: list[list[str] | None] = []
    with tempfile.TemporaryDirectory() as tmp:
        for text in cfg.gen_configs.split(","):
            spec = GenSpec.parse(text, cfg.gen_workers)
            batch_size, workers = spec.batch_size, spec.workers
            settings = GenerationSettings(
                max_new_tokens=cfg.new_tokens,
                batch_size=batch_size,
                cache_implementation=spec.cache,
                liger=spec.liger,
                decoder=spec.decoder,
            )
            if spec.cache == "static":  # set on other caches, transformers warns that it cannot compile
                model.generation_config.compile_config = decode_compile_config(spec.compile_backend)
            identity = {
                "image_control": "none",
                "generation": asdict(settings),
                "model": "random",
                "adapter": None,
            }

            def run(
                n: int, name: str, settings=settings, identity=identity, workers=workers, spec=spec
            ) -> Path:
                out = Path(tmp) / f"{name}-{len(results)}.jsonl"
                generate_predictions(
                    model, processor, items[:n], paths, out, identity, settings, num_workers=workers
                )
                return out

            try:
                with timed() as warm:  # the loader's start, and any compilation (a static cache's)
                    run(batch_size, "warmup")
                torch.cuda.reset_peak_memory_stats()
                with timed() as t, batch_timeline() as calls:
                    start = time.perf_counter()
                    timed_out = run(len(items), "timed")
                timeline = timeline_summary(calls, start, time.perf_counter())
                peak = peak_gib()
                reports = [record["prediction"] for record in read_jsonl(timed_out)]
                # Then one batch to its first token (CLIP and the prompt's prefill, inside generate):
                # the rest of a batch's generate time is decoding.
                model.generation_config.min_new_tokens = 1
                with timed() as first, batch_timeline() as first_calls:
                    run(batch_size, "first-token", settings=replace(settings, max_new_tokens=1))
                model.generation_config.min_new_tokens = cfg.new_tokens
                prefill_s = first_calls[0][1] - first_calls[0][0]
                row = {
                    "batch_size": batch_size,
                    "reports_per_s": len(items) / t["s"],
                    "peak_gib": peak,
                    "batch_s": t["s"] * batch_size / len(items),
                    "first_token_s": first["s"],  # loader start and the first batch's images included
                    "prefill_s": prefill_s,
                    "decode_ms_per_step": 1000
                    * (timeline["generate_s_per_batch"] - prefill_s)
                    / (cfg.new_tokens - 1),
                    "workers": workers,
                    "timeline": timeline,
                    "warmup_s": warm["s"],
                    "warmup_reports": batch_size,
                }
            except Exception as e:  # out of memory, an unsupported cache: record it, try the next
                row = {"batch_size": batch_size, "error": f"{type(e).__name__}: {str(e)[:200]}"}
                reports = None
                free_gpu()
            row["cache"] = settings.cache_implementation or "dynamic"
            if spec.compile_backend:
                row["cache"] += f"@{spec.compile_backend}"
            if spec.liger:
                row["liger"] = True
            row["decoder"] = settings.decoder
            results.append(row)
            texts.append(reports)
            with_agreement(results, texts, lambda t: processor.tokenizer.encode(t, add_special_tokens=False))
            on_row(results)
            print("generation:", json.dumps(row), flush=True)
    return results


# --------------------------------------------------------------------------- where the time goes


def diagnose(model_dir: Path, dataset, collator, cfg: BenchConfig) -> dict:
    """Time the data loader alone, then one micro-batch step alone on a batch already on the GPU."""
    from accelerate import Accelerator

    micro_batch = 8
    recipe = train_lora.TrainConfig(
        model_path=str(model_dir), batch_size=micro_batch, num_workers=cfg.num_workers
    )
    batches = length_grouped_batches(dataset.lengths(), micro_batch, 1, 0, seed=0, epoch=0)
    loader = iter(train_lora.make_loader(dataset, batches, collator, recipe, pin_memory=True))
    next(loader)
    start, n = time.perf_counter(), 0
    for _ in range(min(24, len(batches) - 2)):
        n += len(next(loader)["input_ids"])
    result = {"loader_samples_per_s": n / (time.perf_counter() - start), "num_workers": cfg.num_workers}
    batch = T.move_to(next(loader), torch.device("cuda"), torch.bfloat16)
    tokens = int(batch["attention_mask"].sum())
    for checkpointing in (False, True):
        recipe.gradient_checkpointing = checkpointing
        model = train_lora.build_model(recipe, Accelerator())
        scale = 1.0 / max(T.count_label_tokens(batch), 1)
        for _ in range(2):
            T.training_step(model, batch, scale)
        steps = 8
        with timed() as t:
            for _ in range(steps):
                T.training_step(model, batch, scale)
        key = "step_ckpt_on" if checkpointing else "step_ckpt_off"
        result[key] = {
            "samples_per_s": steps * micro_batch / t["s"],
            "tokens_per_s": steps * tokens / t["s"],
            "ms_per_micro_batch": 1000 * t["s"] / steps,
        }
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        ) as prof:
            T.training_step(model, batch, scale)
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=12)
        result[key]["profile_top"] = table
        print(table, flush=True)
        model = None
        free_gpu()
    return result


def real_indications(csv_path: Path, n: int) -> list[str]:
    """n real clinical indications (a clean-protocol option, --indication): prompts of varied length."""
    table = pd.read_csv(csv_path).dropna(subset=["indication"])
    return table["indication"].sample(n=n, random_state=0, replace=True).astype(str).tolist()


def profile_decode(model, inputs, cache, steps: int = 3) -> dict:
    """Top GPU kernels of the prompt pass and of a few decode steps after it, and the GPU's busy time
    beside the wall time: which of host and GPU each waits for."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with timed() as prompt_wall, torch.profiler.profile(activities=activities) as prompt_prof:
        out = model(**inputs, past_key_values=cache, use_cache=True, logits_to_keep=1)
    prompt = gpu_time_split(prompt_prof, 1)
    print(prompt.pop("top_kernels"), flush=True)
    mask = inputs["attention_mask"]
    token = out.logits[:, -1:].argmax(-1)

    def step() -> None:
        nonlocal token, mask
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        logits = model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True).logits
        token = logits[:, -1:].argmax(-1)

    step()
    with timed() as wall:
        for _ in range(steps):
            step()
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    split = gpu_time_split(prof, steps)
    return {
        # the prompt pass (images through CLIP, then every prompt position), profiled: its wall time
        # includes the profiler's overhead
        "prompt_pass": {"wall_ms": 1000 * prompt_wall["s"]} | prompt,
        "step_ms": 1000 * wall["s"] / steps,  # without the profiler
        "gpu_busy_ms_per_step": split["gpu_busy_ms"],  # kernel time, from the profile
        "gpu_ms_by_kind": split["gpu_ms_by_kind"],
        "top_kernels": split["top_kernels"],
    }


def profile_graph_decode(generate: Callable[[int], None], cfg: BenchConfig) -> dict:
    """GPU busy time of a decode step replayed as a CUDA graph: a whole generation profiled, less its
    prompt pass (a generation of one token), per step."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as first:
        generate(1)
    with torch.profiler.profile(activities=activities) as full:
        generate(cfg.new_tokens)
    steps = cfg.new_tokens - 1
    prompt, whole = gpu_time_split(first, 1), gpu_time_split(full, 1)
    return {
        "gpu_busy_ms_per_step": (whole["gpu_busy_ms"] - prompt["gpu_busy_ms"]) / steps,
        "gpu_ms_by_kind": {
            k: (v - prompt["gpu_ms_by_kind"].get(k, 0.0)) / steps for k, v in whole["gpu_ms_by_kind"].items()
        },
        "prompt_pass": {k: v for k, v in prompt.items() if k != "top_kernels"},
        "top_kernels": whole["top_kernels"],
    }


@torch.inference_mode()
def diagnose_generation(
    model_dir: Path, entries, image_dir: Path, reports_csv: Path, cfg: BenchConfig
) -> dict:
    """Where one generation batch's time goes: the prompt pass alone, then the decode steps, per
    attention implementation (transformers' "sdpa", ours: rrg.attention) and KV cache (transformers'
    dynamic one, ours: rrg.kv_cache, static run eagerly, static under generate's compiled decode
    step), on prompts of one length ("equal": the default question) and of varied lengths ("padded":
    with real indications, so the batch is left-padded and a mask reaches attention). Inputs are built
    once: no image loading is timed."""
    batch_size = cfg.gen_diagnose_batch
    model = load_base_model(str(model_dir), device_map={"": 0}).eval()
    processor = load_processor(str(model_dir))
    chosen = entries[:batch_size]
    views = [[Image.open(resolve_image(image_dir, e.images[0])).convert("RGB")] for e in chosen]
    per_image = tokens_per_image(model.config)
    prompts = {
        "equal": [e.prompt for e in chosen],
        "padded": [report_question(i) for i in real_indications(reports_csv, batch_size)],
    }
    inputs = {}
    for name, questions in prompts.items():
        inputs[name] = encode_batch(processor, questions, views, per_image).to("cuda")
        inputs[name]["pixel_values"] = inputs[name]["pixel_values"].to(torch.bfloat16)
    rows: dict = {
        "batch_size": batch_size,
        "prompt_tokens": {k: int(v["input_ids"].shape[1]) for k, v in inputs.items()},
        "padding_share": {k: float(1 - v["attention_mask"].float().mean()) for k, v in inputs.items()},
    }

    def kv_cache(batch, kind: str):
        if kind == "dynamic":
            return DynamicCache()  # transformers' own: appends with torch.cat
        return PreallocatedCache.for_generation(model, batch["input_ids"].shape[1], cfg.new_tokens)

    variants = [  # (prompts, attention, KV cache); static caches last, compiled last of all
        ("equal", "sdpa", "dynamic"),
        ("equal", ATTENTION, "dynamic"),
        ("equal", ATTENTION, "preallocated"),
        ("padded", "sdpa", "dynamic"),
        ("padded", ATTENTION, "preallocated"),
        ("padded", ATTENTION, "graphs"),
        ("padded", ATTENTION, "static_eager"),
        ("padded", ATTENTION, "static_compiled"),
    ]
    decoder = GreedyDecoder(model)

    def generate(batch, n: int, cache: str) -> None:
        model.generation_config.min_new_tokens = n
        if cache == "graphs":
            decoder.generate(batch, n, GreedyRules.from_config(model.generation_config, 0))
            torch.cuda.synchronize()
            return
        if cache.startswith("static"):
            kwargs = {"cache_implementation": "static", "disable_compile": cache == "static_eager"}
        else:
            kwargs = {"past_key_values": kv_cache(batch, cache)}
        model.generate(**batch, max_new_tokens=n, do_sample=False, pad_token_id=0, **kwargs)

    chosen_variants = cfg.gen_diagnose_variants.split(",") if cfg.gen_diagnose_variants else None
    for prompt_kind, attention, cache in variants:
        name = f"{prompt_kind}/{attention}/{cache}"
        if chosen_variants and name not in chosen_variants:
            continue
        batch = inputs[prompt_kind]
        model.set_attn_implementation(attention)
        try:
            with timed() as warm:
                generate(batch, cfg.new_tokens, cache)  # compiles, where it compiles
            with timed() as full:
                generate(batch, cfg.new_tokens, cache)
            with timed() as first:  # last: a static cache of another length would be rebuilt
                generate(batch, 1, cache)
            rows[name] = {
                "warmup_s": warm["s"],
                "total_s": full["s"],
                "prefill_s": first["s"],
                "decode_ms_per_step": 1000 * (full["s"] - first["s"]) / (cfg.new_tokens - 1),
                "reports_per_s": batch_size / full["s"],
            }
            if cache == "graphs":
                rows[name]["profile"] = profile_graph_decode(lambda n, b=batch: generate(b, n, "graphs"), cfg)
                print(rows[name]["profile"].pop("top_kernels"), flush=True)
                decoder.release()
            elif attention == ATTENTION and not cache.startswith("static"):
                rows[name]["profile"] = profile_decode(model, batch, kv_cache(batch, cache))
                print(rows[name]["profile"].pop("top_kernels"), flush=True)
        except Exception as e:  # an unsupported cache or compile failure: record it, try the next
            rows[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(f"generation {name}:", json.dumps(rows[name]), flush=True)
    return rows


def logit_margins_in_ulps(logits: torch.Tensor, reference: torch.Tensor, other: torch.Tensor) -> dict:
    """Where two greedy decodings of the same prompts part: for each sequence whose tokens differ, the
    margin by which the reference's token led the other's at the first difference, in the reference's
    own logits (the prefixes are equal there), in bf16 spacings (2^-7 of the reference logit's power of
    two). A margin of a few spacings is the other decoding's rounding, not another model."""
    firsts, margins = [], []
    for b in range(reference.shape[0]):
        differ = (reference[b] != other[b]).nonzero()
        if not len(differ):
            continue
        t = int(differ[0])
        row = logits[b, t].float()
        lead, theirs = row[reference[b, t]], row[other[b, t]]
        spacing = 2.0 ** (torch.floor(torch.log2(lead.abs().clamp(min=1e-30))) - 7)
        firsts.append(t)
        margins.append(float((lead - theirs) / spacing))
    return {
        "sequences": int(reference.shape[0]),
        "identical": int(reference.shape[0]) - len(firsts),
        "mean_first_difference_token": float(np.mean(firsts)) if firsts else None,
        "margin_spacings_median": float(np.median(margins)) if margins else None,
        "margin_spacings_max": float(max(margins)) if margins else None,
    }


@torch.inference_mode()
def decoder_agreement(model_dir: Path, entries, image_dir: Path, reports_csv: Path, cfg: BenchConfig) -> dict:
    """The greedy tokens of decoder 'graphs' (rrg.graph_decode) against generate()'s on one batch of
    --gen_diagnose_batch prompts, padded (real indications) and of one length (the default question),
    with the logit margin at each first difference (logit_margins_in_ulps)."""
    batch_size, n = cfg.gen_diagnose_batch, cfg.new_tokens
    model = load_base_model(str(model_dir), device_map={"": 0}).eval()
    processor = load_processor(str(model_dir))
    chosen = entries[:batch_size]
    views = [[Image.open(image_dir / e.images[0]).convert("RGB")] for e in chosen]
    prompts = {
        "equal": [e.prompt for e in chosen],
        "padded": [report_question(i) for i in real_indications(reports_csv, batch_size)],
    }
    model.generation_config.min_new_tokens = n
    rules = GreedyRules.from_config(model.generation_config, processor.tokenizer.pad_token_id)
    rows: dict = {"batch_size": batch_size, "new_tokens": n}
    for name, questions in prompts.items():
        inputs = encode_batch(processor, questions, views, tokens_per_image(model.config)).to("cuda")
        inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
        length = inputs["input_ids"].shape[1]
        cache = PreallocatedCache.for_generation(model, length, n)
        out = model.generate(
            **inputs, max_new_tokens=n, do_sample=False, pad_token_id=processor.tokenizer.pad_token_id,
            past_key_values=cache, return_dict_in_generate=True, output_logits=True,
        )  # fmt: skip
        reference, logits = out.sequences[:, length:], torch.stack(out.logits, 1)
        del out, cache
        decoder = GreedyDecoder(model)
        graphs = decoder.generate(inputs, n, rules)
        decoder.release()
        rows[name] = {
            "padding_share": float(1 - inputs["attention_mask"].float().mean()),
            **logit_margins_in_ulps(logits, reference, graphs),
        }
        del logits
        free_gpu()
        print(f"decoder agreement {name}:", json.dumps(rows[name]), flush=True)
    return rows


# --------------------------------------------------------------------------- report


def best(rows: list[dict], key: str) -> dict | None:
    rows = [r for r in rows if key in r]
    return max(rows, key=lambda r: r[key]) if rows else None


def curve_difference(reference: list[float], losses: list[float], steps: int) -> dict:
    """How far a loss curve is from a reference curve over their first `steps` optimizer steps (fewer if
    either is shorter): the max and mean over steps of |loss - reference| / reference."""
    relative = relative_differences(reference[:steps], losses[:steps])
    if not relative:
        raise ValueError("no optimizer steps to compare")
    return {"steps": len(relative), "max_rel_diff": max(relative), "mean_rel_diff": float(np.mean(relative))}


def compare_curves(rows: list[dict], steps: int) -> None:
    """Each row after the first gets `curve_vs_first`: its loss curve against the first row's (see
    curve_difference), or why they cannot be compared (an error, or other samples: another micro-batch)."""
    if not rows:
        return
    first = rows[0]
    for row in rows[1:]:
        if "losses" not in first or "losses" not in row:
            row["curve_vs_first"] = {
                "not_compared": "no loss curve (the configuration or the first one failed)"
            }
        elif row.get("config", {}).get("lora_modules") != first.get("config", {}).get("lora_modules"):
            row["curve_vs_first"] = {"not_compared": "another model: LoRA on other modules"}
        elif row.get("sample_order_sha256") != first.get("sample_order_sha256"):
            row["curve_vs_first"] = {
                "not_compared": f"other samples (micro-batch {row['micro_batch']} vs {first['micro_batch']})"
            }
        else:
            row["curve_vs_first"] = curve_difference(first["losses"], row["losses"], steps)


# The reference paper's experiment on IU X-Ray: 10 epochs over its training split, then its test split.
REFERENCE_EXPERIMENT = {"epochs": 10, "train_samples": 5029, "generations": 1251}


def projected_wall_time(train_row: dict, gen_row: dict, experiment: dict = REFERENCE_EXPERIMENT) -> dict:
    """Seconds the experiment would take at a training row's and a generation row's rates, their measured
    warm-ups included (the warm-ups' own samples and reports are part of the work). Rows of older results
    without a generation warm-up count none (`generation_warmup_measured`: False)."""
    samples = experiment["epochs"] * experiment["train_samples"]
    training_s = (
        train_row["warmup_s"]
        + max(samples - train_row.get("warmup_samples", 0), 0) / train_row["samples_per_s"]
    )
    gen_warmup_s = gen_row.get("warmup_s")
    reports = experiment["generations"] - (
        gen_row.get("warmup_reports", 0) if gen_warmup_s is not None else 0
    )
    generation_s = (gen_warmup_s or 0.0) + max(reports, 0) / gen_row["reports_per_s"]
    return {
        "training_s": training_s,
        "generation_s": generation_s,
        "total_s": training_s + generation_s,
        "training_warmup_s": train_row["warmup_s"],
        "generation_warmup_s": gen_warmup_s,
        "generation_warmup_measured": gen_warmup_s is not None,
    }


def experiment_projection(report: dict) -> dict | None:
    """The reference experiment's projected wall time at the fastest measured rate of train_lora.py's default
    recipe (`default_recipe`) and of the fastest LoRA configuration (`fastest`), with the fastest generation
    setting; None without a LoRA and a generation row."""
    lora = [r for r in report.get("lora", []) if "samples_per_s" in r and "config" in r]
    lora = [r for r in lora if not r["config"].get("lora_modules")]  # a measurement, not a recipe
    gen = best(report.get("generation", []), "reports_per_s")
    if not lora or gen is None:
        return None
    projection: dict = {
        "experiment": REFERENCE_EXPERIMENT,
        "generation": gen_label(gen).removeprefix("ours "),
    }
    defaults = [r for r in lora if TrainSpec(**r["config"]) == TrainSpec.default()]
    chosen = {"default_recipe": best(defaults, "samples_per_s"), "fastest": best(lora, "samples_per_s")}
    for key, row in chosen.items():
        if row is not None:
            projection[key] = {"training": row_label(row), "flags": train_flags(row, False)}
            projection[key] |= projected_wall_time(row, gen)
    return projection


def projection_lines(projection: dict | None) -> list[str]:
    """The projection in words (the printed summary and the Markdown)."""
    if projection is None:
        return ["projected reference experiment: needs a LoRA and a generation row"]
    e = projection["experiment"]
    lines = [
        f"projected reference experiment ({e['epochs']} epochs x {e['train_samples']:,} samples, then "
        f"{e['generations']:,} reports at {projection['generation']}; measured warm-ups included):"
    ]
    for key, name in (("default_recipe", "default recipe"), ("fastest", "fastest measured")):
        p = projection.get(key)
        if p is None:
            lines.append(f"  {name}: not measured")
            continue
        if key == "fastest" and p == projection.get("default_recipe"):
            lines.append(f"  {name}: the default recipe")
            continue
        gen_warmup = (
            f"{p['generation_warmup_s']:.0f} s" if p["generation_warmup_measured"] else "not measured"
        )
        lines.append(
            f"  {name} ({p['training']}): {p['total_s'] / 60:.1f} min = training {p['training_s'] / 60:.1f} "
            f"(warm-up {p['training_warmup_s']:.0f} s) + generation {p['generation_s'] / 60:.1f} "
            f"(warm-up {gen_warmup})"
        )
    return lines


def curve_lines(report: dict) -> list[str]:
    """Each training configuration's loss curve against the first of its phase, in words."""
    lines = []
    for key, what in (("lora", "LoRA"), ("qlora", "QLoRA")):
        rows = report.get(key, [])
        for r in rows[1:]:
            c = r.get("curve_vs_first")
            if c is None:
                continue
            name = f"{what} {row_label(r)} vs {row_label(rows[0])}"
            if "not_compared" in c:
                lines.append(f"  {name}: not compared, {c['not_compared']}")
            else:
                lines.append(
                    f"  {name}, first {c['steps']} steps: max {c['max_rel_diff']:.2%}, mean {c['mean_rel_diff']:.2%}"
                )
    return (
        ["loss curves against the first configuration of their phase (relative difference per step):"] + lines
        if lines
        else []
    )


def row_label(r: dict) -> str:
    if "config" in r:
        return TrainSpec(**r["config"]).label()
    return f"mb{r['micro_batch']}" + (" ckpt" if r["gradient_checkpointing"] else "")  # older results


def train_flags(r: dict, four_bit: bool) -> str:
    """The train_lora.py flags that run a measured configuration (its other settings are the defaults)."""
    if "config" not in r:
        return row_label(r)
    spec = TrainSpec(**r["config"])
    flags = [f"--batch_size {spec.micro_batch}"]
    flags += ["--load_in_4bit"] if four_bit else []
    flags += ["--gradient_checkpointing"] if spec.checkpointing else []
    flags += [] if spec.compile else ["--no_compile"]
    flags += ["--fp8"] if spec.fp8 else []
    default_budget = train_lora.TrainConfig.activation_memory_budget
    if spec.compile and not spec.checkpointing and spec.budget != default_budget:
        flags.append(f"--activation_memory_budget {spec.budget:g}")
    if spec.log_every != train_lora.TrainConfig.logging_steps:
        flags.append(f"--logging_steps {spec.log_every}")
    if spec.lora_modules:
        flags.append(f"--target_modules '{spec.target_modules()}'")
    flags += ["--train_projector"] if spec.train_projector else []
    flags += ["--stage align"] if spec.align_stage else []
    flags += [f"--projector_lr {spec.projector_lr:g}"] if spec.projector_lr else []
    flags += [f"--finding_weight {spec.finding_weight:g}"] if spec.finding_weight != 1 else []
    note = " (bf16 AdamW without fp32 master weights, as before: not a flag)" if spec.plain_adamw else ""
    return "`" + " ".join(flags) + "`" + note


def summary_table(report: dict) -> str:
    ref = report.get("reference") or {}
    lines = [f"{'':34} {'samples/s':>10} {'tok/s':>8} {'peak GiB':>9} {'MFU':>6} {'x ref':>6}"]

    def row(name: str, r: dict | None, mfu_key: str = "mfu") -> None:
        if not r or "samples_per_s" not in r:
            lines.append(f"{name:34} {'-':>10}")
            return
        ratio = r["samples_per_s"] / ref["samples_per_s"] if ref.get("samples_per_s") else float("nan")
        lines.append(
            f"{name:34} {r['samples_per_s']:10.2f} {r['real_tokens_per_s']:8.0f} {r['peak_gib']:9.1f} "
            f"{r.get(mfu_key, float('nan')):6.1%} {ratio:6.2f}"
        )

    row("reference recipe (fp16, pad 2048)", ref, "mfu_padded")
    for r in report.get("lora", []):
        label = f"ours LoRA {row_label(r)}"
        row(label, r) if "error" not in r else lines.append(f"{label:34} {r['error'][:60]}")
    for r in report.get("qlora", []):
        label = f"ours QLoRA {row_label(r)}"
        row(label, r) if "error" not in r else lines.append(f"{label:34} {r['error'][:60]}")
    lines.append("")
    lines.append(f"{'generation, 100-token reports':34} {'reports/s':>10} {'peak GiB':>9} {'x ref':>6}")
    ref_gen = (ref.get("generation") or {}).get("reports_per_s")
    if ref_gen:
        lines.append(f"{'reference (bs 1, T=0.2, fp16)':34} {ref_gen:10.2f}")
    for r in report.get("generation", []):
        if "error" in r:
            lines.append(f"{gen_label(r):34} {r['error'][:60]}")
            continue
        ratio = r["reports_per_s"] / ref_gen if ref_gen else float("nan")
        lines.append(f"{gen_label(r):34} {r['reports_per_s']:10.2f} {r['peak_gib']:9.1f} {ratio:6.1f}")
    for r in report.get("generation", []):
        if "agreement" in r:
            lines.append(f"agreement, {gen_label(r)}: {agreement_text(r['agreement'])}")
    lines += [""] + curve_lines(report)
    lines += [""] + projection_lines(experiment_projection(report))
    return "\n".join(lines)


def gen_label(row: dict) -> str:
    label = f"ours bs {row['batch_size']} {row.get('cache', '')}"
    if row.get("fp8_prompt"):  # run 13's, measured at d4949fd and removed since
        label += " fp8 prompt"
    if row.get("liger"):
        label += " liger"
    if row.get("decoder") == "graphs":  # rows of earlier runs were made with generate()
        label += " graphs"
    if "workers" in row:  # rows of earlier runs did not record them
        label += f" {row['workers']} workers"
    return label


def gen_flags(row: dict) -> str:
    """The eval flags of a measured generation configuration, as the Markdown table shows them."""
    flags = f"`--batch_size {row['batch_size']}" + (" --liger" if row.get("liger") else "")
    flags += f" --decoder {row.get('decoder', 'generate')}`"
    flags += "" if row["cache"] == "dynamic" else f", {row['cache']} KV cache"
    return flags + (", FP8 prompt pass (dropped)" if row.get("fp8_prompt") else "")


def agreement_text(a: dict) -> str:
    first = a["mean_first_difference_token"]
    where = f", the others first differ at token {first:.1f} on average" if first is not None else ""
    return f"{a['identical_share']:.1%} of {a['reports']} reports identical to {a['with']}{where}"


def run_tag(row: dict) -> str:
    """' (run 10)' for a row of a results file that gathers several invocations (its note says which)."""
    return f" ({row['run']})" if "run" in row else ""


def markdown_table(report: dict) -> str:
    """The README's performance table, from a results JSON (a run without the reference phase: no
    reference row, no ratios)."""
    ref = report.get("reference")
    rows = [
        "| training (train_lora.py flags) | samples/s | real tokens/s | peak GiB | MFU | vs reference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    if ref:
        rows.append(
            f"| reference recipe (fp16, eager, bs 1 padded to 2,048) | {ref['samples_per_s']:.2f} | "
            f"{ref['real_tokens_per_s']:.0f} | {ref['peak_gib']:.1f} | {ref['mfu_padded']:.1%} | 1.00x |"
        )
    for key in ("lora", "qlora"):
        for r in report.get(key, []):
            if "error" in r:
                continue
            name = f"ours {train_flags(r, key == 'qlora')}{run_tag(r)}"
            ratio = f"{r['samples_per_s'] / ref['samples_per_s']:.2f}x" if ref else ""
            rows.append(
                f"| {name} | {r['samples_per_s']:.2f} | {r['real_tokens_per_s']:.0f} | {r['peak_gib']:.1f} | "
                f"{r['mfu']:.1%} | {ratio} |"
            )
    gen_ref = ref["generation"]["reports_per_s"] if ref else None
    rows += [
        "",
        "| generation, 100-token reports | reports/s | peak GiB | vs reference |",
        "|---|---:|---:|---:|",
    ]
    if gen_ref:
        rows.append(f"| reference (bs 1, sampling T=0.2, fp16, eager) | {gen_ref:.2f} | | 1x |")
    for r in report.get("generation", []):
        if "error" not in r:
            ratio = f"{r['reports_per_s'] / gen_ref:.0f}x" if gen_ref else ""
            rows.append(
                f"| ours, {gen_flags(r)}{run_tag(r)} | {r['reports_per_s']:.2f} | {r['peak_gib']:.1f} | {ratio} |"
            )
    compared = [r for r in report.get("generation", []) if "agreement" in r]
    if compared:
        rows += [
            "",
            "| greedy texts against the first configuration of the batch size | reports | identical "
            "| mean first difference (token) |",
            "|---|---:|---:|---:|",
        ]
        for r in compared:
            a = r["agreement"]
            first = (
                "" if a["mean_first_difference_token"] is None else f"{a['mean_first_difference_token']:.1f}"
            )
            rows.append(
                f"| {gen_flags(r)}{run_tag(r)} vs {gen_flags(report['generation'][a['with_row']])}"
                f"{run_tag(report['generation'][a['with_row']])} | {a['reports']} | "
                f"{a['identical_share']:.1%} | {first} |"
            )
    curves = [
        r
        for key in ("lora", "qlora")
        for r in report.get(key, [])[1:]
        if "max_rel_diff" in r.get("curve_vs_first", {})
    ]
    if curves:
        rows += [
            "",
            "| loss curve against the first training row of its phase and run (train_lora.py flags) | steps "
            "| max rel. difference | mean rel. difference |",
            "|---|---:|---:|---:|",
        ]
        for key in ("lora", "qlora"):
            for r in report.get(key, [])[1:]:
                c = r.get("curve_vs_first", {})
                if "max_rel_diff" in c:
                    rows.append(
                        f"| ours {train_flags(r, key == 'qlora')}{run_tag(r)} | {c['steps']} | {c['max_rel_diff']:.2%} | "
                        f"{c['mean_rel_diff']:.2%} |"
                    )
    projection = experiment_projection(report)
    if projection is not None:
        rows += [""] + [
            line.strip() if i == 0 else f"- {line.strip()}"
            for i, line in enumerate(projection_lines(projection))
        ]
    return "\n".join(rows)


def training_specs(cfg: BenchConfig, phases: set[str]) -> dict[str, list[TrainSpec]]:
    """The training configurations of the chosen phases ("lora", "qlora"), checked: exits with one line on
    an unknown option, fp8 without compile or with 4 bits, or fp8 where it cannot run."""
    specs = {}
    try:
        for phase, text in (("lora", cfg.train_configs), ("qlora", cfg.qlora_configs)):
            if phase in phases:
                specs[phase] = [TrainSpec.parse(t) for t in text.split(",")]
    except ValueError as e:
        sys.exit(f"error: {e}")
    if any(s.fp8 for s in specs.get("qlora", [])):
        sys.exit("error: --qlora_configs: fp8 computes with bf16 base weights, not 4-bit ones")
    if any(s.fp8 for rows in specs.values() for s in rows) and (
        problem := float8_problem("cuda", flag="--train_configs fp8")
    ):
        sys.exit(f"error: {problem}")
    if cfg.curve_steps < 1:
        sys.exit(f"error: --curve_steps {cfg.curve_steps}: at least 1")
    return specs


def check_generation_specs(cfg: BenchConfig, phases: set[str]) -> None:
    """Exits with one line on a --gen_configs entry that does not parse (before anything is built)."""
    if "generation" not in phases:
        return
    try:
        specs = [GenSpec.parse(text, cfg.gen_workers) for text in cfg.gen_configs.split(",")]
    except ValueError as e:
        sys.exit(f"error: --gen_configs: {e}")
    if any(s.liger for s in specs) and (problem := liger_problem("cuda", flag="--gen_configs liger")):
        sys.exit(f"error: {problem}")


def main() -> None:
    cfg = parse_flags(BenchConfig, description=__doc__)
    if cfg.markdown:
        print(markdown_table(json.loads(Path(cfg.markdown).read_text())))
        return
    if not torch.cuda.is_available():
        sys.exit("error: the benchmark needs a CUDA GPU")
    if cfg.quick:
        cfg.train_configs, cfg.qlora_configs, cfg.train_samples = "8", "8+ckpt", 32
        cfg.reference_samples, cfg.gen_configs, cfg.gen_reports, cfg.reference_gen_reports = 4, "32", 64, 1
    phases = set(cfg.phases.split(","))
    train_specs = training_specs(cfg, phases)  # before anything is built: a bad one stops here
    check_generation_specs(cfg, phases)
    shared = Path(cfg.shared_data)
    tokenizer_dir = shared / "llava-med-v1.5-mistral-7b"
    reports_csv = shared / "iu_xray" / "indiana_reports.csv"
    for path in (tokenizer_dir / "tokenizer.model", reports_csv):
        if not path.exists():
            sys.exit(f"error: {path} is missing (set --shared_data or RRG_SHARED_DATA)")
    gpu = torch.cuda.get_device_name()
    out = Path(
        cfg.out
        or REPO / "results" / f"benchmark-{gpu.split()[1].lower() if len(gpu.split()) > 1 else 'gpu'}.json"
    )
    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="rrg-bench-"))
    model_dir, image_dir = workdir / "llava-med-random", workdir / "images"

    import peft
    import transformers

    report: dict = {
        "gpu": gpu,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "python": platform.python_version(),
        },
        "config": asdict(cfg),
    }
    print(json.dumps(report["versions"]), gpu, flush=True)

    with timed() as t:
        build_random_checkpoint(model_dir, tokenizer_dir)
    print(f"random checkpoint written in {t['s']:.0f} s", flush=True)
    processor = load_processor(str(model_dir))
    tokenizer = processor.tokenizer
    per_image = 576
    # Training draws from a pool whose size does not depend on --gen_reports: length-grouped batches
    # over another pool are other batches, of other lengths (with cuDNN attention on, which built a graph
    # per new length, the default measured 19.3 samples/s on a 512-sample pool and 17.0/17.3 on a 1,280 one;
    # with it off, 22.1 on 1,024 and 21.8 on 1,280).
    n_train = max(cfg.train_samples * 4, 512)
    entries = make_entries(
        real_reports(reports_csv, max(n_train, cfg.gen_reports)), synthetic_images(image_dir)
    )
    samples = encode_dataset(entries[:n_train], tokenizer, image_dir, per_image)
    report["sample_tokens"] = {
        "mean": float(np.mean([len(s) for s in samples])),
        "mean_label_tokens": float(np.mean([sum(x != -100 for x in s.labels) for s in samples])),
    }
    print(f"samples: {report['sample_tokens']}", flush=True)
    dataset = ReportDataset(samples, processor.image_processor)
    collator = Collator(tokenizer.pad_token_id, image_token_id(tokenizer), per_image, pad_to_multiple_of=8)

    def keep(name: str, value, echo: bool = True) -> None:  # written at once: a later crash loses nothing
        report[name] = value
        atomic_write_json(out, report)
        if echo:
            print(f"{name}:", json.dumps(value), flush=True)

    if "reference" in phases:
        keep("reference", reference_training(model_dir, samples, cfg, tokenizer.pad_token_id))
        free_gpu()
    weighted = {}  # the same samples, finding-weighted (the same token lengths, so the same batches)
    for spec in (s for specs in train_specs.values() for s in specs if s.finding_weight != 1):
        if spec.finding_weight not in weighted:
            weighted[spec.finding_weight] = ReportDataset(
                encode_dataset(
                    entries[:n_train], tokenizer, image_dir, per_image, finding_weight=spec.finding_weight
                ),
                processor.image_processor,
            )
    for phase, specs in train_specs.items():
        rows = []
        for spec in specs:
            data = weighted.get(spec.finding_weight, dataset)
            rows.append(our_training(model_dir, data, collator, cfg, spec, load_in_4bit=phase == "qlora"))
            free_gpu()
            compare_curves(rows, cfg.curve_steps)
            keep(phase, rows)
    if "generation" in phases:
        keep("eval_loader", eval_loader_timings(entries, image_dir, processor.image_processor, cfg))
        keep(
            "generation",
            our_generation(
                model_dir, entries, image_dir, cfg, lambda rows: keep("generation", rows, echo=False)
            ),
        )
        free_gpu()
    if "gen_diagnose" in phases:
        keep("gen_diagnose", diagnose_generation(model_dir, entries, image_dir, reports_csv, cfg))
        free_gpu()
    if "decoder_agreement" in phases:
        keep("decoder_agreement", decoder_agreement(model_dir, entries, image_dir, reports_csv, cfg))
        free_gpu()
    if "diagnose" in phases:
        keep("diagnose", diagnose(model_dir, dataset, collator, cfg))
    report["best"] = {
        "lora": best(report.get("lora", []), "samples_per_s"),
        "generation": best(report.get("generation", []), "reports_per_s"),
    }
    report["projection"] = experiment_projection(report)
    atomic_write_json(out, report)
    print()
    print(summary_table(report))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
