"""S3 event notifications through SQS make a new DMS file queryable at once, not at the next poll (issue
16): between rounds the loop long-polls the queue instead of sleeping ``poll_interval_seconds``."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

from replicator.config import BatchConfig, PipelineConfig
from replicator.model import Column, TableId, TableSchema
from replicator.pipeline import Pipeline
from replicator.sources.dms import DmsOptions, DmsSource
from replicator.stage import Stager
from replicator.storage import LocalStore, Quarantine, S3Settings, S3Store
from replicator.warehouses import DuckDBWarehouse
from tests.helpers.dms import put

T = TableId("dbo", "t")
SCHEMA = TableSchema(T, (Column.of("id", "bigint"), Column.of("name", "text")), ("id",))
POLL = 8.0  # seconds between rounds without news: far longer than the hint path may take


def test_a_file_announced_on_the_queue_is_merged_long_before_the_next_poll(
    s3_settings: S3Settings, s3_bucket: str, tmp_path: Path
) -> None:
    import boto3

    sqs = boto3.client("sqs", endpoint_url=s3_settings.endpoint_url, region_name="us-east-1")
    url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    data = S3Store(s3_bucket, "dms-out", s3_settings)
    staging = LocalStore(tmp_path / "staging")
    source = DmsSource(
        data, {T: SCHEMA}, state=staging, quarantine=Quarantine(staging),
        options=DmsOptions(sqs_queue_url=url), sqs_client=sqs,
    )  # fmt: skip
    warehouse = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    cursor = warehouse.cursor()
    pipeline = Pipeline(
        source=source, stager=Stager(staging, Quarantine(staging)), warehouse=warehouse, schemas={T: SCHEMA},
        batch=BatchConfig(max_age_seconds=0.2), settings=PipelineConfig(poll_interval_seconds=POLL),
    )  # fmt: skip
    stop = threading.Event()
    loop = threading.Thread(target=pipeline.run, args=(stop,), daemon=True)
    loop.start()
    try:
        time.sleep(1.5)  # the first round found nothing: the loop now waits for news (or POLL seconds)
        put(data, T, "20241029-113401000.csv", "I,1,one\n")
        event = {"Records": [{"s3": {"object": {"key": "dms-out/dbo/t/20241029-113401000.csv"}}}]}
        announced = time.monotonic()
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
        rows: list[tuple[object, ...]] = []
        while time.monotonic() - announced < POLL - 2 and not rows:
            try:
                rows = cursor.execute('SELECT id, name FROM "dbo"."t"').fetchall()
            except Exception:  # the table is created by the first round: retry
                rows = []
            time.sleep(0.05)
        waited = time.monotonic() - announced
    finally:
        stop.set()
        loop.join(30)
        warehouse.close()
        source.close()
    assert rows == [(1, "one")], f"not merged {waited:.1f} s after the event (poll interval {POLL} s)"
    assert waited < 3.0, waited
