"""Where stateful gates keep what the run has kept: one SQLite file (sqlite-utils), so a resumed run, or
a gate reopened on the same file, sees every sample admitted before. Each gate owns tables named
after it."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import sqlite_utils


class GateStore:
    def __init__(self, path: Optional[Path] = None):
        self.path = path
        if path is None:
            self.db = sqlite_utils.Database(memory=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite_utils.Database(path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")

    def table(self, gate: str, name: str) -> sqlite_utils.db.Table:
        return self.db.table(f"gate_{gate}_{name}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group many admits in one commit (filter commits every few thousand rows)."""
        with self.db.conn:
            yield

    def close(self) -> None:
        self.db.close()
