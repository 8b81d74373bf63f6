"""Prompt text and the LLaVA-Med v1.5 (Mistral) template: where a sample's text is built.

LLaVA-Med v1.5 was trained with the `mistral_instruct` conversation:

    <s>[INST] <image>\n{question} [/INST] {answer}</s>

Training (rrg.train.collate), generation (rrg.generate.batch), the Python API and the tokenizer's chat template
all render prompts with the functions below, so they cannot drift apart.
"""

from __future__ import annotations

IMAGE_TOKEN = "<image>"

# The question of the default ("clean") protocol. It holds nothing taken from the report itself.
REPORT_QUESTION = (
    "You are a radiologist. Write the report for this chest X-ray: "
    "a Findings section, then an Impression section."
)

# The reference paper's prompt, kept verbatim for its `reference` protocol. It is followed by the
# study's `Problems` (labels extracted from the report: a leak) and its indication, glued together.
REFERENCE_PROMPT_PREFIX = (
    "You are a radiologist. Analyze the given chest X-ray based on the provided Problems and Indication. "
    "Describe the key Findings observed in the image that correspond to these inputs. Finally, provide an "
    "Impression summarizing the overall diagnostic conclusion. Chief Complaint: "
)


# What the reference's eval scripts append to every question at generation time (`question =
# report['prompt'] + " The Findings ..."` in eval/llava_lora.py and eval/llava.py of
# H1963977384/A-Fine-Tuned-LLaVA-Med-Framework-for-Automatic-Chest-X-ray-Report-Generation). Its
# training prompts do not have it, so it is added at generation only, and only to reference entries.
REFERENCE_EVAL_INSTRUCTION = (
    " The Findings and Impression sections must be logically consistent. A finding cannot both be present "
    "and absent. State each finding only once. Do not create looping or repetitive text."
)


# The question of region-structured targets (report2json --regions): one line per region, as WangLab-OA
# trained its model to write, then the impression.
REGION_QUESTION = (
    "You are a radiologist. Write the findings for this chest X-ray region by region, one line each: "
    "Lung:, Heart:, Mediastinal:, Bone:, Others: (leave a region empty when the image shows nothing "
    "there), then an Impression: line."
)


def context_text(
    indication: str | None = None, comparison: str | None = None, prior_report: str | None = None
) -> str:
    """The one context template, train and eval alike: "Indication: ... Comparison: ... Prior report: ...",
    each part only when given (ReXrank's context field reads "Indication: ... Comparison: ...")."""
    parts = (("Indication", indication), ("Comparison", comparison), ("Prior report", prior_report))
    return " ".join(f"{name}: {text.strip()}" for name, text in parts if text and text.strip())


def _with_context(question: str, *context: str | None) -> str:
    text = context_text(*context)
    return f"{question} {text}" if text else question


def region_question(
    indication: str | None = None, comparison: str | None = None, prior_report: str | None = None
) -> str:
    """The region-structured question, with the context appended when given."""
    return _with_context(REGION_QUESTION, indication, comparison, prior_report)


# The questions of eval/ask.py's tasks. "report" is the training prompt (report_question), so a
# fine-tuned adapter is asked what it learnt; "differential" asks for a ranked list, as CXR-LLaVA's
# users do; "question" passes the user's question as written.
DIFFERENTIAL_QUESTION = (
    "You are a radiologist. List the differential diagnosis for this chest X-ray, most likely first, "
    "each with the image findings that support it."
)
TASKS = ("report", "differential", "question")


def task_question(task: str, question: str | None = None, indication: str | None = None) -> str:
    """The question of an eval/ask.py task (the indication is appended for report and differential)."""
    if task == "report":
        return report_question(indication)
    if task == "differential":
        return f"{DIFFERENTIAL_QUESTION} Indication: {indication}" if indication else DIFFERENTIAL_QUESTION
    if task == "question":
        if not question or not question.strip():
            raise ValueError("the question task needs a question")
        return question.strip()
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


def report_question(
    indication: str | None = None, comparison: str | None = None, prior_report: str | None = None
) -> str:
    """The clean protocol's question, with the context (context_text) appended when given."""
    return _with_context(REPORT_QUESTION, indication, comparison, prior_report)


def format_response(findings: str, impression: str) -> str:
    """The target text the model learns to write (and the reference it is scored against)."""
    return f"Findings: {findings} Impression: {impression}"


def render_prompt(question: str, n_images: int = 1) -> str:
    """`[INST] <image>\\n{question} [/INST]`, one `<image>\\n` per view, without the BOS token."""
    if IMAGE_TOKEN in question:
        raise ValueError(
            f"the question text must not contain {IMAGE_TOKEN!r}: images are placed by render_prompt"
        )
    return "[INST] " + f"{IMAGE_TOKEN}\n" * n_images + question + " [/INST]"


# The same template for `tokenizer.apply_chat_template` / `processor.apply_chat_template` (vLLM,
# other tools). tests/model/test_prompts.py checks it renders exactly what render_prompt renders.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set text = message['content'] -%}{%- set n_images = 0 -%}"
    "{%- else -%}"
    "{%- set text = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}"
    "{%- set n_images = message['content'] | selectattr('type', 'equalto', 'image') | list | length -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '[INST] ' + '<image>\\n' * n_images + text + ' [/INST]' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- ' ' + text + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)
