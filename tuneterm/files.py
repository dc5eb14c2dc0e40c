"""Files a writer may be killed in the middle of (no torch, no textual).

Reading: a JSON-lines file is read, or followed, by its complete lines only (a torn last
line — a writer killed mid-row — is never a row). Writing: a file is replaced whole or not
at all (``write_atomic``). The run directory's files (``tuneterm.rundir``), the queue's
copies and the TUI's log view all go through these.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

# -- reading by complete lines ----------------------------------------------------------------


def parse_rows(data: bytes | str) -> Iterator[tuple[bytes | str, dict]]:
    """(line, row) for each complete JSON object line of ``data``; a torn or garbled line
    is skipped. ``data`` should end at a line end (see ``complete``)."""
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            yield line, row


def complete(data: bytes) -> bytes:
    """``data`` up to and including its last newline (a row being written is not a row)."""
    return data[: data.rfind(b"\n") + 1]


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All complete rows of a JSON-lines file ([] when it does not exist)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return []
    return [row for _, row in parse_rows(complete(data))]


def read_tail_rows(path: str | os.PathLike, max_bytes: int = 65536) -> list[dict]:
    """The complete rows in the last ``max_bytes`` of a JSON-lines file (the first one
    read may be cut, and is then skipped as garbled)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    if size > max_bytes:
        data = data[data.find(b"\n") + 1:]
    return [row for _, row in parse_rows(complete(data))]


class JsonlTail:
    """Follows one file of lines (a JSON-lines file, or a log) by offset: each ``read_new``
    returns the bytes of the complete lines written since the last one, and says whether the
    file was rewritten (a new inode or a shorter file: a resumed attempt truncated it) — then
    from 0. ``limit``: read at most the last ``limit`` bytes of what is new, dropping the line
    cut there (a viewer that shows only the newest lines of a long log reads no more). The
    runner's Tailer follows metrics and events with it, the TUI a run's log."""

    def __init__(self, path: str | os.PathLike, limit: int | None = None):
        self.path = Path(path)
        self.limit = limit
        self.ino: int | None = None
        self.offset = 0

    def read_new(self) -> tuple[bool, bytes]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False, b""
        try:
            st = os.fstat(fd)
            rewritten = self.ino is not None and (st.st_ino != self.ino or st.st_size < self.offset)
            if rewritten:
                self.offset = 0
            self.ino = st.st_ino
            if st.st_size <= self.offset:
                return rewritten, b""
            start = self.offset
            if self.limit is not None:
                start = max(start, st.st_size - self.limit)
            data = complete(os.pread(fd, st.st_size - start, start))
        finally:
            os.close(fd)
        if data:
            cut = start > self.offset
            self.offset = start + len(data)
            if cut:
                data = data[data.find(b"\n") + 1:]
        return rewritten, data

    def read_upto_offset(self) -> bytes | None:
        """The bytes [0, offset) of the file followed so far; None when it changed under
        the tail (the caller reads the new part and asks again)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return b"" if self.ino is None else None
        try:
            st = os.fstat(fd)
            if st.st_ino != self.ino or st.st_size < self.offset:
                return None
            return os.pread(fd, self.offset, 0) if self.offset else b""
        finally:
            os.close(fd)


# -- writing whole ----------------------------------------------------------------------------


def write_atomic(path: str | os.PathLike, data: bytes | str, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` so that a reader (or a crash) sees the old file or
    the new one, never half of one: a temporary file in the same folder, fsync, rename,
    fsync the folder (``durable=False`` skips the fsyncs, for files that only need to be
    whole, not on disk)."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: str | os.PathLike) -> None:
    try:
        dfd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
