"""RadEval (jbdel/RadEval, `radeval` on PyPI) as an optional backend of the metric card.

RadEval cannot join our environment (its medspacy pins spaCy < 3.8; we need spaCy >= 3.8), so it lives in
its own virtual environment (`bash scripts/install_radeval.sh` makes `.venv-radeval/`) and is driven through
files: `RadEvalBackend.run` writes a JSON request (texts, metric names, options) to a temporary folder, runs
rrg/score/radeval_runner.py with that environment's Python, and reads a JSON response with RadEval's own corpus
figures and per-study scores per metric, or a structured error per metric. Nothing of RadEval is
re-implemented here: the card's "radeval" block holds RadEval's figures, the mean of its per-study scores,
and a 95% interval of that mean on the card's own study resamples.

Where a model is not cached and there is no network (HF_HUB_OFFLINE=1), the metric's error is one line
naming its model ids and how to fetch them; the other metrics still run, and the missing one is absent
from the card (never a zero).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rrg.io import InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNNER = Path(__file__).with_name("radeval_runner.py")
DEFAULT_VENV = REPO_ROOT / ".venv-radeval"
PYTHON_ENV = "RRG_RADEVAL_PYTHON"  # a RadEval environment's python, instead of .venv-radeval/bin/python
FORMAT_REQUEST = "rrg-radeval-request/1"
FORMAT_RESPONSE = "rrg-radeval-response/1"
# The same bound as METEOR's (rrg.score.meteor.METEOR_MAX_WORDS): ~4x the longest IU X-Ray report, so only a
# degenerate text is cut, and the block counts the cuts.
MAX_WORDS = 1000
RADEVAL_CACHE = "~/.cache/huggingface/hub"
CHEXBERT_CACHE = "~/.cache/chexbert"  # RadEval's f1chexbert keeps chexbert.pth here (appdirs user_cache_dir)
RADGRAPH_CACHE = "~/.cache/radgraph/0.1.18"  # and RadGraph's archives here


@dataclass(frozen=True)
class Model:
    """A file a RadEval metric loads: its Hugging Face repository, the file (None: the whole repository)
    and the cache RadEval reads it from."""

    repo: str
    filename: str | None = None
    cache: str = RADEVAL_CACHE

    def fetch_command(self) -> str:
        name = f" {self.filename}" if self.filename else ""
        cache = "" if self.cache == RADEVAL_CACHE else f" --cache-dir {self.cache}"
        return f"huggingface-cli download {self.repo}{name}{cache}"


@dataclass(frozen=True)
class Metric:
    """A RadEval metric as our card shows it: the models it loads (read from RadEval's code), the key of
    its headline figure, and that figure's column name."""

    models: tuple[Model, ...]
    headline: str
    column: str
    remote_code: bool = False


_RRG = "StanfordAIMI/RRG_scorers"
_CHEXBERT = (Model(_RRG, "chexbert.pth", CHEXBERT_CACHE), Model("bert-base-uncased"))
# RadEval 2.2's names; the model ids are those its adapters load (radeval/metrics/*/adapter.py).
METRICS: dict[str, Metric] = {
    "bleu": Metric((), "bleu", "BLEU (RadEval)"),
    "rouge": Metric((), "rougeL", "ROUGE-L (RadEval)"),
    "bertscore": Metric((Model("distilbert-base-uncased"),), "bertscore", "BERTScore (RadEval)"),
    "radcliq": Metric(
        (Model("distilroberta-base"), Model(_RRG, "radgraph.tar.gz", RADGRAPH_CACHE), *_CHEXBERT),
        "radcliq_v1",
        "RadCliQ-v1 (RadEval, lower is better)",
    ),
    "ratescore": Metric(
        (Model("Angelakeke/RaTE-NER-Deberta"), Model("FremyCompany/BioLORD-2023-C")),
        "ratescore",
        "RaTEScore (RadEval)",
    ),
    "radgraph": Metric(
        (Model(_RRG, "radgraph-xl.tar.gz", RADGRAPH_CACHE),), "radgraph_partial", "RadGraph partial (RadEval)"
    ),
    "f1chexbert": Metric(_CHEXBERT, "f1chexbert_5_micro_f1", "F1-5 micro, CheXbert (RadEval)"),
    "srrbert": Metric(
        (Model("StanfordAIMI/SRR-BERT-Leaves-with-Statuses"), Model("microsoft/BiomedVLP-CXR-BERT-general")),
        "srrbert_weighted_f1",
        "SRR-BERT weighted F1 (RadEval)",
    ),
    "green": Metric(
        (Model("StanfordAIMI/GREEN-radllama2-7b"),), "green", "GREEN (RadEval)", remote_code=True
    ),
}


def parse_metrics(text: str, trust_remote_code: bool = False) -> tuple[str, ...]:
    """'bertscore,radcliq' -> ("bertscore", "radcliq"); InputError naming the flag on an unknown, repeated
    or remote-code metric without its flag."""
    if not text.strip():
        if trust_remote_code:
            raise InputError("--radeval_trust_remote_code is used only with --radeval green")
        return ()
    names = tuple(n.strip() for n in text.split(","))
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise InputError(f"--radeval: unknown metric(s) {unknown}; RadEval's names: {','.join(METRICS)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"--radeval: metric(s) named twice: {repeated}")
    remote = [n for n in names if METRICS[n].remote_code]
    if remote and not trust_remote_code:
        raise InputError(
            f"--radeval {','.join(remote)} loads and runs remote code (trust_remote_code=True in RadEval): "
            "pass --radeval_trust_remote_code to allow it"
        )
    if trust_remote_code and not remote:
        raise InputError("--radeval_trust_remote_code is used only with --radeval green")
    return names


def bounded(text: str) -> tuple[str, bool]:
    """The text cut after MAX_WORDS words (whitespace kept inside), and whether it was cut."""
    words = text.split()
    if len(words) <= MAX_WORDS:
        return text, False
    return " ".join(words[:MAX_WORDS]), True


def missing_weights_line(metric: str, error: dict) -> str:
    """One line: the model ids the error named (else all the metric loads) and how to fetch every file
    the metric loads, so one trip to a machine with network is enough."""
    models = METRICS[metric].models
    named = [i for i in error.get("model_ids") or [] if any(m.repo == i for m in models)]
    ids = list(dict.fromkeys(named or [m.repo for m in models]))
    commands = "; ".join(f"`{m.fetch_command()}`" for m in models)
    return (
        f"radeval {metric}: model weights not found offline ({', '.join(ids)}): on a machine with network "
        f"run {commands}, then copy those cache folders to the same place here"
    )


def error_line(metric: str, error: dict) -> str:
    if error.get("kind") == "missing_weights":
        return missing_weights_line(metric, error)
    if error.get("kind") == "import":
        return f"radeval {metric}: RadEval did not import in its environment: {error.get('message', '')}"
    return f"radeval {metric}: {error.get('message', 'failed')}"


class RadEvalBackend:
    """Runs the named RadEval metrics on a corpus in RadEval's environment, through the file contract."""

    def __init__(
        self, metrics: Sequence[str], python: str | os.PathLike | None = None, trust_remote_code: bool = False
    ) -> None:
        self.metrics = tuple(metrics)
        self.trust_remote_code = trust_remote_code
        chosen = python or os.environ.get(PYTHON_ENV) or DEFAULT_VENV / "bin" / "python"
        self.python = Path(chosen)

    def check(self) -> None:
        """Fail before the slow part when RadEval's environment is not there."""
        if not self.python.is_file():
            raise InputError(
                f"--radeval: RadEval's Python {self.python} not found: make its environment with "
                f"`bash scripts/install_radeval.sh` (or point --radeval_python / ${PYTHON_ENV} at one)"
            )

    def request(self, hyps: Sequence[str], refs: Sequence[str]) -> dict:
        return {
            "format": FORMAT_REQUEST,
            "metrics": list(self.metrics),
            "hyps": list(hyps),
            "refs": list(refs),
            "options": {
                "trust_remote_code": self.trust_remote_code,
                "model_ids": {n: [m.repo for m in METRICS[n].models] for n in self.metrics},
            },
        }

    def run(self, hyps: Sequence[str], refs: Sequence[str]) -> dict:
        """RadEval's response for these texts (validated), or InputError when the runner itself failed."""
        self.check()
        with tempfile.TemporaryDirectory(prefix="rrg-radeval-") as folder:
            request_path = Path(folder) / "request.json"
            response_path = Path(folder) / "response.json"
            stderr_path = Path(folder) / "stderr.txt"
            request_path.write_text(json.dumps(self.request(hyps, refs)), encoding="utf-8")
            # -P: the runner's folder (rrg/, which holds this radeval.py) must not shadow the radeval package.
            # cwd: GREEN writes its outputs into the working folder; they stay in ours and go with it.
            command = [str(self.python), "-P", str(RUNNER), str(request_path), str(response_path)]
            with open(stderr_path, "wb") as stderr:
                try:
                    done = subprocess.run(command, cwd=folder, stdout=_progress(), stderr=stderr, check=False)
                except OSError as e:
                    raise InputError(f"--radeval: cannot run {self.python}: {e.strerror or e}") from None
            if done.returncode != 0 or not response_path.is_file():
                raise InputError(
                    f"--radeval: RadEval's runner ({self.python}) exited with code {done.returncode}: "
                    f"{last_line(stderr_path)}"
                )
            try:
                response = json.loads(response_path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise InputError(f"--radeval: RadEval's runner wrote an unreadable response: {e}") from None
        return check_response(response, self.metrics, len(hyps))

    def block(
        self, predictions: Sequence[str], references: Sequence[str], weights: np.ndarray | None
    ) -> dict:
        """The card's "radeval" block: RadEval's figures, per-study scores, their mean and its interval on
        the card's study resamples (weights: (resamples, studies) counts, or None), and one line per metric
        that did not run."""
        pairs = [bounded(p) for p in predictions]
        ref_pairs = [bounded(r) for r in references]
        response = self.run([p for p, _ in pairs], [r for r, _ in ref_pairs])
        out: dict = {
            "radeval_version": response.get("radeval_version"),
            "python": str(self.python),
            "metrics_requested": list(self.metrics),
            "studies": len(predictions),
            "texts_cut": sum(c for _, c in pairs) + sum(c for _, c in ref_pairs),
            "text": f"raw prediction vs the first reference, whole texts, each cut after {MAX_WORDS} words",
            "scores": {},
            "per_study": {},
            "mean": {},
            "errors": {},
        }
        if weights is not None:
            out["ci95"] = {}
        for name in self.metrics:
            result = response["metrics"][name]
            if "error" in result:
                out["errors"][name] = error_line(name, result["error"])
                print(out["errors"][name], file=sys.stderr)  # said now; the card and its printout keep it
                continue
            out["scores"][name] = result["corpus"]
            out["per_study"][name] = result["per_study"]
            out["mean"][name] = {}
            for key, values in result["per_study"].items():
                scores = np.asarray([math.nan if v is None else v for v in values], dtype=float)
                if not np.isfinite(scores).all():
                    continue  # a study without a score: no mean and no interval rather than a wrong one
                out["mean"][name][key] = float(scores.mean())
                if weights is not None:
                    out.setdefault("ci95", {}).setdefault(name, {})[key] = resampled_interval(scores, weights)
        out["notes"] = [
            "scores: RadEval's own corpus figures (its default output); mean: the mean of its per-study "
            "scores (its per_sample output); ci95: percentile interval of that mean over the card's study "
            "resamples. For bleu, f1chexbert and srrbert the corpus figure is not a per-study mean, so the "
            "interval is the per-study mean's, not the corpus figure's"
        ]
        return out


def _progress() -> int | None:
    """Where the runner's progress lines go: our stderr (stdout keeps the card), else inherited."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream without a descriptor
        return None


def resampled_interval(scores: np.ndarray, weights: np.ndarray) -> list[float]:
    """95% percentile interval of the mean per-study score over the given study resamples."""
    values = weights @ scores / weights.sum(axis=1)
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def last_line(path: Path, limit: int = 300) -> str:
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:limit] if lines else "(no error output)"


def _is_number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_response(response, metrics: Sequence[str], n: int) -> dict:
    """The runner's response, its shape checked: every metric answered, n scores per per-study list."""
    where = "--radeval: RadEval's runner response"
    if not isinstance(response, dict) or response.get("format") != FORMAT_RESPONSE:
        raise InputError(f"{where} is not {FORMAT_RESPONSE!r}")
    answered = response.get("metrics")
    if not isinstance(answered, dict) or set(answered) != set(metrics):
        got = sorted(answered) if isinstance(answered, dict) else answered
        raise InputError(f"{where} answers metrics {got}, asked {sorted(metrics)}")
    for name, result in answered.items():
        if not isinstance(result, dict):
            raise InputError(f"{where}: metric {name!r} is not an object")
        if "error" in result:
            if not isinstance(result["error"], dict):
                raise InputError(f"{where}: metric {name!r}: 'error' is not an object")
            continue
        corpus, per_study = result.get("corpus"), result.get("per_study")
        if not isinstance(corpus, dict) or not all(_is_number(v) for v in corpus.values()):
            raise InputError(f"{where}: metric {name!r}: 'corpus' must map keys to numbers")
        if not isinstance(per_study, dict):
            raise InputError(f"{where}: metric {name!r}: 'per_study' must be an object")
        for key, values in per_study.items():
            if not isinstance(values, list) or len(values) != n or not all(_is_number(v) for v in values):
                raise InputError(f"{where}: metric {name!r}: per_study.{key} must be {n} numbers")
    return response


def format_block(block: dict) -> str:
    """The card's radeval block as printed lines: one per figure, the error lines after."""
    lines = [f"RadEval {block.get('radeval_version') or ''} (raw text, {block['studies']} studies):"]
    for name, figures in block["scores"].items():
        for key, value in figures.items():
            mean = block["mean"].get(name, {}).get(key)
            ci = block.get("ci95", {}).get(name, {}).get(key)
            text = "-" if value is None else f"{value:.4f}"
            extra = f"  per-study mean {mean:.4f}" if mean is not None else ""
            extra += f" [{ci[0]:.3f}-{ci[1]:.3f}]" if ci else ""
            lines.append(f"  {key:<28}{text:>8}{extra}")
    lines.extend(f"  {line}" for line in block["errors"].values())
    return "\n".join(lines)


def read_block(path: str | os.PathLike) -> dict | None:
    """A card's "radeval" block (None when it has none), for tables and figures."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read the metric card: {e}") from None
    block = data.get("radeval") if isinstance(data, dict) else None
    if block is None:
        return None
    if not isinstance(block, dict) or not isinstance(block.get("scores"), dict):
        raise InputError(f"{path}: field 'radeval' must be an object with 'scores'")
    return block


def headline_cells(block: dict | None) -> dict[str, tuple[float | None, list[float] | None]]:
    """Column name -> (RadEval's headline figure, the interval of its per-study mean) per metric present."""
    cells = {}
    for name, figures in (block or {}).get("scores", {}).items():
        if name not in METRICS or not isinstance(figures, dict):
            continue
        key = METRICS[name].headline
        value, mean = figures.get(key), (block.get("mean") or {}).get(name, {}).get(key)
        ci = (block.get("ci95") or {}).get(name, {}).get(key)
        # An interval goes beside the figure only where the figure is the per-study mean (RadEval rounds its
        # figures to 4 decimals): BLEU's corpus score, say, is not, and the mean's interval would mislead.
        same = value is not None and mean is not None and abs(value - mean) <= 5.1e-5
        cells[METRICS[name].column] = (value, ci if same else None)
    return cells


COLUMNS = tuple(m.column for m in METRICS.values())
