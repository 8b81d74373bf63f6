"""Batched report generation: prompts + images -> text, the image controls, and the eval pipeline.

One generation path serves the eval scripts (eval/llava.py, eval/llava_lora.py) and the Python API
(rrg.api.ReportGenerator): render the prompt with rrg.prompts, expand `<image>` as LlavaProcessor does,
check every sample's image tokens (the guard the reference lacked), left-pad, generate greedily,
decode only the new tokens. There is no "regenerate until it parses" loop: what the model writes is
what gets scored.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image, UnidentifiedImageError
from transformers import BatchFeature

from .entries import Entry, load_entries, resolve_image
from .io import InputError, append_jsonl, atomic_write_json, iter_jsonl
from .kv_cache import PreallocatedCache
from .processor import check_image_tokens, image_token_id, tokens_per_image
from .prompts import IMAGE_TOKEN, render_prompt

DEFAULT_MODEL = "microsoft/llava-med-v1.5-mistral-7b"
DEFAULT_IMAGE_DIR = "data/iu_xray/images/images_normalized"
IMAGE_CONTROLS = ("none", "blank", "shuffle")

ImageInput = Image.Image | str | os.PathLike


# --------------------------------------------------------------------------- generation settings


@dataclass
class GenerationSettings:
    """What decides the generated text; written into every prediction line."""

    max_new_tokens: int = 256  # IU X-Ray reports are ~60-100 tokens
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0  # used only with do_sample
    seed: int = 0
    batch_size: int = 8
    # None: a dynamic KV cache (rrg.kv_cache). "static": transformers' static cache, whose decode step
    # generate() compiles (CUDA graphs): faster steps after ~45 s of compilation per batch shape.
    cache_implementation: str | None = None

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
        }
        if self.do_sample:  # passing temperature to greedy decoding only earns a warning
            kwargs["temperature"] = self.temperature
        if self.cache_implementation:
            kwargs["cache_implementation"] = self.cache_implementation
        return kwargs


# --------------------------------------------------------------------------- images


def load_image(image: ImageInput, where: str = "") -> Image.Image:
    """An RGB PIL image from a PIL image or a path; a missing or unreadable file is an InputError."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    place = f"{where}: " if where else ""
    try:
        with Image.open(image) as opened:
            return opened.convert("RGB")
    except FileNotFoundError:
        raise InputError(f"{place}image {os.fspath(image)} not found") from None
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{place}cannot read image {os.fspath(image)} ({e})") from None


def blank_like(image: Image.Image, image_mean: Sequence[float]) -> Image.Image:
    """A uniform image of the CLIP mean colour, the size of `image`.

    The mean colour normalises to zero, so the vision tower sees an empty input (and the square
    padding of the preprocessing is the same colour).
    """
    colour = tuple(round(255 * m) for m in image_mean)
    return Image.new("RGB", image.size, colour)


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


# --------------------------------------------------------------------------- encode + generate


@contextlib.contextmanager
def left_padding(tokenizer) -> Iterator[None]:
    """Generation appends tokens on the right, so every prompt must end at the same column."""
    saved = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = saved


def encode_batch(
    processor,
    questions: Sequence[str],
    images: Sequence[Sequence[Image.Image]],
    per_image: int,
    where: Sequence[str] | None = None,
) -> BatchFeature:
    """Model inputs of a left-padded batch, each sample checked to hold its image tokens."""
    if len(questions) != len(images):
        raise ValueError(f"{len(questions)} questions but {len(images)} image lists")
    pixels = [preprocess_views(processor.image_processor, views) for views in images]
    return assemble_batch(processor.tokenizer, questions, pixels, per_image, where)


def preprocess_views(image_processor, views: Sequence[Image.Image]) -> torch.Tensor:
    """[n_views, 3, H, W] pixel values of one study."""
    return image_processor(images=list(views), return_tensors="pt")["pixel_values"]


def assemble_batch(
    tokenizer,
    questions: Sequence[str],
    pixels: Sequence[torch.Tensor],
    per_image: int,
    where: Sequence[str] | None = None,
) -> BatchFeature:
    """Left-padded prompt ids + the studies' stacked pixel values: what LlavaProcessor makes of the batch.

    `<image>` is expanded to per_image tokens before tokenising, as the processor does (a test checks
    the two agree). Taking pixel values already computed lets each study be preprocessed on its own,
    in a loader worker.
    """
    texts = [
        render_prompt(q, n_images=len(p)).replace(IMAGE_TOKEN, IMAGE_TOKEN * per_image)
        for q, p in zip(questions, pixels)
    ]
    with left_padding(tokenizer):
        inputs = tokenizer(texts, padding=True, return_tensors="pt")
    token = image_token_id(tokenizer)
    for i, p in enumerate(pixels):
        check_image_tokens(inputs["input_ids"][i], len(p), token, per_image, where[i] if where else "")
    return BatchFeature({**inputs, "pixel_values": torch.cat(list(pixels))})


@torch.inference_mode()
def generate_from_inputs(model, processor, inputs, settings: GenerationSettings) -> list[str]:
    """Generate for an encoded batch and decode only the new tokens."""
    device = model.get_input_embeddings().weight.device
    dtype = model.get_input_embeddings().weight.dtype  # embeddings are never quantised
    inputs = inputs.to(device)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    cache = None
    if settings.cache_implementation is None:  # the dynamic cache, without its per-step copies
        cache = PreallocatedCache.for_generation(model, inputs["input_ids"].shape[1], settings.max_new_tokens)
    output = model.generate(
        **inputs,
        **settings.generate_kwargs(),
        past_key_values=cache,
        pad_token_id=processor.tokenizer.pad_token_id,
    )
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def generate_batch(
    model,
    processor,
    questions: Sequence[str],
    images: Sequence[Sequence[ImageInput]],
    settings: GenerationSettings | None = None,
) -> list[str]:
    """One answer per (question, views) pair; batches of settings.batch_size, in order."""
    settings = settings or GenerationSettings()
    per_image = tokens_per_image(model.config)
    answers: list[str] = []
    for start in range(0, len(questions), settings.batch_size):
        chunk = slice(start, start + settings.batch_size)
        views = [[load_image(x) for x in study] for study in images[chunk]]
        inputs = encode_batch(processor, questions[chunk], views, per_image)
        answers += generate_from_inputs(model, processor, inputs, settings)
    return answers


# --------------------------------------------------------------------------- the eval pipeline


@dataclass
class EvalConfig:
    """Flags of eval/llava.py and eval/llava_lora.py."""

    json_file: str = field(metadata={"help": "split file (JSON array or JSONL), e.g. data/test_report.json"})
    model_path: str = field(default=DEFAULT_MODEL, metadata={"help": "base model: Hub id or folder"})
    lora_path: str | None = field(
        default=None, metadata={"help": "LoRA adapter folder (ours or the paper's)"}
    )
    image_dir: str = field(default=DEFAULT_IMAGE_DIR, metadata={"help": "folder holding the images"})
    # On an H100: 31.1 reports/s at 55.5 GiB (results/benchmark-h100.json). On a smaller GPU the
    # batch is made smaller by itself when it runs out of memory (generate_predictions).
    batch_size: int = 256
    max_new_tokens: int = 256
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (with --do_sample)"})
    seed: int = 0
    out: str | None = field(
        default=None, metadata={"help": "predictions JSONL (default results/<zero_shot|lora>-<json stem>/)"}
    )
    resume: bool = field(default=False, metadata={"help": "skip ids already in the predictions file"})
    limit: int | None = field(default=None, metadata={"help": "first N entries only (quick checks)"})
    load_in_4bit: bool = False
    image_control: Literal["none", "blank", "shuffle"] = field(
        default="none",
        metadata={
            "help": "also generate with a blank image or another study's image and report the difference"
        },
    )
    bootstrap: int = field(default=0, metadata={"help": "bootstrap resamples for 95% intervals (e.g. 1000)"})
    legacy: bool = field(
        default=False, metadata={"help": "also score with the reference paper's metric code"}
    )
    num_workers: int = field(default=4, metadata={"help": "image-loading workers (0: in the main process)"})
    cache_implementation: str | None = field(
        default=None,
        metadata={"help": "KV cache: dynamic (default; rrg.kv_cache) or 'static' (compiled decode steps)"},
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
        )

    def predictions_path(self) -> Path:
        if self.out:
            return Path(self.out)
        kind = "lora" if self.lora_path else "zero_shot"
        return Path("results") / f"{kind}-{Path(self.json_file).stem}" / "predictions.jsonl"


def control_path(predictions: Path, condition: str) -> Path:
    """predictions.jsonl -> predictions.blank.jsonl; the real run keeps the plain name."""
    if condition == "none":
        return predictions
    return predictions.with_name(f"{predictions.stem}.{condition}{predictions.suffix}")


def scores_path(predictions: Path) -> Path:
    stem = predictions.stem
    return predictions.with_name("scores.json" if stem == "predictions" else f"{stem}.scores.json")


def resolve_all_images(entries: Sequence[Entry], image_dir: str | os.PathLike) -> dict[str, Path]:
    """Every image name of every entry -> its file; all missing ones reported together (before model loading)."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for entry in entries:
        for name in entry.images:
            if name in found:
                continue
            try:
                found[name] = resolve_image(image_dir, name)
            except InputError:
                missing.append(f"{entry.source}: {name}")
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


def done_ids(path: Path, identity: dict[str, Any]) -> set[str]:
    """Ids already in a predictions file; a line made with other settings is an error, not a mix."""
    if not path.exists():
        return set()
    ids = set()
    ignore_batch = {**identity["generation"], "batch_size": None}  # batching does not change the text
    for line, record in iter_jsonl(path, allow_partial_last_line=True):
        theirs = {key: record.get(key) for key in identity}
        theirs["generation"] = {**(theirs["generation"] or {}), "batch_size": None}
        if theirs != {**identity, "generation": ignore_batch}:
            raise InputError(
                f"{path}:{line}: made with other settings than this run ({theirs} vs {identity}); "
                "choose another --out"
            )
        ids.add(str(record.get("id")))
    return ids


def _prediction_line(entry: Entry, image_names: list[str], prediction: str, identity: dict) -> dict:
    return {
        "id": entry.id,
        "study_id": entry.study_id,
        "images": image_names,
        "prompt": entry.prompt,
        "prediction": prediction,
        "reference": entry.response,
        "reference_findings": entry.findings,
        "reference_impression": entry.impression,
        **identity,
    }


class _StudyPixels(torch.utils.data.Dataset):
    """(entry, image names, pixel values) per pending entry; a bad image comes back as its message.

    Each study is preprocessed on its own in a loader worker, so a batch of 128 is spread over all
    workers (one worker building a whole batch took ~5 s on an H100 host, longer than generating it).
    Errors are returned, not raised, so a worker process does not turn them into a multi-line
    traceback: the main process raises them as one InputError.
    """

    def __init__(
        self, items: list[tuple[Entry, list[str]]], paths: dict[str, Path], image_processor, blank=False
    ):
        self.items, self.paths, self.image_processor, self.blank = items, paths, image_processor, blank

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        entry, names = self.items[i]
        try:
            views = [load_image(self.paths[name], entry.source) for name in names]
        except InputError as e:
            return entry, names, str(e)
        if self.blank:
            views = [blank_like(view, self.image_processor.image_mean) for view in views]
        return entry, names, preprocess_views(self.image_processor, views)


def study_loader(
    items: list[tuple[Entry, list[str]]],
    paths: dict[str, Path],
    image_processor,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    blank: bool = False,
) -> torch.utils.data.DataLoader:
    """Pixel values of each (entry, image names), in order, one study per item.

    Workers preprocess about one batch ahead. On a GPU the pixel values are pinned, so they copy to
    the GPU without being staged on the host; the batch is put together there.
    """
    return torch.utils.data.DataLoader(
        _StudyPixels(items, paths, image_processor, blank),
        batch_size=None,
        num_workers=num_workers,
        prefetch_factor=max(2, -(-batch_size // num_workers)) if num_workers else None,
        pin_memory=device.type == "cuda",
    )


def batches_of(iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_ahead(iterator: Iterator) -> Iterator:
    """The iterator's items; a thread computes the next one while the caller works on this one.

    Here it collects the next batch from the loader and assembles its inputs while the GPU
    generates the current one, rather than after it. An exception raised for an item is raised
    to the caller when it reaches that item.
    """
    end = object()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, iterator, end)
        while (item := pending.result()) is not end:
            pending = pool.submit(next, iterator, end)
            yield item


def generate_predictions(
    model,
    processor,
    items: list[tuple[Entry, list[str]]],
    paths: dict[str, Path],
    out: Path,
    identity: dict[str, Any],
    settings: GenerationSettings,
    num_workers: int = 0,
) -> None:
    """Generate for each (entry, image names) and append one line per entry to `out` as it finishes.

    Out of GPU memory, the batch size is reduced (accelerate's find_executable_batch_size) and the
    run goes on from the first entry without a line, with a warning.
    """
    from accelerate.utils import find_executable_batch_size
    from tqdm.auto import tqdm

    device = model.get_input_embeddings().weight.device
    per_image = tokens_per_image(model.config)
    blank = identity["image_control"] == "blank"
    done = 0  # entries with a line in `out`
    tried: list[int] = []  # batch sizes tried

    def with_inputs(batch: list) -> tuple[list, BatchFeature]:
        for _, _, pixels in batch:
            if isinstance(pixels, str):
                raise InputError(pixels)
        inputs = assemble_batch(
            processor.tokenizer,
            [entry.prompt for entry, _, _ in batch],
            [pixels.to(device, non_blocking=True) for _, _, pixels in batch],
            per_image,
            [entry.source for entry, _, _ in batch],
        )
        return batch, inputs

    @find_executable_batch_size(starting_batch_size=settings.batch_size)
    def generate_rest(batch_size: int) -> None:
        nonlocal done
        if tried:
            print(f"warning: out of GPU memory at batch size {tried[-1]}: going on at {batch_size}")
        tried.append(batch_size)
        loader = study_loader(
            items[done:], paths, processor.image_processor, batch_size, num_workers, device, blank
        )
        # iter() starts the worker processes here, in the main thread. Started from run_ahead's
        # thread, in a benchmark process where torch.compile had run before, they died at start
        # (exit code 1, H100 host); started here, a run of the same phases went through.
        batches = run_ahead(map(with_inputs, batches_of(iter(loader), batch_size)))
        for batch, inputs in batches:
            predictions = generate_from_inputs(model, processor, inputs, settings)
            lines = [
                _prediction_line(entry, names, prediction, identity)
                for (entry, names, _), prediction in zip(batch, predictions)
            ]
            append_jsonl(out, *lines)  # the batch at once: one write, one fsync
            done += len(batch)
            bar.update(len(batch))

    with tqdm(total=len(items), desc=f"generate ({identity['image_control']})", unit="report") as bar:
        generate_rest()


def load_for_eval(config: EvalConfig):
    """(model, processor) on the GPU when there is one, ready for generation."""
    from .model import load_model

    cuda = torch.cuda.is_available()
    model, processor = load_model(
        config.model_path,
        config.lora_path,
        merge=bool(config.lora_path) and not config.load_in_4bit,  # merged LoRA generates faster
        load_in_4bit=config.load_in_4bit,
        device_map={"": 0} if cuda else None,
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
    """Rows real / control / delta per section, one column per metric."""
    names = list(dict.fromkeys(name for metrics in delta.values() for name in metrics))
    lines = [f"image control: {condition} (delta = real - {condition}; near 0 = the image is not used)"]
    lines.append(f"{'':<20}" + "".join(f"{name:>9}" for name in names))
    for section, metrics in delta.items():
        for label, values in (("real", real[section]), (condition, control[section]), ("delta", metrics)):
            sign = "+" if label == "delta" else ""
            cells = "".join(f"{values[name]:>{sign}9.4f}" if name in values else f"{'':>9}" for name in names)
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


def evaluate(config: EvalConfig) -> dict:
    """Generate (resumably), score, write scores.json beside the predictions, print the card."""
    entries = load_entries(config.json_file)
    if config.limit is not None:
        entries = entries[: config.limit]
    if not entries:
        raise InputError(f"{config.json_file}: no entries to evaluate")
    paths = resolve_all_images(entries, config.image_dir)  # before loading a 7B model
    from .metrics import MeteorScorer, format_card, score_records  # fails here, not after hours of generation

    predictions = config.predictions_path()
    conditions = ["none"] if config.image_control == "none" else ["none", config.image_control]
    outputs = {c: control_path(predictions, c) for c in conditions}
    for path in outputs.values():
        if not config.resume and path.exists() and path.stat().st_size > 0:
            raise InputError(
                f"{path} exists and is not empty: pass --resume to continue it or choose another --out"
            )

    pending: dict[str, list[tuple[Entry, list[str]]]] = {}
    for condition, path in outputs.items():
        drop_partial_last_line(path)
        done = done_ids(path, _run_identity(config, condition))
        names = shuffled_images(entries, config.seed) if condition == "shuffle" else None
        pending[condition] = [(e, names[e.id] if names else e.images) for e in entries if e.id not in done]

    if any(pending.values()):
        from transformers import set_seed

        model, processor = load_for_eval(config)
        settings = config.settings()
        for condition, items in pending.items():
            if items:
                set_seed(config.seed)
                generate_predictions(
                    model, processor, items, paths, outputs[condition],
                    _run_identity(config, condition), settings, config.num_workers,
                )  # fmt: skip

    scoring = {"bootstrap": config.bootstrap, "seed": config.seed, "legacy": config.legacy}
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
        report = [format_card(card)]
        if config.image_control != "none":
            condition = config.image_control
            control_card = score_records(
                _records_for(outputs[condition], entries),
                source=str(outputs[condition]),
                meteor=meteor,
                **scoring,
            )
            delta = metric_delta(card["metrics"], control_card["metrics"])
            card["image_control"] = {
                "condition": condition,
                "predictions": str(outputs[condition]),
                "metrics": control_card["metrics"],
                "counts": control_card["counts"],
                "delta": delta,
            }
            report.append(format_delta(condition, card["metrics"], control_card["metrics"], delta))
    atomic_write_json(scores_path(predictions), card)
    print("\n".join(report))
    print(f"predictions: {outputs['none']}\nscores: {scores_path(predictions)}")
    return card


def main(argv: Sequence[str] | None = None, *, require_adapter: bool = False) -> dict:
    """The command line of eval/llava.py (require_adapter=False) and eval/llava_lora.py (True)."""
    from transformers import HfArgumentParser

    from .cli import exits_on_input_error

    parser = HfArgumentParser(EvalConfig)
    (config,) = parser.parse_args_into_dataclasses(args=argv)
    if require_adapter and not config.lora_path:
        parser.error("--lora_path is required (the adapter folder, e.g. LoRA_Weight)")
    return exits_on_input_error(evaluate)(config)
