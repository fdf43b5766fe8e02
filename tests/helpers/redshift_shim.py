"""A test-only TCP shim that lets ``redshift_connector`` talk to a PostgreSQL server.

No Redshift can run here, so the Redshift warehouse runs end to end against PostgreSQL wherever PostgreSQL
accepts the same SQL. The driver and the server disagree on four wire-level details, and this shim fixes
exactly those, nothing else (SQL passes through unchanged, byte for byte):

1. the start-up packet carries Redshift-only parameters (``client_protocol_version``, ``driver_version``,
   ``os_version``, ``driver_discovery_version``, ``plugin_name`` ...) that PostgreSQL rejects with
   ``FATAL: unrecognized configuration parameter``: they are removed;
2. an ``SSLRequest`` is answered "no" (connect with ``ssl=False``);
3. PostgreSQL's ``AuthenticationSASL`` list ends with an extra NUL that the driver reads as a mechanism
   named ``""``: the list is rewritten to the one mechanism it offers;
4. ``server_version`` (``15.18 (Debian 15.18-0+deb12u1)``) is not a version ``packaging`` can parse: only
   the leading number is reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import struct
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redshift_connector

from replicator.model import (
    COMMIT_TIME_COLUMN,
    FROM_SEQ_COLUMN,
    OP_COLUMN,
    POSITION_COLUMN,
    SEQ_COLUMN,
    TableSchema,
)
from replicator.sql import quote_ident
from replicator.values import temporal
from replicator.warehouses import REDSHIFT, RedshiftWarehouse

_SSL_REQUEST = 80877103
_KEEP = frozenset({b"user", b"database", b"application_name", b"options", b"client_encoding"})


class RedshiftShim:
    """Listens on 127.0.0.1 (a free port) and forwards each connection to ``upstream``."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="redshift-shim", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        try:
            startup = _read_startup(client)
            if startup is None:
                return
            server.sendall(startup)
            up = threading.Thread(target=_pump, args=(client, server), daemon=True)
            up.start()
            _pump_backend(server, client)
            up.join(timeout=5)
        finally:
            for s in (client, server):
                with contextlib.suppress(OSError):
                    s.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def _read_startup(client: socket.socket) -> bytes | None:
    """Read the client's start-up packet (answering SSLRequest with 'N') and return the filtered one."""
    while True:
        try:
            (length,) = struct.unpack("!i", _recv_exact(client, 4))
            body = _recv_exact(client, length - 4)
        except ConnectionError:
            return None
        (code,) = struct.unpack("!i", body[:4])
        if code == _SSL_REQUEST:
            client.sendall(b"N")
            continue
        return _filter_startup(body)


def _filter_startup(body: bytes) -> bytes:
    parts = body[4:].split(b"\x00")
    pairs = list(zip(parts[0::2], parts[1::2], strict=False))
    kept = b"".join(k + b"\x00" + v + b"\x00" for k, v in pairs if k in _KEEP)
    payload = body[:4] + kept + b"\x00"
    return struct.pack("!i", len(payload) + 4) + payload


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def _messages(sock: socket.socket) -> Iterator[tuple[bytes, bytes]]:
    while True:
        try:
            head = _recv_exact(sock, 5)
            body = _recv_exact(sock, struct.unpack("!i", head[1:])[0] - 4)
        except (ConnectionError, OSError):
            return
        yield head[:1], body


def _pump_backend(server: socket.socket, client: socket.socket) -> None:
    """Forward backend messages, rewriting the two the driver cannot read; after ReadyForQuery of the
    start-up, everything is passed through as raw bytes."""
    for kind, message in _messages(server):
        body = message
        if kind == b"R" and body[:4] == struct.pack("!i", 10):
            mechanisms = [m for m in body[4:].split(b"\x00") if m]
            body = (
                body[:4] + (b"SCRAM-SHA-256" if b"SCRAM-SHA-256" in mechanisms else mechanisms[0]) + b"\x00"
            )
        elif kind == b"S" and body.startswith(b"server_version\x00"):
            value = body[len(b"server_version\x00") :].rstrip(b"\x00").split(b" ")[0]
            body = b"server_version\x00" + value + b"\x00"
        try:
            client.sendall(kind + struct.pack("!i", len(body) + 4) + body)
        except OSError:
            return
        if kind == b"Z":
            break
    _pump(server, client)


# -- the Redshift code path on PostgreSQL ----------------------------------------------------------------
#
# Everything the Redshift warehouse sends runs unchanged on PostgreSQL (MERGE without target alias, the
# upserts table, DELETE ... USING, row_number() reduce, LOCK order, staging in file order, byte-sized
# VARCHARs, ALTER outside the transaction, the ledger), except these spellings, which PostgreSQL lacks and
# which are only generated and parsed (tests/warehouses/test_redshift_sql.py): SUPER (-> json/jsonb), VARBYTE
# (-> bytea), json_serialize (-> CAST AS text), SYSDATE (-> CURRENT_TIMESTAMP), ENCODE/DISTKEY/SORTKEY
# (left out) and COPY from S3 (-> ``stand_in_loader``, which inserts the same rows over the connection).
#
# Dates, times and timestamps go from their Parquet integers (days, microseconds) to exact text, never
# through Python's datetime (years 1 to 9999, no 24:00:00): COPY reads the integers, so BC years, years past
# 9999 and 24:00:00 load as they are, and a value Redshift's types cannot hold (an infinity, a date past
# 294276 AD) fails the load as it must not load on Redshift.


STAND_IN = dataclasses.replace(
    REDSHIFT,
    types={**REDSHIFT.types, "json": "jsonb", "bytea": "bytea"},
    text_array="json",
    unchanged_test=REDSHIFT.unchanged_test.replace("json_serialize({list})", "CAST({list} AS text)"),
    now="CURRENT_TIMESTAMP",
)


def _text(v: Any) -> str | None:
    """A value as the text PostgreSQL's input functions read (what COPY would have converted)."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, bytes):
        return "\\x" + v.hex()
    if isinstance(v, list):
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))  # json_serialize's compact form
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int | Decimal):
        return str(v)
    raise TypeError(f"no text form for {type(v).__name__}")


def stand_in_loader(
    wh: RedshiftWarehouse, schema: TableSchema, staging: str, parquet: Path, moves: bool = False
) -> None:
    """Replaces COPY FROM S3: reads the staged file by position, as COPY does, and inserts its rows."""
    d = wh.dialect
    file_columns = pq.read_schema(parquet).names
    wanted = list(d.staging_columns(schema, moves=moves))
    assert file_columns == wanted, f"COPY matches by position: file {file_columns} != staging {wanted}"
    meta = {OP_COLUMN: d.types["text"], SEQ_COLUMN: "BIGINT", POSITION_COLUMN: d.types["text"],
            COMMIT_TIME_COLUMN: "TIMESTAMPTZ", FROM_SEQ_COLUMN: "BIGINT"}  # fmt: skip
    types = [
        d.column_type(schema.column(c).type) if c in schema.column_names else meta.get(c, d.text_array)
        for c in wanted
    ]
    table = pq.read_table(parquet)
    if table.num_rows == 0:
        return
    columns = [_copy_values(table.column(c).combine_chunks(), c) for c in wanted]
    rows = list(zip(*columns, strict=True))
    one = "(" + ", ".join(f"CAST(CAST(%s AS TEXT) AS {t})" for t in types) + ")"
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        params = [_text(v) for r in chunk for v in r]
        cols = ", ".join(quote_ident(c) for c in wanted)
        sql = f"INSERT INTO {quote_ident(staging)} ({cols}) VALUES " + ", ".join([one] * len(chunk))
        wh.execute(sql, params)


def _copy_values(column: pa.Array, name: str) -> list[Any]:
    """A Parquet column as the values COPY would load: temporal ones as exact PostgreSQL text, computed from
    the stored integers (days, microseconds); everything else as Python values."""
    t = column.type
    if not (pa.types.is_date32(t) or pa.types.is_timestamp(t) or pa.types.is_time64(t)):
        values: list[Any] = column.to_pylist()
        return values
    unfit = temporal.outside(column, RedshiftWarehouse.first_day, RedshiftWarehouse.last_day)
    if unfit is not None:
        raise ValueError(f"COPY: column {name} holds {unfit[1]}, which Redshift's {t} cannot hold")
    text = temporal.postgres_text(column)
    if text is None and pa.types.is_timestamp(t) and t.tz is not None:
        text = pc.binary_join_element_wise(pc.cast(column.cast(pa.timestamp(t.unit)), pa.string()), "+00", "")
    elif text is None:
        text = pc.cast(column, pa.string())
    texts: list[Any] = text.to_pylist()
    return texts


def open_stand_in(shim: RedshiftShim, dsn: str, **kwargs: Any) -> RedshiftWarehouse:
    """The Redshift warehouse on the PostgreSQL database of ``dsn``, through redshift_connector + shim."""
    parts = dict(p.split("=", 1) for p in dsn.split())

    def connect() -> Any:
        return redshift_connector.connect(
            host="127.0.0.1",
            port=shim.port,
            database=parts["dbname"],
            user=parts.get("user", "postgres"),
            password="unused",  # the test server trusts local connections
            ssl=False,
        )

    return RedshiftWarehouse(
        connect,
        staging_url="s3://unused",
        iam_role="arn:aws:iam::000000000000:role/unused",
        dialect=kwargs.pop("dialect", STAND_IN),
        loader=stand_in_loader,
        physical_layout=False,
        **kwargs,
    )
