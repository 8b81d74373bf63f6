"""rrg.io: atomic writes leave no temporary file and give files the permissions any written file gets."""

import os

from rrg.io import atomic_write_json


def test_atomic_write_uses_the_umask_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "card.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "card.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]
