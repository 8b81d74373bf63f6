"""The prompt is LLaVA-Med v1.5's mistral_instruct template, token for token, whichever way it is built.

The token ids are checked against LLaVA's own `tokenizer_image_token`, re-enacted here with the raw
SentencePiece model: each text chunk between `<image>` placeholders is encoded separately (so each
gets SentencePiece's dummy-prefix `▁`), BOS first, `</s>` as id 2.
"""

from __future__ import annotations

import pytest
import sentencepiece

from rrg.model.processor import build_processor, build_tokenizer
from rrg.model.prompts import format_response, render_prompt, report_question

QUESTION = report_question("Chest pain.")
ANSWER = format_response("The lungs are clear.", "No acute disease.")


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return build_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def original_ids(tokenizer_dir):
    """Token ids LLaVA-Med's own code gives a prompt (llava.mm_utils.tokenizer_image_token)."""
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))

    def encode(text: str) -> list[int]:
        eos = text.endswith("</s>")
        chunks = [sp.encode(chunk) for chunk in text.removesuffix("</s>").split("<image>")]
        ids = [1] + chunks[0]
        for chunk in chunks[1:]:
            ids += [32000] + chunk
        return ids + [2] * eos

    return encode


def messages(n_images: int, answer: str | None = ANSWER) -> list[dict]:
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": QUESTION}]
    turns = [{"role": "user", "content": content}]
    if answer is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return turns


def template_ids(tokenizer, turns, **kwargs) -> list[int]:
    out = tokenizer.apply_chat_template(turns, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"])


@pytest.mark.parametrize("n_images", [1, 2, 3])
def test_training_prompt_matches_template(tokenizer, original_ids, n_images):
    expected = "<s>[INST] " + "<image>\n" * n_images + f"{QUESTION} [/INST] {ANSWER}</s>"
    rendered = tokenizer.bos_token + render_prompt(QUESTION, n_images) + " " + ANSWER + tokenizer.eos_token
    assert rendered == expected
    assert tokenizer.apply_chat_template(messages(n_images), tokenize=False) == expected

    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert ids == original_ids(render_prompt(QUESTION, n_images) + " " + ANSWER + "</s>")
    assert ids == template_ids(tokenizer, messages(n_images))
    assert ids[0] == 1 and ids.count(1) == 1  # one BOS, not two
    assert ids[-1] == 2 and ids.count(2) == 1  # `</s>` ends the answer
    assert ids.count(32000) == n_images  # `<image>` is one special token, not text pieces
    # the prompt alone (BOS added by the tokenizer) is a token prefix of prompt + answer: the answer's
    # labels start right after it, with no merge across the boundary
    prompt_ids = tokenizer(render_prompt(QUESTION, n_images))["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids


def test_generation_prompt_matches_template(tokenizer):
    expected = "<s>[INST] <image>\n" + QUESTION + " [/INST]"
    assert tokenizer.apply_chat_template(messages(1, answer=None), tokenize=False) == expected
    assert tokenizer(render_prompt(QUESTION))["input_ids"] == template_ids(
        tokenizer, messages(1, answer=None)
    )


def test_processor_template_is_the_same(tokenizer):
    processor = build_processor(tokenizer)
    assert processor.apply_chat_template(messages(2), tokenize=False) == tokenizer.apply_chat_template(
        messages(2), tokenize=False
    )


def test_image_token_in_question_is_rejected():
    with pytest.raises(ValueError):
        render_prompt("look at <image> please")
