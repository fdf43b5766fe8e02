"""Object storage: S3 or a local folder with the same key layout.

Both the DMS source (reading) and the stage (writing) use this. Keys are ``/``-separated and relative to
the store's root (``s3://bucket/prefix`` or a folder). ``put`` is atomic and durable when it returns:
S3 PUTs are; the local store writes a temporary file, fsyncs it, renames it into place and fsyncs the folder.
``put_written`` is ``put`` for what a writer produces (a staged Parquet file), never held whole in memory:
the local store writes the temporary file as it goes, S3 a temporary file it then PUTs.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


@dataclass(frozen=True, slots=True)
class S3Settings:
    """Where S3 is. Credentials come from boto3's usual chain (env, ECS task role), never from config."""

    endpoint_url: str | None = None
    region: str | None = None
    sse: str | None = None  # ServerSideEncryption of every write: "aws:kms" or "AES256"
    sse_kms_key_id: str | None = None
    expected_bucket_owner: str | None = None  # sent with every call: S3 refuses a bucket of another account


class ObjectStore(Protocol):
    """A flat key space with sorted listing. Implementations must make ``put`` atomic and durable."""

    url: str

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order (byte order), after ``start_after``."""
        ...

    def get(self, key: str) -> bytes:
        """The object's bytes; ``KeyError`` if there is none."""
        ...

    def download(self, key: str, dest: Path) -> None: ...

    def put(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, src: Path) -> None: ...

    def put_written(self, key: str, write: Callable[[BinaryIO], object]) -> int:
        """Store what ``write`` writes to the file it is given (atomic and durable like ``put``), without
        holding it in memory; returns its size in bytes."""
        ...

    def delete(self, key: str) -> None: ...

    def uri(self, key: str) -> str:
        """A full address of the object (``s3://...`` or a filesystem path) for logs and warehouse loads."""
        ...


def open_store(url: str, s3: S3Settings | None = None) -> ObjectStore:
    """``s3://bucket/prefix`` -> S3Store; anything else is a local folder (created if missing)."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        if not bucket:
            raise ValueError(f"S3 address {url!r} has no bucket")
        return S3Store(bucket, prefix.strip("/"), s3 or S3Settings())
    return LocalStore(Path(url))


class OutsideRoot(ValueError):
    """A local object that is a link (or inside a linked folder) leading out of the store's root."""


def key_problem(key: str) -> str | None:
    """Why ``key`` is path-like rather than a plain object name, or None. S3 accepts any of these, but a
    folder cannot hold them, and ``..`` would climb out of it: they are refused, never resolved."""
    if not key:
        return "an empty object key"
    if key.startswith("/"):
        return f"object key {key!r} is an absolute path"
    if "\\" in key or "\x00" in key:
        return f"object key {key!r} holds a backslash or NUL, a path separator on some systems"
    bad = next((p for p in key.split("/") if p in ("", ".", "..")), None)
    if bad is not None:
        return f"object key {key!r} has a path-like part {bad!r} (empty, '.' or '..')"
    return None


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = str(root)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/") or "\x00" in key:
            raise ValueError(f"invalid object key {key!r}")
        return self.root / key

    def open(self, key: str) -> BinaryIO:
        """The file of ``key``, open for reading. ``KeyError`` if there is none; ``OutsideRoot`` when a link
        takes it out of the root, which is never read (a link to /etc/passwd in a DMS folder must not reach
        staging or the quarantine).

        Race-free: what is checked is the open descriptor itself (the path the kernel holds for it lies
        inside the root), so a file swapped for a link between a listing (or any earlier check) and this
        open cannot lead out. The last part is opened with ``O_NOFOLLOW``; a link there is followed only
        when it resolves inside the root, and then the descriptor is checked like any other. Links inside
        the root, and a root that is itself a link, work."""
        path = self._path(key)
        root = self.root.resolve()
        try:
            fd = os.open(path, _READ | _NOFOLLOW)
        except FileNotFoundError:
            raise KeyError(key) from None
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.EMLINK):  # the last part is a link (EMLINK: FreeBSD)
                raise
            real = path.resolve()
            if not real.is_relative_to(root):
                raise OutsideRoot(_outside(path, real, self.root)) from None
            try:
                fd = os.open(real, _READ | _NOFOLLOW)
            except FileNotFoundError:
                raise KeyError(key) from None
            except OSError as again:
                if again.errno not in (errno.ELOOP, errno.EMLINK):
                    raise
                raise OutsideRoot(f"{path} changed to a link while it was opened; not read") from None
        try:
            st = os.fstat(fd)
            held = _held_path(fd, path, st)
            if held is None or not held.is_relative_to(root):
                raise OutsideRoot(_outside(path, held, self.root))
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, f"{path} is not a regular file; not read")
            os.set_blocking(fd, True)  # opened non-blocking so a FIFO could not hang the open
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        # Walk only the folder that holds the prefix, like an S3 prefix listing would.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self.root / base if base else self.root
        if not top.is_dir():
            return
        found: list[ObjectInfo] = []
        for dirpath, _dirs, files in os.walk(top):
            for f in files:
                if f.startswith(".tmp-"):
                    continue
                full = Path(dirpath) / f
                key = full.relative_to(self.root).as_posix()
                if not key.startswith(prefix) or (start_after is not None and key <= start_after):
                    continue
                try:
                    st = full.stat()
                except FileNotFoundError:
                    try:
                        st = full.lstat()  # a dangling link: listed, and refused when read
                    except FileNotFoundError:
                        continue  # removed since the walk saw it (a merged batch, while status lists)
                found.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        found.sort(key=lambda o: o.key.encode())
        yield from found

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def download(self, key: str, dest: Path) -> None:
        dest.write_bytes(self.get(key))

    def put(self, key: str, data: bytes) -> None:
        self.put_written(key, lambda f: f.write(data))

    def put_written(self, key: str, write: Callable[[BinaryIO], object]) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
                size = f.tell()
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return size

    def put_file(self, key: str, src: Path) -> None:
        with src.open("rb") as f:
            self.put_written(key, lambda out: shutil.copyfileobj(f, out, 1 << 20))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return str(self._path(key))


# Reading a local object: O_NONBLOCK so that opening a FIFO returns at once (it is then refused as not a
# regular file); O_CLOEXEC so no child process inherits it.
_READ = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FD_PATHS = Path("/proc/self/fd")
_KERNEL_PATHS = _FD_PATHS.is_dir()  # Linux: the kernel says which file a descriptor holds


def _outside(path: Path, real: Path | None, root: Path) -> str:
    where = f"a link to {real}, outside {root}" if real is not None else f"a link that leads outside {root}"
    return f"{path} is or passes through {where}; not read (copy the file into the folder, do not link it)"


def _held_path(fd: int, path: Path, st: os.stat_result) -> Path | None:
    """The real path of the file open at ``fd``: the kernel's own (Linux ``/proc/self/fd``), or else the
    resolved ``path`` when it is still that very file (same device and inode); None when it is not."""
    if _KERNEL_PATHS:
        held = os.readlink(_FD_PATHS / str(fd))
        return Path(held.removesuffix(" (deleted)"))
    real = path.resolve()
    try:
        now = os.stat(real)
    except OSError:
        return None
    return real if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Store:
    def __init__(self, bucket: str, prefix: str, settings: S3Settings) -> None:
        import boto3  # imported here so the embedded default never pays for it

        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        from botocore.config import Config as BotoConfig

        # S3 5xx, throttling and dropped connections are retried by botocore with exponential backoff and
        # jitter ("adaptive" also slows down when S3 asks it to).
        retries: Any = {"mode": "adaptive", "max_attempts": 10}
        self._owner = (
            {"ExpectedBucketOwner": settings.expected_bucket_owner} if settings.expected_bucket_owner else {}
        )
        self._sse = {"ServerSideEncryption": settings.sse} if settings.sse else {}
        if settings.sse_kms_key_id:
            self._sse["SSEKMSKeyId"] = settings.sse_kms_key_id
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region or "us-east-1",
            config=BotoConfig(retries=retries, connect_timeout=10, read_timeout=60),
        )

    def _key(self, key: str) -> str:
        return self.prefix + key

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key(prefix), **self._owner}
        if start_after is not None:
            kwargs["StartAfter"] = self._key(start_after)
        for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            for obj in page.get("Contents", []):
                yield ObjectInfo(obj["Key"][len(self.prefix) :], int(obj["Size"]), obj["LastModified"])

    def get(self, key: str) -> bytes:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **self._owner)["Body"]
        except self.client.exceptions.NoSuchKey:
            raise KeyError(key) from None
        data: bytes = body.read()
        return data

    def download(self, key: str, dest: Path) -> None:
        self.client.download_file(self.bucket, self._key(key), str(dest), ExtraArgs=self._owner or None)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **self._sse, **self._owner)

    def put_written(self, key: str, write: Callable[[BinaryIO], object]) -> int:
        # Written to a temporary file first (S3 needs the length up front); one PUT sends it from there.
        with tempfile.TemporaryFile() as f:
            write(f)
            size = f.tell()
            f.seek(0)
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=f, **self._sse, **self._owner)
        return size

    def put_file(self, key: str, src: Path) -> None:
        extra = {**self._sse, **self._owner}
        self.client.upload_file(str(src), self.bucket, self._key(key), ExtraArgs=extra or None)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key), **self._owner)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"
