"""Batched report generation: prompts + images -> text, and a dataset -> a predictions JSONL.

One generation path serves the eval run (rrg.generate.run, behind eval/llava.py and eval/llava_lora.py)
and the Python API (rrg.generate.api.ReportGenerator): render the prompt with rrg.model.prompts, expand `<image>` as
LlavaProcessor does, check every sample's image tokens (the guard the reference lacked), left-pad,
generate greedily, decode only the new tokens. There is no "regenerate until it parses" loop: what the
model writes is what gets scored. Resuming, image controls and scoring are rrg.generate.run's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import BatchFeature, LogitsProcessorList

from rrg.data.entries import Entry
from rrg.data.images import read_image, rgb_image
from rrg.generate.graphs import CACHE_KWARG, NON_FINITE_SCORES, GreedyDecoder, GreedyRules
from rrg.io import InputError, append_jsonl
from rrg.model.kernels.fused import liger_kernels
from rrg.model.kernels.kv_cache import PreallocatedCache
from rrg.model.processor import check_image_tokens, image_token_id, tokens_per_image
from rrg.model.prompts import IMAGE_TOKEN, render_prompt

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
    # None: a dynamic KV cache (rrg.model.kernels.kv_cache). "static": transformers' static cache, whose decode step
    # generate() compiles (CUDA graphs): faster steps after ~45 s of compilation per batch shape.
    cache_implementation: str | None = None
    # Liger's Triton kernels for the prompt pass's RMSNorms and MLPs (rrg.model.kernels.fused; eval --liger): the same
    # model, other rounding in the last bits, so greedy texts can differ. Predictions record it.
    liger: bool = False
    # "graphs": rrg.generate.graphs's greedy loop, its decode steps replayed as CUDA graphs on a GPU (eager
    # elsewhere, the same arithmetic); "generate": transformers' generate. None picks graphs for greedy
    # decoding with the dynamic cache and generate otherwise; lines record the choice.
    decoder: str | None = None

    def __post_init__(self) -> None:
        if self.liger and self.cache_implementation == "static":
            # generate() would compile the static cache's decode steps through the bound forwards: not tried
            raise InputError("--liger with --cache_implementation static is not supported; choose one")
        greedy = self.num_beams == 1 and not self.do_sample and self.cache_implementation is None
        if self.decoder is None:
            self.decoder = "graphs" if greedy else "generate"
        if self.decoder not in ("graphs", "generate"):
            raise InputError(f"--decoder must be graphs or generate (got {self.decoder!r})")
        if self.decoder == "graphs" and not greedy:
            raise InputError(
                "--decoder graphs decodes greedily with the dynamic cache: with --num_beams, --do_sample "
                "or --cache_implementation use --decoder generate"
            )

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


# Settings added after prediction files had been written, with the value those files were made at: a line
# without one was made at that value (rrg.generate.run.done_ids), so it still resumes a run at that value.
ADDED_LATER = {"liger": False, "decoder": "generate"}


# --------------------------------------------------------------------------- images


def load_image(image: ImageInput, where: str = "") -> Image.Image:
    """An RGB PIL image from a PIL image or a path; a missing or unreadable file is an InputError."""
    if isinstance(image, Image.Image):
        return rgb_image(image)
    return read_image(image, where)


def blank_like(image: Image.Image, image_mean: Sequence[float]) -> Image.Image:
    """A uniform image of the CLIP mean colour, the size of `image`.

    The mean colour normalises to zero, so the vision tower sees an empty input (and the square
    padding of the preprocessing is the same colour).
    """
    colour = tuple(round(255 * m) for m in image_mean)
    return Image.new("RGB", image.size, colour)


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


class NanScores:
    """A logits processor that notes (without a GPU sync per step) whether any step's scores held a NaN or
    +inf; generation would go on and decode them as empty reports. -inf is a masked token, not a fault."""

    def __init__(self) -> None:
        self.bad: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        found = torch.isnan(scores).any() | torch.isposinf(scores).any()
        self.bad = found if self.bad is None else self.bad | found
        return scores

    def check(self) -> None:
        if self.bad is not None and bool(self.bad):
            raise InputError(NON_FINITE_SCORES)


@torch.inference_mode()
def generate_from_inputs(
    model, processor, inputs, settings: GenerationSettings, decoder: GreedyDecoder | None = None
) -> list[str]:
    """Generate for an encoded batch and decode only the new tokens.

    With settings.decoder "graphs", `decoder` (one per run, so its buffers and graphs serve every batch)
    decodes; without one, a decoder is made for this call.
    """
    device = model.get_input_embeddings().weight.device
    dtype = model.get_input_embeddings().weight.dtype  # embeddings are never quantised
    inputs = inputs.to(device)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    if settings.decoder == "graphs":
        rules = GreedyRules.from_config(model.generation_config, processor.tokenizer.pad_token_id)
        own = decoder is None
        decoder = decoder or GreedyDecoder(model)
        try:
            with liger_kernels(model) if settings.liger else contextlib.nullcontext():
                new_tokens = decoder.generate(inputs, settings.max_new_tokens, rules)
        finally:
            if own:
                decoder.release()
        return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]
    cache = None
    if settings.cache_implementation is None:  # the dynamic cache, without its per-step copies
        cache = PreallocatedCache.for_generation(model, inputs["input_ids"].shape[1], settings.max_new_tokens)
    # Bound for this call only (cheap): every generation with liger=True runs the kernels its lines record.
    nan_scores = NanScores()
    with liger_kernels(model) if settings.liger else contextlib.nullcontext():
        output = model.generate(
            **inputs,
            **settings.generate_kwargs(),
            **{CACHE_KWARG: cache},
            pad_token_id=processor.tokenizer.pad_token_id,
            logits_processor=LogitsProcessorList([nan_scores]),
        )
    nan_scores.check()
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
    decoder = GreedyDecoder(model) if settings.decoder == "graphs" else None
    answers: list[str] = []
    try:
        for start in range(0, len(questions), settings.batch_size):
            chunk = slice(start, start + settings.batch_size)
            views = [[load_image(x) for x in study] for study in images[chunk]]
            inputs = encode_batch(processor, questions[chunk], views, per_image)
            answers += generate_from_inputs(model, processor, inputs, settings, decoder)
    finally:
        if decoder is not None:
            decoder.release()
    return answers


# --------------------------------------------------------------------------- a dataset -> predictions JSONL


def prediction_line(
    entry: Entry, image_names: list[str], prediction: str, identity: dict, inputs: dict | None = None
) -> dict:
    """One line of a predictions file; `inputs` (rrg.train.inputs.RunInputs.line_inputs) when the run has them."""
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
        **({"inputs": inputs} if inputs is not None else {}),
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
    progress: bool = True,
    inputs_of: Callable[[list[str]], dict] | None = None,
) -> None:
    """Generate for each (entry, image names) and append one line per entry to `out` as it finishes.

    `inputs_of(image names)`: the inputs each line records (rrg.train.inputs.RunInputs.line_inputs), so that a
    resume can tell lines of another split, adapter or image set.

    `progress=False` hides the progress bar (processes other than the main one under accelerate launch).

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

    # One decoder for the run (its buffers and graphs serve every batch), freed before a smaller retry.
    decoder = GreedyDecoder(model) if settings.decoder == "graphs" else None

    @find_executable_batch_size(starting_batch_size=settings.batch_size)
    def generate_rest(batch_size: int) -> None:
        nonlocal done
        if decoder is not None:
            decoder.release()
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
            predictions = generate_from_inputs(model, processor, inputs, settings, decoder)
            lines = [
                prediction_line(entry, names, prediction, identity, inputs_of(names) if inputs_of else None)
                for (entry, names, _), prediction in zip(batch, predictions)
            ]
            append_jsonl(out, *lines)  # the batch at once: one write, one fsync
            done += len(batch)
            bar.update(len(batch))

    desc = f"generate ({identity['image_control']})"
    try:
        with tqdm(total=len(items), desc=desc, unit="report", disable=not progress) as bar:
            generate_rest()
    finally:
        if decoder is not None:
            decoder.release()
