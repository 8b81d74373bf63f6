"""Imported first by every entry script: the known third-party warnings (rrg.cli.KNOWN_NOISE_*) are
filtered before the libraries that print them are loaded."""

from rrg.cli import quiet_known_warnings

quiet_known_warnings()
