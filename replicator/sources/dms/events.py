"""Around the DMS listing: S3 event notifications as hints, and folders of tables we do not replicate.

Listing stays the source of truth. S3 events delivered through SQS can be late, duplicated or out of order,
so they only tell the pipeline to look sooner (``EventHints.wait``); they never decide what is read.
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from replicator.model import TableId
from replicator.storage import ObjectStore, Quarantine, key_problem

log = structlog.get_logger(__name__)

STATE_PREFIX = "_state/dms/"


class EventHints:
    """Long-polls an SQS queue fed by S3 ``ObjectCreated`` notifications of the DMS bucket."""

    def __init__(self, queue_url: str, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("sqs")
        self.queue_url = queue_url
        self.client = client

    def wait(self, timeout_seconds: float) -> set[str]:
        """Wait up to ``timeout_seconds`` (at most 20) for notifications; return the object keys they name.

        Messages are deleted once read: a lost hint only delays a file until the next regular listing.
        Errors are logged and read as "no hint", so a broken queue never stops replication.
        """
        try:
            resp = self.client.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                WaitTimeSeconds=max(0, min(20, int(timeout_seconds))),
            )  # fmt: skip
        except Exception as exc:
            log.warning("dms_event_queue_failed", error=f"{type(exc).__name__}: {exc}")
            return set()
        keys: set[str] = set()
        for msg in resp.get("Messages", []):
            keys.update(_keys(msg.get("Body", "")))
            self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=msg["ReceiptHandle"])
        return keys


def _keys(body: str) -> list[str]:
    try:
        doc = json.loads(body)
        if "Message" in doc:  # delivered through SNS
            doc = json.loads(doc["Message"])
        return [r["s3"]["object"]["key"] for r in doc.get("Records", [])]
    except (ValueError, KeyError, TypeError):
        return []  # test events and foreign messages are no hint


def quarantine_unknown_tables(
    store: ObjectStore, state: ObjectStore, quarantine: Quarantine, known: set[TableId], skip: set[str]
) -> None:
    """Note each file of a folder that is no table of ours, once (cursor per folder in the state)."""
    after: str | None = None
    while True:
        first = next(iter(store.list("", start_after=after)), None)
        if first is None:
            return
        parts = first.key.split("/")
        if (parts[0].startswith("_") or parts[0] in skip) and len(parts) > 1:
            after = parts[0] + "0"  # our own state/quarantine or the CdcPath sharing the root: skip it
            continue
        if len(parts) < 3:
            after = first.key  # a stray key outside any table folder
            continue
        schema, name = parts[0], parts[1]
        after = f"{schema}/{name}0"  # "/" < "0": the first key past this folder
        if TableId(schema, name) in known:
            continue
        problem = key_problem(f"{schema}/{name}")
        if problem is not None:  # no table can have this name (the catalog refuses it): never a key of ours
            log.warning("dms_path_like_folder", folder=f"{schema}/{name}", detail=problem, todo="not read")
            continue
        _quarantine_folder(store, state, quarantine, schema, name)


def _quarantine_folder(
    store: ObjectStore, state: ObjectStore, quarantine: Quarantine, schema: str, name: str
) -> None:
    # One cursor per phase: full-load names sort after CDC names, so one cursor over both would miss CDC
    # files written after the full load.
    key = f"{STATE_PREFIX}_unknown/{schema}.{name}.json"
    try:
        through: dict[str, str] = json.loads(state.get(key))["through"]
    except KeyError:
        through = {}
    prefix = f"{schema}/{name}/"
    moved = dict(through)
    for phase, sub in (("1", "LOAD"), ("2", "")):
        for info in store.list(prefix + sub, start_after=through.get(phase)):
            if (phase == "2") == info.key[len(prefix) :].startswith("LOAD"):
                continue
            quarantine.put(
                table=f"{schema}.{name}",
                source=store.uri(info.key),
                reason="unknown_table",
                detail=f"{info.key}: {schema}.{name} is not in the schemas folder; add it to replicate",
            )
            moved[phase] = info.key
    if moved != through:
        state.put(key, json.dumps({"version": 1, "through": moved}).encode())
