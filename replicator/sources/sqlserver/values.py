"""SQL Server source values: positions (see ``replicator.sources.sqlserver.source``), pymssql values as wire
text, commit times."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, tzinfo
from datetime import time as dtime
from decimal import Decimal

from replicator.model import Op, Position

ZERO = bytes(10)
OPS = {1: Op.DELETE, 2: Op.INSERT, 4: Op.UPDATE}  # __$operation -> Op (3, an update's old image: none)


def encode_position(lsn: bytes, seqval: bytes, ordinal: int) -> Position:
    return Position(f"{lsn.hex()}:{seqval.hex()}:{ordinal:012x}")


def decode_position(position: str) -> tuple[bytes, bytes, int]:
    lsn, seqval, ordinal = position.split(":")
    return bytes.fromhex(lsn), bytes.fromhex(seqval), int(ordinal, 16)


def next_seqval(seqval: bytes) -> bytes:
    """The smallest binary(10) above ``seqval`` (binary values compare as big-endian numbers)."""
    return (int.from_bytes(seqval, "big") + 1).to_bytes(10, "big")


def to_wire(value: object) -> str | None:
    """A pymssql value as the wire text ``replicator.values.types.text_to_arrow`` parses."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):  # bit; before int, bool is an int
        return "1" if value else "0"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date | dtime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return "\\x" + bytes(value).hex()
    if isinstance(value, int | float | uuid.UUID):
        return str(value)
    return str(value)


def commit_time(when: object, zone: tzinfo) -> datetime | None:
    """A commit time read from the server (naive: in the server's ``zone``) in UTC; None if not a datetime."""
    if not isinstance(when, datetime):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return when.astimezone(UTC)
