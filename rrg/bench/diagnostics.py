"""Diagnostics: where a training step's and a decode step's time goes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from transformers import DynamicCache

import rrg.generate.batch
import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
import rrg.train.settings
import rrg.train.setup
from rrg.bench.measure import free_gpu, gpu_time_split, timed
from rrg.bench.settings import BenchConfig
from rrg.data.entries import resolve_image
from rrg.generate.batch import encode_batch
from rrg.generate.graphs import GreedyDecoder, GreedyRules
from rrg.model.kernels.attention import ATTENTION
from rrg.model.kernels.kv_cache import PreallocatedCache
from rrg.model.load import load_base_model, load_processor
from rrg.model.processor import tokens_per_image
from rrg.model.prompts import report_question
from rrg.train import step as T
from rrg.train.collate import length_grouped_batches


def diagnose(model_dir: Path, dataset, collator, cfg: BenchConfig) -> dict:
    """Time the data loader alone, then one micro-batch step alone on a batch already on the GPU."""
    from accelerate import Accelerator

    micro_batch = 8
    recipe = rrg.train.settings.TrainConfig(
        model_path=str(model_dir), batch_size=micro_batch, num_workers=cfg.num_workers
    )
    batches = length_grouped_batches(dataset.lengths(), micro_batch, 1, 0, seed=0, epoch=0)
    loader = iter(rrg.train.setup.make_loader(dataset, batches, collator, recipe, pin_memory=True))
    next(loader)
    start, n = time.perf_counter(), 0
    for _ in range(min(24, len(batches) - 2)):
        n += len(next(loader)["input_ids"])
    result = {"loader_samples_per_s": n / (time.perf_counter() - start), "num_workers": cfg.num_workers}
    batch = T.move_to(next(loader), torch.device("cuda"), torch.bfloat16)
    tokens = int(batch["attention_mask"].sum())
    for checkpointing in (False, True):
        recipe.gradient_checkpointing = checkpointing
        model = rrg.train.setup.build_model(recipe, Accelerator())
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
    attention implementation (transformers' "sdpa", ours: rrg.model.kernels.attention) and KV cache (transformers'
    dynamic one, ours: rrg.model.kernels.kv_cache, static run eagerly, static under generate's compiled decode
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
    """The greedy tokens of decoder 'graphs' (rrg.generate.graphs) against generate()'s on one batch of
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
