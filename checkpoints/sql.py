"""The SQL layer both store backends share: SQLite (the default) and PostgreSQL (`--store postgresql://...`).

One registry, one cache, one SQL text per query. The store code talks to a database through the part of
sqlite-utils' `Database` it uses: `query(sql, params)` (dict rows), `execute`, `db.conn` (`with db.conn:`
is a transaction), `db[table].insert / insert_all / update / upsert`, and `transaction(lock=...)`. For
SQLite that is sqlite-utils itself (`SqliteDatabase`, a subclass); for PostgreSQL `PostgresDatabase`
implements the same subset over one psycopg connection, translating `?` placeholders to psycopg's `%s`.
Why not two implementations of the registry: its queries are the same on both (portable SQL: `on
conflict`, `case when`, `returning`), and two copies would drift. What does differ sits in `Dialect`:
reading a JSON field, the write lock, the server's clock, and passage search (FTS5 vs tsvector).

Schema migrations stay named and append-only per backend: sqlite-utils' `Migrations` for SQLite (as
before), `Migrations` here for PostgreSQL (recorded in `teachgraph_migrations`), under the same names:
tests/test_store_postgres.py checks that both lists name the same migrations in the same order."""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator, Sequence

import sqlite_utils

from teachgraph.checkpoints.storage import StorageError
from teachgraph.errors import UsageError

POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres(url: str | None) -> bool:
    return bool(url) and urllib.parse.urlsplit(url).scheme in POSTGRES_SCHEMES


def shown_url(url: str) -> str:
    """`url` without its password (it is printed and may be stored)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


class Dialect:
    """What differs between the backends, as SQL fragments and the one query that cannot be shared."""

    name = "sqlite"

    def json_text(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"

    def now(self) -> str:
        """The database server's clock, seconds since the epoch: leases compare against it, so the
        workers' clocks do not matter."""
        return "((julianday('now') - 2440587.5) * 86400.0)"

    def search(self, db: Any, run_id: str, words: Sequence[str], exclude_seed: str, limit: int) -> Iterable[dict]:
        """Passages of the run (not of `exclude_seed`) matching any of `words`, best first."""
        match = " OR ".join(f'"{w}"' for w in words)   # quoted: user text never reaches FTS5 syntax
        return db.query(
            """select p.seed_id, p.title, p.text from passages_fts f join passages p on p.rowid = f.rowid
               where passages_fts match ? and p.run_id = ? and p.seed_id != ?
               order by bm25(passages_fts) limit ?""", [match, run_id, exclude_seed, limit])


class PostgresDialect(Dialect):
    name = "postgresql"

    def json_text(self, column: str, key: str) -> str:
        return f"({column}::jsonb ->> '{key}')"

    def now(self) -> str:
        return "extract(epoch from clock_timestamp())::double precision"

    def search(self, db: Any, run_id: str, words: Sequence[str], exclude_seed: str, limit: int) -> Iterable[dict]:
        # websearch_to_tsquery never raises on its input; the words are [A-Za-z][A-Za-z0-9_]+ anyway
        return db.query(
            """select p.seed_id, p.title, p.text from passages p, websearch_to_tsquery('english', ?) q
               where p.tsv @@ q and p.run_id = ? and p.seed_id != ?
               order by ts_rank(p.tsv, q) desc, p.seed_id, p.idx limit ?""",
            [" or ".join(words), run_id, exclude_seed, limit])


SQLITE = Dialect()
POSTGRES = PostgresDialect()


class SqliteDatabase(sqlite_utils.Database):
    """sqlite-utils' Database with the two things the shared layer adds: its dialect and `transaction`."""

    dialect = SQLITE
    kind = "sqlite"

    @contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[None]:
        """One transaction; `lock` (a name): writers take turns from its start (SQLite: BEGIN IMMEDIATE
        takes the file's write lock)."""
        with self.conn:
            if lock:
                self.conn.execute("begin immediate")
            yield


# ---------------------------------------------------------------- PostgreSQL

_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?|%")


def _translated(match: re.Match) -> str:
    token = match.group()
    if token == "?":
        return "%s"
    return token.replace("%", "%%")   # psycopg reads % everywhere, inside quoted strings too


def to_psycopg(sql: str) -> str:
    """`?` placeholders (outside quoted strings) as psycopg's `%s`, and every literal `%` as `%%`."""
    return _PLACEHOLDER.sub(_translated, sql)


def _value(v: Any) -> Any:
    # sum() over bigint is numeric in PostgreSQL: give back the int (or float) SQLite would
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    return v


def require_postgres():
    """psycopg, or one line saying which extra to install (it is imported only for a Postgres store)."""
    try:
        import langgraph.checkpoint.postgres.aio  # noqa: F401
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"a PostgreSQL store needs the postgres extra ({exc.name} is missing): "
                         f"pip install 'teachgraph[postgres]'") from None
    return psycopg


def pg_error(exc: BaseException, url: str) -> StorageError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return StorageError(f"PostgreSQL store {shown_url(url)}: {type(exc).__name__}: {first}")


class _Transaction:
    """`with db.conn:` on a PostgresDatabase: a transaction, as sqlite3's connection gives one."""

    def __init__(self, db: "PostgresDatabase"):
        self.db = db
        self._stack: list[Any] = []

    def __enter__(self):
        self._stack.append(self.db.transaction())
        return self._stack[-1].__enter__()

    def __exit__(self, *exc):
        return self._stack.pop().__exit__(*exc)

    def execute(self, sql: str, params: Sequence[Any] = ()):
        return self.db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]):
        return self.db.executemany(sql, rows)

    def commit(self) -> None:   # autocommit: every statement outside a transaction is already committed
        pass


class PostgresDatabase:
    """One psycopg connection (autocommit; `transaction()` for more than one statement) with the subset
    of sqlite-utils' Database the store uses. Every psycopg error leaves as a StorageError naming the
    store (never its password)."""

    dialect = POSTGRES
    kind = "postgresql"

    def __init__(self, url: str, connect_timeout: float = 10):
        psycopg = require_postgres()
        self.url, self._psycopg = url, psycopg
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=int(connect_timeout))
        except psycopg.Error as exc:
            raise pg_error(exc, url) from None
        self.conn = _Transaction(self)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._psycopg.Error as exc:
            raise pg_error(exc, self.url) from exc

    @contextmanager
    def transaction(self, lock: str | None = None) -> Iterator[None]:
        """One transaction (nested ones join the outer); `lock`: a transaction-scoped advisory lock on
        that name, so writers that take it take turns."""
        with self._errors(), self._conn.transaction():
            if lock:
                self._conn.execute("select pg_advisory_xact_lock(hashtext(%s))", [f"teachgraph:{lock}"])
            yield

    def execute(self, sql: str, params: Sequence[Any] = ()):
        with self._errors():
            return self._conn.execute(to_psycopg(sql), list(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]):
        rows = [list(r) for r in rows]
        if not rows:
            return None
        with self._errors():
            cur = self._conn.cursor()
            cur.executemany(to_psycopg(sql), rows)
            return cur

    def query(self, sql: str, params: Sequence[Any] = ()) -> Iterator[dict]:
        cur = self.execute(sql, params)
        names = [c.name for c in cur.description]
        with self._errors():
            rows = cur.fetchall()
        for row in rows:
            yield {k: _value(v) for k, v in zip(names, row)}

    def __getitem__(self, name: str) -> "PostgresTable":
        return PostgresTable(self, name)

    table = __getitem__

    def table_names(self) -> list[str]:
        return [r["table_name"] for r in self.query(
            "select table_name from information_schema.tables where table_schema = current_schema()")]

    def close(self) -> None:
        self._conn.close()


@dataclass
class PostgresTable:
    """The few sqlite-utils Table writes the store makes, as portable SQL."""

    db: PostgresDatabase
    name: str

    def insert(self, row: dict, ignore: bool = False) -> None:
        self.insert_all([row], ignore=ignore)

    def insert_all(self, rows: Iterable[dict], ignore: bool = False) -> None:
        rows = list(rows)
        if not rows:
            return
        columns = list(rows[0])
        self.db.executemany(
            f"insert into {self.name} ({', '.join(columns)}) values ({', '.join('?' * len(columns))})"
            + (" on conflict do nothing" if ignore else ""), [[r.get(c) for c in columns] for r in rows])

    def update(self, pk: Any, fields: dict) -> None:
        keys = self._pk_columns()
        values = list(pk) if isinstance(pk, (tuple, list)) else [pk]
        self.db.execute(f"update {self.name} set {', '.join(f'{c} = ?' for c in fields)} where "
                        + " and ".join(f"{k} = ?" for k in keys), [*fields.values(), *values])

    def upsert(self, row: dict, pk: str | Sequence[str]) -> None:
        keys = [pk] if isinstance(pk, str) else list(pk)
        others = [c for c in row if c not in keys]
        self.db.execute(
            f"insert into {self.name} ({', '.join(row)}) values ({', '.join('?' * len(row))}) "
            f"on conflict ({', '.join(keys)}) do update set "
            + ", ".join(f"{c} = excluded.{c}" for c in others), list(row.values()))

    def create(self, columns: dict[str, type], pk: str | Sequence[str] | None = None,
               if_not_exists: bool = False) -> None:
        """sqlite-utils' Table.create for PostgreSQL, with a `rowid` (bigserial) as SQLite tables have
        one: code that orders by it or selects on it runs unchanged."""
        types = {str: "text", int: "bigint", float: "double precision", bytes: "bytea", bool: "boolean"}
        keys = [pk] if isinstance(pk, str) else list(pk or [])
        parts = ["rowid bigserial", *(f"{c} {types[t]}" for c, t in columns.items())]
        if keys:
            parts.append(f"primary key ({', '.join(keys)})")
        self.db.execute(f"create table {'if not exists ' if if_not_exists else ''}{self.name} ({', '.join(parts)})")

    def create_index(self, columns: Sequence[str], if_not_exists: bool = False) -> None:
        self.db.execute(f"create index {'if not exists ' if if_not_exists else ''}{self.name}_{'_'.join(columns)} "
                        f"on {self.name} ({', '.join(columns)})")

    def _pk_columns(self) -> list[str]:
        return [r["attname"] for r in self.db.query(
            """select a.attname from pg_index i join pg_attribute a
               on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
               where i.indrelid = ?::regclass and i.indisprimary order by array_position(i.indkey, a.attnum)""",
            [self.name])]


@dataclass
class Migrations:
    """Named, append-only schema migrations for PostgreSQL, each applied once and recorded in
    `teachgraph_migrations`. Workers opening one store at once take turns (an advisory lock): the first
    applies what is pending, the others find nothing left. All pending ones commit together."""

    name: str
    _migrations: list[tuple[str, Callable[[PostgresDatabase], None]]] = field(default_factory=list)

    def __call__(self, *, name: str) -> Callable:
        def register(fn: Callable[[PostgresDatabase], None]) -> Callable:
            if any(n == name for n, _ in self._migrations):
                raise ValueError(f"migration {name!r} is already in set {self.name!r}")
            self._migrations.append((name, fn))
            return fn
        return register

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self._migrations]

    def applied(self, db: PostgresDatabase) -> list[str]:
        if "teachgraph_migrations" not in db.table_names():
            return []
        return [r["name"] for r in db.query(
            "select name from teachgraph_migrations where migration_set = ? order by id", [self.name])]

    def apply(self, db: PostgresDatabase) -> None:
        if self.names == self.applied(db):   # the usual case: a read, no lock
            return
        with db.transaction(lock="migrations"):
            db.execute("""create table if not exists teachgraph_migrations (id bigserial primary key,
                          migration_set text not null, name text not null,
                          applied_at timestamptz not null default now(), unique (migration_set, name))""")
            done = set(self.applied(db))
            for name, fn in self._migrations:
                if name not in done:
                    fn(db)
                    db.execute("insert into teachgraph_migrations (migration_set, name) values (?, ?)",
                               [self.name, name])


Database = SqliteDatabase | PostgresDatabase
DB_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, StorageError)


def migration(sqlite_set: sqlite_utils.Migrations, postgres_set: Migrations, *, name: str) -> Callable:
    """One migration for both backends (every migration after the first five): `fn(db)` in portable SQL
    (types text, bigint, double precision; `db.execute`), registered under one name in both lists."""
    def register(fn: Callable) -> Callable:
        sqlite_set(name=name)(fn)
        postgres_set(name=name)(fn)
        return fn
    return register
