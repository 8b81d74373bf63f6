"""The eval run behind eval/llava.py and eval/llava_lora.py: generate (resumably), score, compare.

`evaluate(config)` resolves every image before loading the model, generates the predictions JSONL
with rrg.generate.batch (appending, so a killed run continues with --resume; a line made with other
settings is an error, never a mix), repeats it under an image control when asked (a blank image, or
another study's image) and scores both with rrg.score.card, writing scores.json beside the predictions
with the real - control difference for every metric.

Under `accelerate launch --num_processes N` the pending entries are split between the processes, each
generating on its own GPU into its own part file; the main process merges them into the one predictions
file (rrg.generate.shards), scores and prints. Plain `python` is one such process writing the file itself.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from transformers.generation.configuration_utils import ALL_CACHE_IMPLEMENTATIONS

from rrg.cli import RUNS_DIR, flag
from rrg.data.entries import (
    DEFAULT_IMAGE_DIR,
    Entry,
    ImageNotFound,
    load_entries,
    resolve_image,
    verify_image,
)
from rrg.data.split_record import split_record
from rrg.generate.batch import ADDED_LATER, GenerationSettings, generate_predictions
from rrg.generate.shards import (
    control_path,
    merge_parts,
    output_of,
    part_paths,
    remove_merge_leftovers,
    scores_path,
)
from rrg.io import InputError, atomic_write_json, disk_full_is_one_line, iter_jsonl
from rrg.lock import output_lock
from rrg.model.kernels.fused import liger_problem
from rrg.model.prompts import REFERENCE_EVAL_INSTRUCTION
from rrg.ranks import main_process_decides
from rrg.train.inputs import RunInputs

if TYPE_CHECKING:
    from accelerate import PartialState

DEFAULT_MODEL = "microsoft/llava-med-v1.5-mistral-7b"
IMAGE_CONTROLS = ("none", "blank", "shuffle")


# --------------------------------------------------------------------------- image controls


def study_derangement(study_ids: Sequence[str], seed: int = 0) -> dict[str, str]:
    """Map each study to another study (never itself), fixed by `seed`.

    Sattolo's algorithm draws a random single cycle, which has no fixed point for 2+ studies.
    """
    studies = list(dict.fromkeys(study_ids))
    if len(studies) < 2:
        raise InputError("--image_control shuffle needs at least 2 studies")
    rng = random.Random(seed)
    order = studies[:]
    for i in range(len(order) - 1, 0, -1):
        j = rng.randrange(i)  # j < i: Sattolo, not Fisher-Yates
        order[i], order[j] = order[j], order[i]
    # order is a random permutation with one cycle; map each element to the next one in that cycle.
    return {order[k]: order[(k + 1) % len(order)] for k in range(len(order))}


def shuffled_images(entries: Sequence[Entry], seed: int = 0) -> dict[str, list[str]]:
    """Entry id -> another study's image names, as many as the entry has (the prompt stays the same)."""
    donor_of = study_derangement([e.study_id for e in entries], seed)
    first_entry: dict[str, Entry] = {}
    for entry in entries:
        first_entry.setdefault(entry.study_id, entry)
    out = {}
    for entry in entries:
        donor = first_entry[donor_of[entry.study_id]].images
        out[entry.id] = [donor[k % len(donor)] for k in range(len(entry.images))]
    return out


# --------------------------------------------------------------------------- the eval pipeline


@dataclass
class EvalConfig:
    """Flags of eval/llava.py and eval/llava_lora.py."""

    json_file: str = flag(help="Split file (JSON array or JSONL), e.g. data/test_report.json.", nonempty=True)
    model_path: str = flag(DEFAULT_MODEL, "Base model: Hub id or folder.", nonempty=True)
    lora_path: str | None = flag(None, "LoRA adapter folder (ours or the paper's).")
    image_dir: str = flag(DEFAULT_IMAGE_DIR, "Folder holding the images.", nonempty=True)
    # On an H100: 31.1 reports/s at 55.5 GiB (results/benchmark-h100.json). On a smaller GPU the
    # batch is made smaller by itself when it runs out of memory (generate_predictions).
    batch_size: int = flag(256, "Reports generated together (made smaller by itself on out-of-memory).", ge=1)
    max_new_tokens: int = flag(256, "Most tokens generated per report.", ge=1)
    num_beams: int = flag(1, "Beam search width (1: greedy or sampling).", ge=1)
    do_sample: bool = flag(False, "Sample instead of greedy / beam decoding.")
    temperature: float = flag(1.0, "Sampling temperature (with --do_sample).", gt=0)
    seed: int = flag(0, "Seed of sampling and of the shuffled-image control.", ge=0)
    out: str | None = flag(None, "Predictions JSONL (default runs/<zero_shot|lora>-<json stem>/).")
    resume: bool = flag(False, "Skip ids already in the predictions file.")
    limit: int | None = flag(None, "First N entries only (quick checks).", ge=1)
    load_in_4bit: bool = flag(False, "QLoRA-style nf4 base weights (CUDA only; the adapter stays unmerged).")
    image_control: Literal["none", "blank", "shuffle"] = flag(
        "none", "Also generate with a blank image or another study's image and report the difference."
    )
    bootstrap: int = flag(0, "Bootstrap resamples for 95%% intervals (e.g. 1000; 0: none).", ge=0)
    legacy: bool = flag(False, "Also score with the reference paper's metric code.")
    labeler: Literal["offline", "chexbert", "none"] = flag(
        "offline", "CheXpert-14 labeler of the clinical scores: offline (no download), chexbert, none."
    )
    uncertain: Literal["positive", "negative"] = flag(
        "positive", "An uncertain label counts as positive (default) or negative."
    )
    radgraph: bool = flag(False, "Also RadGraph-F1 (downloads its model).")
    num_workers: int = flag(4, "Image-loading workers (0: in the main process).", ge=0)
    score: bool = flag(
        True,
        "Score the predictions when generated (--no_score: generate only, e.g. on a GPU machine without "
        "Java; score later with eval/score.py).",
    )
    cache_implementation: str | None = flag(
        None,
        "KV cache: unset = rrg.model.kernels.kv_cache's dynamic cache; static (compiled decode steps) or another of "
        "transformers' cache implementations.",
        choices=ALL_CACHE_IMPLEMENTATIONS,
    )
    # H100, batch 256 (results/benchmark-h100.json, two runs): the prompt pass 4.9 -> 4.3 s a batch; the
    # whole run's rate moved less than decoding's run-to-run spread, so it is opt-in.
    liger: bool = flag(
        False,
        "Liger's Triton kernels for the prompt pass's RMSNorms and MLPs (CUDA; pip install -r "
        "requirements-liger.txt): a faster prompt pass, other rounding, so greedy texts can differ.",
    )

    decoder: str | None = flag(
        None,
        "graphs: greedy decoding with its steps replayed as CUDA graphs (rrg.generate.graphs; the default for "
        "greedy decoding); generate: transformers' generate (the default with beams, sampling or the static "
        "cache).",
        choices=["graphs", "generate"],
    )

    def settings(self) -> GenerationSettings:
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens,
            num_beams=self.num_beams,
            do_sample=self.do_sample,
            temperature=self.temperature,
            seed=self.seed,
            batch_size=self.batch_size,
            cache_implementation=self.cache_implementation,
            liger=self.liger,
            decoder=self.decoder,
        )

    def predictions_path(self) -> Path:
        if self.out:
            return Path(self.out)
        kind = "lora" if self.lora_path else "zero_shot"
        return Path(RUNS_DIR) / f"{kind}-{Path(self.json_file).stem}" / "predictions.jsonl"


def resolve_all_images(entries: Sequence[Entry], image_dir: str | os.PathLike) -> dict[str, Path]:
    """Every image name of every entry -> its file, each opened and verified as training's pre-flight does
    (a decompression bomb, a truncated file); all missing ones reported together (before model loading)."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for entry in entries:
        for name in entry.images:
            if name in found:
                continue
            try:
                found[name] = resolve_image(image_dir, name, f"{entry.source} (id {entry.id!r})")
            except ImageNotFound:
                missing.append(f"{entry.source}: {name}")
                continue
            if reason := verify_image(found[name]):
                raise InputError(f"{entry.source} (id {entry.id!r}): {reason}")
    if missing:
        shown = "; ".join(missing[:10]) + (f"; ... and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise InputError(f"{len(missing)} image(s) not found under {image_dir}: {shown}")
    return found


def _run_identity(config: EvalConfig, condition: str) -> dict[str, Any]:
    return {
        "image_control": condition,
        "generation": asdict(config.settings()),
        "model": config.model_path,
        "adapter": config.lora_path,
    }


def drop_partial_last_line(path: Path) -> None:
    """Cut a half-written last line (a killed run's) so appended lines start on a line of their own.

    append_jsonl writes whole lines (each record with its newline), so a file not ending in a newline
    ends in an incomplete record; the complete lines before it are kept.
    """
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        print(f"warning: {path}: dropping a partly written last line ({len(data) - keep} bytes)")
        with open(path, "r+b") as f:
            f.truncate(keep)


def done_ids(
    path: Path,
    identity: dict[str, Any],
    prompts: dict[str, str] | None = None,
    inputs: RunInputs | None = None,
) -> set[str]:
    """Ids already in a predictions file; a line made with other settings, (prompts: id -> this run's
    prompt) with another prompt, or (inputs) from another split file, adapter or image set, is an error,
    not a mix. Lines written before lines recorded their inputs cannot be checked: counted and said."""
    if not path.exists():
        return set()
    ids = set()
    unchecked = 0
    ignore_batch = {**identity["generation"], "batch_size": None}  # batching does not change the text
    for line, record in iter_jsonl(path, allow_partial_last_line=True):
        theirs = {key: record.get(key) for key in identity}
        theirs["generation"] = {**ADDED_LATER, **(theirs["generation"] or {}), "batch_size": None}
        if theirs != {**identity, "generation": ignore_batch}:
            raise InputError(
                f"{path}:{line}: made with other settings than this run ({theirs} vs {identity}); "
                "choose another --out"
            )
        entry_id = str(record.get("id"))
        if prompts and entry_id in prompts and record.get("prompt") != prompts[entry_id]:
            raise InputError(f"{path}:{line}: made with another prompt than this run's; choose another --out")
        if inputs is not None:
            recorded = record.get("inputs")
            if not isinstance(recorded, dict):
                unchecked += 1
            elif differ := inputs.mismatch(recorded, record.get("images") or []):
                raise InputError(
                    f"{path}:{line}: made from another {differ} than this run's; choose another --out"
                )
        ids.add(entry_id)
    if unchecked:
        print(
            f"warning: {path}: {unchecked} line(s) written before prediction lines recorded their inputs: "
            "their split file, images and adapter cannot be checked against this run's"
        )
    return ids


def generation_entry(entry: Entry) -> Entry:
    """The entry as the model is asked: the reference protocol's prompt gets the instruction the
    paper's eval scripts append (training prompts do not have it); other entries are unchanged."""
    if entry.protocol == "reference":
        return replace(entry, prompt=entry.prompt + REFERENCE_EVAL_INSTRUCTION)
    return entry


def gather_earlier_lines(
    path: Path,
    entries: Sequence[Entry],
    identity: dict[str, Any],
    resume: bool,
    inputs: RunInputs | None = None,
) -> None:
    """Main process, before generating: fold a killed run's part files into `path`, so that every process
    reads what is done from that one file. Without --resume any earlier line is refused; with it, every
    line must have been made with this run's settings and prompts (done_ids)."""
    prompts = {e.id: e.prompt for e in entries}
    for source in [path, *part_paths(path)]:
        if not resume and source.exists() and source.stat().st_size > 0:
            raise InputError(
                f"{source} exists and is not empty: pass --resume to continue it or choose another --out"
            )
        drop_partial_last_line(source)
        done_ids(source, identity, prompts, inputs)
    remove_merge_leftovers(path)
    merge_parts(path, [e.id for e in entries])


def process_state() -> PartialState:
    """This process's place among those `accelerate launch` started (one process under plain python).

    Without a GPU, or with `accelerate launch --cpu`, the processes talk through gloo: PartialState
    needs to be told, or it would take each of them for a lone process.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU"))


def close_processes() -> None:
    """At the end of a script: release the process group accelerate launch made (NCCL warns at exit
    otherwise). Not inside evaluate(), so that one process may run several evaluations."""
    process_state().destroy_process_group()


def load_for_eval(config: EvalConfig):
    """(model, processor) on this process's GPU when there is one, ready for generation."""
    from rrg.model.load import load_model

    state = process_state()
    cuda = state.device.type == "cuda"
    model, processor = load_model(
        config.model_path,
        config.lora_path,
        merge=bool(config.lora_path) and not config.load_in_4bit,  # merged LoRA generates faster
        load_in_4bit=config.load_in_4bit,
        device_map={"": state.local_process_index} if cuda else None,
    )
    return model.eval(), processor


def metric_delta(real: dict, control: dict) -> dict[str, dict[str, float]]:
    """{section: {metric: real - control}} for every metric both cards hold as a number."""
    delta: dict[str, dict[str, float]] = {}
    for section, metrics in real.items():
        other = control.get(section) or {}
        for name, value in (metrics or {}).items():
            if isinstance(value, int | float) and isinstance(other.get(name), int | float):
                delta.setdefault(section, {})[name] = value - other[name]
    return delta


def format_delta(condition: str, real: dict, control: dict, delta: dict) -> str:
    """Rows real / control / delta per section, one column per metric; sections with other metrics
    (the clinical F1s) get a header of their own."""
    lines = [f"image control: {condition} (delta = real - {condition}; near 0 = the image is not used)"]
    groups: dict[tuple[str, ...], list[str]] = {}
    for section, metrics in delta.items():
        groups.setdefault(tuple(metrics), []).append(section)
    for names, sections in groups.items():
        width = max(9, *(len(name) + 1 for name in names))
        lines.append(f"{'':<20}" + "".join(f"{name:>{width}}" for name in names))
        for section in sections:
            metrics = delta[section]
            for label, values in (("real", real[section]), (condition, control[section]), ("delta", metrics)):
                sign = "+" if label == "delta" else ""
                cells = "".join(
                    f"{values[name]:>{sign}{width}.4f}" if name in values else f"{'':>{width}}"
                    for name in names
                )
                lines.append(f"{section + ' ' + label:<20}" + cells)
    return "\n".join(lines)


def _records_for(path: Path, entries: Sequence[Entry]) -> list[dict]:
    """This run's lines, in entry order, one per entry (the file may hold more after --limit changes)."""
    by_id = {}
    for line, record in iter_jsonl(path, allow_partial_last_line=True):
        by_id[str(record.get("id"))] = {**record, "_where": f"{path}:{line}"}  # the scorer's messages
    missing = [e.id for e in entries if e.id not in by_id]
    if missing:
        raise InputError(f"{path}: no prediction for {len(missing)} entries (first: {missing[0]!r})")
    return [by_id[e.id] for e in entries]


def has_references(entries: Sequence[Entry], json_file: str | os.PathLike) -> bool:
    """True when every entry has a reference report, False when none has (then nothing can be scored,
    which is said); a file mixing the two is an error, since its scores would silently cover a part."""
    without = [e for e in entries if not e.response.strip()]
    if not without:
        return True
    if len(without) == len(entries):
        print(f"note: {json_file} holds no reference reports: generating only, scoring skipped")
        return False
    raise InputError(
        f"{without[0].source}: entry {without[0].id!r} has no reference report (response) while "
        f"{len(entries) - len(without)} others have one: give all entries a report or none"
    )


def evaluate(config: EvalConfig) -> dict:
    """Generate (resumably), score, write scores.json beside the predictions, print the card.

    Under several processes every one generates its share; only the main process takes the folder's
    lock (one run per output folder, from the "exists" check to the last write: two runs into one fresh
    folder both passed the check and wrote every id twice), merges, scores, writes and prints, and
    returns the card (the others return {}).
    """
    state = process_state()
    entries = [generation_entry(e) for e in load_entries(config.json_file)]
    if config.limit is not None:
        entries = entries[: config.limit]
    if not entries:
        raise InputError(f"{config.json_file}: no entries to evaluate")
    paths = resolve_all_images(entries, config.image_dir)  # before loading a 7B model
    inputs = RunInputs.of(config.json_file, paths, config.image_dir, config.lora_path)
    config.settings()  # refuses settings that do not go together, before a model is loaded
    if config.liger and (problem := liger_problem(state.device)):
        raise InputError(problem)
    score = config.score and has_references(entries, config.json_file)
    if score:
        import rrg.score.card  # noqa: F401  (fails here, not after hours of generation)
        from rrg.score.clinical import f1 as clinical  # noqa: F401  (fails here, not after hours of generation)
    predictions = config.predictions_path()

    conditions = ["none"] if config.image_control == "none" else ["none", config.image_control]
    outputs = {c: control_path(predictions, c) for c in conditions}
    is_main = state.is_main_process
    with contextlib.ExitStack() as stack:

        def take_folder() -> None:  # the main process; a refusal stops every rank (rrg.ranks)
            stack.enter_context(output_lock(predictions.parent, "eval"))
            for condition, path in outputs.items():
                gather_earlier_lines(path, entries, _run_identity(config, condition), config.resume, inputs)

        main_process_decides(state, take_folder)  # the others read the merged files only
        with disk_full_is_one_line(predictions.parent):  # prediction lines, part files, their merge
            generate_share(config, state, entries, paths, outputs, inputs)
            state.wait_for_everyone()  # every part complete
            if not is_main:
                return {}
            for path in outputs.values():
                merge_parts(path, [e.id for e in entries])
        if not score:
            why = "--no_score" if not config.score else "the entries have no reference reports"
            print("predictions: " + ", ".join(map(str, outputs.values())) + f" (not scored: {why})")
            return {}
        return score_run(config, entries, outputs)


def generate_share(
    config: EvalConfig,
    state: PartialState,
    entries: Sequence[Entry],
    paths: dict[str, Path],
    outputs: dict[str, Path],
    inputs: RunInputs | None = None,
) -> None:
    """Generate this process's contiguous share of the (condition, entry) pairs without a line yet."""
    work: list[tuple[str, tuple[Entry, list[str]]]] = []
    for condition, path in outputs.items():
        done = done_ids(path, _run_identity(config, condition), {e.id: e.prompt for e in entries})
        names = shuffled_images(entries, config.seed) if condition == "shuffle" else None
        work += [(condition, (e, names[e.id] if names else e.images)) for e in entries if e.id not in done]
    if state.num_processes > 1 and work:
        state.print(f"{len(work)} reports to generate, split between {state.num_processes} processes")
    with state.split_between_processes(work) as share:
        if not share:
            return
        from transformers import set_seed

        model, processor = load_for_eval(config)
        settings = config.settings()
        for condition, path in outputs.items():
            items = [item for c, item in share if c == condition]
            if items:
                set_seed(config.seed)
                generate_predictions(
                    model, processor, items, paths, output_of(path, state.process_index, state.num_processes),
                    _run_identity(config, condition), settings, config.num_workers,
                    progress=state.is_main_process, inputs_of=inputs.line_inputs if inputs else None,
                )  # fmt: skip


def score_run(config: EvalConfig, entries: Sequence[Entry], outputs: dict[str, Path]) -> dict:
    """Score the predictions (and the image control's), write scores.json, print the card."""
    from rrg.score.card import format_card, score_records
    from rrg.score.clinical.f1 import delta_table
    from rrg.score.meteor import MeteorScorer

    predictions = outputs["none"]
    scoring = {
        "bootstrap": config.bootstrap,
        "seed": config.seed,
        "legacy": config.legacy,
        "labeler": config.labeler,
        "uncertain": config.uncertain,
        "radgraph": config.radgraph,
    }
    # Two conditions share one METEOR JVM; a single one lets score_records start its own.
    shared_jvm = MeteorScorer() if config.image_control != "none" else contextlib.nullcontext()
    with shared_jvm as meteor:
        card = score_records(
            _records_for(outputs["none"], entries), source=str(outputs["none"]), meteor=meteor, **scoring
        )
        card.update(
            predictions=str(outputs["none"]),
            model=config.model_path,
            adapter=config.lora_path,
            generation=asdict(config.settings()),
        )
        card.setdefault("settings", {})["split"] = split_record(config.json_file)  # what tables show as the split
        report = [format_card(card)]
        if config.image_control != "none":
            condition = config.image_control
            control_card = score_records(
                _records_for(outputs[condition], entries),
                source=str(outputs[condition]),
                meteor=meteor,
                **scoring,
            )
            # The clinical F1s join the delta as one more "section" (rrg.score.clinical.f1.delta_table).
            real_table = {**card["metrics"], **delta_table(card)}
            control_table = {**control_card["metrics"], **delta_table(control_card)}
            delta = metric_delta(real_table, control_table)
            card["image_control"] = {
                "condition": condition,
                "predictions": str(outputs[condition]),
                "metrics": control_card["metrics"],
                "counts": control_card["counts"],
                "delta": delta,
            }
            if "clinical" in control_card:
                card["image_control"]["clinical"] = control_card["clinical"]
            report.append(format_delta(condition, real_table, control_table, delta))
    atomic_write_json(scores_path(predictions), card)
    print("\n".join(report))
    print(f"predictions: {outputs['none']}\nscores: {scores_path(predictions)}")
    return card


def main(argv: Sequence[str] | None = None, *, require_adapter: bool = False) -> dict:
    """The command line of eval/llava.py (require_adapter=False) and eval/llava_lora.py (True)."""
    from rrg.cli import exits_on_input_error, parse_flags

    config = parse_flags(EvalConfig, argv)
    if require_adapter and not config.lora_path:
        print("error: --lora_path is required (the adapter folder, e.g. LoRA_Weight)", file=sys.stderr)
        sys.exit(2)
    return exits_on_input_error(evaluate)(config)
