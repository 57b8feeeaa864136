"""The LLM response cache: each reply stored under the full request that produced it.

A reply is its text, or the tool calls it made (the tools strategy), and its finish reason.
The key is a SHA-256 of the request exactly as it goes on the wire (model, messages, sampling
parameters such as temperature and max_tokens, response_format with its JSON schema, anything
else in the body) plus the endpoint's base URL (for the embedded model, whose ports change every run,
`embedded:MODEL`: client/llm.py's cache_endpoint). Never the API key: it travels in a header, which
is not part of the key. Nothing random goes into the key either, so the same request always gets
the same reply, whatever the run and whatever the temperature: re-running a step with identical
inputs (a resumed node, a re-run over the same seeds, another run id over the same corpus with
the same settings) costs no model call. To draw fresh replies, run with `--no-cache`.

Only replies that were used are stored (nodes/llm.py puts a reply once it validated): a malformed,
truncated or empty reply is asked for again next time, not served. A reply over MAX_STORED_CHARS is
used but not stored.

Stored in TEACHGRAPH_HOME/cache.db (SQLite, WAL), or in the PostgreSQL store's `replies` table.
A reply is written as soon as it has been used,
so a kill loses at most the replies still in flight. Deleting the file empties the cache.

The cache is optional: if the file cannot be opened, read or written (damaged, truncated, disk
full), the run carries on without it, and `on_fault` is told once, in one line."""

from __future__ import annotations

import json
import sqlite3
import time
import logging
from pathlib import Path
from typing import Callable

import sqlite_utils
from langchain_core.messages import AIMessage

from teachgraph.checkpoints import sql, storage
from teachgraph.client.chat_call import reply_tokens


# A reply whose stored text is longer is not stored (it is still used): replies are capped by
# --max-tokens (384 tokens is ~1.5 KB), so only a runaway or hostile endpoint sends this much.
MAX_STORED_CHARS = 1_000_000


# cache.db's schema, as named, append-only migrations (sqlite-utils records the applied ones in
# `_sqlite_migrations`). Never edit or reorder one that has shipped: add a new one at the end.
MIGRATIONS = sqlite_utils.Migrations("teachgraph.cache")


# These two describe cache.db as it was before migrations were recorded ("version 0"): a file made
# then may hold either or both, so they skip what is there.
@MIGRATIONS(name="0001_replies")
def _replies(db: sqlite_utils.Database) -> None:
    db.execute("""create table if not exists replies (
        key text primary key, content text not null, finish_reason text, model text,
        tokens integer not null default 0, created real not null) without rowid""")


@MIGRATIONS(name="0002_replies_tool_calls")
def _tool_calls(db: sqlite_utils.Database) -> None:   # the tools strategy's replies are tool calls
    if "tool_calls" not in db["replies"].columns_dict:
        db["replies"].add_column("tool_calls", str)


# The same schema in PostgreSQL, under the same names (checkpoints/sql.py).
PG_MIGRATIONS = sql.Migrations("teachgraph.cache")


@PG_MIGRATIONS(name="0001_replies")
def _pg_replies(db: sql.PostgresDatabase) -> None:
    db.execute("""create table replies (key text primary key, content text not null, finish_reason text,
                  model text, tokens bigint not null default 0, created double precision not null)""")


@PG_MIGRATIONS(name="0002_replies_tool_calls")
def _pg_tool_calls(db: sql.PostgresDatabase) -> None:
    db.execute("alter table replies add column tool_calls text")


class ResponseCache:
    def __init__(self, path: Path | None, on_fault: Callable[[str], None] | None = None, *,
                 postgres: str | None = None):
        """`path`: cache.db; or `postgres`: the URL of a PostgreSQL store (then `path` is unused)."""
        self.path = path if postgres is None else sql.shown_url(postgres)
        self.on_fault = on_fault or logging.getLogger(__name__).warning
        self.conn: sqlite3.Connection | sql.PostgresDatabase | None = None
        if postgres is not None:
            try:
                self.conn = sql.PostgresDatabase(postgres)
                PG_MIGRATIONS.apply(self.conn)
            except storage.StorageError as exc:
                self._give_up(exc)
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit: every put is its own short transaction; the event loop never waits long
            self.conn = storage.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            storage.migrate(sqlite_utils.Database(self.conn), MIGRATIONS)
        except (sqlite3.Error, OSError) as exc:
            self._give_up(exc)

    @property
    def usable(self) -> bool:
        return self.conn is not None

    def _give_up(self, exc: BaseException) -> None:
        """Carry on without the cache: a cache miss costs a model call, a broken cache every seed."""
        if isinstance(exc, storage.StorageError):
            why = str(exc)
        elif isinstance(exc, sqlite3.Error):
            why = str(storage.describe(self.path, exc))
        else:
            why = str(storage.describe_os(self.path, exc, doing="open"))
        if self.conn is not None:
            try:
                self.conn.close()
            except sql.DB_ERRORS:
                pass
            self.conn = None
        self.on_fault(f"response cache off for this run: {why}")

    def get(self, key: str) -> AIMessage | None:
        if self.conn is None:
            return None
        try:
            row = self.conn.execute("select content, tool_calls, finish_reason, model from replies where key = ?",
                                    [key]).fetchone()
        except sql.DB_ERRORS as exc:
            self._give_up(exc)
            return None
        if row is None:
            return None
        content, tool_calls, finish_reason, model = row
        calls = json.loads(tool_calls) if tool_calls else {}
        return AIMessage(json.loads(content), tool_calls=calls.get("valid", []),
                         invalid_tool_calls=calls.get("invalid", []),
                         response_metadata={"finish_reason": finish_reason, "model_name": model, "cache_hit": True},
                         usage_metadata={"input_tokens": 0, "output_tokens": 0, "total_tokens": 0})

    def put(self, key: str, reply: AIMessage) -> bool:
        """Store `reply` (one that was used: nodes/llm.py); False if it is not stored (over
        MAX_STORED_CHARS, or the cache is off)."""
        if self.conn is None:
            return False
        meta = reply.response_metadata or {}
        tokens = reply_tokens(reply)
        content = json.dumps(reply.content, ensure_ascii=False)
        calls = {"valid": reply.tool_calls, "invalid": reply.invalid_tool_calls}
        tool_calls = json.dumps(calls, ensure_ascii=False) if reply.tool_calls or reply.invalid_tool_calls else None
        if len(content) + len(tool_calls or "") > MAX_STORED_CHARS:
            return False
        try:
            self.conn.execute("insert into replies (key, content, tool_calls, finish_reason, model, tokens, created) "
                              "values (?, ?, ?, ?, ?, ?, ?) on conflict (key) do update set "
                              "content = excluded.content, tool_calls = excluded.tool_calls, "
                              "finish_reason = excluded.finish_reason, model = excluded.model, "
                              "tokens = excluded.tokens, created = excluded.created",
                              [key, content, tool_calls, meta.get("finish_reason"), meta.get("model_name"), tokens,
                               time.time()])
        except sql.DB_ERRORS as exc:
            self._give_up(exc)
            return False
        return True

    def forget(self, key: str) -> None:
        if self.conn is None:
            return
        try:
            self.conn.execute("delete from replies where key = ?", [key])
        except sql.DB_ERRORS as exc:
            self._give_up(exc)

    def __len__(self) -> int:
        return self.conn.execute("select count(*) from replies").fetchone()[0] if self.conn is not None else 0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
