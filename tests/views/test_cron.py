"""A view's ``refresh: schedule <cron>``: croniter steps it; errors name the schedule and what is wrong."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from replicator.views.graph import Cron, RefreshPolicy, ViewError


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("61 * * * *", "schedule '61 * * * *' is not a valid cron expression: "
                       "[61 * * * *] is not acceptable, out of range"),
        ("*/0 * * * *", "schedule '*/0 * * * *' is not a valid cron expression: "
                        "[*/0 * * * *] step '0' in field 0 is not acceptable"),
        ("0 0 30 2 *", "schedule '0 0 30 2 *' never fires (no date matches it)"),
        ("0 0 * *", "schedule '0 0 * *' needs 5 fields: minute hour day month weekday"),
        ("0 0 0 * * *", "schedule '0 0 0 * * *' needs 5 fields: minute hour day month weekday"),
    ],
)  # fmt: skip
def test_a_bad_schedule_is_refused_with_what_is_wrong(schedule: str, message: str) -> None:
    with pytest.raises(ViewError) as caught:
        RefreshPolicy.parse(f"schedule {schedule}")
    assert str(caught.value) == message


def test_a_schedule_is_due_once_a_fire_time_has_passed_since_the_last_refresh() -> None:
    policy = RefreshPolicy.parse("schedule */15 * * * *")
    assert not policy.due(last_refresh=at("2024-03-04T10:15:00"), now=at("2024-03-04T10:29:59"))
    assert policy.due(last_refresh=at("2024-03-04T10:15:00"), now=at("2024-03-04T10:30:00"))
    assert policy.due(last_refresh=at("2023-01-01T00:00:00"), now=at("2024-03-04T10:00:30"))


def test_a_one_value_range_is_that_value_not_the_whole_field() -> None:
    # croniter 7 alone reads "9-9" as "*"; Cron writes it as "9"
    cron = Cron.parse("0 9-9 * * *")
    assert not cron.fired_between(at("2024-03-04T00:30:00"), at("2024-03-04T08:59:00"))
    assert cron.fired_between(at("2024-03-04T00:30:00"), at("2024-03-04T09:00:00"))
    assert Cron.parse("0 1,21-21/5 * * *") == Cron.parse("0 1,21 * * *")


def test_day_of_month_and_weekday_must_both_match() -> None:
    cron = Cron.parse("0 0 13 * 5")  # Friday the 13th, not every 13th and every Friday
    assert not cron.fired_between(at("2024-09-05T12:00:00"), at("2024-09-12T12:00:00"))  # Fri 6th
    assert cron.fired_between(at("2024-09-12T12:00:00"), at("2024-09-13T00:00:00"))  # Fri 13th
