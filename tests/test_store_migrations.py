"""The store's schema migrations: files made by the code from before migrations were recorded
("version 0", copied below as it was) open with the new code with every row kept, gain what the
migrations add, and a second open applies nothing again."""

import json
import sqlite3

import sqlite_utils

from teachgraph.checkpoints import cache, registry
from teachgraph.checkpoints.cache import ResponseCache
from teachgraph.checkpoints.registry import Registry
from teachgraph.client.probe import Check, Probe


# ---------------------------------------------------------------- version 0 (the old code, verbatim)

def old_ensure_schema(db: sqlite_utils.Database, *, with_later_columns: bool = True) -> None:
    """Registry._ensure_schema before migrations (with_later_columns=False: before multi-skill runs and
    the response cache, whose add_column blocks it then skips)."""
    if "runs" not in db.table_names():
        db["runs"].create({"id": str, "skill": str, "status": str, "created": float, "updated": float,
                           "settings": str, "wall_seconds": float, "seeds_total": int}, pk="id")
    if "seeds" not in db.table_names():
        db["seeds"].create({"run_id": str, "id": str, "ordinal": int, "source": str, "chunk": int,
                            "title": str, "kind": str, "text": str, "task_type": str, "status": str,
                            "reason": str, "node": str, "error": str, "llm_calls": int, "tokens": int,
                            "samples": int, "updated": float}, pk=("run_id", "id"))
        db["seeds"].create_index(["run_id", "status", "ordinal"])
        db["seeds"].create_index(["run_id", "ordinal"])
    if with_later_columns:
        for column in ("skill", "transformation"):
            if column not in db["seeds"].columns_dict:
                db["seeds"].add_column(column, str)
        if "cache_hits" not in db["seeds"].columns_dict:
            db["seeds"].add_column("cache_hits", int, not_null_default=0)
    if "samples" not in db.table_names():
        db["samples"].create({"id": str, "run_id": str, "seed_id": str, "seq": int, "body": str}, pk="id")
        db["samples"].create_index(["run_id", "seq"])
    if "skipped" not in db.table_names():
        db["skipped"].create({"run_id": str, "source": str, "reason": str})
        db["skipped"].create_index(["run_id"])
    if "passages" not in db.table_names():
        db["passages"].create({"run_id": str, "seed_id": str, "idx": int, "title": str, "text": str})
        db["passages"].create_index(["run_id", "seed_id"])
        db["passages"].enable_fts(["title", "text"], tokenize="porter", create_triggers=True)
    if with_later_columns and "terms" not in db.table_names():
        db.execute("""create table terms (run_id text not null, term text not null, passages integer not null,
                      primary key (run_id, term)) without rowid""")


def old_remember_probe(db: sqlite_utils.Database, result: Probe) -> None:
    """client/probe.py's remember before the store owned the table."""
    from dataclasses import asdict
    db["endpoint_probes"].upsert({"endpoint": result.endpoint, "model": result.model, "strategy": result.strategy,
                                  "checks": json.dumps([asdict(c) for c in result.checks]),
                                  "probed": result.probed}, pk=("endpoint", "model"))


def old_cache_schema(conn: sqlite3.Connection, *, with_tool_calls: bool = True) -> None:
    conn.execute("""create table if not exists replies (
        key text primary key, content text not null, finish_reason text, model text,
        tokens integer not null default 0, created real not null) without rowid""")
    columns = {row[1] for row in conn.execute("pragma table_info(replies)")}
    if with_tool_calls and "tool_calls" not in columns:
        conn.execute("alter table replies add column tool_calls text")


# ---------------------------------------------------------------- helpers

def applied(path, migration_set: str) -> list[str]:
    return [m.name for m in sqlite_utils.Migrations(migration_set).applied(sqlite_utils.Database(path))]


def make_old_runs_db(path, *, with_later_columns: bool, probe: bool) -> None:
    db = sqlite_utils.Database(path)
    old_ensure_schema(db, with_later_columns=with_later_columns)
    db["runs"].insert({"id": "r1", "skill": "rag", "status": "done", "created": 1.0, "updated": 2.0,
                       "settings": json.dumps({"out": "x.jsonl"}), "wall_seconds": 3.0, "seeds_total": 1})
    seed = {"run_id": "r1", "id": "s1", "ordinal": 0, "source": "a.md", "chunk": 0, "title": "A", "kind": "doc",
            "text": "alpha beta gamma", "task_type": "t", "status": "accepted", "reason": None, "node": None,
            "error": None, "llm_calls": 4, "tokens": 40, "samples": 1, "updated": 2.0}
    if with_later_columns:
        seed |= {"skill": "rag", "transformation": "identity", "cache_hits": 2}
    db["seeds"].insert(seed)
    db["samples"].insert({"id": "r1:s1:0", "run_id": "r1", "seed_id": "s1", "seq": 0, "body": "{}"})
    db["skipped"].insert({"run_id": "r1", "source": "b.bin", "reason": "binary"})
    db["passages"].insert({"run_id": "r1", "seed_id": "s1", "idx": 0, "title": "A", "text": "alpha beta gamma"})
    if probe:
        old_remember_probe(db, Probe("http://h/v1", "m", "json_object", [Check("json_object", "works", "ok")], 5.0))
    db.conn.commit()
    db.close()


# ---------------------------------------------------------------- tests

def test_a_version_0_runs_db_upgrades_with_every_row_and_the_new_columns(tmp_path):
    for later, probe in ((True, True), (False, False)):
        path = tmp_path / f"runs-{later}.db"
        make_old_runs_db(path, with_later_columns=later, probe=probe)
        store = Registry(path)
        assert store.run("r1")["settings"] == {"out": "x.jsonl"}
        seed = store.seed("r1", "s1")
        assert (seed["text"], seed["llm_calls"], seed["passages"]) == ("alpha beta gamma", 4, ["alpha beta gamma"])
        assert {"skill", "transformation", "cache_hits"} <= set(store.db["seeds"].columns_dict)
        assert seed["cache_hits"] == (2 if later else 0) and seed["skill"] == ("rag" if later else None)
        assert [i for i, _ in store.samples("r1")] == ["r1:s1:0"]
        assert store.db.execute("select count(*) from skipped").fetchone()[0] == 1
        assert store.counts("r1")["accepted"] == 1
        assert [r["seed_id"] for r in store.search("r1", "gamma beta", exclude_seed="other", limit=3)] == ["s1"]
        assert "terms" in store.db.table_names()
        known = store.probe_result("http://h/v1/", "m")
        if probe:
            assert (known.strategy, known.checks) == ("json_object", [Check("json_object", "works", "ok")])
        else:
            assert known is None
        store.db.close()
        names = applied(path, "teachgraph.runs")
        assert names[0] == "0001_runs_seeds_samples_skipped_passages" and len(names) == len(set(names)) >= 5
        assert registry.MIGRATIONS.pending(sqlite_utils.Database(path)) == []
        Registry(path).db.close()                                   # a second open applies nothing again
        assert applied(path, "teachgraph.runs") == names
        rows = sqlite_utils.Database(path).execute("select count(*) from _sqlite_migrations").fetchone()[0]
        assert rows == len(names)


def test_a_new_runs_db_remembers_probes(tmp_path):
    store = Registry(tmp_path / "runs.db")
    assert store.probe_result("http://h/v1", "m") is None
    store.remember_probe(Probe("http://h/v1", "m", "tools", [Check("tools", "works", "ok")], 7.0))
    store.remember_probe(Probe("http://h/v1", "m", "json_schema", [], 8.0))       # a re-probe replaces it
    again = Registry(tmp_path / "runs.db").probe_result("http://h/v1", "m")
    assert (again.strategy, again.probed, again.checks) == ("json_schema", 8.0, [])


def test_a_version_0_cache_db_upgrades_with_every_reply(tmp_path):
    for with_tool_calls in (True, False):
        path = tmp_path / f"cache-{with_tool_calls}.db"
        conn = sqlite3.connect(path, isolation_level=None)
        old_cache_schema(conn, with_tool_calls=with_tool_calls)
        conn.execute("insert into replies (key, content, finish_reason, model, tokens, created) "
                     "values ('k', ?, 'stop', 'm', 3, 1.0)", [json.dumps("hello")])
        conn.close()
        store = ResponseCache(path, on_fault=lambda line: (_ for _ in ()).throw(AssertionError(line)))
        assert store.usable and len(store) == 1 and store.get("k").content == "hello"
        assert "tool_calls" in {row[1] for row in store.conn.execute("pragma table_info(replies)")}
        store.close()
        names = applied(path, "teachgraph.cache")
        assert names == ["0001_replies", "0002_replies_tool_calls"]
        assert cache.MIGRATIONS.pending(sqlite_utils.Database(path)) == []
        ResponseCache(path).close()
        assert applied(path, "teachgraph.cache") == names
