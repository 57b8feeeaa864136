"""Where stateful gates keep what the run has kept: one SQLite file (sqlite-utils), or the run's
PostgreSQL store, so a resumed run, or a gate reopened on the same store, sees every sample admitted
before. Each gate owns tables named after it; their SQL is portable (checkpoints/sql.py): quoted names,
`on conflict do nothing`, `returning`, and a `rowid` column that PostgreSQL tables are given too."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import sqlite_utils

from teachgraph.checkpoints import sql


class GateStore:
    def __init__(self, path: Optional[Path] = None, *, postgres: Optional[str] = None):
        """`path`: a SQLite file (None: in memory); or `postgres`: a PostgreSQL store's URL."""
        self.path = path
        if postgres is not None:
            self.db = sql.PostgresDatabase(postgres)
        elif path is None:
            self.db = sqlite_utils.Database(memory=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite_utils.Database(path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")

    @classmethod
    def of(cls, store) -> "GateStore":
        """The gate indexes of a run's store (checkpoints/store.py): gates.db beside runs.db, or the
        same PostgreSQL database."""
        if store.kind == "postgresql":
            return cls(postgres=store.url)
        return cls(store.home / "gates.db")

    def table(self, gate: str, name: str) -> sqlite_utils.db.Table:
        return self.db.table(f"gate_{gate}_{name}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group many admits in one commit (filter commits every few thousand rows)."""
        with self.db.conn:
            yield

    def close(self) -> None:
        self.db.close()
