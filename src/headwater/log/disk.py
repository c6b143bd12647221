"""The ``Disk`` port: how the embedded log writes its segment files.

``OsDisk`` writes through the operating system. ``LimitedDisk`` wraps it with a capacity,
so a test can fill the disk (appends then fail with ``ENOSPC``, as on a full file system)
and free it again, with real files underneath. Reads do not go through this port: the
log memory-maps its segments.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from headwater.errors import HeadwaterError
from headwater.log.segment import fsync_dir, write_all

Parts = list[bytes | pa.Buffer]


class Disk(Protocol):
    def create(self, path: Path) -> int:
        """Create ``path`` (it must not exist) for appending; return its descriptor."""
        ...

    def reopen(self, path: Path) -> int:
        """Open an existing ``path`` for appending."""
        ...

    def write(self, fd: int, parts: Parts) -> None:
        """Append every part, in order."""
        ...

    def sync(self, fd: int) -> None:
        """Make the file's data durable (fdatasync)."""
        ...

    def truncate(self, fd: int, size: int) -> None:
        """Cut the file to ``size`` bytes, durably."""
        ...

    def close(self, fd: int) -> None: ...

    def sync_dir(self, path: Path) -> None:
        """Make the directory's entries (created or removed files) durable."""
        ...

    def has_room(self, directory: Path, size: int) -> bool:
        """Whether ``size`` more bytes would fit on the disk holding ``directory``."""
        ...


class OsDisk:
    """The log's files through the operating system."""

    def create(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)

    def reopen(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_APPEND)

    def write(self, fd: int, parts: Parts) -> None:
        write_all(fd, parts)

    def sync(self, fd: int) -> None:
        os.fdatasync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def sync_dir(self, path: Path) -> None:
        fsync_dir(path)

    def has_room(self, directory: Path, size: int) -> bool:
        st = os.statvfs(directory)
        return st.f_bavail * st.f_frsize >= size


class LimitedDisk(OsDisk):
    """``OsDisk`` on a disk of ``capacity`` bytes: writes past it fail with ``ENOSPC``.

    A write that does not fit stores the part of it that does, as a real file system
    does. Raise ``capacity`` to free space.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}  # fd -> its file's size
        self._closed = 0  # bytes in files no longer open

    @property
    def used(self) -> int:
        return self._closed + sum(self._sizes.values())

    def create(self, path: Path) -> int:
        fd = super().create(path)
        self._sizes[fd] = 0
        return fd

    def reopen(self, path: Path) -> int:
        fd = super().reopen(path)
        self._sizes[fd] = os.fstat(fd).st_size
        return fd

    def write(self, fd: int, parts: Parts) -> None:
        data = b"".join(p if isinstance(p, bytes) else p.to_pybytes() for p in parts)
        with self._lock:
            room = max(self.capacity - self.used, 0)
            self._sizes[fd] = self._sizes.get(fd, 0) + min(room, len(data))
        super().write(fd, [data[:room]])
        if room < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def truncate(self, fd: int, size: int) -> None:
        super().truncate(fd, size)
        with self._lock:
            self._sizes[fd] = size

    def close(self, fd: int) -> None:
        with self._lock:
            self._closed += self._sizes.pop(fd, 0)
        super().close(fd)

    def has_room(self, directory: Path, size: int) -> bool:
        return self.capacity - self.used >= size


def lock_directory(directory: Path) -> int:
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise HeadwaterError(
            f"the log directory {directory} is in use by another FileLog (maybe another "
            "process); stop it first or use another data directory",
            code="log_in_use",
        ) from None
    return fd
