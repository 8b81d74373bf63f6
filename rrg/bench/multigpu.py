"""rrg.bench.multigpu"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import rrg.quiet  # noqa: F401 - first: known third-party warnings are filtered before they print
from rrg.cli import flag, parse_flags, shared_data_dir
from rrg.io import atomic_write_json

REPO = Path(__file__).resolve().parents[2]


ENGINES = ("ddp", "fsdp", "zero2")
CONFIG_FILES = {
    "ddp": "scripts/accelerate/ddp.yaml",
    "fsdp": "scripts/accelerate/fsdp.yaml",
    "zero2": "scripts/accelerate/deepspeed_zero2.yaml",
}


@dataclass
class MultiBenchConfig:
    out: str = flag("", "results JSON; empty: results/benchmark-<gpu>x<count>.json")
    workdir: str = flag("", "random checkpoint, split files, images, runs; empty: a temporary folder")
    shared_data: str = flag(
        str(shared_data_dir()),
        "folder with llava-med-v1.5-mistral-7b/tokenizer.model and iu_xray/indiana_reports.csv",
    )
    phases: str = flag("train,resume,qlora,generation", "comma-separated phases to run")
    gpus: str = flag("1,2,4", "GPU counts for train and generation (more than the machine has: skipped)")
    engines: str = flag("ddp,fsdp,zero2", "engines for several GPUs (one GPU is always the plain script)")
    micro_batch: int = flag(8, "train_lora.py --batch_size (per GPU)", ge=1)
    effective_batch: int = flag(64, "micro-batch x accumulation x GPUs, the same for every configuration", ge=1)
    steps: int = flag(10, "optimizer steps per training launch", ge=1)
    warmup_steps: int = flag(2, "first steps left out of samples/s (compilation, allocator warm-up)", ge=0)
    pool: int = flag(1024, "training samples (more than --steps effective batches: no epoch end inside)", ge=1)
    gen_reports_per_gpu: int = flag(768, "reports per GPU for generation (3 batches of 256 on each)", ge=1)
    gen_batch: int = flag(256, "eval --batch_size (per GPU)", ge=1)
    timeout: int = flag(900, "seconds a launch may take before it is killed", gt=0)
    resume_flags: str = flag(
        "",
        "extra train_lora.py flags for the resume phase's three launches, space-separated, e.g. --no_compile: "
        "eager launches start in seconds (compiled ones spend ~1.5 min each before their first step)",
    )
    markdown: str = flag("", "print the Markdown tables of an existing results JSON and exit (no GPU)")


def write_inputs(cfg: MultiBenchConfig, workdir: Path) -> dict[str, Path]:
    """The random 7B checkpoint, synthetic images and split files of real reports, once per workdir."""

    import rrg.bench.inputs  # scripts/benchmark.py: the same checkpoint, reports and images

    shared = Path(cfg.shared_data)
    paths = {
        "model": workdir / "llava-med-random",
        "images": workdir / "images",
        "train": workdir / "train.json",
        "val": workdir / "val.json",
        "test": workdir / "test.json",
    }
    if not (paths["model"] / "config.json").exists():
        rrg.bench.inputs.build_random_checkpoint(paths["model"], shared / "llava-med-v1.5-mistral-7b")
    names = rrg.bench.inputs.synthetic_images(paths["images"])
    gen_reports = cfg.gen_reports_per_gpu * max(map(int, cfg.gpus.split(",")))
    n = max(cfg.pool, gen_reports) + 64
    entries = rrg.bench.inputs.make_entries(
        rrg.bench.inputs.real_reports(shared / "iu_xray" / "indiana_reports.csv", n), names
    )
    rows = [
        {"id": e.id, "study_id": e.study_id, "images": e.images, "prompt": e.prompt, "response": e.response}
        for e in entries
    ]
    atomic_write_json(paths["train"], rows[: cfg.pool])
    atomic_write_json(paths["val"], rows[-64:])
    atomic_write_json(paths["test"], rows[:gen_reports])
    return paths


class Poller:
    """Calls `sample()` every period_s in a thread while the block runs (a launch's side measurements)."""

    def __init__(self, period_s: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period_s,), daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self, period_s: float) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(period_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


class GpuMemoryPoller(Poller):
    """Peak memory.used per GPU (MiB, nvidia-smi): every process's share, CUDA context included."""

    def __init__(self, period_s: float = 0.5) -> None:
        super().__init__(period_s)
        self.peak: dict[int, int] = {}

    def sample(self) -> None:
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=10,
            ).stdout  # fmt: skip
            for line in out.strip().splitlines():
                index, used = (int(x) for x in line.split(","))
                self.peak[index] = max(self.peak.get(index, 0), used)
        except (OSError, subprocess.SubprocessError, ValueError):
            pass  # a missed sample; the next one comes in period_s


class LineCounter(Poller):
    """(time, {file: lines}) of a folder's predictions files: the predictions file of a lone process,
    or each process's part file (predictions.jsonl.rank<r>) under accelerate launch."""

    def __init__(self, folder: Path, period_s: float = 0.1) -> None:
        super().__init__(period_s)
        self.folder, self.samples = folder, []

    def sample(self) -> None:
        counts = {}
        for path in self.folder.glob("predictions*.jsonl*"):
            with contextlib.suppress(OSError):  # a part file merged away after the listing
                counts[path.name] = path.read_bytes().count(b"\n")
        self.samples.append((time.perf_counter(), counts))


def steady_rate(samples: list[tuple[float, dict[str, int]]]) -> tuple[float, int] | None:
    """Reports/s of all processes together, each timed from its first batch written to its last line
    (its first batch, with the model's warm-up and the loader's start, left out), and the lines timed.

    Each process writes its own file, so each one's steady rate is measured on its own and they add up;
    timing the total from the first file's first batch would count the other processes' first batches.
    """
    files = {name for _, counts in samples for name in counts}
    parts = [f for f in files if ".rank" in f] or [f for f in files if f.endswith(".jsonl")]
    total_rate, timed = 0.0, 0
    for name in parts:
        series = [(t, counts[name]) for t, counts in samples if name in counts]
        final = max(c for _, c in series)
        first = next((t, c) for t, c in series if c > 0)
        last = next((t, c) for t, c in series if c == final)
        if last[1] == first[1]:
            return None  # one batch only: nothing after the first to time
        total_rate += (last[1] - first[1]) / (last[0] - first[0])
        timed += last[1] - first[1]
    return total_rate, timed


_launches = iter(range(29500, 29600))  # a fresh rendezvous port per launch


def command(script: str, args: list[str], n_gpus: int, engine: str) -> list[str]:
    """The command a user would type: plain python on one GPU, accelerate launch on several."""
    if n_gpus == 1:
        return [sys.executable, script, *args]
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", CONFIG_FILES[engine],
        "--num_processes", str(n_gpus), "--gpu_ids", ",".join(map(str, range(n_gpus))),
        "--main_process_port", str(next(_launches)), script, *args,
    ]  # fmt: skip


def run_launch(cmd: list[str], log: Path, watch: Path | None, timeout: int) -> dict:
    """Run one launch to its end; the wall time until `watch` (a train log) first holds a train line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    first_step_s = None
    with open(log, "w") as out, GpuMemoryPoller() as memory:
        process = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        while process.poll() is None:
            if time.perf_counter() - start > timeout:
                process.kill()
                break
            if (
                first_step_s is None
                and watch is not None
                and watch.exists()
                and '"train"' in watch.read_text()
            ):
                first_step_s = time.perf_counter() - start
            time.sleep(0.2)
        process.wait()
    result = {
        "returncode": process.returncode,
        "wall_s": time.perf_counter() - start,
        "first_step_s": first_step_s,
        "peak_gib_per_gpu": {str(k): round(v / 1024, 2) for k, v in sorted(memory.peak.items())},
        "log": str(log),
    }
    if process.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-12:]
        result["error"] = "\n".join(tail)
        print(f"  failed ({process.returncode}):\n    " + "\n    ".join(tail), flush=True)
    return result


def train_args(
    paths: dict[str, Path], out: Path, cfg: MultiBenchConfig, n_gpus: int, *extra: str
) -> list[str]:
    accumulation = cfg.effective_batch // (cfg.micro_batch * n_gpus)
    return [
        "--model_path", str(paths["model"]), "--json_file", str(paths["train"]),
        "--image_dir", str(paths["images"]), "--output_dir", str(out),
        "--batch_size", str(cfg.micro_batch), "--gradient_accumulation_steps", str(accumulation),
        "--max_steps", str(cfg.steps), "--logging_steps", "1", "--seed", "0", *extra,
    ]  # fmt: skip


def train_figures(out: Path, warmup: int, effective_batch: int) -> dict:
    """samples/s after the warm-up steps and every step's loss, from train_log.jsonl."""
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x.strip()]
    train = [r for r in lines if r["type"] == "train"]
    timed = [r for r in train if r["step"] > warmup]
    start = next((r["elapsed_s"] for r in train if r["step"] == warmup), 0.0)
    return {
        # Every step is one effective batch (the pool holds more than --steps of them: no short group).
        "samples_per_s": effective_batch * len(timed) / (timed[-1]["elapsed_s"] - start),
        "first_step_elapsed_s": train[0]["elapsed_s"],  # after model loading: compilation and step 1
        "losses": [r["loss"] for r in train],
        "val_losses": [r["val_loss"] for r in lines if r["type"] == "eval"],
        "steps": len(train),
    }


def engine_available(engine: str) -> str | None:
    """None, or why the engine cannot run here."""
    if engine == "zero2":
        try:
            import deepspeed  # noqa: F401
        except ImportError as e:
            return f"deepspeed is not installed ({e}); pip install -r requirements-multigpu.txt"
    return None


def train_phase(
    cfg: MultiBenchConfig, paths: dict[str, Path], workdir: Path, gpu_counts: list[int], keep
) -> list[dict]:
    """One launch per (engine, GPU count); keep(rows) after each, so a later failure loses nothing."""
    rows = []
    plan = [(1, "ddp")] if 1 in gpu_counts else []
    plan += [(n, e) for e in cfg.engines.split(",") for n in gpu_counts if n > 1]
    for n, engine in plan:
        row = {"engine": "single" if n == 1 else engine, "gpus": n, "micro_batch": cfg.micro_batch}
        row["gradient_accumulation_steps"] = cfg.effective_batch // (cfg.micro_batch * n)
        reason = engine_available(engine) if n > 1 else None
        if reason:
            rows.append(row | {"error": reason})
            continue
        out = workdir / "runs" / f"train-{row['engine']}-{n}"
        cmd = command("train_lora.py", train_args(paths, out, cfg, n, "--overwrite"), n, engine)
        row |= run_launch(
            cmd, workdir / "logs" / f"train-{row['engine']}-{n}.log", out / "train_log.jsonl", cfg.timeout
        )
        if row["returncode"] == 0:
            row |= train_figures(out, cfg.warmup_steps, cfg.effective_batch)
        rows.append(row)
        keep(rows)
        print(json.dumps({k: v for k, v in row.items() if k != "log"}), flush=True)
    baseline = next((r for r in rows if r["gpus"] == 1 and "samples_per_s" in r), None)
    for r in rows:
        if baseline and "samples_per_s" in r:
            r["scaling_efficiency"] = r["samples_per_s"] / (r["gpus"] * baseline["samples_per_s"])
    return rows


def adapter_difference(a: Path, b: Path) -> dict:
    from safetensors.torch import load_file

    wa, wb = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    if wa.keys() != wb.keys():
        return {"same_keys": False}
    diff = scale = squared_diff = squared_norm = 0.0
    for k in wa:
        a, delta = wa[k].float(), wa[k].float() - wb[k].float()
        diff, scale = max(diff, float(delta.abs().max())), max(scale, float(a.abs().max()))
        # for ||a - b|| / ||a|| over all the adapter's weights together
        squared_diff, squared_norm = (
            squared_diff + float(delta.square().sum()),
            squared_norm + float(a.square().sum()),
        )
    return {
        "same_keys": True,
        "max_abs_diff": diff,
        "max_abs_weight": scale,
        "relative_l2": (squared_diff / squared_norm) ** 0.5 if squared_norm else float("nan"),
        "tensors": len(wa),
    }


def resume_phase(cfg: MultiBenchConfig, paths: dict[str, Path], workdir: Path, n: int) -> dict:
    """Stopped halfway and resumed vs uninterrupted, DDP on n GPUs, validation every half; then the same
    uninterrupted run again, whose adapter's difference from the first is the floor under the resumed
    one's (two launches of one configuration are not bit-identical on GPUs)."""
    half = cfg.steps // 2
    val = ["--val_json", str(paths["val"]), "--eval_steps", str(half), "--save_steps", str(half)]
    result: dict = {"gpus": n, "steps": cfg.steps, "stopped_after": half, "flags": cfg.resume_flags}
    runs_dir = workdir / "runs"
    full, parts, again = (runs_dir / f"resume-{name}-{n}" for name in ("full", "parts", "again"))

    def launch_into(name: str, out: Path, extra: list[str]) -> bool:
        """One train_lora.py launch of the check; its return code, time and any error under result[name]."""
        args = train_args(paths, out, cfg, n, *val, *extra, *cfg.resume_flags.split())
        launch = run_launch(
            command("train_lora.py", args, n, "ddp"),
            workdir / "logs" / f"resume-{name}-{n}.log",
            None,
            cfg.timeout,
        )
        result[name] = {k: launch[k] for k in ("returncode", "wall_s") if k in launch} | (
            {"error": launch["error"]} if "error" in launch else {}
        )
        return launch["returncode"] == 0

    runs = {
        "uninterrupted": (full, ["--overwrite"]),
        "first_half": (parts, ["--overwrite", "--stop_after_steps", str(half)]),
        "resumed": (parts, ["--resume"]),
    }
    if not all(launch_into(name, out, extra) for name, (out, extra) in runs.items()):
        return result
    for name, out in (("uninterrupted", full), ("resumed", parts)):
        figures = train_figures(out, 0, cfg.effective_batch)
        result[name] |= {"losses": figures["losses"], "val_losses": figures["val_losses"]}
        files = sorted(p.name for p in out.iterdir())
        result[name]["output_files"] = files
    result["final_adapter"] = adapter_difference(full / "final", parts / "final")
    result["best_adapter"] = adapter_difference(full / "best", parts / "best")
    # Kept even when the repeat fails: the comparison above does not depend on it.
    if launch_into("uninterrupted_again", again, ["--overwrite"]):
        result["noise_floor_final_adapter"] = adapter_difference(full / "final", again / "final")
    return result


def qlora_phase(cfg: MultiBenchConfig, paths: dict[str, Path], workdir: Path) -> dict:
    out = workdir / "runs" / "qlora-ddp-2"
    extra = ["--overwrite", "--load_in_4bit", "--gradient_checkpointing"]
    cmd = command("train_lora.py", train_args(paths, out, cfg, 2, *extra), 2, "ddp")
    row = {"engine": "ddp", "gpus": 2, "load_in_4bit": True, "gradient_checkpointing": True}
    row |= {
        "micro_batch": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.effective_batch // (cfg.micro_batch * 2),
    }
    row |= run_launch(cmd, workdir / "logs" / "qlora-ddp-2.log", out / "train_log.jsonl", cfg.timeout)
    if row["returncode"] == 0:
        row |= train_figures(out, cfg.warmup_steps, cfg.effective_batch)
    return row


def generation_phase(
    cfg: MultiBenchConfig, paths: dict[str, Path], workdir: Path, gpu_counts: list[int]
) -> list[dict]:
    rows = []
    for n in gpu_counts:
        out, reports = workdir / "runs" / f"generate-{n}", cfg.gen_reports_per_gpu * n
        shutil.rmtree(out, ignore_errors=True)  # a fresh run: no resume of an earlier one
        args = [
            "--model_path", str(paths["model"]), "--json_file", str(paths["test"]),
            "--image_dir", str(paths["images"]), "--out", str(out / "predictions.jsonl"),
            "--max_new_tokens", "100", "--batch_size", str(cfg.gen_batch), "--no_score",
            "--limit", str(reports),
        ]  # fmt: skip
        cmd = command("eval/llava.py", args, n, "ddp")
        row = {"gpus": n, "batch_size": cfg.gen_batch, "reports": reports}
        # Growth of the predictions files, sampled: from the first batch written to the last line.
        with LineCounter(out) as lines_written:
            row |= run_launch(cmd, workdir / "logs" / f"generate-{n}.log", None, cfg.timeout)
        samples = lines_written.samples
        if row["returncode"] == 0:
            lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
            if rate := steady_rate(samples):
                row["reports_per_s"], row["reports_timed"] = rate
            row["complete_and_unique"] = sorted(r["id"] for r in lines) == sorted(
                str(i) for i in range(reports)
            )
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "log"}), flush=True)
    return rows


def relative_l2(difference: dict) -> str:
    return (
        f"{difference['relative_l2']:.2e}" if difference.get("same_keys") else "other tensors (keys differ)"
    )


def resume_summary(resume: dict) -> str:
    """The resumed adapter's distance from the uninterrupted one's, beside the floor of a repeated launch."""
    resumed, floor = resume["final_adapter"], resume.get("noise_floor_final_adapter")
    if not isinstance(resumed, dict):  # an earlier run's sentence saying why it was not compared
        return f"final adapter {resumed}."
    return (
        f"final adapter {relative_l2(resumed)} from the uninterrupted run's (relative L2), "
        f"a second uninterrupted launch {relative_l2(floor) if floor else 'not run'}."
    )


def markdown_tables(report: dict) -> str:
    lines = [
        "| engine | GPUs | micro-batch x accumulation | samples/s | scaling efficiency | peak GiB per GPU | first step (s) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    qlora = report.get("qlora")
    qlora = [qlora | {"engine": "ddp, QLoRA"}] if qlora else []  # --load_in_4bit --gradient_checkpointing
    for r in report.get("train", []) + qlora:
        if "samples_per_s" not in r:
            lines.append(
                f"| {r['engine']} | {r['gpus']} | | not run: {r.get('error', '?').splitlines()[-1][:80]} | | | |"
            )
            continue
        peak = max(r["peak_gib_per_gpu"].values()) if r.get("peak_gib_per_gpu") else float("nan")
        eff = f"{100 * r['scaling_efficiency']:.0f}%" if "scaling_efficiency" in r else ""
        lines.append(
            f"| {r['engine']} | {r['gpus']} | {r.get('micro_batch', '?')} x {r.get('gradient_accumulation_steps', '?')} | "
            f"{r['samples_per_s']:.2f} | {eff} | {peak:.1f} | {r['first_step_s'] or float('nan'):.0f} |"
        )
    gen = report.get("generation", [])
    if gen:
        steady = {
            g["gpus"]: g for g in report.get("generation_per_process_rate", gen) if "reports_per_s" in g
        }
        whole = {g["gpus"]: g["reports"] / g["wall_s"] for g in gen if g.get("returncode") == 0}
        lines += [
            "",
            "| generation (100-token reports, batch 256 per GPU) | reports/s after the first batch | "
            "scaling efficiency | reports/s of the whole command (loading included) | scaling efficiency |",
            "|---|---:|---:|---:|---:|",
        ]
        for n in sorted(set(steady) | set(whole)):
            cells = []
            for table in (steady, whole):
                value = table.get(n)
                value = value["reports_per_s"] if isinstance(value, dict) else value
                base = table.get(1)
                base = base["reports_per_s"] if isinstance(base, dict) else base
                cells += (
                    [f"{value:.1f}", f"{100 * value / (n * base):.0f}%" if base else ""]
                    if value
                    else ["not run", ""]
                )
            lines.append(f"| {n} GPU{'s' if n > 1 else ''} | " + " | ".join(cells) + " |")
    resume = report.get("resume", {})
    if "final_adapter" in resume:
        lines += [
            "",
            f"Resume on {resume['gpus']} GPUs (stopped after {resume['stopped_after']} of {resume['steps']} steps): "
            + resume_summary(resume),
        ]
    return "\n".join(lines)


def main() -> None:
    cfg = parse_flags(MultiBenchConfig, description=__doc__)
    if cfg.markdown:
        print(markdown_tables(json.loads(Path(cfg.markdown).read_text())))
        return
    import torch

    if not torch.cuda.is_available():
        sys.exit("error: this benchmark needs CUDA GPUs")
    available = torch.cuda.device_count()
    gpu_counts = [n for n in map(int, cfg.gpus.split(",")) if n <= available]
    gpu = torch.cuda.get_device_name()
    name = re.sub(r"[^a-z0-9]+", "", gpu.split()[1].lower()) if len(gpu.split()) > 1 else "gpu"
    out = Path(cfg.out or REPO / "results" / f"benchmark-{name}x{available}.json")
    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="rrg-multibench-"))
    import accelerate
    import peft
    import transformers

    report: dict = {
        "gpu": gpu,
        "gpus_on_machine": available,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "accelerate": accelerate.__version__,
        },
        "config": asdict(cfg),
    }
    try:
        import deepspeed

        report["versions"]["deepspeed"] = deepspeed.__version__
    except ImportError:
        pass
    start = time.perf_counter()
    paths = write_inputs(cfg, workdir)
    print(f"inputs ready in {time.perf_counter() - start:.0f} s under {workdir}", flush=True)

    def keep(key: str, value) -> None:  # written at once: a later failure loses nothing
        report[key] = value
        atomic_write_json(out, report)

    phases = cfg.phases.split(",")
    if "train" in phases:
        keep("train", train_phase(cfg, paths, workdir, gpu_counts, lambda rows: keep("train", rows)))
    if "resume" in phases:
        keep("resume", resume_phase(cfg, paths, workdir, max(gpu_counts)))
    if "qlora" in phases and available >= 2:
        keep("qlora", qlora_phase(cfg, paths, workdir))
    if "generation" in phases:
        keep("generation", generation_phase(cfg, paths, workdir, gpu_counts))
    print(markdown_tables(report))
    print(f"written to {out}")
