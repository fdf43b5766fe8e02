"""``replicator check``: validate the config and reach the source, staging and warehouse, without a trace.

Each check prints ``ok`` or ``FAIL`` with what is wrong. Nothing is created: a local source folder that does
not exist is a failure (a mistyped path must not pass as an empty feed), a staging folder or DuckDB file that
does not exist yet is reported as created on the first run (after checking its parent is writable), and the
staging probe object is written beside the staged batches and removed again.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

from replicator import app as app_mod
from replicator.config import Config, ConfigError, resolve
from replicator.storage import open_store

OK, FAILED, CONFIG_ERROR = 0, 1, 2


def check(cfg: Config) -> int:
    """Run every check; exit 2 if a configuration check failed, else 1 if any check failed, else 0."""
    codes: list[int] = []

    def report(what: str, fn: Callable[[], str]) -> None:
        try:
            detail = fn()
        except ConfigError as exc:
            codes.append(CONFIG_ERROR)
            print(f"FAIL  {what}: {exc}")
        except Exception as exc:
            codes.append(FAILED)
            print(f"FAIL  {what}: {type(exc).__name__}: {exc}")
        else:
            print(f"ok    {what}{f': {detail}' if detail else ''}")

    report("config", lambda: f"source={cfg.source.kind} warehouse={cfg.warehouse.kind}")
    report("schemas", lambda: f"{len(app_mod.load_schemas(cfg))} tables")
    if cfg.source.kind == "dms":
        report("source", lambda: _dms_source(cfg))
    elif cfg.source.kind == "postgres":
        report("source", lambda: _postgres_source(cfg))
    report("staging", lambda: _staging(cfg))
    report("warehouse", lambda: _warehouse(cfg))
    return max(codes, default=OK)


def _dms_source(cfg: Config) -> str:
    location = resolve(cfg, cfg.source.path)  # with bucket_folder joined by the config
    if not location.startswith("s3://"):
        folder = Path(location)
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise ConfigError(f"source.path: {folder} {what} (the folder AWS DMS writes to)")
    store = open_store(location, app_mod.s3_settings(cfg))
    n = sum(1 for _ in zip(range(1000), store.list(""), strict=False))
    return f"{store.url} ({n}{'+' if n == 1000 else ''} objects)"


def _postgres_source(cfg: Config) -> str:
    """Each shard's tables, publication and slot (one shard unless ``source.postgres.shards``)."""
    from replicator.sources.postgres import check_source

    schemas = app_mod.load_schemas(cfg)
    parts = [
        check_source(app_mod.shard_config(cfg, k), {t: schemas[t] for t in tables})
        for k, tables in app_mod.shards(cfg, schemas).items()
    ]
    return " | ".join(parts)


def _staging(cfg: Config) -> str:
    location = resolve(cfg, cfg.staging.path)
    if not location.startswith("s3://"):
        folder = Path(location)
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"staging.path: {folder} is not a folder")
        if not folder.exists():
            _writable_parent(folder)
            return f"{folder} does not exist yet; it is created on the first run"
    store = open_store(location, app_mod.s3_settings(cfg))
    # At the top of the store, not in a folder of its own: a local store would keep the folder.
    key = f".check-{uuid.uuid4().hex}"
    store.put(key, b"probe")
    try:
        if store.get(key) != b"probe":
            raise RuntimeError("read back a different value")
    finally:
        store.delete(key)
    return f"{store.url} (write, read, delete)"


def _warehouse(cfg: Config) -> str:
    if cfg.warehouse.kind == "duckdb":
        path = Path(resolve(cfg, cfg.warehouse.path))
        if not path.exists():
            _writable_parent(path)
            return f"duckdb file {path} does not exist yet; it is created on the first run"
    wh = app_mod.open_warehouse(cfg, read_only=True)
    try:
        return f"{wh.name} ({len(wh.table_states())} tables with applied batches)"
    finally:
        wh.close()


def _writable_parent(path: Path) -> None:
    """Fail unless the first existing folder above ``path`` lets the first run create it."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot create {path}: {parent} is not writable")
