"""The LangGraph checkpointer: langgraph's SqliteSaver on one connection we configure ourselves
(WAL, synchronous=NORMAL, a busy timeout), one thread per seed.

Its writes run on the event loop's own thread. AsyncSqliteSaver sends every statement to an
aiosqlite worker thread and back; against a fast endpoint those hand-offs (and the GIL traffic
they cause) cost ~2.7 ms of CPU per LLM call, more than the call itself (bench/throughput.py,
profiled with py-spy). A checkpoint write is a small insert and a WAL commit with no fsync, tens
of microseconds, so running it inline costs less than handing it off. One connection per process
is also the single writer: seeds never race each other for the database lock."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

from langgraph.checkpoint.sqlite import SqliteSaver

from teachgraph.checkpoints import storage


def thread_id(run_id: str, seed_id: str) -> str:
    return f"{run_id}:{seed_id}"


class LoopSqliteSaver(SqliteSaver):
    """SqliteSaver's synchronous methods behind the async interface LangGraph's async graphs call,
    with group commit: the writes of every seed that saves in the same turn of the event loop are
    committed together, and each async write returns only once its commit is done (so durability
    "sync" still means: saved before the next step starts). One commit per write made every step
    cost ~20 WAL pages of I/O per LLM call (84 KB; measured with strace)."""

    def __init__(self, conn: sqlite3.Connection, **kwargs: Any):
        super().__init__(conn, **kwargs)
        self._commit: asyncio.Future | None = None

    @contextmanager
    def cursor(self, transaction: bool = True) -> Iterator[sqlite3.Cursor]:
        # SqliteSaver's own cursor() commits on every use; the transaction is left open here and
        # committed by _committed(), which every async write awaits.
        with self.lock:
            self.setup()
            cur = self.conn.cursor()
            try:
                yield cur
            finally:
                cur.close()

    async def _committed(self) -> None:
        if self._commit is None:
            loop = asyncio.get_running_loop()
            self._commit = loop.create_future()
            loop.call_soon(self._commit_now)
        await asyncio.shield(self._commit)

    def _commit_now(self) -> None:
        done, self._commit = self._commit, None
        try:
            self.conn.commit()
        except BaseException as exc:  # every writer waiting on this commit sees the error
            done.set_exception(exc)
            done.exception()  # retrieved: if its writers were all cancelled, asyncio must not log it
        else:
            done.set_result(None)

    async def aget_tuple(self, config):
        return self.get_tuple(config)

    async def alist(self, config, *, filter=None, before=None, limit=None) -> AsyncIterator[Any]:
        # Materialized first: an open cursor would hold the connection while the caller awaits.
        for item in list(self.list(config, filter=filter, before=before, limit=limit)):
            yield item

    async def aput(self, config, checkpoint, metadata, new_versions):
        saved = self.put(config, checkpoint, metadata, new_versions)
        await self._committed()
        return saved

    async def aput_writes(self, config, writes, task_id, task_path: str = "") -> None:
        self.put_writes(config, writes, task_id, task_path)
        await self._committed()

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)
        await self._committed()

    async def aget_delta_channel_history(self, *, config, channels):
        return self.get_delta_channel_history(config=config, channels=channels)


@asynccontextmanager
async def open_saver(path: Path) -> AsyncIterator[LoopSqliteSaver]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # storage.connect: an error names checkpoints.db wherever LangGraph lets it surface
    conn = storage.connect(path, timeout=30, check_same_thread=False)
    try:
        # Set before the tables exist (a no-op on older files): pages of deleted threads can then
        # be handed back to the file system when the run ends.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL+NORMAL survives a process crash
        # The WAL is checkpointed every 1000 pages (SQLite's default; checkpointing every 256 doubled
        # the pages written and the fsyncs, strace) and cut back to 4 MB afterwards.
        conn.execute("PRAGMA journal_size_limit=4194304")
        saver = LoopSqliteSaver(conn)
        saver.setup()
        yield saver
        shrink(conn)
    finally:
        conn.close()


def check_store(path: Path) -> None:
    """Raise StorageError if the checkpoint file exists but cannot be read (damaged, not SQLite):
    called before a run is made, so that such a file does not leave a half-made run behind."""
    if not path.exists():
        return
    try:
        conn = storage.connect(path, timeout=30)
        try:
            conn.execute("select count(*) from sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise storage.fault(exc) from None


def shrink(conn: sqlite3.Connection) -> None:
    """Give free pages back and empty the WAL: finished seeds' threads are deleted as they finish,
    so after a run the file holds only what unfinished seeds still need."""
    try:
        conn.commit()
        conn.executescript("PRAGMA incremental_vacuum;")  # execute() would free a single page
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.OperationalError:  # another process is using the file: it shrinks next time
        pass


def started_seeds(saver: Any, run_id: str, registry: Any = None) -> set[str]:
    """The seeds of `run_id` whose graphs have a checkpoint (started, not yet forgotten). SQLite: read
    through the saver's own connection. Any other saver (langgraph's AsyncPostgresSaver, whose async
    pool cannot be read from synchronous code on its loop) keeps its `checkpoints` table in the store's
    database, beside the registry's tables: read through `registry.db`."""
    prefix = thread_id(run_id, "")
    query = "select distinct thread_id from checkpoints where substr(thread_id, 1, ?) = ?"
    if isinstance(saver, SqliteSaver):
        rows = saver.conn.execute(query, [len(prefix), prefix]).fetchall()
    elif registry is not None and getattr(registry.db, "kind", "sqlite") != "sqlite":
        rows = registry.db.execute(query, [len(prefix), prefix]).fetchall()
    else:
        raise TypeError(f"started_seeds: cannot read the checkpoints of a {type(saver).__name__} "
                        "without its store's registry")
    return {row[0][len(prefix):] for row in rows}


async def forget_thread(saver: SqliteSaver, thread: str) -> None:
    """A finished seed's outcome lives in the registry; its checkpoints are no longer needed."""
    await saver.adelete_thread(thread)
