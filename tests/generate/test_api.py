"""rrg.generate.api.ReportGenerator on the tiny model (CPU)."""

from __future__ import annotations

import pytest
from PIL import Image

from rrg.generate.api import ReportGenerator
from rrg.model.prompts import REPORT_QUESTION


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    return ReportGenerator.from_pretrained(str(tiny_model_dir), device="cpu")


@pytest.fixture
def prompts(monkeypatch):
    """The prompt texts generation renders (before `<image>` is expanded)."""
    from rrg.generate import batch as generate

    seen: list[str] = []
    real_render = generate.render_prompt

    def spy(*args, **kwargs):
        seen.append(real_render(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(generate, "render_prompt", spy)
    return seen


@pytest.mark.slow
def test_report_uses_the_training_prompt_and_returns_text(generator, prompts, xray_paths):
    report = generator.report([xray_paths[0], xray_paths[1]], indication="Cough.", max_new_tokens=4)
    assert isinstance(report, str) and report
    assert prompts == [f"[INST] <image>\n<image>\n{REPORT_QUESTION} Indication: Cough. [/INST]"]


@pytest.mark.slow
def test_ask_takes_a_pil_image_and_a_free_question(generator, prompts, xray_paths):
    answer = generator.ask(Image.open(xray_paths[2]), "Is there a pleural effusion?", max_new_tokens=4)
    assert isinstance(answer, str) and answer
    assert prompts == ["[INST] <image>\nIs there a pleural effusion? [/INST]"]


@pytest.mark.slow
def test_batched_variants_match_single_calls(generator, xray_paths):
    studies = [[xray_paths[0], xray_paths[1]], xray_paths[3]]
    reports = generator.report_batch(studies, indications=[None, "Chest pain."], max_new_tokens=4)
    assert reports == [
        generator.report(studies[0], max_new_tokens=4),
        generator.report(studies[1], indication="Chest pain.", max_new_tokens=4),
    ]
    answers = generator.ask_batch(studies, ["Describe.", "Normal?"], max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


@pytest.mark.slow
def test_bad_arguments_are_errors(generator, xray_paths):
    with pytest.raises(TypeError):
        generator.report(xray_paths[0], max_new_token=4)  # typo: not silently ignored
    with pytest.raises(ValueError):
        generator.ask_batch([xray_paths[0]], ["a", "b"])
    with pytest.raises(ValueError):
        generator.report([])
