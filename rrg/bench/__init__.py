"""Benchmarks: inputs, the reference recipe, our training and generation, diagnostics, Markdown."""
