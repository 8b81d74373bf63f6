"""Reporting: result files for tables and figures, per-study cases, loss curves, the case browser."""
