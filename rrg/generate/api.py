"""Python API: write a report (or answer a question) for one study or many.

    from rrg import ReportGenerator
    generator = ReportGenerator.from_pretrained("microsoft/llava-med-v1.5-mistral-7b", lora_path="LoRA_Weight")
    print(generator.report(["frontal.png", "lateral.png"], indication="Cough and fever."))

Same prompt code as training (rrg.model.prompts) and same generation function as the eval scripts
(rrg.generate.batch.generate_batch).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import torch
from PIL import Image

from rrg.generate.batch import GenerationSettings, ImageInput, generate_batch
from rrg.model.prompts import report_question

Study = ImageInput | Sequence[ImageInput]  # one view, or the views of one study in prompt order


def _views(study: Study) -> list[ImageInput]:
    if isinstance(study, Image.Image | str | os.PathLike):
        return [study]
    views = list(study)
    if not views:
        raise ValueError("a study needs at least one image")
    return views


class ReportGenerator:
    """A loaded model + processor with report/ask helpers; greedy decoding unless told otherwise."""

    def __init__(self, model, processor, settings: GenerationSettings | None = None):
        self.model = model.eval()
        self.processor = processor
        self.settings = settings or GenerationSettings()

    @classmethod
    def from_pretrained(
        cls,
        model_path: str,
        lora_path: str | None = None,
        *,
        load_in_4bit: bool = False,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> ReportGenerator:
        """Load the base model (Hub id or folder; the original LLaVA-Med format is converted once) and adapter.

        device defaults to the first GPU when there is one, else the CPU.
        """
        from rrg.model.load import load_model

        if device is None:
            device = "cuda:0" if torch.cuda.is_available() else "cpu"
        device = torch.device(device)
        model, processor = load_model(
            model_path,
            lora_path,
            merge=bool(lora_path) and not load_in_4bit,  # a merged adapter generates faster
            load_in_4bit=load_in_4bit,
            dtype=dtype,
            device_map={"": str(device)} if device.type != "cpu" else None,
        )
        return cls(model, processor)

    def _settings(self, gen_kwargs: dict) -> GenerationSettings:
        # dataclasses.replace rejects unknown names, so a typo in a keyword is an error, not ignored.
        return dataclasses.replace(self.settings, **gen_kwargs)

    def ask_batch(self, studies: Sequence[Study], questions: Sequence[str], **gen_kwargs) -> list[str]:
        """One answer per (study, question)."""
        if len(studies) != len(questions):
            raise ValueError(f"{len(studies)} studies but {len(questions)} questions")
        return generate_batch(
            self.model,
            self.processor,
            list(questions),
            [_views(s) for s in studies],
            self._settings(gen_kwargs),
        )

    def report_batch(
        self, studies: Sequence[Study], indications: Sequence[str | None] | None = None, **gen_kwargs
    ) -> list[str]:
        """One report per study, asked with the training prompt (plus each study's indication)."""
        indications = list(indications) if indications is not None else [None] * len(studies)
        if len(indications) != len(studies):
            raise ValueError(f"{len(studies)} studies but {len(indications)} indications")
        return self.ask_batch(studies, [report_question(i) for i in indications], **gen_kwargs)

    def report(self, images: Study, indication: str | None = None, **gen_kwargs) -> str:
        """The report of one study (one or more views: PIL images or paths)."""
        return self.report_batch([images], [indication], **gen_kwargs)[0]

    def ask(self, images: Study, question: str, **gen_kwargs) -> str:
        """A free question about one study."""
        return self.ask_batch([images], [question], **gen_kwargs)[0]
