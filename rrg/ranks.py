"""Decisions taken on the main process of a multi-process run and shared with every rank.

A check (a folder's lock, the earlier lines of a run) runs on the main process only; when it fails
there, every rank must leave with status 1 at once, the main process printing the one line. Without
this the other ranks wait in a collective the main process never reaches, then die with a
RuntimeError (and torchrun with a ChildFailedError) that hides the line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")


def main_process_decides(state: Any, decide: Callable[[], R]) -> R:
    """Run `decide` on the main process only and hand its result to every rank.

    `state` is an accelerate Accelerator or PartialState. An error there stops every rank: the main
    process raises it (an InputError is one line), the others exit with status 1 without repeating it.
    """
    result, error = None, None
    if state.is_main_process:
        try:
            result = decide()
        except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks are told
            error = e
    message = f"{type(error).__name__}: {error}" if error else None
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        shared = [result, message]
        broadcast_object_list(shared)
        result, message = shared
    if error is not None:
        raise error
    if message is not None:
        raise SystemExit(1)
    return result
