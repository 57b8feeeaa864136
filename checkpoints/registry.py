"""The run registry: SQLite (via sqlite-utils) as the durable log of runs, seeds, samples and
skipped inputs, plus the full-text index of every seed's passages used to retrieve distractors.

A seed's outcome and its samples are written in one transaction, so after any kill a seed is
either finished with all its samples or still pending. Never stores API keys."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import sqlite_utils

from teachgraph.checkpoints import storage, terms
from teachgraph.errors import UsageError
from teachgraph.client.probe import Check, Probe
from teachgraph.seeds import Chunk, Skipped, split_passages


def fts_query(text: str, max_terms: int = 12) -> str:
    """A safe FTS5 OR-query of the distinctive words in `text` (user text never reaches FTS syntax)."""
    return " OR ".join(f'"{w}"' for w in terms.words(text, max_terms))


class OutputInUse(UsageError):
    """Another run already writes the output file a new run asks for."""

    def __init__(self, out: str, run_id: str):
        self.out, self.run_id = out, run_id
        super().__init__(f"--out {out} is already the output of run {run_id}; choose another file "
                         f"(or resume that run: python cli.py graph resume {run_id})")


BUSY_TIMEOUT_S = 30.0  # how long a statement waits for another process's lock on runs.db

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


@MIGRATIONS(name="0006_gate_rejections")
def _gate_rejections(db: sqlite_utils.Database) -> None:
    # samples the quality gates dropped (nodes/gates.py), one row each, written with the seed's outcome;
    # and a skipped seed chunk that duplicates a collected one names it (teachgraph/gates/seeds.py)
    db["sample_rejections"].create({"run_id": str, "sample_id": str, "seed_id": str, "gate": str, "reason": str,
                                    "duplicate_of": str, "body": str, "created": float},
                                   pk=("run_id", "sample_id"))
    db["sample_rejections"].create_index(["run_id", "gate"])
    db["skipped"].add_column("duplicate_of", str)


class Registry:
    def __init__(self, path: Path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage.describe_os(path.parent, exc, doing="create the folder") from None
        self.path = path
        # storage.connect: an error names runs.db wherever it surfaces (checkpoints/storage.py)
        self.db = sqlite_utils.Database(storage.connect(path, timeout=BUSY_TIMEOUT_S))
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        storage.migrate(self.db, MIGRATIONS)

    # ---- runs ----
    def create_run(self, run_id: str, skill: str, settings: dict[str, Any]) -> None:
        """Record a new run. Its output file must not be another run's: checked and claimed in one
        write transaction, so of two runs started together with the same --out one refuses."""
        now = time.time()
        conn = self.db.conn
        with conn:
            conn.execute("begin immediate")
            taken = conn.execute("select id from runs where json_extract(settings, '$.out') = ? limit 1",
                                 [settings.get("out")]).fetchone()
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
        match = fts_query(" ".join(terms.rarest(self.db, run_id, query)))
        if not match or limit <= 0:
            return []
        skip = set(exclude_texts)
        rows = self.db.query(
            """select p.seed_id, p.title, p.text from passages_fts f join passages p on p.rowid = f.rowid
               where passages_fts match ? and p.run_id = ? and p.seed_id != ?
               order by bm25(passages_fts) limit ?""",
            [match, run_id, exclude_seed, limit + len(skip) + 8])
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
                """select id, ordinal, skill, transformation, task_type, status, llm_calls, tokens, cache_hits
                   from seeds
                   where run_id = ? and ordinal > ?
                   and status not in ('accepted', 'rejected') order by ordinal limit ?""",
                [run_id, last, batch]))
            if not rows:
                return
            yield from rows
            last = rows[-1]["ordinal"]

    def finish_seed(self, run_id: str, seed_id: str, *, status: str, samples: list[dict] = (),
                    reason: str | None = None, node: str | None = None, error: str | None = None,
                    llm_calls: int = 0, tokens: int = 0, cache_hits: int = 0, dropped: list[dict] = ()) -> None:
        """The seed's outcome, its samples and the samples the gates dropped (`dropped`: each
        {"sample": body, "gate", "reason", "duplicate_of"}), atomically."""
        with self.db.conn:
            now = time.time()
            for rejection in dropped:   # or ignore: a sample is rejected once, whatever reruns
                body = rejection["sample"]
                self.db.execute("insert or ignore into sample_rejections (run_id, sample_id, seed_id, gate, reason, "
                                "duplicate_of, body, created) values (?,?,?,?,?,?,?,?)",
                                [run_id, body["id"], seed_id, rejection["gate"], rejection["reason"],
                                 rejection.get("duplicate_of"), json.dumps(body, ensure_ascii=False), now])
            next_seq = self.db.execute("select coalesce(max(seq), 0) from samples where run_id = ?",
                                       [run_id]).fetchone()[0]
            for offset, sample in enumerate(samples, start=1):
                self.db.execute("insert or ignore into samples (id, run_id, seed_id, seq, body) values (?,?,?,?,?)",
                                [sample["id"], run_id, seed_id, next_seq + offset,
                                 json.dumps(sample, ensure_ascii=False)])
            self.db.execute(
                """update seeds set status = ?, reason = ?, node = ?, error = ?, llm_calls = ?, tokens = ?,
                   cache_hits = ?, samples = ?, updated = ? where run_id = ? and id = ?""",
                [status, reason, node, error, llm_calls, tokens, cache_hits, len(samples), time.time(), run_id,
                 seed_id])

    def counts(self, run_id: str) -> dict[str, Any]:
        row = next(self.db.query(
            """select count(*) as total,
                      sum(status = 'accepted') as accepted, sum(status = 'rejected') as rejected,
                      sum(status = 'failed') as failed, sum(status = 'pending') as pending,
                      coalesce(sum(llm_calls), 0) as llm_calls, coalesce(sum(tokens), 0) as tokens,
                      coalesce(sum(cache_hits), 0) as cache_hits,
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
            """select skill, task_type, count(*) as seeds, sum(status = 'accepted') as accepted from seeds
               where run_id = ? group by skill, task_type order by skill, task_type""", [run_id]))

    def by_skill(self, run_id: str) -> list[dict]:
        return list(self.db.query(
            """select skill, count(*) as seeds, sum(status = 'accepted') as accepted,
                      sum(status = 'rejected') as rejected, sum(status = 'failed') as failed,
                      sum(status = 'pending') as pending, coalesce(sum(samples), 0) as samples,
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
                 "where run_id = ?" + (" and gate = ?" if gate else "") + " order by created, rowid")
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
