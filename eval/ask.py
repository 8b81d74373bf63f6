"""An image in, an answer out: the report (or a differential, or the answer to a question) for each image.

    python eval/ask.py frontal.png other.png --lora_path runs/lora/final
    python eval/ask.py frontal.png --task differential
    python eval/ask.py frontal.png --task question --question "Is there a pleural effusion?"
    python eval/ask.py frontal.png lateral.png --one_study   # both views in one prompt, one report

The model is loaded as the eval run loads it (rrg.model.load.load_model through rrg.generate.api.ReportGenerator: the
adapter merged unless --load_in_4bit), images are read and prepared by the same code, and decoding uses
the eval run's defaults (greedy, at most 256 new tokens). The task prompts are in rrg/model/prompts.py
(task_question). Prints "== IMAGE ==" and the answer for each image (or study).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path

from rrg.cli import build_parser, check_ranges, exits_on_input_error, flag
from rrg.generate.run import DEFAULT_MODEL, EvalConfig
from rrg.io import InputError
from rrg.model.prompts import TASKS, task_question

_EVAL = {f.name: f.default for f in fields(EvalConfig)}


@dataclass
class AskSettings:
    task: str = flag("report", "report | differential | question (needs --question)", choices=list(TASKS))
    question: str | None = flag(None, "the question of --task question")
    indication: str | None = flag(None, "clinical indication appended to the report/differential prompt")
    model_path: str = flag(DEFAULT_MODEL, "base model: Hub id or folder")
    lora_path: str | None = flag(None, "LoRA adapter folder (ours or the paper's)")
    load_in_4bit: bool = flag(False, "load the base model in 4-bit (bitsandbytes, CUDA)")
    one_study: bool = flag(False, "all images are views of one study: one prompt, one answer")
    max_new_tokens: int = flag(_EVAL["max_new_tokens"], "longest answer in tokens", ge=1)
    num_beams: int = flag(_EVAL["num_beams"], "beam search width (1: greedy)", ge=1)
    do_sample: bool = flag(_EVAL["do_sample"], "sample instead of greedy decoding")
    temperature: float = flag(_EVAL["temperature"], "sampling temperature (with --do_sample)", gt=0)
    seed: int = flag(_EVAL["seed"], "sampling seed", ge=0)
    batch_size: int = flag(8, "images per generation batch", ge=1)
    device: str | None = flag(None, "torch device (default: the first GPU, else the CPU)")


def parse(argv: list[str] | None) -> tuple[AskSettings, list[Path]]:
    parser = build_parser(AskSettings, description=__doc__)
    parser.add_argument("images", nargs="+", help="image files (PNG/JPG)")
    settings, rest = parser.parse_args_into_dataclasses(args=argv)
    try:
        check_ranges(settings)
    except InputError as e:
        parser.exit(2, f"error: {e}\n")
    if settings.task == "question" and not (settings.question or "").strip():
        parser.exit(2, "error: --task question needs --question\n")
    if settings.question and settings.task != "question":
        parser.exit(
            2, f"error: --question is for --task question (the {settings.task} task has its own prompt)\n"
        )
    images = [Path(p) for p in rest.images]
    for path in images:
        if not path.is_file():
            raise InputError(f"{path}: image file not found")
    return settings, images


@exits_on_input_error
def main(argv: list[str] | None = None) -> list[str]:
    settings, images = parse(argv)
    from rrg.generate.api import ReportGenerator
    from rrg.generate.batch import GenerationSettings

    generator = ReportGenerator.from_pretrained(
        settings.model_path, settings.lora_path, load_in_4bit=settings.load_in_4bit, device=settings.device
    )
    generator.settings = GenerationSettings(
        max_new_tokens=settings.max_new_tokens,
        num_beams=settings.num_beams,
        do_sample=settings.do_sample,
        temperature=settings.temperature,
        seed=settings.seed,
        batch_size=settings.batch_size,
    )
    question = task_question(settings.task, settings.question, settings.indication)
    studies = [[str(p) for p in images]] if settings.one_study else [[str(p)] for p in images]
    answers = generator.ask_batch(studies, [question] * len(studies))
    for study, answer in zip(studies, answers, strict=True):
        print(f"== {' + '.join(study)} ==\n{answer}\n")
    return answers


if __name__ == "__main__":
    main(sys.argv[1:])
