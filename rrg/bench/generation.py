"""Our generation measured: specs, agreement with the default settings."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from transformers import CompileConfig

import rrg.generate.batch
import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
from rrg.bench.measure import free_gpu, peak_gib, timed
from rrg.bench.settings import BenchConfig
from rrg.bench.specs import GenSpec, gen_label
from rrg.bench.training import batch_timeline, timeline_summary
from rrg.data.entries import resolve_image
from rrg.generate.batch import GenerationSettings, generate_predictions
from rrg.io import read_jsonl
from rrg.model.kernels.fused import liger_problem
from rrg.model.load import load_base_model, load_processor


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
    """The eval scripts' path: rrg.generate.batch.generate_predictions (DataLoader workers preprocess the next
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
