"""Shards: a source's tables split into groups that different tasks can own (``replicator/ops/shares.py``).

A PostgreSQL replication slot is read by one connection at a time, so with ``source.postgres.shards = N``
the tables are split into N shards, each with its own publication and slot; a task owns whole shards. A
table's shard is a stable hash of its *group* (the tables a view reads together stay in one group, so one
task maintains the view), so adding a table never moves the others. ``ShardedSource`` reads the shards a
task owns as one source: each table belongs to exactly one part, so acknowledgements, resyncs and stops go
to that part alone.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

from replicator.model import Change, ChangeChunk, Position, SchemaChange, TableId, TableSchema
from replicator.sources.base import Drainable, Resyncable, Source, Stoppable, Streaming


def shard_of(group: str, shards: int) -> int:
    """The shard (0..shards-1) of a table group, by its name: stable across runs, hosts and versions."""
    return zlib.crc32(group.encode()) % shards if shards > 1 else 0


def table_groups(tables: Collection[TableId], reads: Iterable[Collection[TableId]]) -> dict[TableId, str]:
    """Each table's group name: tables read together (each of ``reads``: the base tables of one view) are
    joined, transitively; a group is named by its first table. Tables no view joins are groups of one."""
    parent = {t: t for t in tables}

    def root(t: TableId) -> TableId:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    for together in reads:
        members = [t for t in together if t in parent]
        for other in members[1:]:
            a, b = root(members[0]), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {t: str(root(t)) for t in tables}


class ShardedSource:
    """Several sources of disjoint tables read as one: each ``read`` reads every part in turn."""

    def __init__(self, parts: Sequence[Source]) -> None:
        self.parts = list(parts)
        self._owner: dict[TableId, Source] = {}
        for part in self.parts:
            for schema in part.schemas():
                self._owner[schema.table] = part
        self.waits_in_read = any(isinstance(p, Streaming) and p.waits_in_read for p in self.parts)

    def _part(self, table: TableId) -> Source:
        part = self._owner.get(table)
        if part is None:  # a table added since: ask the parts again
            for p in self.parts:
                for schema in p.schemas():
                    self._owner[schema.table] = p
            part = self._owner[table]
        return part

    def schemas(self) -> Sequence[TableSchema]:
        return [s for p in self.parts for s in p.schemas()]

    def read(self) -> Iterator[Change | SchemaChange | ChangeChunk]:
        for part in self.parts:
            yield from part.read()

    def ack(self, positions: Mapping[TableId, Position]) -> None:
        split: dict[int, dict[TableId, Position]] = {}
        for table, position in positions.items():
            split.setdefault(id(self._part(table)), {})[table] = position
        for part in self.parts:
            if id(part) in split:
                part.ack(split[id(part)])

    def close(self) -> None:
        for part in self.parts:
            part.close()

    # -- optional capabilities: each goes to the part holding the table ---------------------------------

    def resync_refusal(self, table: TableId) -> str | None:
        refusal = getattr(self._part(table), "resync_refusal", None)
        return refusal(table) if refusal is not None else None

    def resync(self, table: TableId) -> None:
        part = self._part(table)
        if not isinstance(part, Resyncable):
            raise TypeError(f"the source of {table} cannot resync")
        part.resync(table)

    def stop_table(self, table: TableId, *, reason: str, position: Position, detail: str) -> bool:
        part = self._part(table)
        if not isinstance(part, Stoppable):
            return False
        return part.stop_table(table, reason=reason, position=position, detail=detail)

    def resume(self, table: TableId | None, decision: str | None) -> None:
        targets = self.parts if table is None else [self._part(table)]
        for part in targets:
            resume = getattr(part, "resume", None)
            if resume is not None:
                resume(table, decision)

    def problems(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for part in self.parts:
            problems = getattr(part, "problems", None)
            if problems is not None:
                out.extend(problems())
        return out

    def mark_drain_point(self) -> None:
        for part in self.parts:
            if isinstance(part, Drainable):
                part.mark_drain_point()

    def drained(self) -> bool:
        return all(p.drained() for p in self.parts if isinstance(p, Drainable))

    def wait_for_news(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(seconds)  # parts that stream wait in their reads
