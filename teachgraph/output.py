"""The JSON Lines output. The registry is the source of truth; the file follows it.

A sample is committed to the registry first, then appended here as one write of one line. After a
kill, `reconcile` cuts a half-written last line and appends committed samples the file lacks, so
the file never holds a partial line or the same sample twice."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable


def _complete_ids(path: Path) -> tuple[set[str], int]:
    """Ids of the complete lines in `path`, and the byte length of those complete lines."""
    ids: set[str] = set()
    good = 0
    with path.open("rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                ids.add(json.loads(line)["id"])
            except (ValueError, KeyError, TypeError):
                break  # a corrupt line: keep what precedes it, rewrite the rest from the registry
            good += len(line)
    return ids, good


class SampleWriter:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = None

    def reconcile(self, committed: Iterable[tuple[str, str]]) -> int:
        """Make the file hold exactly the committed samples, once each. Returns lines appended."""
        ids: set[str] = set()
        if self.path.exists():
            ids, good = _complete_ids(self.path)
            if good != self.path.stat().st_size:
                with self.path.open("r+b") as fh:
                    fh.truncate(good)
        appended = 0
        for sample_id, body in committed:
            if sample_id not in ids:
                self.append_line(body)
                ids.add(sample_id)
                appended += 1
        return appended

    def append_line(self, body: str) -> None:
        if self._fh is None:
            self._fh = self.path.open("ab")
        # One write() per line on an O_APPEND file: a kill leaves at most one partial tail line.
        self._fh.write((body + "\n").encode("utf-8"))
        self._fh.flush()

    def append(self, sample: dict) -> None:
        self.append_line(json.dumps(sample, ensure_ascii=False))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
