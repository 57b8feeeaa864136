"""Where stateful gates keep what the run has kept: one SQLite file (sqlite-utils), or the run's
PostgreSQL store, so a resumed run, or a gate reopened on the same store, sees every sample admitted
before. Each gate owns tables named after it; their SQL is portable (checkpoints/sql.py): quoted names,
`on conflict do nothing`, `returning`, and a `rowid` column that PostgreSQL tables are given too."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import sqlite_utils

from teachgraph.checkpoints import sql


class GateStore:
    def __init__(self, path: Optional[Path] = None, *, postgres: Optional[str] = None,
                 namespace: Optional[str] = None):
        """`path`: a SQLite file (None: in memory); or `postgres`: a PostgreSQL store's URL, where
        `namespace` keeps one run's tables apart from another's (a run's SQLite file is its own)."""
        self.path = path
        self.prefix = f"gate_{namespace}_" if namespace else "gate_"
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
    def for_run(cls, store_url: Optional[str], sqlite_path: Path, run_id: str) -> "GateStore":
        """A run's gate state: `sqlite_path` (runs/RUN_ID/gates.db) with the default store, or tables of
        the run's own in the PostgreSQL store (nothing written to a local file)."""
        if sql.is_postgres(store_url):
            return cls(postgres=store_url, namespace=hashlib.sha256(run_id.encode()).hexdigest()[:12])
        return cls(sqlite_path)

    def table(self, gate: str, name: str) -> sqlite_utils.db.Table:
        return self.db.table(f"{self.prefix}{gate}_{name}")

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One transaction that holds the store's write lock from its first read to its commit, so two
        processes sharing the store cannot both admit a copy of one sample."""
        if isinstance(self.db, sql.PostgresDatabase):
            with self.db.transaction(lock=f"gates:{self.prefix}"):
                yield
            return
        with self.db.conn:
            if not self.db.conn.in_transaction:
                self.db.execute("BEGIN IMMEDIATE")
            yield

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group many admits in one commit (filter commits every few thousand rows)."""
        with self.db.conn:
            yield

    def close(self) -> None:
        self.db.close()
