"""The benchmark's command: runs the chosen measurements and writes the JSON and Markdown."""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

import rrg.generate.batch
import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
from rrg.bench.diagnostics import decoder_agreement, diagnose, diagnose_generation
from rrg.bench.generation import check_generation_specs, our_generation
from rrg.bench.inputs import build_random_checkpoint, make_entries, real_reports, synthetic_images
from rrg.bench.markdown import markdown_table, summary_table
from rrg.bench.measure import free_gpu, timed
from rrg.bench.reference import best, compare_curves, experiment_projection, reference_training
from rrg.bench.settings import REPO, BenchConfig
from rrg.bench.training import eval_loader_timings, our_training, training_specs
from rrg.cli import parse_flags
from rrg.io import atomic_write_json
from rrg.model.load import load_processor
from rrg.model.processor import image_token_id
from rrg.train.collate import Collator, ReportDataset, encode_dataset


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
