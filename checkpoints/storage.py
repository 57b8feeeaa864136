"""The files teachgraph keeps (runs.db, checkpoints.db, cache.db, the JSON Lines output) and what
to say when one cannot be used: one line naming the file and what to do, never a traceback.

Every SQLite connection is opened with `connect`, whose errors carry the file they came from
(`storage_path`), so that wherever such an error surfaces (a node, the checkpointer inside
LangGraph, the runner, a CLI command) `fault` can turn it into a StorageError that names it."""

from __future__ import annotations

import errno
import functools
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from teachgraph.errors import TeachgraphError

# What is lost by moving a damaged file aside (teachgraph makes a new, empty one).
_LOST = {"runs.db": "the runs recorded in it are lost",
         "checkpoints.db": "unfinished seeds then restart from their first node",
         "cache.db": "only cached replies are lost"}


class StorageError(TeachgraphError, RuntimeError):
    """A file teachgraph keeps cannot be read or written; the message names it and says what to do."""


def _tagged(method):
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            if getattr(exc, "storage_path", None) is None:
                conn = self if isinstance(self, sqlite3.Connection) else self.connection
                exc.storage_path = getattr(conn, "storage_path", None)
            raise
    return guarded


class _Cursor(sqlite3.Cursor):
    execute = _tagged(sqlite3.Cursor.execute)
    executemany = _tagged(sqlite3.Cursor.executemany)
    executescript = _tagged(sqlite3.Cursor.executescript)
    fetchone = _tagged(sqlite3.Cursor.fetchone)
    fetchmany = _tagged(sqlite3.Cursor.fetchmany)
    fetchall = _tagged(sqlite3.Cursor.fetchall)
    __next__ = _tagged(sqlite3.Cursor.__next__)


class _Connection(sqlite3.Connection):
    storage_path: Path | None = None

    def cursor(self, factory=_Cursor):
        return super().cursor(factory)

    # Connection.execute does not go through cursor(): route it there, so its rows are guarded too.
    @_tagged
    def execute(self, sql, parameters=()):
        return self.cursor().execute(sql, parameters)

    @_tagged
    def executemany(self, sql, parameters):
        return self.cursor().executemany(sql, parameters)

    @_tagged
    def executescript(self, script):
        return self.cursor().executescript(script)

    commit = _tagged(sqlite3.Connection.commit)
    __exit__ = _tagged(sqlite3.Connection.__exit__)


def connect(path: Path, **kwargs: Any) -> sqlite3.Connection:
    """sqlite3.connect, with every error of the connection (and its cursors) tagged with `path`."""
    try:
        conn = sqlite3.connect(str(path), factory=_Connection, **kwargs)
    except sqlite3.Error as exc:
        exc.storage_path = path
        raise
    conn.storage_path = path
    return conn


def _full(path: Path | str | None) -> bool:
    """Whether the file system holding `path` has (next to) no room left. SQLite reports some writes
    that fail for want of space as an I/O error (growing the WAL index, shm), not as SQLITE_FULL."""
    try:
        return path is not None and shutil.disk_usage(Path(path).parent).free < 64 * 1024
    except OSError:
        return False


def describe(path: Path | str | None, exc: sqlite3.Error) -> StorageError:
    name = Path(path).name if path else ""
    where = str(path) if path else "a teachgraph database"
    code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    if code == sqlite3.SQLITE_FULL or (code == sqlite3.SQLITE_IOERR and _full(path)):
        text = f"{where}: the disk is full ({exc}); free some space, then try again"
    elif code == sqlite3.SQLITE_BUSY or code == sqlite3.SQLITE_LOCKED:
        text = (f"{where} is locked by another process ({exc}); wait for it to finish (or stop it), "
                f"then try again")
    elif code == sqlite3.SQLITE_READONLY:
        text = f"{where} is read-only ({exc}); make it (and its folder) writable, then try again"
    elif code == sqlite3.SQLITE_CANTOPEN:
        text = f"cannot open {where} ({exc}); check that its folder exists and is writable"
    elif code in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        lost = _LOST.get(name, "what it holds is lost")
        text = (f"{where} is damaged or not a SQLite database ({exc}); move it aside to start a new one "
                f"({lost}) or restore it from a backup")
    elif code == sqlite3.SQLITE_IOERR:
        text = f"{where}: disk I/O error ({exc}); check the disk (full? read-only? failing?), then try again"
    else:
        text = f"{where}: {type(exc).__name__}: {exc}"
    return StorageError(text)


def describe_os(path: Path | str, exc: OSError, doing: str = "write") -> StorageError:
    """An OSError on a file teachgraph writes (the output), as one line."""
    reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "the file system is read-only", errno.EFBIG: "the file is too large",
              errno.EACCES: "permission denied", errno.EPERM: "not permitted"}.get(
                  exc.errno, exc.strerror or str(exc))
    return StorageError(f"cannot {doing} {path}: {reason}")


def fault(exc: BaseException) -> StorageError | None:
    """The StorageError behind `exc` (itself, or what it wraps), if a storage fault caused it."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, sqlite3.Error) and getattr(exc, "storage_path", None) is not None:
            return describe(exc.storage_path, exc)
        if type(exc).__module__.split(".")[0] in ("psycopg", "psycopg_pool"):   # the PostgreSQL store
            first = (str(exc).strip().splitlines() or [""])[0]
            return StorageError(f"the PostgreSQL store: {type(exc).__name__}: {first}")
        # NodeFailed keeps the node's error in .error; other wrappers chain it
        inner = getattr(exc, "error", None)
        exc = inner if isinstance(inner, BaseException) else exc.__cause__ or exc.__context__
    return None


def migrate(db: Any, migrations: Any) -> None:
    """Apply `migrations` (a sqlite_utils.Migrations set) to `db` (a sqlite_utils.Database), each once.

    sqlite-utils records what it applied in `_sqlite_migrations`. Processes opening one file at once
    take turns: the first to hold the write lock (BEGIN IMMEDIATE; the others wait out the busy
    timeout) applies what is pending, the next finds nothing left. Each migration still runs in its
    own savepoint inside that transaction, so a failed one leaves the file as it was."""
    if not migrations.pending(db):   # the usual case: a read, no write lock
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        migrations.apply(db)
    except BaseException:
        db.rollback()
        raise
    db.execute("COMMIT")
