"""What ``replicator status`` prints is readable (issue 14's papercuts): the changes applied named so,
positions in words, times with their zone, lines of at most 120 characters, the view's mode without nested
parentheses, and a stop with its file, row, since and what to do."""

from __future__ import annotations

from replicator.ops import status
from replicator.ops.stops import from_source
from replicator.views import ViewStatus

STOP = {
    "reason": "csv_syntax", "file": "2/20261206-1404475229.csv", "row": 18,
    "since": "2026-12-06T14:05:00+00:00",
    "source": "s3://a-rather-long-bucket-name/with/a/deep/prefix/dbo/payments/20261206-1404475229.csv",
    "detail": "CSV cannot be parsed: " + "x" * 150,
}  # fmt: skip


def _row(**changes: object) -> status.TableStatus:
    base: dict[str, object] = {
        "table": "dbo.insurance_claims_with_a_long_name", "state": "active",
        "staged_through": "2/20261206-1404475229.csv 0000000018",
        "applied_through": "2/20261206-1404475229.csv 0000000018", "backlog_batches": 3, "backlog_rows": 1200,
        "applied_batches": 40, "applied_changes": 703, "last_commit_time": "2026-12-06T14:04:47.123456+00:00",
        "last_applied_at": "2026-12-06T14:04:48+00:00", "lag_seconds": 12.5,
    }  # fmt: skip
    return status.TableStatus(**{**base, **changes})  # type: ignore[arg-type]


def test_the_status_text_names_changes_applied_reads_positions_and_zones_and_fits_120_columns() -> None:
    stop = from_source("dms", "dbo.payments", STOP).to_dict()
    text = status.to_text([_row(), _row(table="dbo.payments", state="stopped", stopped=stop)])
    lines = text.splitlines()
    assert all(len(line) <= 120 for line in lines), [len(line) for line in lines]
    assert "changes applied" in lines[0] and "applied rows" not in text
    assert "cdc 20261206-1404475229.csv row 18" in text and "0000000018" not in text
    assert "2026-12-06 14:04:47Z" in text
    assert any(line.startswith("dbo.payments ") and " STOPPED " in line for line in lines)
    assert (
        "STOPPED dbo.payments: csv_syntax at cdc 20261206-1404475229.csv row 18 since 2026-12-06 14:05:00Z"
        in text
    )
    assert "file: s3://a-rather-long-bucket-name" in text and "replicator retry dbo.payments" in text


def test_the_views_text_has_no_nested_parentheses_and_fits_120_columns() -> None:
    views = [
        ViewStatus("reporting.ar_aging", "concurrent", "at most every 60 s", "2026-12-06T14:00:00+00:00", 3.0,
                   "mutable function (its value changes without data changing)", None),
        ViewStatus("reporting.daily_cash_collected", "incremental", "on change", None, 0.0, None, "x" * 200),
    ]  # fmt: skip
    text = status.views_to_text(views)
    assert all(len(line) <= 120 for line in text.splitlines())
    for line in text.splitlines():
        depth = 0
        for c in line:
            depth += {"(": 1, ")": -1}.get(c, 0)
            assert depth <= 1, line
    assert "reporting.ar_aging is concurrent because mutable function" in text
