"""A local store's listing while files go away: a file removed between the folder walk and its stat (a
merged batch removed while ``status`` lists the staging) is left out, not an error (the admin API's
``GET /tables`` failed on it while the daemon merged)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from replicator.storage import LocalStore
from replicator.storage import store as store_module


def test_a_file_removed_after_the_walk_saw_it_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    store.put("batches/t/kept.json", b"{}")
    walk = os.walk

    def walk_then_remove(top: str | os.PathLike[str]) -> Iterator[tuple[str, list[str], list[str]]]:
        for dirpath, dirs, files in walk(top):
            if files:
                yield dirpath, dirs, [*files, "merged.json"]  # seen by the walk, gone before its stat
            else:
                yield dirpath, dirs, files

    monkeypatch.setattr(store_module.os, "walk", walk_then_remove)
    assert [o.key for o in store.list("batches/")] == ["batches/t/kept.json"]
