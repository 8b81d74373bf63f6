"""Runs RadEval on one request file and writes one response file; executed by RadEval's own Python.

    .venv-radeval/bin/python rrg/score/radeval_runner.py request.json response.json

RadEval cannot share our environment (its medspacy pins spaCy < 3.8), so rrg.score.radeval runs this script
in RadEval's virtual environment. It imports only RadEval and the standard library, and nothing from
rrg. The request holds "metrics" (RadEval's names), "hyps", "refs" (one reference per study) and
"options" ({"trust_remote_code": bool, "model_ids": {metric: [model id, ...]}}). The response holds,
per metric, either {"corpus": {key: number}, "per_study": {key: [number per study]}} (RadEval's
aggregate and per_sample outputs of the same texts) or {"error": {"kind", "type", "message",
"model_ids"}}, where kind is "missing_weights" when a model could not be found offline. The exit code
is 0 whenever a response was written; anything else is a crash the caller reports.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import json
import math
import os
import sys

FORMAT_REQUEST = "rrg-radeval-request/1"
FORMAT_RESPONSE = "rrg-radeval-response/1"
# What huggingface_hub and transformers raise when a file is neither cached nor downloadable offline.
MISSING_TYPES = {
    "LocalEntryNotFoundError",
    "OfflineModeIsEnabled",
    "EntryNotFoundError",
    "RepositoryNotFoundError",
    "GatedRepoError",
}
# Run as a script, Python puts this file's folder (rrg/) first on sys.path, where rrg/score/radeval.py would
# shadow the radeval package; the caller passes -P, and this removes it again if someone did not.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
MISSING_WORDS = (
    "offline mode",
    "hf_hub_offline",
    "couldn't connect",
    "cannot find the requested files",
    "cached files",
    "local_files_only",
    "not found in the local cache",
    "resource punkt",
)


class OldPackageName(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves `RadEval.x` as the already imported `radeval.x` (the same module object).

    radeval 2.2.1 renamed its package from RadEval to radeval, but its vendored RadGraph still imports
    `from RadEval.metrics.radgraph._vendor...`, so radgraph and radcliq fail with "No module named
    'RadEval'". Serving the same objects (not a second copy) keeps RadGraph's class registry single.
    """

    OLD, NEW = "RadEval", "radeval"

    def find_spec(self, name, path=None, target=None):
        if name == self.OLD or name.startswith(self.OLD + "."):
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(self.NEW + spec.name[len(self.OLD) :])
        self._spec = module.__spec__  # the import system overwrites it with ours; put it back
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec


def _chain(error: BaseException) -> list[BaseException]:
    seen, out = set(), []
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        out.append(error)
        error = error.__cause__ or error.__context__
    return out


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def describe_error(error: BaseException, model_ids: list[str]) -> dict:
    """A structured error: missing weights (naming the model ids its messages name) or anything else."""
    chain = _chain(error)
    text = " ".join(f"{type(e).__name__}: {e}" for e in chain)
    missing = any(type(e).__name__ in MISSING_TYPES for e in chain) or any(
        w in text.lower() for w in MISSING_WORDS
    )
    named = [m for m in model_ids if m in text]
    return {
        "kind": "missing_weights" if missing else "error",
        "type": type(error).__name__,
        "message": _one_line(f"{type(error).__name__}: {error}"),
        "model_ids": named or list(model_ids),
    }


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if hasattr(value, "item"):  # a numpy or torch scalar
        value = value.item()
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def split_outputs(corpus: dict, per_sample: dict, n: int) -> dict:
    """RadEval's two outputs for one metric: its numeric aggregates, and its per-sample lists of length n."""
    figures = {}
    for key, value in corpus.items():
        number = _number(value)
        if number is not None:
            figures[key] = _finite_or_none(number)
    per_study = {}
    for key, values in per_sample.items():
        if hasattr(values, "tolist"):
            values = values.tolist()
        if not isinstance(values, list) or len(values) != n:
            continue  # label tables and other non-per-sample outputs
        numbers = [_number(v) for v in values]
        if all(v is not None for v in numbers):
            per_study[key] = [_finite_or_none(v) for v in numbers]
    return {"corpus": figures, "per_study": per_study}


def run_metric(radeval_class, name: str, refs: list[str], hyps: list[str]) -> dict:
    """One metric, its models loaded once: RadEval's aggregate and its per-sample scores of the same texts."""
    evaluator = radeval_class(metrics=[name], show_progress=False)
    corpus = evaluator(refs=refs, hyps=hyps)
    evaluator.per_sample = True
    per_sample = evaluator(refs=refs, hyps=hyps)
    return split_outputs(corpus, per_sample, len(hyps))


def answer(request: dict) -> dict:
    if request.get("format") != FORMAT_REQUEST:
        raise ValueError(f"request format {request.get('format')!r}, expected {FORMAT_REQUEST!r}")
    hyps, refs, metrics = request["hyps"], request["refs"], request["metrics"]
    options = request.get("options", {})
    model_ids = options.get("model_ids", {})
    response = {"format": FORMAT_RESPONSE, "radeval_version": None, "metrics": {}}
    try:
        from importlib.metadata import version

        response["radeval_version"] = version("radeval")
    except Exception:  # noqa: BLE001 (a version is a label; its absence is not an error)
        pass
    if not any(isinstance(f, OldPackageName) for f in sys.meta_path):
        # First: otherwise the path finder would load a second copy of RadEval.x from radeval's folder.
        sys.meta_path.insert(0, OldPackageName())
    try:
        from radeval import RadEval
    except Exception as error:  # noqa: BLE001 (reported per metric, as one line)
        failure = {"error": {**describe_error(error, []), "kind": "import"}}
        response["metrics"] = {name: failure for name in metrics}
        return response
    for name in metrics:
        print(f"radeval: {name} on {len(hyps)} studies", flush=True)
        if name == "green" and not options.get("trust_remote_code"):
            response["metrics"][name] = {
                "error": {
                    "kind": "refused",
                    "type": "",
                    "message": "green loads remote code; the request did not allow it",
                    "model_ids": model_ids.get(name, []),
                }
            }
            continue
        try:
            response["metrics"][name] = run_metric(RadEval, name, refs, hyps)
        except Exception as error:  # noqa: BLE001 (one metric's failure is reported; the others still run)
            response["metrics"][name] = {"error": describe_error(error, model_ids.get(name, []))}
    return response


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: radeval_runner.py REQUEST.json RESPONSE.json", file=sys.stderr)
        return 2
    request_path, response_path = argv
    with open(request_path, encoding="utf-8") as f:
        request = json.load(f)
    response = answer(request)
    tmp = response_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(response, f)
    os.replace(tmp, response_path)  # the caller never reads half a response
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
