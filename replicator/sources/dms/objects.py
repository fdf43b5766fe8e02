"""Reading one DMS object: its bytes as an open file, and independent streams over it.

A local folder's file is opened through ``LocalStore.open``, which checks the open descriptor itself, so a
file swapped for a link out of the folder after it was listed is refused (``outside_root``), never read;
everything after that reads the descriptor, never the path again. An S3 object is downloaded to a
temporary file first (never all of it in memory).
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

from replicator.sources.dms.csvfiles import BadFile
from replicator.storage import LocalStore, ObjectStore, OutsideRoot

_BUFFER = 1 << 16  # large reads (the CSV decoders read 1 MB or a pyarrow block) bypass it
GZIP_MAGIC = b"\x1f\x8b"


@contextmanager
def open_object(store: ObjectStore, key: str, scratch: Path) -> Iterator[BinaryIO]:
    """The object's bytes as an open, seekable file. Raises ``BadFile("outside_root")`` for a local file
    that is (or passes through) a link leading out of its folder. ``scratch``: a folder for the S3 copy."""
    if isinstance(store, LocalStore):
        try:
            f = store.open(key)
        except OutsideRoot as exc:
            raise BadFile("outside_root", str(exc)) from None
        with f:
            yield f
        return
    path = scratch / "object"
    store.download(key, path)
    try:
        with open(path, "rb") as f:
            yield f
    finally:
        path.unlink(missing_ok=True)


def size_of(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_size


def is_gzip(f: BinaryIO, key: str) -> bool:
    """CompressionType=GZIP, whatever the name: the ``.gz`` suffix or gzip's magic bytes."""
    return key.endswith(".gz") or os.pread(f.fileno(), 2, 0) == GZIP_MAGIC


def stream_opener(f: BinaryIO, *, gz: bool) -> Callable[[], IO[bytes]]:
    """A function returning a new stream of ``f``'s (decompressed) bytes from the start each time it is
    called; each has its own offset, so a reader started over does not disturb one still open."""
    fd = f.fileno()

    def open_stream() -> IO[bytes]:
        raw = io.BufferedReader(FileReader(fd), _BUFFER)
        if not gz:
            return raw
        z: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        return z

    return open_stream


class FileReader(io.RawIOBase):
    """Reads an open file from its start with ``os.pread``: its own offset, the descriptor's untouched.
    Closing it does not close the descriptor (its owner does)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if _PREADV:  # straight into the caller's buffer
            n = os.preadv(self.fd, [view], self.pos)
        else:
            data = os.pread(self.fd, len(view), self.pos)
            n = len(data)
            view[:n] = data
        self.pos += n
        return n


_PREADV = hasattr(os, "preadv")
