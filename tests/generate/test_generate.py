"""Batched generation (rrg.generate.batch), image controls and the eval run (rrg.generate.run) on the tiny model (CPU)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration

from rrg.generate import batch as generate
from rrg.generate import run as evaluate
from rrg.generate.batch import GenerationSettings, blank_like, encode_batch, generate_batch
from rrg.generate.run import main as run_eval
from rrg.generate.run import shuffled_images, study_derangement
from rrg.io import read_jsonl
from rrg.model.processor import ImageTokenError, load_processor
from rrg.model.prompts import render_prompt

REPO = Path(__file__).resolve().parents[2]
LINE_KEYS = {
    "id", "study_id", "images", "prompt", "prediction", "reference", "reference_findings",
    "reference_impression", "image_control", "generation", "model", "adapter", "inputs",
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    return model, load_processor(tiny_model_dir)


def noise_png(path: Path, size: tuple[int, int], seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def split(tmp_path) -> tuple[Path, Path]:
    """A 4-entry JSONL split (3 studies, one with two views) with tiny PNGs; reference-style image names."""
    image_dir = tmp_path / "images"
    records = []
    for k, (study, views) in enumerate([("10", 1), ("11", 2), ("12", 1), ("13", 1)]):
        names = [
            noise_png(image_dir / f"{study}_IM-{v}.png", (40 + 8 * k, 48), 10 * k + v).name
            for v in range(views)
        ]
        records.append(
            {
                "id": study,
                "study_id": study,
                "images": [f"./images/images_normalized/{n}" for n in names],
                "prompt": "Write the report." + " Indication: cough." * k,
                "response": f"Findings: lungs clear {k}. Impression: normal {k}.",
                "findings": f"lungs clear {k}.",
                "impression": f"normal {k}.",
            }
        )
    json_file = tmp_path / "test.jsonl"
    json_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    return json_file, image_dir


def eval_args(json_file: Path, image_dir: Path, tiny_model_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--json_file", str(json_file), "--image_dir", str(image_dir), "--model_path", str(tiny_model_dir),
        "--out", str(out), "--max_new_tokens", "6", "--batch_size", "3", "--num_workers", "0", *extra,
    ]  # fmt: skip


@pytest.fixture
def fast_scoring(monkeypatch):
    """A stand-in scorer (no JVM) for tests about generation and files, not about the scores."""
    import rrg.score.card

    def score_records(records, **kwargs):
        return {"metrics": {"report": {"BLEU-1": 0.0}}, "counts": {"lines": len(records)}}

    monkeypatch.setattr(rrg.score.card, "score_records", score_records)
    monkeypatch.setattr(rrg.score.card, "format_card", lambda card: "card")


# --------------------------------------------------------------------------- generation


@pytest.mark.slow
def test_batched_generation_equals_one_by_one(tiny, xray_paths):
    model, processor = tiny
    questions = [
        "Describe.",
        "You are a radiologist. Write the full report with Findings and Impression.",
        "Hi",
    ]
    studies = [[xray_paths[0]], [xray_paths[1], xray_paths[2]], [xray_paths[3]]]
    settings = GenerationSettings(max_new_tokens=8, batch_size=3)
    batched = generate_batch(model, processor, questions, studies, settings)
    single = generate_batch(
        model, processor, questions, studies, GenerationSettings(max_new_tokens=8, batch_size=1)
    )
    assert batched == single
    assert all(isinstance(t, str) and t for t in batched)
    # The batch really was padded, on the left, and the tokenizer's own setting is left as it was.
    views = [[Image.open(p).convert("RGB") for p in s] for s in studies]
    processor.tokenizer.padding_side = "right"
    inputs = encode_batch(processor, questions, views, per_image=16)
    mask = inputs["attention_mask"]
    assert (mask[:, -1] == 1).all() and (mask[:, 0] == 0).any()
    assert processor.tokenizer.padding_side == "right"


@pytest.mark.slow
def test_batches_are_what_the_processor_makes(tiny, xray_paths):
    """Studies are preprocessed one by one (in loader workers) and assembled into a batch: the result
    must be exactly LlavaProcessor's own batch, left-padded."""
    _, processor = tiny
    questions = ["Describe.", "Write the report with Findings and Impression.", "Hi"]
    studies = [[xray_paths[0]], [xray_paths[1], xray_paths[2]], [xray_paths[3]]]
    views = [[Image.open(p).convert("RGB") for p in s] for s in studies]
    processor.tokenizer.padding_side = "left"
    prompts = [render_prompt(q, n_images=len(v)) for q, v in zip(questions, views)]
    expected = processor(text=prompts, images=views, return_tensors="pt", padding=True)
    processor.tokenizer.padding_side = "right"
    got = encode_batch(processor, questions, views, per_image=16)
    for key in ("input_ids", "attention_mask", "pixel_values"):
        assert torch.equal(got[key], expected[key]), key
    assert (got["attention_mask"][:, 0] == 0).any()  # left padding really happened


def test_run_ahead_prepares_the_next_batch_while_this_one_is_used():
    import threading

    second_started = threading.Event()

    def batches():
        yield 1
        second_started.set()  # runs only once the consumer asks, unless a thread runs ahead
        yield 2
        raise generate.InputError("batch 3: bad image")

    seen = []
    with pytest.raises(generate.InputError, match="batch 3"):
        for item in generate.run_ahead(batches()):
            if item == 1:  # while the caller still holds batch 1, batch 2 is being prepared
                assert second_started.wait(timeout=10)
            seen.append(item)
    assert seen == [1, 2]  # in order, and the error surfaces when its batch is reached


@pytest.mark.slow
def test_out_of_memory_reduces_the_batch_and_loses_nothing(split, tiny, tmp_path, monkeypatch, capsys):
    model, processor = tiny
    json_file, image_dir = split
    entries = evaluate.load_entries(json_file)
    items = [(e, e.images) for e in entries]
    paths = evaluate.resolve_all_images(entries, image_dir)
    sizes = []
    real = generate.generate_from_inputs

    def small_gpu(model, processor, inputs, settings, decoder=None):
        sizes.append(len(inputs["input_ids"]))
        if len(inputs["input_ids"]) > 2:  # what a batch too large for the GPU raises
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, processor, inputs, settings, decoder)

    monkeypatch.setattr(generate, "generate_from_inputs", small_gpu)
    out = tmp_path / "predictions.jsonl"
    identity = {"image_control": "none", "generation": {}, "model": "tiny", "adapter": None}
    settings = GenerationSettings(max_new_tokens=3, batch_size=4)
    generate.generate_predictions(model, processor, items, paths, out, identity, settings)
    assert sizes[0] == 4 and sizes[-1] <= 2  # smaller until it fits (accelerate decides by how much)
    assert [r["id"] for r in read_jsonl(out)] == [e.id for e in entries]  # each entry once, in order
    assert "out of GPU memory at batch size 4" in capsys.readouterr().out


@pytest.mark.slow
def test_generation_is_bounded_by_max_new_tokens(tiny, xray_paths, monkeypatch):
    model, processor = tiny
    lengths = []
    real_generate = model.generate

    def spy(**kwargs):
        out = real_generate(**kwargs)
        lengths.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(model, "generate", spy)
    generate_batch(model, processor, ["Describe.", "Report."], [[xray_paths[0]], [xray_paths[1]]],
                   GenerationSettings(max_new_tokens=5, batch_size=2, decoder="generate"))  # fmt: skip
    # The random tiny model never writes </s>, so it stops exactly at the bound (not the default 20).
    assert lengths == [5]


@pytest.mark.slow
def test_image_token_guard_fires(tiny, xray_paths, tokenizer_dir):
    """A tokenizer that does not know `<image>` turns it into plain text (the reference's bug): the
    prompt then holds no image tokens, and the batch is refused, naming the entry."""
    from transformers import LlamaTokenizerFast

    from rrg.generate.batch import assemble_batch

    _, processor = tiny
    image = Image.open(xray_paths[0]).convert("RGB")
    pixels = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    assemble_batch(processor.tokenizer, ["Describe."], [pixels], per_image=16)  # the right tokenizer passes
    plain = LlamaTokenizerFast.from_pretrained(str(tokenizer_dir), legacy=True)
    plain.pad_token = plain.unk_token
    with pytest.raises(ImageTokenError, match="x.json:3"):
        assemble_batch(plain, ["Describe."], [pixels], per_image=16, where=["x.json:3"])


def test_greedy_does_not_pass_temperature():
    assert "temperature" not in GenerationSettings(temperature=0.3).generate_kwargs()
    assert GenerationSettings(do_sample=True, temperature=0.3).generate_kwargs()["temperature"] == 0.3


# --------------------------------------------------------------------------- image controls


@pytest.mark.slow
def test_blank_control_is_uniform_mean_colour_of_same_size(xray_paths, tiny):
    _, processor = tiny
    real = Image.open(xray_paths[0]).convert("RGB")
    blank = blank_like(real, processor.image_processor.image_mean)
    assert blank.size == real.size
    pixels = np.asarray(blank)
    assert (pixels == pixels[0, 0]).all()
    assert tuple(pixels[0, 0]) == tuple(round(255 * m) for m in processor.image_processor.image_mean)
    assert not np.array_equal(pixels, np.asarray(real))


def test_shuffle_is_a_fixed_seed_derangement_over_studies():
    studies = [str(i) for i in range(50)]
    mapping = study_derangement(studies, seed=3)
    assert sorted(mapping) == sorted(mapping.values()) == sorted(studies)  # a permutation
    assert all(donor != study for study, donor in mapping.items())
    assert mapping == study_derangement(studies, seed=3)
    assert mapping != study_derangement(studies, seed=4)
    assert all(study_derangement(["a", "b"], seed=s) == {"a": "b", "b": "a"} for s in range(5))


def test_shuffled_images_come_from_another_study_with_same_view_count(split):
    from rrg.data.entries import load_entries

    entries = load_entries(split[0])
    images = shuffled_images(entries, seed=0)
    for entry in entries:
        assert len(images[entry.id]) == len(entry.images)
        assert not set(images[entry.id]) & set(entry.images)


# --------------------------------------------------------------------------- the eval scripts


@pytest.mark.slow
def test_eval_end_to_end_with_blank_control(split, tiny_model_dir, tmp_path, capsys):
    json_file, image_dir = split
    out = tmp_path / "run" / "predictions.jsonl"
    card = run_eval(
        eval_args(json_file, image_dir, tiny_model_dir, out, "--image_control", "blank")
    )

    lines = read_jsonl(out)
    assert [r["id"] for r in lines] == ["10", "11", "12", "13"]
    assert all(set(r) == LINE_KEYS for r in lines)
    assert lines[1]["images"] == [
        "./images/images_normalized/11_IM-0.png",
        "./images/images_normalized/11_IM-1.png",
    ]
    assert lines[0]["model"] == str(tiny_model_dir) and lines[0]["adapter"] is None
    assert lines[0]["generation"] == {
        "max_new_tokens": 6, "num_beams": 1, "do_sample": False, "temperature": 1.0, "seed": 0, "batch_size": 3,
        "cache_implementation": None, "liger": False, "decoder": "graphs",
    }  # fmt: skip
    assert lines[0]["reference"].startswith("Findings: lungs clear 0.")
    assert set(lines[0]["inputs"]) == {"split_sha256", "adapter_sha256", "images_sha256"}
    assert lines[0]["inputs"]["images_sha256"] != lines[1]["inputs"]["images_sha256"]  # each line its own
    blank_lines = read_jsonl(out.with_name("predictions.blank.jsonl"))
    assert [r["image_control"] for r in blank_lines] == ["blank"] * 4

    scores = json.loads((out.parent / "scores.json").read_text())
    assert scores == json.loads(json.dumps(card))
    assert set(scores["metrics"]["report"]) >= {"BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
    control = scores["image_control"]
    assert control["condition"] == "blank"
    bleu = scores["metrics"]["report"]["BLEU-1"] - control["metrics"]["report"]["BLEU-1"]
    assert control["delta"]["report"]["BLEU-1"] == pytest.approx(bleu)
    f1 = scores["clinical"]["summary"]["f1_micro_14"] - control["clinical"]["summary"]["f1_micro_14"]
    assert control["delta"]["clinical"]["f1_micro_14"] == pytest.approx(f1)
    assert scores["counts"]["lines"] == 4 and control["counts"]["lines"] == 4
    assert "image control: blank" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_after_a_kill_loses_and_duplicates_nothing(split, tiny_model_dir, tmp_path, fast_scoring):
    json_file, image_dir = split
    out = tmp_path / "predictions.jsonl"
    script = run_eval
    script(eval_args(json_file, image_dir, tiny_model_dir, out, "--limit", "3"))
    full = out.read_text().splitlines(keepends=True)
    # A killed run: two complete lines and half of the third, without its newline.
    out.write_text(full[0] + full[1] + full[2][: len(full[2]) // 2])

    with pytest.raises(SystemExit) as exit_info:  # without --resume: refuse to touch the file
        script(eval_args(json_file, image_dir, tiny_model_dir, out))
    assert exit_info.value.code == 1

    script(eval_args(json_file, image_dir, tiny_model_dir, out, "--resume"))
    ids = [r["id"] for r in read_jsonl(out)]
    assert sorted(ids) == ["10", "11", "12", "13"]  # all present, none twice
    # Greedy: the re-generated entry matches what the killed run had written.
    assert read_jsonl(out)[2]["prediction"] == json.loads(full[2])["prediction"]


@pytest.mark.slow
def test_missing_image_exits_before_model_loading(split, tiny_model_dir, tmp_path, monkeypatch, capsys):
    json_file, image_dir = split
    (image_dir / "12_IM-0.png").unlink()

    def must_not_load(config):
        raise AssertionError("the model was loaded before the images were checked")

    monkeypatch.setattr(evaluate, "load_for_eval", must_not_load)
    with pytest.raises(SystemExit) as exit_info:
        run_eval(eval_args(json_file, image_dir, tiny_model_dir, tmp_path / "p.jsonl"))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert f"{json_file}:3" in err and "12_IM-0.png" in err


@pytest.mark.slow
def test_malformed_json_line_names_file_and_line(split, tiny_model_dir, tmp_path, capsys):
    json_file, image_dir = split
    json_file.write_text(json_file.read_text() + '{"id": "14", "images": [\n')
    with pytest.raises(SystemExit):
        run_eval(eval_args(json_file, image_dir, tiny_model_dir, tmp_path / "p.jsonl"))
    assert f"{json_file}:5" in capsys.readouterr().err


@pytest.mark.slow
def test_empty_prediction_is_kept_and_counted(split, tiny_model_dir, tmp_path, monkeypatch):
    json_file, image_dir = split
    monkeypatch.setattr(
        generate,
        "generate_from_inputs",
        lambda model, processor, inputs, settings, decoder=None: [""] * len(inputs["input_ids"]),
    )
    out = tmp_path / "predictions.jsonl"
    card = run_eval(eval_args(json_file, image_dir, tiny_model_dir, out, "--limit", "2"))
    assert [r["prediction"] for r in read_jsonl(out)] == ["", ""]
    assert card["counts"]["empty_predictions"] == 2
    assert card["metrics"]["report"]["BLEU-1"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_lora_script_needs_and_records_the_adapter(split, tiny_model_dir, tmp_path, fast_scoring):
    from peft import LoraConfig, get_peft_model

    json_file, image_dir = split
    script = functools.partial(run_eval, require_adapter=True)  # eval/llava_lora.py
    with pytest.raises(SystemExit):
        script(eval_args(json_file, image_dir, tiny_model_dir, tmp_path / "p.jsonl"))

    torch.manual_seed(0)
    base = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir)
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=r".*language_model.*\.(q_proj|v_proj)"))
    lora.save_pretrained(tmp_path / "adapter")
    out = tmp_path / "lora" / "predictions.jsonl"
    script(
        eval_args(
            json_file,
            image_dir,
            tiny_model_dir,
            out,
            "--lora_path",
            str(tmp_path / "adapter"),
            "--limit",
            "2",
        )
    )
    lines = read_jsonl(out)
    assert [r["adapter"] for r in lines] == [str(tmp_path / "adapter")] * 2
    assert (out.parent / "scores.json").exists()


@pytest.mark.slow
def test_no_score_generates_every_line_and_leaves_scoring_out(split, tiny_model_dir, tmp_path, monkeypatch):
    import rrg.score.card

    def must_not_score(*args, **kwargs):
        raise AssertionError("--no_score scored")

    monkeypatch.setattr(rrg.score.card, "score_records", must_not_score)
    json_file, image_dir = split
    out = tmp_path / "p.jsonl"
    card = run_eval(eval_args(json_file, image_dir, tiny_model_dir, out, "--no_score"))
    assert card == {}
    ids = [r["id"] for r in read_jsonl(out)]
    assert ids == [json.loads(line)["id"] for line in json_file.read_text().splitlines()]
    assert not (tmp_path / "p.scores.json").exists()
