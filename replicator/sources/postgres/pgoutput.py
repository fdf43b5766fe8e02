"""pgoutput, PostgreSQL's logical replication output plugin: bytes in, messages out. No I/O here.

Covers protocol versions 1 and 2 (streamed in-progress transactions), in the text format: Begin, Commit,
Origin, Relation, Type, Insert, Update (with old key or old tuple), Delete, Truncate, logical Message, and
Stream Start/Stop/Commit/Abort. The format is documented in the PostgreSQL manual, "Logical Replication
Message Formats".

Inside a streamed block (between Stream Start and Stream Stop) the data messages carry the xid of their
(sub)transaction before their own fields, so the decoder keeps that one bit of state; otherwise it is a
pure function of the bytes. Values stay wire text (``str``), ``None`` for NULL; columns the server did not
send (unchanged TOAST values) are listed by index in ``TupleData.unchanged`` and hold ``None``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

REPLICA_IDENTITY = {"d": "default", "n": "nothing", "f": "full", "i": "index"}


class ProtocolError(ValueError):
    """The bytes are not a pgoutput message this decoder understands (names the message and the offset)."""


def pg_time(micros: int) -> datetime:
    """PostgreSQL's timestamps on the wire: microseconds since 2000-01-01 UTC."""
    return _PG_EPOCH + timedelta(microseconds=micros)


def lsn_text(lsn: int) -> str:
    """``0x16B3748`` -> ``"0/16B3748"``, PostgreSQL's own notation."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


@dataclass(frozen=True, slots=True)
class TupleData:
    values: tuple[str | None, ...]
    unchanged: tuple[int, ...] = ()  # indexes of unchanged TOAST columns (value not sent)


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # LSN of the commit record: known up front, so positions can be built while streaming
    commit_time: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # the position after the commit record: what a consumer confirms as flushed
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    commit_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class RelationColumn:
    name: str
    type_oid: int
    type_modifier: int
    key: bool  # part of the replica identity


@dataclass(frozen=True, slots=True)
class Relation:
    relation_id: int
    namespace: str
    name: str
    replica_identity: str  # default | nothing | full | index
    columns: tuple[RelationColumn, ...]
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Type:
    type_oid: int
    namespace: str
    name: str
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Insert:
    relation_id: int
    new: TupleData
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Update:
    relation_id: int
    new: TupleData
    old: TupleData | None = None  # the old key ('K') or the whole old row ('O'), when the server sent one
    old_is_key: bool = False
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    relation_id: int
    old: TupleData
    old_is_key: bool
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class Truncate:
    relation_ids: tuple[int, ...]
    cascade: bool
    restart_identity: bool
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes
    xid: int | None = None


@dataclass(frozen=True, slots=True)
class StreamStart:
    xid: int
    first_segment: bool


@dataclass(frozen=True, slots=True)
class StreamStop:
    pass


@dataclass(frozen=True, slots=True)
class StreamCommit:
    xid: int
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class StreamAbort:
    xid: int
    subxid: int


Message = (
    Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | LogicalMessage
    | StreamStart | StreamStop | StreamCommit | StreamAbort
)  # fmt: skip


def _string(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(0, pos)
    return data[pos:end].decode(), end + 1


def decode_tuple(data: bytes, pos: int) -> tuple[TupleData, int]:
    """TupleData at ``pos`` -> (tuple, position after it). The hot path: keep it lean."""
    (n,) = _I16.unpack_from(data, pos)
    pos += 2
    values: list[str | None] = []
    append = values.append
    unchanged: list[int] = []
    unpack_len = _I32.unpack_from
    for i in range(n):
        kind = data[pos]
        pos += 1
        if kind == 116:  # 't' text
            (length,) = unpack_len(data, pos)
            pos += 4
            append(data[pos : pos + length].decode())
            pos += length
        elif kind == 110:  # 'n' null
            append(None)
        elif kind == 117:  # 'u' unchanged TOAST value: not sent
            append(None)
            unchanged.append(i)
        elif kind == 98:  # 'b' binary: only when the subscriber asks for it, which we never do
            raise ProtocolError(f"binary tuple value at offset {pos - 1}: the text format is required")
        else:
            raise ProtocolError(f"unknown tuple value kind {kind!r} at offset {pos - 1}")
    return TupleData(tuple(values), tuple(unchanged)), pos


@dataclass(slots=True)
class Decoder:
    """Decodes one pgoutput message at a time; remembers only whether it is inside a streamed block."""

    in_stream: bool = False

    def decode(self, data: bytes) -> Message:
        if not data:
            raise ProtocolError("empty message")
        tag = data[0]
        try:
            return self._decode(tag, data)
        except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
            if isinstance(exc, ProtocolError):
                raise
            raise ProtocolError(f"malformed {chr(tag)!r} message ({len(data)} bytes): {exc}") from None

    def _xid(self, data: bytes, pos: int) -> tuple[int | None, int]:
        if self.in_stream:
            return _U32.unpack_from(data, pos)[0], pos + 4
        return None, pos

    def _decode(self, tag: int, data: bytes) -> Message:
        if tag == 73:  # 'I'
            xid, pos = self._xid(data, 1)
            (rel,) = _U32.unpack_from(data, pos)
            if data[pos + 4] != 78:  # 'N'
                raise ProtocolError(f"insert without a new tuple at offset {pos + 4}")
            new, _ = decode_tuple(data, pos + 5)
            return Insert(rel, new, xid)
        if tag == 85:  # 'U'
            xid, pos = self._xid(data, 1)
            (rel,) = _U32.unpack_from(data, pos)
            pos += 4
            old: TupleData | None = None
            kind = data[pos]
            if kind in (75, 79):  # 'K' old key, 'O' old tuple
                old, pos = decode_tuple(data, pos + 1)
            if data[pos] != 78:
                raise ProtocolError(f"update without a new tuple at offset {pos}")
            new, _ = decode_tuple(data, pos + 1)
            return Update(rel, new, old, kind == 75, xid)
        if tag == 68:  # 'D'
            xid, pos = self._xid(data, 1)
            (rel,) = _U32.unpack_from(data, pos)
            kind = data[pos + 4]
            if kind not in (75, 79):
                raise ProtocolError(f"delete without an old key or tuple at offset {pos + 4}")
            old_t, _ = decode_tuple(data, pos + 5)
            return Delete(rel, old_t, kind == 75, xid)
        if tag == 66:  # 'B'
            final_lsn, ts, xid_ = struct.unpack_from(">QqI", data, 1)
            return Begin(final_lsn, pg_time(ts), xid_)
        if tag == 67:  # 'C'
            flags, commit_lsn, end_lsn, ts = struct.unpack_from(">bQQq", data, 1)
            return Commit(flags, commit_lsn, end_lsn, pg_time(ts))
        if tag == 82:  # 'R'
            return self._relation(data)
        if tag == 89:  # 'Y'
            xid, pos = self._xid(data, 1)
            (oid,) = _U32.unpack_from(data, pos)
            ns, pos = _string(data, pos + 4)
            name, pos = _string(data, pos)
            return Type(oid, ns, name, xid)
        if tag == 84:  # 'T'
            xid, pos = self._xid(data, 1)
            n, options = struct.unpack_from(">Ib", data, pos)
            rels = struct.unpack_from(f">{n}I", data, pos + 5)
            return Truncate(tuple(rels), bool(options & 1), bool(options & 2), xid)
        if tag == 79:  # 'O'
            (lsn,) = _U64.unpack_from(data, 1)
            name, _ = _string(data, 9)
            return Origin(lsn, name)
        if tag == 77:  # 'M'
            xid, pos = self._xid(data, 1)
            flags, lsn = struct.unpack_from(">bQ", data, pos)
            prefix, pos = _string(data, pos + 9)
            (length,) = _U32.unpack_from(data, pos)
            return LogicalMessage(bool(flags & 1), lsn, prefix, bytes(data[pos + 4 : pos + 4 + length]), xid)
        if tag == 83:  # 'S'
            xid_, first = struct.unpack_from(">Ib", data, 1)
            self.in_stream = True
            return StreamStart(xid_, bool(first))
        if tag == 69:  # 'E'
            self.in_stream = False
            return StreamStop()
        if tag == 99:  # 'c'
            xid_, flags, commit_lsn, end_lsn, ts = struct.unpack_from(">IbQQq", data, 1)
            return StreamCommit(xid_, flags, commit_lsn, end_lsn, pg_time(ts))
        if tag == 65:  # 'A' (protocol 4 appends abort LSN and time; they are not needed to discard)
            xid_, subxid = struct.unpack_from(">II", data, 1)
            return StreamAbort(xid_, subxid)
        raise ProtocolError(f"unknown message type {chr(tag)!r}")

    def _relation(self, data: bytes) -> Relation:
        xid, pos = self._xid(data, 1)
        (rel,) = _U32.unpack_from(data, pos)
        ns, pos = _string(data, pos + 4)
        name, pos = _string(data, pos)
        ident = chr(data[pos])
        (ncols,) = _I16.unpack_from(data, pos + 1)
        pos += 3
        cols: list[RelationColumn] = []
        for _ in range(ncols):
            flags = data[pos]
            col, pos = _string(data, pos + 1)
            oid, typmod = struct.unpack_from(">Ii", data, pos)
            pos += 8
            cols.append(RelationColumn(col, oid, typmod, bool(flags & 1)))
        return Relation(rel, ns, name, REPLICA_IDENTITY.get(ident, ident), tuple(cols), xid)
