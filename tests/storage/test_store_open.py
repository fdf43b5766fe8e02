"""``LocalStore.open``: what it refuses besides links out of the root (issue 17, point 4), quickly and with
a clear error: a missing file, a dangling link inside the root, a FIFO (which must not hang the open), a
folder, and a file below a linked folder that leaves the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from replicator.storage import LocalStore, OutsideRoot


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "root")
    store.put("a/x.csv", b"x")
    return store


def test_a_missing_file_or_a_dangling_link_inside_the_root_is_a_missing_key(store: LocalStore) -> None:
    with pytest.raises(KeyError):
        store.get("a/none.csv")
    (store.root / "a" / "gone.csv").symlink_to(store.root / "a" / "none.csv")
    with pytest.raises(KeyError):
        store.get("a/gone.csv")


def test_a_fifo_or_a_folder_is_refused_not_waited_on(store: LocalStore) -> None:
    os.mkfifo(store.root / "a" / "pipe.csv")  # nobody writes it: a blocking open would never return
    with pytest.raises(OSError, match="not a regular file"):
        store.get("a/pipe.csv")
    with pytest.raises(OSError, match="not a regular file"):
        store.get("a")


def test_a_file_below_a_folder_link_that_leaves_the_root_is_refused(
    store: LocalStore, tmp_path: Path
) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "y.csv").write_text("outside")
    (store.root / "b").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(OutsideRoot, match="outside"):
        store.get("b/y.csv")
    with store.open("a/x.csv") as f:
        assert f.read() == b"x"
