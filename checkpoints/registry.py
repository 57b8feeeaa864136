"""The run registry: the durable log of runs, seeds, samples and skipped inputs, plus the full-text
index of every seed's passages used to retrieve distractors. In SQLite (runs.db, via sqlite-utils) by
default, or in PostgreSQL (`--store postgresql://...`): one class, the same SQL (checkpoints/sql.py).

A seed's outcome and its samples are written in one transaction, so after any kill a seed is
either finished with all its samples or still pending. A seed runs in one place at a time: whoever
runs it holds its lease (`claim_seed`), and its outcome is committed only with the lease's current
fencing token, so a worker presumed dead that comes back cannot commit a second outcome. Never stores
API keys."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import sqlite_utils

from teachgraph.checkpoints import sql, storage, terms
from teachgraph.errors import UsageError
from teachgraph.client.budget import Spend
from teachgraph.client.probe import Check, Probe
from teachgraph.seeds import Chunk, Skipped, split_passages


class OutputInUse(UsageError):
    """Another run already writes the output file a new run asks for."""

    def __init__(self, out: str, run_id: str):
        self.out, self.run_id = out, run_id
        super().__init__(f"--out {out} is already the output of run {run_id}; choose another file "
                         f"(or resume that run: python cli.py graph resume {run_id})")


class LeaseLost(storage.StorageError):
    """A seed's outcome came with a fencing token that is no longer current: another worker took the
    seed over (its lease had expired), so this outcome is not recorded."""

    def __init__(self, run_id: str, seed_id: str, token: int):
        self.run_id, self.seed_id, self.token = run_id, seed_id, token
        super().__init__(f"seed {seed_id} of run {run_id}: lease {token} is no longer current "
                         f"(another worker took the seed over); this outcome is not recorded")


BUSY_TIMEOUT_S = 30.0  # how long a statement waits for another process's lock on runs.db
LEASE_TTL_S = 60.0     # a seed's lease lasts this long unless renewed (the runner renews it every third)

# runs.db's schema, as named, append-only migrations (sqlite-utils records the applied ones in
# `_sqlite_migrations`). Never edit or reorder one that has shipped: add a new one at the end.
MIGRATIONS = sqlite_utils.Migrations("teachgraph.runs")

# The migrations up to endpoint_probes describe the schema as it was before migrations were recorded
# ("version 0"): a runs.db made then holds some or all of what they create, so they skip what is
# already there. A later migration runs on a file whose record says what it holds, and need not check.


def _missing(db: sqlite_utils.Database, table: str) -> bool:
    return table not in db.table_names()


@MIGRATIONS(name="0001_runs_seeds_samples_skipped_passages")
def _initial(db: sqlite_utils.Database) -> None:
    if _missing(db, "runs"):
        db["runs"].create({"id": str, "skill": str, "status": str, "created": float, "updated": float,
                           "settings": str, "wall_seconds": float, "seeds_total": int}, pk="id")
    if _missing(db, "seeds"):
        db["seeds"].create({"run_id": str, "id": str, "ordinal": int, "source": str, "chunk": int,
                            "title": str, "kind": str, "text": str, "task_type": str, "status": str,
                            "reason": str, "node": str, "error": str, "llm_calls": int, "tokens": int,
                            "samples": int, "updated": float}, pk=("run_id", "id"))
        db["seeds"].create_index(["run_id", "status", "ordinal"])
        db["seeds"].create_index(["run_id", "ordinal"])
    if _missing(db, "samples"):
        db["samples"].create({"id": str, "run_id": str, "seed_id": str, "seq": int, "body": str}, pk="id")
        db["samples"].create_index(["run_id", "seq"])
    if _missing(db, "skipped"):
        db["skipped"].create({"run_id": str, "source": str, "reason": str})
        db["skipped"].create_index(["run_id"])
    if _missing(db, "passages"):
        db["passages"].create({"run_id": str, "seed_id": str, "idx": int, "title": str, "text": str})
        db["passages"].create_index(["run_id", "seed_id"])
        db["passages"].enable_fts(["title", "text"], tokenize="porter", create_triggers=True)


@MIGRATIONS(name="0002_seeds_skill_transformation")
def _multi_skill(db: sqlite_utils.Database) -> None:   # multi-skill runs: which skill and agent a seed got
    for column in ("skill", "transformation"):
        if column not in db["seeds"].columns_dict:
            db["seeds"].add_column(column, str)


@MIGRATIONS(name="0003_seeds_cache_hits")
def _cache_hits(db: sqlite_utils.Database) -> None:    # the response cache: replies served from it
    if "cache_hits" not in db["seeds"].columns_dict:
        db["seeds"].add_column("cache_hits", int, not_null_default=0)


@MIGRATIONS(name="0004_terms")
def _terms(db: sqlite_utils.Database) -> None:         # retrieval's word counts (checkpoints/terms.py)
    if _missing(db, "terms"):
        db.execute("""create table terms (run_id text not null, term text not null, passages integer not null,
                      primary key (run_id, term)) without rowid""")


@MIGRATIONS(name="0005_endpoint_probes")
def _endpoint_probes(db: sqlite_utils.Database) -> None:   # what `endpoint probe` found (client/probe.py)
    if _missing(db, "endpoint_probes"):
        db["endpoint_probes"].create({"endpoint": str, "model": str, "strategy": str, "checks": str,
                                      "probed": float}, pk=("endpoint", "model"))


# The same schema in PostgreSQL, under the same names. The first five were written for PostgreSQL when it
# came (SQLite's carry their version-0 checks); every later one is a single `sql.migration` for both.
PG_MIGRATIONS = sql.Migrations("teachgraph.runs")


@PG_MIGRATIONS(name="0001_runs_seeds_samples_skipped_passages")
def _pg_initial(db: sql.PostgresDatabase) -> None:
    db.execute("""create table runs (id text primary key, skill text, status text, created double precision,
                  updated double precision, settings text, wall_seconds double precision, seeds_total bigint)""")
    db.execute("""create table seeds (run_id text, id text, ordinal bigint, source text, chunk bigint, title text,
                  kind text, text text, task_type text, status text, reason text, node text, error text,
                  llm_calls bigint, tokens bigint, samples bigint, updated double precision,
                  primary key (run_id, id))""")
    db.execute("create index seeds_run_status_ordinal on seeds (run_id, status, ordinal)")
    db.execute("create index seeds_run_ordinal on seeds (run_id, ordinal)")
    db.execute("create table samples (id text primary key, run_id text, seed_id text, seq bigint, body text)")
    db.execute("create index samples_run_seq on samples (run_id, seq)")
    db.execute("create table skipped (run_id text, source text, reason text)")
    db.execute("create index skipped_run on skipped (run_id)")
    # FTS5's porter tokenizer in SQLite; an English tsvector here (search: sql.PostgresDialect.search)
    db.execute("""create table passages (run_id text, seed_id text, idx bigint, title text, text text,
                  tsv tsvector generated always as
                      (to_tsvector('english', coalesce(title, '') || ' ' || coalesce(text, ''))) stored)""")
    db.execute("create index passages_run_seed on passages (run_id, seed_id)")
    db.execute("create index passages_tsv on passages using gin (tsv)")


@PG_MIGRATIONS(name="0002_seeds_skill_transformation")
def _pg_multi_skill(db: sql.PostgresDatabase) -> None:
    db.execute("alter table seeds add column skill text, add column transformation text")


@PG_MIGRATIONS(name="0003_seeds_cache_hits")
def _pg_cache_hits(db: sql.PostgresDatabase) -> None:
    db.execute("alter table seeds add column cache_hits bigint not null default 0")


@PG_MIGRATIONS(name="0004_terms")
def _pg_terms(db: sql.PostgresDatabase) -> None:
    db.execute("""create table terms (run_id text not null, term text not null, passages bigint not null,
                  primary key (run_id, term))""")


@PG_MIGRATIONS(name="0005_endpoint_probes")
def _pg_endpoint_probes(db: sql.PostgresDatabase) -> None:
    db.execute("""create table endpoint_probes (endpoint text, model text, strategy text, checks text,
                  probed double precision, primary key (endpoint, model))""")


@sql.migration(MIGRATIONS, PG_MIGRATIONS, name="0006_seed_leases")
def _seed_leases(db) -> None:   # one row per seed ever claimed: its holder, until when, and its fencing token
    db.execute("""create table seed_leases (run_id text not null, seed_id text not null, owner text not null,
                  token bigint not null, expires double precision not null, primary key (run_id, seed_id))""")


@MIGRATIONS(name="0007_node_steps")
def _node_steps(db: sqlite_utils.Database) -> None:   # one row per graph node run (checkpoints/steps.py)
    db["steps"].create({"id": int, "run_id": str, "seed_id": str, "skill": str, "node": str, "outcome": str,
                        "next": str, "llm_calls": int, "tokens": int, "cache_hits": int, "seconds": float,
                        "detail": str, "at": float}, pk="id")
    db["steps"].create_index(["run_id", "seed_id", "id"])
    db["steps"].create_index(["run_id", "skill", "node"])


@PG_MIGRATIONS(name="0007_node_steps")
def _pg_node_steps(db: sql.PostgresDatabase) -> None:   # `id` numbers itself, as SQLite's integer key does
    db.execute("""create table steps (id bigint generated by default as identity primary key, run_id text,
                  seed_id text, skill text, node text, outcome text, next text, llm_calls bigint, tokens bigint,
                  cache_hits bigint, seconds double precision, detail text, at double precision)""")
    db.execute("create index steps_run_id_seed_id_id on steps (run_id, seed_id, id)")
    db.execute("create index steps_run_id_skill_node on steps (run_id, skill, node)")


@sql.migration(MIGRATIONS, PG_MIGRATIONS, name="0008_sample_reviews")
def _sample_reviews(db) -> None:   # a reviewer's verdict per sample (teachgraph/review)
    db.execute("""create table reviews (run_id text, sample_id text primary key, verdict text, note text,
                  at double precision)""")
    db.execute("create index reviews_run_id on reviews (run_id)")


@sql.migration(MIGRATIONS, PG_MIGRATIONS, name="0009_run_spend_stop_reason_estimate")
def _budgets(db) -> None:
    # what a run's model calls spent, added to as each reply comes back (client/budget.py); why a run
    # stopped short (its budget); the estimate made before it ran (teachgraph/estimation.py), as JSON
    db.execute("""create table run_spend (run_id text primary key, calls bigint not null default 0,
                  input_tokens bigint not null default 0, output_tokens bigint not null default 0,
                  cost double precision not null default 0.0)""")
    db.execute("alter table runs add column stop_reason text")
    db.execute("alter table runs add column estimate text")
    for column in ("input_tokens", "output_tokens"):   # a seed's tokens split as prices are (of `tokens`)
        db.execute(f"alter table seeds add column {column} bigint not null default 0")


@sql.migration(MIGRATIONS, PG_MIGRATIONS, name="0010_runs_executor_workers")
def _executor_workers(db) -> None:   # which executor ran a run, and seeds done per worker node
    db.execute("alter table runs add column executor text")
    db.execute("alter table runs add column workers text")    # JSON: {node: seeds ended there}


@sql.migration(MIGRATIONS, PG_MIGRATIONS, name="0011_gate_rejections")
def _gate_rejections(db) -> None:
    # samples the quality gates dropped (nodes/gates.py), one row each, written with the seed's outcome;
    # and a skipped seed chunk that duplicates a collected one names it (teachgraph/gates/seeds.py)
    db.execute("""create table sample_rejections (run_id text, sample_id text, seed_id text, gate text, reason text,
                  duplicate_of text, body text, created double precision, primary key (run_id, sample_id))""")
    db.execute("create index sample_rejections_run_id_gate on sample_rejections (run_id, gate)")
    db.execute("alter table skipped add column duplicate_of text")


class RunLedger:
    """A run's spend in runs.db (client/budget.py's SpendLedger): each add is its own committed
    transaction, so what a reply cost is on disk before the reply is used."""

    def __init__(self, registry: "Registry", run_id: str):
        self.registry, self.run_id = registry, run_id

    def spent(self) -> Spend:
        return self.registry.spent(self.run_id)

    def add(self, spend: Spend) -> None:
        self.registry.add_spend(self.run_id, spend)


class Registry:
    def __init__(self, path: Path | sql.PostgresDatabase):
        """`path`: runs.db (SQLite); or an open PostgreSQL store (checkpoints/store.py opens it)."""
        if isinstance(path, sql.PostgresDatabase):
            self.path, self.db = None, path
            PG_MIGRATIONS.apply(self.db)
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage.describe_os(path.parent, exc, doing="create the folder") from None
        self.path = path
        # storage.connect: an error names runs.db wherever it surfaces (checkpoints/storage.py)
        self.db = sql.SqliteDatabase(storage.connect(path, timeout=BUSY_TIMEOUT_S))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        storage.migrate(self.db, MIGRATIONS)

    # ---- runs ----
    def create_run(self, run_id: str, skill: str, settings: dict[str, Any]) -> None:
        """Record a new run. Its output file must not be another run's: checked and claimed in one
        write transaction, so of two runs started together with the same --out one refuses."""
        now = time.time()
        conn = self.db.conn
        with self.db.transaction(lock="runs"):
            taken = conn.execute(f"select id from runs where {self.db.dialect.json_text('settings', 'out')} = ? "
                                 f"limit 1", [settings.get("out")]).fetchone()
            if taken:
                raise OutputInUse(settings["out"], taken[0])
            conn.execute("insert into runs (id, skill, status, created, updated, settings, wall_seconds, "
                         "seeds_total) values (?, ?, 'collecting', ?, ?, ?, 0.0, 0)",
                         [run_id, skill, now, now, json.dumps(settings)])

    def run(self, run_id: str) -> dict | None:
        rows = list(self.db.query("select * from runs where id = ?", [run_id]))
        if not rows:
            return None
        row = rows[0]
        row["settings"] = json.loads(row["settings"])
        return row

    def runs(self) -> list[dict]:
        return list(self.db.query("select * from runs order by created desc"))

    def set_run(self, run_id: str, **fields: Any) -> None:
        fields["updated"] = time.time()
        self.db["runs"].update(run_id, fields)

    def add_wall_time(self, run_id: str, seconds: float) -> None:
        self.db.execute("update runs set wall_seconds = wall_seconds + ?, updated = ? where id = ?",
                        [seconds, time.time(), run_id])
        self.db.conn.commit()

    # ---- corpus ----
    def add_corpus(self, run_id: str, items: Iterable[Chunk | Skipped], *, limit: int | None,
                   assign: Callable[[str, str], tuple[str, str | None, str | None]], passage_chars: int,
                   on_skip=None, batch: int = 500) -> int:
        """Store chunks as the run's seeds (and their passages), and skipped inputs with reasons.
        `assign(seed_id, kind)` gives each seed its (skill, transformation, task type).
        Collection always starts from scratch: whatever a collection cut short by a kill stored is
        forgotten first, so a resumed run gets the same seeds, word counts and distractors."""
        self.forget_corpus(run_id)
        count = 0
        seen: set[str] = set()
        seed_rows: list[dict] = []
        passage_rows: list[dict] = []

        def flush() -> None:
            with self.db.conn:
                self.db["seeds"].insert_all(seed_rows, ignore=True)
                self.db["passages"].insert_all(passage_rows)
                terms.count(self.db, run_id, (row["text"] for row in passage_rows))
            seed_rows.clear()
            passage_rows.clear()

        for item in items:
            if isinstance(item, Skipped):
                self.db["skipped"].insert({"run_id": run_id, "source": item.source, "reason": item.reason,
                                           "duplicate_of": item.duplicate_of})
                if on_skip:
                    on_skip(item)
                continue
            if limit is not None and count >= limit:
                break
            if item.id in seen:
                continue
            seen.add(item.id)
            skill, transformation, task_type = assign(item.id, item.kind)
            seed_rows.append({"run_id": run_id, "id": item.id, "ordinal": count, "source": item.source,
                              "chunk": item.index, "title": item.title, "kind": item.kind, "text": item.text,
                              "skill": skill, "transformation": transformation,
                              "task_type": task_type, "status": "pending", "reason": None,
                              "node": None, "error": None, "llm_calls": 0, "tokens": 0, "samples": 0,
                              "updated": time.time()})
            for idx, passage in enumerate(split_passages(item.text, passage_chars)):
                passage_rows.append({"run_id": run_id, "seed_id": item.id, "idx": idx,
                                     "title": item.title, "text": passage})
            count += 1
            if len(seed_rows) >= batch:
                flush()
        flush()
        self.set_run(run_id, seeds_total=count, status="running")
        return count

    def forget_corpus(self, run_id: str) -> None:
        """Drop a run's seeds, passages, word counts and skipped inputs (before collecting them)."""
        with self.db.conn:
            for table in ("seeds", "passages", "terms", "skipped", "sample_rejections"):
                self.db.execute(f"delete from {table} where run_id = ?", [run_id])

    def seed(self, run_id: str, seed_id: str) -> dict:
        rows = list(self.db.query("select * from seeds where run_id = ? and id = ?", [run_id, seed_id]))
        if not rows:
            raise KeyError(f"seed {seed_id} not in run {run_id}")
        seed = rows[0]
        seed["passages"] = [r["text"] for r in self.db.query(
            "select text from passages where run_id = ? and seed_id = ? order by idx", [run_id, seed_id])]
        return seed

    def search(self, run_id: str, query: str, *, exclude_seed: str, limit: int,
               exclude_texts: Iterable[str] = ()) -> list[dict]:
        words = terms.words(" ".join(terms.rarest(self.db, run_id, query)), 12)
        if not words or limit <= 0:
            return []
        skip = set(exclude_texts)
        rows = self.db.dialect.search(self.db, run_id, words, exclude_seed, limit + len(skip) + 8)
        out: list[dict] = []
        for row in rows:
            if row["text"] in skip:
                continue
            skip.add(row["text"])
            out.append(row)
            if len(out) >= limit:
                break
        return out

    def skipped(self, run_id: str) -> list[dict]:
        """Inputs not run: (source, reason, duplicate_of: the seed id a duplicate chunk repeats, else None)."""
        return list(self.db.query("select source, reason, duplicate_of from skipped where run_id = ?", [run_id]))

    # ---- seeds ----
    def unfinished_seeds(self, run_id: str, batch: int = 256) -> Iterator[dict]:
        """Pending and failed seeds in order, streamed in batches (never the whole corpus at once)."""
        last = -1
        while True:
            rows = list(self.db.query(
                """select id, ordinal, skill, transformation, task_type, status, llm_calls, tokens, cache_hits,
                   input_tokens, output_tokens from seeds
                   where run_id = ? and ordinal > ?
                   and status not in ('accepted', 'rejected') order by ordinal limit ?""",
                [run_id, last, batch]))
            if not rows:
                return
            yield from rows
            last = rows[-1]["ordinal"]

    # ---- leases: a seed runs in one place at a time ----
    def claim_seed(self, run_id: str, seed_id: str, owner: str, ttl: float = LEASE_TTL_S) -> int | None:
        """Take the seed's lease for `ttl` seconds if nobody holds it (never claimed, released, or
        expired by the store's clock): its new fencing token, one more than any before; None if it is
        held. Rows are never deleted, so tokens only grow."""
        now = self.db.dialect.now()
        with self.db.conn:
            row = self.db.conn.execute(
                f"""insert into seed_leases (run_id, seed_id, owner, token, expires) values (?, ?, ?, 1, {now} + ?)
                    on conflict (run_id, seed_id) do update set owner = excluded.owner,
                        token = seed_leases.token + 1, expires = excluded.expires
                    where seed_leases.expires < {now}
                    returning token""", [run_id, seed_id, owner, ttl]).fetchone()
        return row[0] if row else None

    def renew_seed(self, run_id: str, seed_id: str, token: int, ttl: float = LEASE_TTL_S) -> bool:
        """Extend the lease `token` holds; False if the seed has been claimed since (the lease is lost)."""
        with self.db.conn:
            cur = self.db.conn.execute(
                f"update seed_leases set expires = {self.db.dialect.now()} + ? "
                f"where run_id = ? and seed_id = ? and token = ?", [ttl, run_id, seed_id, token])
        return cur.rowcount == 1

    def expire_leases(self, run_id: str) -> None:
        """Release every lease of the run: its driver, holding the run lock after a crash, knows their
        holders are gone and need not wait out their TTL."""
        with self.db.conn:
            self.db.conn.execute("update seed_leases set expires = 0 where run_id = ?", [run_id])

    def lease(self, run_id: str, seed_id: str) -> dict | None:
        rows = list(self.db.query("select owner, token, expires from seed_leases where run_id = ? and seed_id = ?",
                                  [run_id, seed_id]))
        return rows[0] if rows else None

    def finish_seed(self, run_id: str, seed_id: str, *, status: str, samples: list[dict] = (),
                    reason: str | None = None, node: str | None = None, error: str | None = None,
                    llm_calls: int = 0, tokens: int = 0, cache_hits: int = 0, input_tokens: int = 0,
                    output_tokens: int = 0, lease: int | None = None,
                    dropped: list[dict] = ()) -> None:
        """The seed's outcome, its samples and the samples the gates dropped (`dropped`: each
        {"sample": body, "gate", "reason", "duplicate_of"}), atomically. `lease`: the fencing token its
        runner holds; if it is no longer the seed's current one, LeaseLost is raised and nothing is
        written. The lease is released in the same transaction."""
        with self.db.conn:
            if lease is not None:
                # the row lock this update takes orders it with any claim: a claim committed first
                # changed the token (0 rows here); one after sees the lease released
                released = self.db.conn.execute(
                    "update seed_leases set expires = 0 where run_id = ? and seed_id = ? and token = ?",
                    [run_id, seed_id, lease])
                if released.rowcount != 1:
                    raise LeaseLost(run_id, seed_id, lease)
            now = time.time()
            for rejection in dropped:   # a sample is rejected once, whatever reruns
                body = rejection["sample"]
                self.db.execute("insert into sample_rejections (run_id, sample_id, seed_id, gate, reason, "
                                "duplicate_of, body, created) values (?,?,?,?,?,?,?,?) on conflict do nothing",
                                [run_id, body["id"], seed_id, rejection["gate"], rejection["reason"],
                                 rejection.get("duplicate_of"), json.dumps(body, ensure_ascii=False), now])
            next_seq = self.db.execute("select coalesce(max(seq), 0) from samples where run_id = ?",
                                       [run_id]).fetchone()[0]
            for offset, sample in enumerate(samples, start=1):
                self.db.execute("insert into samples (id, run_id, seed_id, seq, body) values (?,?,?,?,?) "
                                "on conflict do nothing",
                                [sample["id"], run_id, seed_id, next_seq + offset,
                                 json.dumps(sample, ensure_ascii=False)])
            self.db.execute(
                """update seeds set status = ?, reason = ?, node = ?, error = ?, llm_calls = ?, tokens = ?,
                   cache_hits = ?, input_tokens = ?, output_tokens = ?, samples = ?, updated = ?
                   where run_id = ? and id = ?""",
                [status, reason, node, error, llm_calls, tokens, cache_hits, input_tokens, output_tokens,
                 len(samples), time.time(), run_id, seed_id])

    def counts(self, run_id: str) -> dict[str, Any]:
        row = next(self.db.query(
            """select count(*) as total,
                      count(case when status = 'accepted' then 1 end) as accepted,
                      count(case when status = 'rejected' then 1 end) as rejected,
                      count(case when status = 'failed' then 1 end) as failed,
                      count(case when status = 'pending' then 1 end) as pending,
                      coalesce(sum(llm_calls), 0) as llm_calls, coalesce(sum(tokens), 0) as tokens,
                      coalesce(sum(cache_hits), 0) as cache_hits,
                      coalesce(sum(input_tokens), 0) as input_tokens, coalesce(sum(output_tokens), 0) as output_tokens,
                      coalesce(sum(samples), 0) as samples
               from seeds where run_id = ?""", [run_id]))
        counted = {k: (v or 0) for k, v in row.items()}
        counted["dropped_samples"] = self.db.execute("select count(*) from sample_rejections where run_id = ?",
                                                     [run_id]).fetchone()[0]
        return counted

    def outcomes(self, run_id: str, status: str) -> list[dict]:
        return list(self.db.query(
            """select coalesce(node, '') as node, coalesce(reason, error, '') as reason, count(*) as seeds
               from seeds where run_id = ? and status = ? group by 1, 2 order by 3 desc""", [run_id, status]))

    def failures(self, run_id: str) -> Iterator[dict]:
        """Failed, then rejected seeds, in corpus order: what went wrong with each and where."""
        yield from self.db.query(
            """select status, id as seed, source, node, coalesce(error, reason) as why, llm_calls, tokens
               from seeds where run_id = ? and status in ('failed', 'rejected')
               order by status, ordinal""", [run_id])

    def task_types(self, run_id: str) -> list[dict]:
        return list(self.db.query(
            """select skill, task_type, count(*) as seeds, count(case when status = 'accepted' then 1 end) as accepted
               from seeds where run_id = ? group by skill, task_type order by skill, task_type""", [run_id]))

    def kept_samples(self, run_id: str, skill: str) -> dict[str, int]:
        """Samples the accepted seeds of `skill` wrote, by task type (what --target counts)."""
        return {row["task_type"]: row["samples"] for row in self.db.query(
            """select task_type, coalesce(sum(samples), 0) as samples from seeds
               where run_id = ? and status = 'accepted' and coalesce(skill, ?) = ? group by task_type""",
            [run_id, skill, skill])}

    def unfinished_ids(self, run_id: str, seed_ids: list[str]) -> set[str]:
        """Those of `seed_ids` with no outcome yet (pending or failed)."""
        if not seed_ids:
            return set()
        marks = ", ".join("?" * len(seed_ids))
        return {row["id"] for row in self.db.query(
            f"select id from seeds where run_id = ? and id in ({marks}) and status not in ('accepted', 'rejected')",
            [run_id, *seed_ids])}

    def leased_task_types(self, run_id: str, skill: str) -> dict[str, str]:
        """seed id -> task type of the seeds of `skill` running now anywhere (an unexpired lease, no
        outcome yet): what --target counts as on their way, whichever worker runs them."""
        return {row["id"]: row["task_type"] for row in self.db.query(
            f"""select s.id, s.task_type from seeds s join seed_leases l on l.run_id = s.run_id and l.seed_id = s.id
                where s.run_id = ? and l.expires > {self.db.dialect.now()} and coalesce(s.skill, ?) = ?
                and s.status not in ('accepted', 'rejected')""", [run_id, skill, skill])}

    def deal_task_type(self, run_id: str, seed_id: str, task_type: str) -> None:
        """Give a seed that has not started another task type (--target deals seeds as they start)."""
        with self.db.conn:
            self.db.execute("update seeds set task_type = ? where run_id = ? and id = ?", [task_type, run_id, seed_id])

    def outcomes_by_task_type(self, run_id: str) -> list[dict]:
        """Seeds and their samples counted by skill, task type, status, node and reason (an accepted
        seed's reason says why its refined item got no sample): the quality report's rows."""
        return list(self.db.query(
            """select skill, task_type, status, coalesce(node, '') as node, coalesce(reason, error, '') as reason,
                      count(*) as seeds, coalesce(sum(samples), 0) as samples
               from seeds where run_id = ? group by 1, 2, 3, 4, 5 order by 1, 2, 3, 6 desc""", [run_id]))

    def by_skill(self, run_id: str) -> list[dict]:
        return list(self.db.query(
            """select skill, count(*) as seeds, count(case when status = 'accepted' then 1 end) as accepted,
                      count(case when status = 'rejected' then 1 end) as rejected,
                      count(case when status = 'failed' then 1 end) as failed,
                      count(case when status = 'pending' then 1 end) as pending, coalesce(sum(samples), 0) as samples,
                      coalesce(sum(llm_calls), 0) as llm_calls
               from seeds where run_id = ? group by skill order by skill""", [run_id]))

    def samples(self, run_id: str) -> Iterator[tuple[str, str]]:
        """(sample id, JSON body) in the order they were finished."""
        for row in self.db.query("select id, body from samples where run_id = ? order by seq", [run_id]):
            yield row["id"], row["body"]

    def rejections(self, run_id: str, *, samples: bool = False) -> list[dict]:
        """Rejected seeds counted by skill, node and reason (what a dataset card says each step dropped).
        `samples=True`: the samples the quality gates dropped instead, counted by skill, gate and reason:
        rows {skill, gate, reason, samples}, most first within a skill (each sample is in
        `dropped_samples`)."""
        if samples:
            return list(self.db.query(
                """select s.skill as skill, r.gate as gate, r.reason as reason, count(*) as samples
                   from sample_rejections r left join seeds s on s.run_id = r.run_id and s.id = r.seed_id
                   where r.run_id = ? group by 1, 2, 3 order by 1, 4 desc""", [run_id]))
        return list(self.db.query(
            """select skill, coalesce(node, '') as node, coalesce(reason, '') as reason, count(*) as seeds
               from seeds where run_id = ? and status = 'rejected' group by 1, 2, 3 order by 1, 4 desc""",
            [run_id]))

    def dropped_samples(self, run_id: str, gate: str | None = None) -> Iterator[dict]:
        """Each sample the quality gates dropped, in the order they were dropped: {sample_id, seed_id,
        gate, reason, duplicate_of (the kept sample it repeats, this run's or an earlier one's; an
        evaluation item `FILE:id` for decontaminate; else None), body (the sample's JSON)}."""
        query = ("select sample_id, seed_id, gate, reason, duplicate_of, body from sample_rejections "
                 "where run_id = ?" + (" and gate = ?" if gate else "") + " order by created, sample_id")
        yield from self.db.query(query, [run_id, gate] if gate else [run_id])

    def gate_counts(self, run_id: str) -> dict[str, int]:
        """Samples dropped per gate, most first."""
        return {row["gate"]: row["n"] for row in self.db.query(
            "select gate, count(*) as n from sample_rejections where run_id = ? group by gate order by n desc, gate",
            [run_id])}

    def seed_sources(self, run_id: str, limit: int) -> tuple[int, list[str]]:
        """How many distinct seed sources a run read, and the first `limit` of them."""
        total = self.db.execute("select count(distinct source) from seeds where run_id = ?", [run_id]).fetchone()[0]
        first = [row["source"] for row in self.db.query(
            "select distinct source from seeds where run_id = ? order by source limit ?", [run_id, limit])]
        return total, first

    # ---- spend (client/budget.py) ----
    def ledger(self, run_id: str) -> RunLedger:
        return RunLedger(self, run_id)

    def spent(self, run_id: str) -> Spend:
        row = self.db.execute("select calls, input_tokens, output_tokens, cost from run_spend where run_id = ?",
                              [run_id]).fetchone()
        return Spend(*row) if row else Spend()

    def add_spend(self, run_id: str, spend: Spend) -> None:
        with self.db.conn:
            self.db.execute(
                """insert into run_spend (run_id, calls, input_tokens, output_tokens, cost) values (?, ?, ?, ?, ?)
                   on conflict(run_id) do update set calls = run_spend.calls + excluded.calls,
                   input_tokens = run_spend.input_tokens + excluded.input_tokens,
                   output_tokens = run_spend.output_tokens + excluded.output_tokens,
                   cost = run_spend.cost + excluded.cost""",
                [run_id, spend.calls, spend.input_tokens, spend.output_tokens, spend.cost])

    def seed_ids(self, run_ids: Iterable[str]) -> set[str]:
        """The ids of every seed the runs collected (an id is a hash of the chunk's source and text)."""
        ids: set[str] = set()
        for run_id in run_ids:
            ids.update(row["id"] for row in self.db.query("select id from seeds where run_id = ?", [run_id]))
        return ids

    def seeds_to_estimate(self, run_id: str) -> Iterator[dict]:
        """Every seed's skill, kind, transformation and text, in order (teachgraph/estimation.py)."""
        yield from self.db.query("select skill, kind, transformation, task_type, text, source from seeds "
                                 "where run_id = ? order by ordinal", [run_id])

    # ---- endpoint probes (teachgraph/client/probe.py finds them; no key is ever stored) ----
    def probe_result(self, endpoint: str, model: str) -> Probe | None:
        """What the last probe of `endpoint` with `model` found, if it was probed."""
        rows = list(self.db.query("select * from endpoint_probes where endpoint = ? and model = ?",
                                  [endpoint.rstrip("/"), model]))
        if not rows:
            return None
        row = rows[0]
        return Probe(row["endpoint"], row["model"], row["strategy"],
                     [Check(**c) for c in json.loads(row["checks"])], row["probed"])

    def remember_probe(self, result: Probe) -> None:
        with self.db.conn:
            self.db["endpoint_probes"].upsert(
                {"endpoint": result.endpoint, "model": result.model, "strategy": result.strategy,
                 "checks": json.dumps([asdict(c) for c in result.checks]), "probed": result.probed},
                pk=("endpoint", "model"))

    # ---- node steps (checkpoints/steps.py records them as a seed's graph runs) ----
    def record_step(self, row: dict[str, Any]) -> None:
        with self.db.conn:
            self.db["steps"].insert(row)

    def steps(self, run_id: str, seed_id: str) -> list[dict]:
        """A seed's node runs in the order they ended, each with its figures and what it produced."""
        rows = list(self.db.query("select * from steps where run_id = ? and seed_id = ? order by id",
                                  [run_id, seed_id]))
        for row in rows:
            row["detail"] = json.loads(row["detail"] or "{}")
        return rows

    def node_figures(self, run_id: str) -> list[dict]:
        """Per skill and node: runs, LLM calls, tokens, cache hits, mean seconds, failures, rejections."""
        return list(self.db.query(
            """select skill, node, count(*) as runs, sum(llm_calls) as llm_calls, sum(tokens) as tokens,
                      sum(cache_hits) as cache_hits, avg(seconds) as mean_seconds,
                      count(case when outcome = 'failed' then 1 end) as failed,
                      count(case when outcome = 'rejected' then 1 end) as rejected
               from steps where run_id = ? group by skill, node order by skill, node""", [run_id]))

    def edge_figures(self, run_id: str) -> list[dict]:
        """How often each edge was taken (node -> the next node its router chose)."""
        return list(self.db.query(
            """select skill, node, next, count(*) as taken from steps
               where run_id = ? and next is not null group by 1, 2, 3""", [run_id]))

    # ---- reviews (teachgraph/review: a person's verdict on a sample) ----
    def sample(self, sample_id: str) -> dict | None:
        rows = list(self.db.query("select run_id, seed_id, body from samples where id = ?", [sample_id]))
        if not rows:
            return None
        return {"run_id": rows[0]["run_id"], "seed_id": rows[0]["seed_id"], **json.loads(rows[0]["body"])}

    def set_review(self, run_id: str, sample_id: str, verdict: str, note: str) -> dict:
        row = {"run_id": run_id, "sample_id": sample_id, "verdict": verdict, "note": note, "at": time.time()}
        with self.db.conn:
            self.db["reviews"].upsert(row, pk="sample_id")
        return row

    def reviews(self, run_id: str) -> dict[str, dict]:
        """sample id -> its verdict ({verdict, note, at})."""
        return {row["sample_id"]: row for row in self.db.query("select * from reviews where run_id = ?", [run_id])}

    def review_counts(self, run_id: str) -> dict[str, int]:
        counts = {"accepted": 0, "rejected": 0}
        for row in self.db.query("select verdict, count(*) as n from reviews where run_id = ? group by 1", [run_id]):
            counts[row["verdict"]] = row["n"]
        return counts
