"""One run per output folder: an exclusive lock held for the whole run.

Two trainings (or evals) into one folder would interleave their logs and clobber each other's adapters,
checkpoints and predictions while both exit 0. `output_lock(folder)` takes an exclusive `fcntl.flock` on
`folder/.lock` and records the holder's pid there; a second run fails at once with one line naming that
pid. The kernel drops the lock when the process dies, however it dies, so a killed run never leaves a
stale lock behind (the file stays; its pid line is only information).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from rrg.io import InputError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if missing) while the block runs.

    Raises InputError naming the folder and the holder's pid when another process holds it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise InputError(
                f"{folder}: another {what} is using this folder (pid {holder}); wait for it or choose another"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock
