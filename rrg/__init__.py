"""rrg: radiology report generation with LLaVA-Med-v1.5-Mistral-7B + LoRA on IU X-Ray.

Modules: data (reports table, splits, leak audit), download (Kaggle folder), entries (split-file
schema), prompts (template), processor (tokenizer/image processing), convert (original LLaVA-Med ->
HF Llava), model (loading, adapters), collate (samples -> batches), train (loss, loop pieces),
generate (batched reports), metrics (scores), tiny (small test models).
"""

__version__ = "0.1.0"
