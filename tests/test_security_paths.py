"""Issue 17, point 4: sources stay in their roots.

A file (or folder) link in a local DMS folder that leads outside it is refused, never read: the file is set
aside in the quarantine with a clear reason and none of its bytes reach staging, the warehouse or the log.
Schema and table names that are path-like (``..``, ``.``, with ``/`` or ``\\``) are refused when the
``schemas/`` folder is read, and path-like object keys of a DMS feed (S3 allows ``..`` segments and empty
ones) are quarantined as bad file names instead of being read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pytest

from replicator.model import Column, TableId, TableSchema
from replicator.schema import CatalogError, load_tables
from replicator.sources.dms import DmsOptions
from replicator.storage import LocalStore, S3Settings, S3Store
from tests.helpers.daemon import Feed, daemon_config
from tests.helpers.dms import pipeline_round, put
from tests.helpers.support import run_cli

MARKER = "Outsider-7c1f0b"  # a name that exists only in the file outside the root
OUTSIDE_ROW = (
    f"I,2024-03-05 09:00:00.000000,999,1,{MARKER},{MARKER},1990-01-01,{MARKER.lower()}@mail.example,"
    f"(555) 555-0000,NULL,1,NULL,2024-03-05 09:00:00.000000,2024-03-05 09:00:00.000000\n"
)


def _everything_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.parametrize("link", ["file", "folder"])
def test_a_link_that_leaves_the_dms_folder_is_refused_and_never_read(tmp_path: Path, link: str) -> None:
    feed = Feed(tmp_path / "feed", seed=46, flushes=1)
    feed.release(1)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "20240305-0900000000.csv").write_text(OUTSIDE_ROW)
    patients = feed.live / "dbo" / "patients"
    if link == "file":
        (patients / "20240305-0900000000.csv").symlink_to(outside / "20240305-0900000000.csv")
    else:  # the whole table folder is a link: every file in it resolves outside
        for f in patients.iterdir():
            os.replace(f, outside / f.name)
        patients.rmdir()
        patients.symlink_to(outside, target_is_directory=True)
    cfg = daemon_config(tmp_path / "r.toml", source=feed.live, port=0)
    out = run_cli("run", "--once", "-c", str(cfg))
    assert out.returncode in (0, 1), out.stderr

    notes = [json.loads(p.read_text()) for p in (tmp_path / "stage" / "_quarantine").rglob("*.json")]
    refused = [n for n in notes if n["reason"] == "outside_root"]
    assert refused, notes
    assert all("outside" in n["detail"] and "not read" in n["detail"] for n in refused), refused
    assert MARKER.encode() not in _everything_under(tmp_path / "stage")
    assert MARKER not in out.stderr
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        names = con.execute('SELECT first_name FROM "dbo"."patients"').fetchall()
        practices = con.execute('SELECT count(*) FROM "dbo"."practices"').fetchone()
    finally:
        con.close()
    assert (MARKER,) not in names
    assert practices is not None and practices[0] > 0, "the other tables must go on"
    assert '"reason": "outside_root"' in out.stderr  # the table stopped, saying why


def test_the_local_store_reads_links_inside_its_root_and_refuses_the_others(tmp_path: Path) -> None:
    from replicator.storage import OutsideRoot

    root = tmp_path / "root"
    store = LocalStore(root)
    store.put("a/real.csv", b"inside")
    (root / "a" / "inside.csv").symlink_to(root / "a" / "real.csv")
    (tmp_path / "secret").write_text("outside")
    (root / "a" / "outside.csv").symlink_to(tmp_path / "secret")
    (root / "a" / "dangling.csv").symlink_to(tmp_path / "nothing")
    assert store.get("a/inside.csv") == b"inside"
    with pytest.raises(OutsideRoot, match="outside"):
        store.get("a/outside.csv")
    with pytest.raises(OutsideRoot):
        store.download("a/outside.csv", tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    assert [o.key for o in store.list("a/")] == [
        "a/dangling.csv",
        "a/inside.csv",
        "a/outside.csv",
        "a/real.csv",
    ]


def test_a_file_swapped_for_an_outside_link_after_the_listing_is_refused(tmp_path: Path) -> None:
    """The listing saw a plain file; by the time it is read it is a link out of the root."""
    from replicator.storage import OutsideRoot

    root = tmp_path / "root"
    store = LocalStore(root)
    store.put("a/x.csv", b"inside")
    (tmp_path / "secret").write_text(MARKER)
    assert [o.key for o in store.list("a/")] == ["a/x.csv"]
    _swap_for_link(root / "a" / "x.csv", tmp_path / "secret")
    with pytest.raises(OutsideRoot, match="outside"):
        store.get("a/x.csv")


def _swap_for_link(path: Path, target: Path) -> None:
    """Replace ``path`` by a link to ``target`` in one step, as an attacker would (rename over it)."""
    tmp = path.with_name(".swap-" + path.name)
    tmp.symlink_to(target)
    os.replace(tmp, path)


@pytest.mark.parametrize("kind", ["plain file", "link inside the root"])
def test_a_swap_right_after_the_check_still_never_reads_outside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """The race a check on the path cannot win: the file (or the file a link inside the root leads to) is
    swapped for a link out of the root right after the store first resolves a path, i.e. between any
    check of the path and its open. What is read is never the outside file: the open descriptor itself
    is checked, so it is refused or it is the file that was there."""
    from replicator.storage import OutsideRoot

    root = tmp_path / "root"
    store = LocalStore(root)
    store.put("a/real.csv", b"inside")
    if kind == "link inside the root":
        (root / "a" / "x.csv").symlink_to(root / "a" / "real.csv")
    else:
        store.put("a/x.csv", b"inside")
    victim = root / "a" / ("real.csv" if kind == "link inside the root" else "x.csv")
    (tmp_path / "secret").write_text(MARKER)
    resolve = Path.resolve
    swapped: list[Path] = []

    def resolve_then_swap(self: Path, strict: bool = False) -> Path:
        real = resolve(self, strict=strict)
        if not swapped:
            _swap_for_link(victim, tmp_path / "secret")
            swapped.append(self)
        return real

    monkeypatch.setattr(Path, "resolve", resolve_then_swap)
    try:
        data = store.get("a/x.csv")
    except OutsideRoot:
        data = None
    assert swapped, "the store resolved no path: the race was not staged"
    assert data in (None, b"inside"), "a file outside the root was read"


class _SwapAfterListing(LocalStore):
    """A DMS folder where an attacker swaps one listed file for a link out of it right after each listing."""

    def __init__(self, root: Path, victim: str, target: Path) -> None:
        super().__init__(root)
        self.victim, self.target = victim, target

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[Any]:
        found = list(super().list(prefix, start_after=start_after))
        if any(o.key == self.victim for o in found) and not (self.root / self.victim).is_symlink():
            _swap_for_link(self.root / self.victim, self.target)
        yield from found


def test_the_dms_source_refuses_a_file_swapped_for_an_outside_link_after_listing(tmp_path: Path) -> None:
    (tmp_path / "outside.csv").write_text(f"I,9,{MARKER}\n")
    store = _SwapAfterListing(tmp_path / "feed", "dbo/t/20240101-0000000002.csv", tmp_path / "outside.csv")
    put(store, T, "LOAD00000001.csv", "1,one\n")
    put(store, T, "20240101-0000000002.csv", "I,2,two\n")
    put(store, T, "20240101-0000000003.csv", "I,3,three\n")
    source = pipeline_round(store, SCHEMAS, tmp_path, DmsOptions(bad_input_policy="quarantine"))
    notes = [json.loads(p.read_text()) for p in (tmp_path / "staging" / "_quarantine").rglob("*.json")]
    assert [n["reason"] for n in notes] == ["outside_root"], notes
    assert "not read" in notes[0]["detail"]
    assert MARKER.encode() not in _everything_under(tmp_path / "staging")
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        assert con.execute('SELECT id, v FROM "dbo"."t" ORDER BY id').fetchall() == [(1, "one"), (3, "three")]
    finally:
        con.close()
    assert source.problems() == []


def test_a_dms_folder_that_is_itself_a_link_is_read(tmp_path: Path) -> None:
    """Only links that leave the root are refused: a root reached through a link (a mounted volume linked
    into place) and links between its own files are read."""
    real = tmp_path / "volume" / "feed"
    real.mkdir(parents=True)
    (tmp_path / "feed").symlink_to(real, target_is_directory=True)
    store = LocalStore(tmp_path / "feed")
    put(store, T, "LOAD00000001.csv", "1,one\n")
    (real / "two.txt").write_text("I,2,two\n")
    (real / "dbo" / "t" / "20240101-0000000002.csv").symlink_to(real / "two.txt")
    source = pipeline_round(store, SCHEMAS, tmp_path, DmsOptions())
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        assert con.execute('SELECT id, v FROM "dbo"."t" ORDER BY id').fetchall() == [(1, "one"), (2, "two")]
    finally:
        con.close()
    assert source.problems() == []


@pytest.mark.parametrize(
    ("schema", "name"),
    [("..", "patients"), ("dbo", ".."), ("dbo", "."), ("dbo", "a/b"), ("dbo", "..\\x"), ("../x", "t")],
)
def test_path_like_schema_and_table_names_are_refused(tmp_path: Path, schema: str, name: str) -> None:
    tables = tmp_path / "schemas" / "tables"
    tables.mkdir(parents=True)
    head = f"schema = {json.dumps(schema)}\nname = {json.dumps(name)}\n"
    (tables / "t.toml").write_text(head + "primary_key = ['id']\n[columns]\nid = 'bigint'\n")
    with pytest.raises(CatalogError, match="path"):
        load_tables(tmp_path / "schemas")


T = TableId("dbo", "t")
SCHEMAS = {T: TableSchema(T, (Column.of("id", "bigint", nullable=False), Column.of("v", "text")), ("id",))}


def test_path_like_object_keys_in_a_dms_feed_are_quarantined_not_read(
    tmp_path: Path, s3_settings: S3Settings, s3_bucket: str
) -> None:
    store = S3Store(s3_bucket, "feed", s3_settings)
    put(store, T, "LOAD00000001.csv", "1,one\n")
    client = boto3.client("s3", endpoint_url=s3_settings.endpoint_url, region_name="us-east-1")
    for key in (
        "dbo/t/../t/20240101-0000000001.csv",
        "dbo/t//20240101-0000000002.csv",
        "dbo/t/./20240101-0000000003.csv",
    ):
        client.put_object(Bucket=s3_bucket, Key=f"feed/{key}", Body=f"I,9,{MARKER}\n".encode())
    put(store, T, "20240101-0000000009.csv", "I,2,two\n")
    # Folders of no table of ours are noted in the quarantine by folder name, unless the name is a path.
    client.put_object(Bucket=s3_bucket, Key="feed/.//20240101-0000000001.csv", Body=MARKER.encode())
    source = pipeline_round(store, SCHEMAS, tmp_path, DmsOptions(bad_input_policy="quarantine"))
    notes = [json.loads(p.read_text()) for p in (tmp_path / "staging" / "_quarantine").rglob("*.json")]
    assert sorted(n["reason"] for n in notes) == ["bad_file_name"] * 3, notes
    assert all("path" in n["detail"] for n in notes)
    assert MARKER.encode() not in _everything_under(tmp_path / "staging")
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        assert con.execute('SELECT id, v FROM "dbo"."t" ORDER BY id').fetchall() == [(1, "one"), (2, "two")]
    finally:
        con.close()
    assert source.problems() == []
