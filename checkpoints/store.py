"""Where a run's state lives: the store. SQLite files in TEACHGRAPH_HOME by default (runs.db,
checkpoints.db, cache.db), or one PostgreSQL database shared by every worker (`--store postgresql://...`
or TEACHGRAPH_STORE), for runs that span machines. Either way a store gives the same four things:

    store = open_store(url, home)           # url None/"": SQLite in `home`
    store.registry()                        # runs, seeds, samples, leases, terms, probes (registry.py)
    async with store.saver() as saver: ...  # LangGraph's checkpointer, one thread per seed
    store.cache(on_fault)                   # the LLM response cache (cache.py)

With a PostgreSQL store nothing is written to a SQLite file: the checkpointer is langgraph's own
AsyncPostgresSaver, and the registry and the cache use the same SQL as on SQLite (checkpoints/sql.py).
Only the samples file and the run's lock file stay in TEACHGRAPH_HOME."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

from teachgraph.checkpoints import saver as sqlite_saver
from teachgraph.checkpoints import sql, storage
from teachgraph.checkpoints.cache import ResponseCache
from teachgraph.checkpoints.registry import Registry
from teachgraph.errors import UsageError

PG_POOL_SIZE = 2   # AsyncPostgresSaver runs one statement at a time per instance (its lock): 2 covers setup


@dataclass(frozen=True)
class SqliteStore:
    home: Path
    kind = "sqlite"

    @property
    def shown(self) -> str:
        return str(self.home)

    def spec(self) -> dict:
        """What a worker elsewhere needs to open the same store: open_store(**spec)."""
        return {"url": None, "home": str(self.home)}

    def registry(self) -> Registry:
        return Registry(self.home / "runs.db")

    def saver(self):
        return sqlite_saver.open_saver(self.home / "checkpoints.db")

    def cache(self, on_fault: Callable[[str], None] | None = None) -> ResponseCache:
        return ResponseCache(self.home / "cache.db", on_fault=on_fault)

    def check(self) -> None:
        """Raise StorageError if the checkpoints cannot be used (before a run is made)."""
        sqlite_saver.check_store(self.home / "checkpoints.db")


@dataclass(frozen=True)
class PostgresStore:
    url: str
    kind = "postgresql"

    @property
    def shown(self) -> str:
        return sql.shown_url(self.url)

    def spec(self) -> dict:
        return {"url": self.url, "home": None}

    def registry(self) -> Registry:
        return Registry(sql.PostgresDatabase(self.url))

    def cache(self, on_fault: Callable[[str], None] | None = None) -> ResponseCache:
        return ResponseCache(None, on_fault=on_fault, postgres=self.url)

    @asynccontextmanager
    async def saver(self) -> AsyncIterator[object]:
        """langgraph's AsyncPostgresSaver over a small psycopg pool, its tables set up first (once per
        store: workers opening it together take turns on an advisory lock). Enter it on the event loop
        that runs the graphs: the saver and the pool belong to the loop they were made on."""
        sql.require_postgres()
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        # autocommit and dict rows: what AsyncPostgresSaver needs; prepare_threshold=0 as its own
        # from_conn_string sets; check: managed servers drop connections idle through long LLM calls
        pool = AsyncConnectionPool(self.url, min_size=1, max_size=PG_POOL_SIZE, open=False, max_idle=120,
                                   check=AsyncConnectionPool.check_connection,
                                   kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
        try:
            await pool.open(wait=True, timeout=30)
            saver = AsyncPostgresSaver(pool)
            async with pool.connection() as conn:
                await conn.execute("select pg_advisory_lock(hashtext('teachgraph:checkpoints-setup'))")
                try:
                    await saver.setup()
                finally:
                    await conn.execute("select pg_advisory_unlock(hashtext('teachgraph:checkpoints-setup'))")
        except Exception as exc:
            await pool.close()
            raise (storage.fault(exc) or exc) from None
        try:
            yield saver
        finally:
            await pool.close()

    def check(self) -> None:
        """Reach the server and set the checkpoint tables up before a run is made (one line if not)."""
        async def setup() -> None:
            async with self.saver():
                pass
        asyncio.run(setup())


Store = SqliteStore | PostgresStore


def open_store(url: str | None, home: Path | str | None) -> Store:
    """`url`: a postgresql:// (or postgres://) URL, or None / "" for SQLite files in `home`."""
    if not url:
        return SqliteStore(Path(home))
    if not sql.is_postgres(url):
        raise UsageError(f"--store {sql.shown_url(url)}: not a store URL; give postgresql://USER@HOST:PORT/DB "
                         f"(or nothing, for SQLite files in TEACHGRAPH_HOME)")
    return PostgresStore(url)
