"""rrg: radiology report generation with LLaVA-Med-v1.5-Mistral-7B + LoRA on IU X-Ray.

One subpackage per pipeline stage, in the order a run goes through them:
data (reports, splits, entries) -> model (load, processor, prompts, adapters, kernels) -> train (settings,
setup, step, optimizer, checkpoints) -> generate (batched reports, the eval run, the API) -> score (n-gram
metrics, METEOR, the card, clinical/) -> report (tables, cases, figures); bench holds the benchmarks.
cli, io and lock serve every stage. `from rrg import ReportGenerator` is the Python API.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import rrg` stays light (no torch/transformers import until the API is used).
    if name == "ReportGenerator":
        from rrg.generate.api import ReportGenerator

        return ReportGenerator
    raise AttributeError(f"module 'rrg' has no attribute {name!r}")
