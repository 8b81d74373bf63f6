"""The output-folder lock: a second holder fails with one line naming the first one's pid."""

import multiprocessing as mp
import os

import pytest

from rrg.io import InputError
from rrg.lock import output_lock


def _hold(folder: str, ready, release) -> None:
    with output_lock(folder):
        ready.set()
        release.wait(30)


@pytest.mark.slow
def test_second_holder_is_refused_with_the_holders_pid(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(InputError, match=rf"pid {holder.pid}\b"), output_lock(tmp_path):
            pass
    finally:
        release.set()
        holder.join(30)
    with output_lock(tmp_path):  # released when the holder exits
        pass


@pytest.mark.slow
def test_lock_is_released_when_the_holder_dies(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    assert ready.wait(30)
    holder.kill()
    holder.join(30)
    with output_lock(tmp_path) as path:
        assert path.read_text().strip() == str(os.getpid())
