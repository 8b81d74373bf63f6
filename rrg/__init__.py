"""rrg: radiology report generation with LLaVA-Med-v1.5-Mistral-7B + LoRA on IU X-Ray.

Modules: data (reports table, splits, leak audit), download (Kaggle folder), entries (split-file
schema), prompts (template), processor (tokenizer/image processing), convert (original LLaVA-Med ->
HF Llava), model (loading, adapters), adapters (reference adapter remapping), collate (samples ->
batches), train (loss, loop pieces), generate (batched reports), api (ReportGenerator), metrics,
sections and legacy_metrics (scores), results (tables and figures), tiny (small test models).
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import rrg` stays light (no torch/transformers import until the API is used).
    if name == "ReportGenerator":
        from .api import ReportGenerator

        return ReportGenerator
    raise AttributeError(f"module 'rrg' has no attribute {name!r}")
