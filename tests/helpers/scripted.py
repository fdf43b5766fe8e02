"""A source that yields what a test scripts for it (changes and schema changes), for running the real
pipeline without a real source."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime

from replicator.model import Change, Op, Position, SchemaChange, TableId, TableSchema


class ScriptedSource:
    """A source that yields what it is given, like a DMS feed whose later files carry an extra column."""

    def __init__(self, schemas: Sequence[TableSchema]) -> None:
        self._schemas = list(schemas)
        self.script: list[Change | SchemaChange] = []
        self.acked: dict[TableId, Position] = {}

    def schemas(self) -> Sequence[TableSchema]:
        return self._schemas

    def read(self) -> Iterator[Change | SchemaChange]:
        script, self.script = self.script, []
        yield from script

    def ack(self, positions: Mapping[TableId, Position]) -> None:
        self.acked.update(positions)

    def close(self) -> None:
        pass


_pos = iter(range(1, 10_000))


def change(table: TableId, op: Op, *values: str | None) -> Change:
    return Change(table, op, values, Position(f"{next(_pos):08d}"), datetime(2024, 5, 1, tzinfo=UTC))
