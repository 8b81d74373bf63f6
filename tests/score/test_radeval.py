"""RadEval through its file contract (rrg/score/radeval.py -> rrg/score/radeval_runner.py), offline.

A stand-in "venv python" runs our real runner under this interpreter with a stand-in `radeval` package
first on its path, so the request, the runner's per-metric handling (per_sample after the aggregate, error
classification, the GREEN refusal) and the response are all exercised without RadEval installed. The
opt-in test at the end runs RadEval's real code when RRG_RADEVAL_PYTHON points at its environment.
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rrg.io import InputError
from rrg.score import radeval as backend
from rrg.score.card import percentile_interval, resample_weights, score_records
from rrg.score.rexrank_bleu import per_study as rexrank_per_study

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "eval" / "score.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # the scripts import this checkout's rrg

# The stand-in: "bleu" scores each study with ReXrank's per-study BLEU-2 (so its interval can be compared
# with the card's rexrank_bleu interval), "bertscore" fails as transformers does offline, "ratescore" fails
# otherwise. Its aggregate is the rounded mean, as RadEval's is.
STAND_IN = """
import numpy as np
from rrg.score.rexrank_bleu import per_study


class LocalEntryNotFoundError(Exception):
    pass


class RadEval:
    def __init__(self, metrics, show_progress=True, per_sample=False):
        (self.name,) = metrics
        self.per_sample = per_sample
        if self.name == "bertscore":
            try:
                raise LocalEntryNotFoundError("offline")
            except LocalEntryNotFoundError as e:
                raise OSError(
                    "We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find "
                    "them in the cached files. Checkout your internet connection for distilbert-base-uncased"
                ) from e
        if self.name == "ratescore":
            raise RuntimeError("CUDA error: out of memory")
        if self.name == "radgraph":  # radeval 2.2.1's vendored RadGraph imports its package's old name
            import importlib

            assert importlib.import_module("RadEval.helper") is importlib.import_module("radeval.helper")

    def __call__(self, refs, hyps):
        scores = per_study(hyps, refs)
        if self.per_sample:
            return {"bleu": scores.tolist(), "bleu_table": {"not": "per sample"}}
        return {"bleu": round(float(scores.mean()), 4), "label": "text"}
"""

RECORDS = [
    {"id": str(i), "prediction": p, "reference": r}
    for i, (p, r) in enumerate(
        [
            ("The heart is normal. The lungs are clear.", "The heart size is normal. The lungs are clear."),
            ("Cardiomegaly. Small effusion.", "Mild cardiomegaly with small bilateral pleural effusions."),
            ("No acute disease.", "No acute cardiopulmonary process."),
            ("Lungs are clear.", "The lungs are hyperinflated. No focal consolidation."),
            ("Normal chest.", "Normal chest x-ray. No pneumothorax."),
            ("The heart is enlarged.", "The heart is enlarged. Pulmonary edema."),
        ]
    )
]


def _executable(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def stand_in_python(tmp_path) -> Path:
    package = tmp_path / "site" / "radeval"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(STAND_IN, encoding="utf-8")
    (package / "helper.py").write_text("VALUE = 1\n", encoding="utf-8")
    path = f"{tmp_path / 'site'}{os.pathsep}{REPO}"
    return _executable(tmp_path / "python", f'#!/bin/sh\nPYTHONPATH="{path}" exec "{sys.executable}" "$@"\n')


def _score(python: Path, metrics: tuple[str, ...], bootstrap: int = 0, seed: int = 0) -> dict:
    return score_records(
        [dict(r) for r in RECORDS],
        bootstrap=bootstrap,
        seed=seed,
        labeler="none",
        radeval=backend.RadEvalBackend(metrics, python=python),
    )


def _block(python: Path, metrics: tuple[str, ...]) -> dict:
    """The radeval block alone (no n-gram scoring): what the runner-side tests look at."""
    return backend.RadEvalBackend(metrics, python=python).block(
        [r["prediction"] for r in RECORDS], [r["reference"] for r in RECORDS], None
    )


@pytest.mark.slow
def test_success_writes_radeval_figures_and_per_study_scores(stand_in_python):
    block = _block(stand_in_python, ("bleu",))
    expected = rexrank_per_study([r["prediction"] for r in RECORDS], [r["reference"] for r in RECORDS])
    assert block["per_study"]["bleu"] == {"bleu": pytest.approx(expected.tolist())}  # the table is left out
    assert block["scores"]["bleu"] == {"bleu": round(float(expected.mean()), 4)}  # "label" is not a number
    assert block["mean"]["bleu"]["bleu"] == pytest.approx(expected.mean())
    assert block["errors"] == {} and block["studies"] == len(RECORDS)


@pytest.mark.slow
def test_bootstrap_uses_the_cards_own_study_resamples(stand_in_python):
    card = _score(stand_in_python, ("bleu",), bootstrap=200, seed=7)
    # The stand-in's per-study scores are ReXrank's BLEU-2: on the same resamples both intervals are equal.
    assert card["radeval"]["ci95"]["bleu"]["bleu"] == pytest.approx(card["rexrank_bleu"]["ci95"])
    scores = np.asarray(card["radeval"]["per_study"]["bleu"]["bleu"])
    weights = resample_weights(len(RECORDS), 200, 7)
    assert card["radeval"]["ci95"]["bleu"]["bleu"] == pytest.approx(
        percentile_interval(weights @ scores / weights.sum(axis=1))
    )
    other = resample_weights(len(RECORDS), 200, 8)
    assert card["radeval"]["ci95"]["bleu"]["bleu"] != pytest.approx(
        percentile_interval(other @ scores / other.sum(axis=1))
    )


@pytest.mark.slow
def test_missing_weights_is_one_line_naming_the_model_id(stand_in_python, capsys):
    block = _block(stand_in_python, ("bleu", "bertscore"))
    line = block["errors"]["bertscore"]
    assert "\n" not in line and "Traceback" not in line
    assert "distilbert-base-uncased" in line and "huggingface-cli download distilbert-base-uncased" in line
    assert "bertscore" not in block["scores"] and "bertscore" not in block["mean"]  # absent, never a zero
    assert "bleu" in block["scores"]  # the other metric still ran
    assert line in capsys.readouterr().err


@pytest.mark.slow
def test_old_package_name_is_served_as_the_same_modules(stand_in_python):
    block = _block(stand_in_python, ("radgraph",))
    assert block["errors"] == {} and "bleu" in block["scores"]["radgraph"]


def test_other_metric_failure_is_one_line(stand_in_python):
    line = _block(stand_in_python, ("ratescore",))["errors"]["ratescore"]
    assert line == "radeval ratescore: RuntimeError: CUDA error: out of memory"


def test_runner_refuses_green_without_trust(stand_in_python):
    block = _block(stand_in_python, ("green",))
    assert "remote code" in block["errors"]["green"] and "green" not in block["scores"]


def test_crashing_runner_is_one_line(tmp_path):
    python = _executable(
        tmp_path / "python", "#!/bin/sh\necho 'loading'\necho 'Segmentation fault' >&2\nexit 139\n"
    )
    with pytest.raises(InputError) as caught:
        backend.RadEvalBackend(("bleu",), python=python).run(["a"], ["b"])
    message = str(caught.value)
    assert "exited with code 139" in message and "Segmentation fault" in message and "\n" not in message


def test_malformed_response_is_refused(tmp_path):
    # A runner that answers a per-study list one study short: the scorer must not pair scores with studies.
    body = textwrap.dedent(
        """\
        #!/bin/sh
        cat > "$4" <<'EOF'
        {"format": "rrg-radeval-response/1", "metrics": {"bleu": {"corpus": {"bleu": 0.5}, "per_study": {"bleu": [0.5]}}}}
        EOF
        """
    )
    python = _executable(tmp_path / "python", body)
    with pytest.raises(InputError, match=r"per_study.bleu must be 2 numbers"):
        backend.RadEvalBackend(("bleu",), python=python).run(["a", "b"], ["c", "d"])


def test_missing_environment_fails_before_scoring(tmp_path):
    with pytest.raises(InputError, match="install_radeval.sh"):
        backend.RadEvalBackend(("bleu",), python=tmp_path / "nope" / "python").check()


def test_texts_are_bounded(tmp_path):
    long = "effusion " * (backend.MAX_WORDS + 50)
    text, cut = backend.bounded(long)
    assert cut and len(text.split()) == backend.MAX_WORDS
    assert backend.bounded("short text") == ("short text", False)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--radeval", "bertscore,blue"], "unknown metric(s) ['blue']"),
        (["--radeval", "bleu,bleu"], "named twice"),
        (["--radeval", "green"], "--radeval_trust_remote_code"),
        (["--radeval", "bleu", "--radeval_trust_remote_code"], "only with --radeval green"),
    ],
)
def test_flag_is_validated_at_parse_time(tmp_path, args, words):
    preds = tmp_path / "preds.jsonl"
    preds.write_text(json.dumps(RECORDS[0]) + "\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(preds), *args], capture_output=True, text=True, timeout=300, env=ENV
    )
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr
    assert not preds.with_suffix(".scores.json").exists()


@pytest.mark.slow
def test_help_says_green_loads_remote_code():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=300, env=ENV
    )
    text = " ".join(result.stdout.split())  # argparse wraps the help
    assert "--radeval_trust_remote_code" in text and "LOADS AND RUNS REMOTE CODE" in text


@pytest.mark.slow
def test_score_command_end_to_end(tmp_path, stand_in_python):
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    out = tmp_path / "scores.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(preds), "--out", str(out), "--labeler", "none", "--bootstrap", "20",
         "--radeval", "bleu,bertscore", "--radeval_python", str(stand_in_python)],
        capture_output=True, text=True, timeout=600, env=ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    card = json.loads(out.read_text())
    assert set(card["radeval"]["scores"]) == {"bleu"} and "bertscore" in card["radeval"]["errors"]
    assert "RadEval" in result.stdout and "distilbert-base-uncased" in result.stdout
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------------
# Opt-in: RadEval's real code (RRG_RADEVAL_PYTHON = its environment's python), on its weight-free metrics.

# RadEval's tests/fixtures/regression_samples.py and expected_scores_cpu.json (jbdel/RadEval, commit e0a3909).
RADEVAL_REFS = [
    "No acute cardiopulmonary process.",
    "Mild cardiomegaly with small bilateral pleural effusions and basilar atelectasis.",
    "1. Left PICC tip appears to terminate in the distal left brachiocephalic vein."
    "2. Mild pulmonary vascular congestion.",
    "No definite acute cardiopulmonary process. "
    "Enlarged cardiac silhouette could be accentuated by patient's positioning.",
    "Increased mild pulmonary edema and left basal atelectasis.",
]
RADEVAL_HYPS = [
    "No acute cardiopulmonary process.",
    "Mildly enlarged cardiac silhouette with small pleural effusions and dependent bibasilar atelectasis.",
    "Relatively lower lung volumes with no focal airspace consolidation appreciated.",
    "Crowding of the pulmonary vasculature with possible minimal perihilar edema, but no overt pulmonary edema.",
    "No pleural effusions or pneumothoraces.",
]
RADEVAL_EXPECTED = {
    "default": {"bleu": 0.0826, "rouge1": 0.3224, "rouge2": 0.26, "rougeL": 0.3224},
    "per_sample": {
        "bleu": [0.9999999992291674, 3.50843969530069e-05, 5.893675610160288e-17, 7.432998183959223e-17,
                 1.6581659742139797e-16],
        "rouge1": [1.0, 0.5454545454545454, 0.0, 0.06666666666666667, 0.0],
        "rouge2": [1.0, 0.3, 0.0, 0.0, 0.0],
        "rougeL": [1.0, 0.5454545454545454, 0.0, 0.06666666666666667, 0.0],
    },
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get(backend.PYTHON_ENV), reason=f"{backend.PYTHON_ENV} not set (opt-in)")
def test_real_radeval_reproduces_its_own_fixture_values():
    records = [
        {"id": str(i), "prediction": h, "reference": r}
        for i, (h, r) in enumerate(zip(RADEVAL_HYPS, RADEVAL_REFS))
    ]
    card = score_records(
        records, labeler="none", bootstrap=10, radeval=backend.RadEvalBackend(("bleu", "rouge"))
    )
    block = card["radeval"]
    assert block["errors"] == {}
    scores = {**block["scores"]["bleu"], **block["scores"]["rouge"]}
    assert scores == RADEVAL_EXPECTED["default"]
    per_study = {**block["per_study"]["bleu"], **block["per_study"]["rouge"]}
    for key, values in RADEVAL_EXPECTED["per_sample"].items():
        assert per_study[key] == pytest.approx(values, rel=1e-9, abs=1e-12)


@pytest.mark.slow
def test_table_has_a_column_per_radeval_metric_present(tmp_path):
    from rrg.report import tables as make_tables
    from tests.helpers import assert_png, write_card

    path = write_card(tmp_path / "results/rexrank/lora/scores.json")
    card = json.loads(path.read_text())
    card["radeval"] = {
        "scores": {"bertscore": {"bertscore": 0.4321}, "bleu": {"bleu": 0.0826}},
        "mean": {"bertscore": {"bertscore": 0.43212}, "bleu": {"bleu": 0.2}},
        "ci95": {"bertscore": {"bertscore": [0.4, 0.46]}, "bleu": {"bleu": [0.15, 0.25]}},
        "errors": {"ratescore": "radeval ratescore: model weights not found offline (...)"},
    }
    path.write_text(json.dumps(card))
    plain = write_card(tmp_path / "results/other/scores.json")
    out = tmp_path / "table"
    make_tables.main(["--runs", f"{path}:With RadEval", f"{plain}:Without", "--out", str(out)])
    md = (out / "table.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Group"))
    assert "BERTScore (RadEval)" in header and "BLEU (RadEval)" in header
    assert "RaTEScore (RadEval)" not in header  # it did not run: no column of dashes
    row = next(line for line in md.splitlines() if "With RadEval" in line)
    assert "| 0.432 [0.400, 0.460] |" in row
    # BLEU's corpus figure is not the per-study mean: the mean's interval is not set beside it.
    assert "| 0.083 |" in row and "[0.150, 0.250]" not in row
    assert_png(out / "table.png")


def _tiny_distilbert_cache(home: Path) -> None:
    """A Hugging Face cache holding a tiny random DistilBERT under the id RadEval's BERTScore loads."""
    import torch
    from transformers import BertTokenizerFast, DistilBertConfig, DistilBertModel

    repo = home / "hub" / "models--distilbert-base-uncased"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    words = sorted(
        {w.strip(".,").lower() for r in RECORDS for t in (r["prediction"], r["reference"]) for w in t.split()}
    )
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        ".",
        ",",
        "-",
        *letters,
        *(f"##{c}" for c in letters),
        *words,
    ]
    (snapshot / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizerFast(
        vocab_file=str(snapshot / "vocab.txt"), do_lower_case=True, model_max_length=512
    )
    tokenizer.save_pretrained(snapshot)
    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=6, n_heads=2, hidden_dim=64)
    DistilBertModel(config).save_pretrained(snapshot)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get(backend.PYTHON_ENV), reason=f"{backend.PYTHON_ENV} not set (opt-in)")
def test_real_radeval_model_metric_on_a_tiny_cached_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    records = [dict(r) for r in RECORDS]
    missing = score_records(records, labeler="none", radeval=backend.RadEvalBackend(("bertscore",)))[
        "radeval"
    ]
    assert "not found offline (distilbert-base-uncased)" in missing["errors"]["bertscore"]
    assert missing["scores"] == {}

    _tiny_distilbert_cache(tmp_path / "hf")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    card = score_records(
        records, labeler="none", bootstrap=50, radeval=backend.RadEvalBackend(("bertscore",))
    )
    block = card["radeval"]
    assert block["errors"] == {}
    per_study = block["per_study"]["bertscore"]["bertscore"]
    assert len(per_study) == len(RECORDS) and all(math.isfinite(v) for v in per_study)
    # RadEval's BERTScore figure is the mean of its per-study F1 (rounded to 4 decimals).
    assert block["scores"]["bertscore"]["bertscore"] == pytest.approx(np.mean(per_study), abs=5.1e-5)
    weights = resample_weights(len(RECORDS), 50, 0)
    assert block["ci95"]["bertscore"]["bertscore"] == pytest.approx(
        percentile_interval(weights @ np.asarray(per_study) / weights.sum(axis=1))
    )
