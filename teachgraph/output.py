"""The JSON Lines output. The registry is the source of truth; the file follows it.

A sample is committed to the registry first, then appended here as one write of one line. After a
kill, `reconcile` cuts a half-written last line and appends committed samples the file lacks, so
the file never holds a partial line or the same sample twice. A write that fails (disk full,
read-only) raises StorageError: the run stops, the seed keeps its recorded outcome, and the
resume's `reconcile` writes what the file lacks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Iterable

from teachgraph.checkpoints.storage import StorageError, describe_os


def _complete_ids(fd: int) -> tuple[set[str], int]:
    """Ids of the complete lines in the file, and the byte length of those complete lines."""
    ids: set[str] = set()
    good = 0
    with os.fdopen(os.dup(fd), "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                ids.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                break  # a corrupt line: keep what precedes it, rewrite the rest from the registry
            good += len(line)
    return ids, good


def output_problem(path: Path) -> str | None:
    """Why `path` cannot be a new run's output file, or None. Checked before the run is made."""
    if path.exists():
        if path.is_dir():
            return f"--out {path} is a folder; give a file name"
        if not path.is_file():  # a FIFO would block the run forever, /dev/null cannot be synced
            return f"--out {path} is not a regular file (a device, FIFO or socket); give a file name"
        if path.stat().st_size > 0:
            return f"--out {path} already exists; a run writes a new file (resume continues its own)"
        return None if os.access(path, os.W_OK) else f"--out {path} is not writable"
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"--out {path}: {folder} is not a folder"
    if not os.access(folder, os.W_OK):
        return f"--out {path}: cannot create it, {folder} is not writable"
    return None


class SampleWriter:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        # Ids the file holds (after reconcile) or this writer wrote: a sample is never written twice,
        # even if the registry holds the samples of a seed that then runs again (a store fault between
        # commits). About 100 bytes per sample.
        self._ids: set[str] = set()

    def _open(self) -> int:
        """The output, opened for appending; refuses anything but a regular file (without blocking on a FIFO)."""
        if self._fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise describe_os(self.path, exc, doing="open") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise StorageError(f"the output {self.path} is not a regular file (a device, FIFO or socket)")
            os.set_blocking(fd, True)
            self._fd = fd
        return self._fd

    def reconcile(self, committed: Iterable[tuple[str, str]]) -> int:
        """Make the file hold exactly the committed samples, once each. Returns lines appended."""
        fd = self._open()
        try:
            ids, good = _complete_ids(fd)
            if good != os.fstat(fd).st_size:
                os.ftruncate(fd, good)
        except OSError as exc:
            raise describe_os(self.path, exc) from None
        self._ids = ids
        appended = 0
        for sample_id, body in committed:
            if sample_id not in ids:
                self.append_line(body)
                ids.add(sample_id)
                appended += 1
        return appended

    def append_line(self, body: str) -> None:
        data = memoryview((body + "\n").encode("utf-8"))
        fd = self._open()
        # Unbuffered, on an O_APPEND file: a kill or a full disk leaves at most one partial tail line
        # (reconcile cuts it), and nothing is held back to be written later.
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError as exc:
            raise describe_os(self.path, exc) from None

    def append(self, sample: dict) -> None:
        if sample["id"] in self._ids:
            return
        self.append_line(json.dumps(sample, ensure_ascii=False))
        self._ids.add(sample["id"])

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            except OSError as exc:
                raise describe_os(self.path, exc, doing="save") from None
            finally:
                os.close(fd)
