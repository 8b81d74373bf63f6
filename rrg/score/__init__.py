"""Scoring: n-gram metrics, METEOR, the score card, legacy and R2Gen-compatible scores, baselines."""
