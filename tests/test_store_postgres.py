"""The store in PostgreSQL (`--store postgresql://...`): the same registry, checkpoints, cache and leases
as on SQLite, on a server the tests start themselves (teachgraph/testing/postgres.py; the
`postgres_server` fixture fails, never skips, if PostgreSQL is missing)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import teachgraph
from teachgraph import skills
from teachgraph.checkpoints import cache as cache_module
from teachgraph.checkpoints import registry as registry_module
from teachgraph.checkpoints.registry import LeaseLost
from teachgraph.checkpoints.storage import StorageError
from teachgraph.checkpoints.store import open_store
from teachgraph.client.llm import LLM
from teachgraph.errors import UsageError
from teachgraph.mix import Dealer
from teachgraph.output import SampleWriter
from teachgraph.runner import SeedRunner, Settings
from teachgraph.seeds import collect
from teachgraph.testing.fake_chat import ScriptedChatModel
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.conftest import ROOT, SAMPLE, Tally, run_cli
from tests.rag_script import RagScript, agent_of, agent_of_request


def test_both_backends_name_the_same_migrations_in_the_same_order():
    # append-only on both: a migration added to one list and not the other fails here
    assert [m.name for m in registry_module.MIGRATIONS._migrations] == registry_module.PG_MIGRATIONS.names
    assert [m.name for m in cache_module.MIGRATIONS._migrations] == cache_module.PG_MIGRATIONS.names


def test_a_store_url_that_is_not_postgresql_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="not a store URL") as caught:
        teachgraph.open_run("r", home=tmp_path, store="mysql://u@h/db")
    assert "\n" not in str(caught.value)


def test_an_unreachable_postgresql_store_is_one_line_without_its_password(tmp_path, postgres_server):
    url = f"postgresql://postgres:s3cret@127.0.0.1:{postgres_server.port + 1}/nowhere"
    with pytest.raises(StorageError) as caught:
        teachgraph.open_run("r", home=tmp_path, store=url)
    message = str(caught.value)
    assert message.startswith("PostgreSQL store postgresql://postgres:***@127.0.0.1:") and "\n" not in message
    assert "s3cret" not in message


def test_migrations_apply_once_and_reopening_applies_nothing(pg_url):
    first = open_store(pg_url, None).registry()
    applied = registry_module.PG_MIGRATIONS.applied(first.db)
    assert applied == registry_module.PG_MIGRATIONS.names
    open_store(pg_url, None).registry()   # a second worker opening the same store
    assert registry_module.PG_MIGRATIONS.applied(first.db) == applied


def _store(tmp_path, backend, request):
    """The store of `backend`: SQLite files in a temp home, or a new database on the session's server."""
    if backend == "postgresql":
        return open_store(request.getfixturevalue("pg_url"), None)
    return open_store(None, tmp_path / "home")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_worker_presumed_dead_cannot_commit_a_second_outcome(tmp_path, backend, request):
    """The lease's exact scenario, on the registry: A claims, stops renewing and is presumed dead (its
    lease expires), B claims and commits the seed; A comes back with its old token and commits nothing."""
    registry = _store(tmp_path, backend, request).registry()
    registry.create_run("r", "rag", {"out": str(tmp_path / "o.jsonl")})
    registry.db["seeds"].insert({"run_id": "r", "id": "s1", "ordinal": 0, "status": "pending", "llm_calls": 0,
                                 "tokens": 0, "samples": 0})
    a = registry.claim_seed("r", "s1", "worker-a", ttl=0.3)
    assert a == 1
    assert registry.claim_seed("r", "s1", "worker-b", ttl=30) is None      # held: nobody else runs it
    time.sleep(0.5)                                                        # A presumed dead
    b = registry.claim_seed("r", "s1", "worker-b", ttl=30)
    assert b == 2
    assert not registry.renew_seed("r", "s1", a)                           # A's heartbeat finds it lost
    registry.finish_seed("r", "s1", status="accepted", samples=[{"id": "r:s1:b"}], llm_calls=3, lease=b)
    with pytest.raises(LeaseLost):
        registry.finish_seed("r", "s1", status="accepted", samples=[{"id": "r:s1:a"}], llm_calls=5, lease=a)
    assert [sid for sid, _ in registry.samples("r")] == ["r:s1:b"]
    assert registry.counts("r")["llm_calls"] == 3 and registry.counts("r")["accepted"] == 1
    # released with the outcome: a retry (a failed seed resumed) claims at once, with a larger token
    assert registry.claim_seed("r", "s1", "worker-c") == 3


@pytest.mark.slow
def test_concurrent_claimers_on_postgresql_each_seed_claimed_once(pg_url):
    store = open_store(pg_url, None)
    registry = store.registry()
    registry.create_run("r", "rag", {"out": "/x"})
    won: list[tuple[str, str]] = []

    def claimer(name: str) -> None:
        mine = store.registry()       # its own connection, as a worker has
        for i in range(60):
            if mine.claim_seed("r", f"s{i}", name, ttl=60) is not None:
                won.append((name, f"s{i}"))
    threads = [threading.Thread(target=claimer, args=(f"w{n}",)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(s for _, s in won) == sorted(f"s{i}" for i in range(60))   # each exactly once


def _blocking_script(release: threading.Event, blocked: threading.Event):
    script = RagScript()

    def reply(system: str, user: str) -> str:
        if agent_of(system) == "transform" and not release.is_set():
            blocked.set()
            release.wait(60)
        return script.reply(system, user)
    return reply


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_runner_of_a_seed_taken_over_records_and_writes_nothing(tmp_path, backend, request):
    """The same scenario with two real SeedRunners (two workers) on one seed: A is stuck in a model call
    past its lease, B runs the seed to its end, A's call returns and its graph finishes: A's outcome
    and samples are not recorded, and A writes no sample."""
    store = _store(tmp_path, backend, request)
    registry = store.registry()
    skill = skills.load("rag")
    registry.create_run("r", "rag", {"out": str(tmp_path / "b.jsonl")})
    registry.add_corpus("r", collect([SAMPLE]), limit=3, assign=Dealer([skill]),
                        passage_chars=skill.spec.context.passage_chars)
    seed = next(s for s in registry.unfinished_seeds("r"))
    settings = Settings(skill="rag", seeds=[str(SAMPLE)], out=str(tmp_path / "b.jsonl"), rounds=1, model="scripted")
    release, blocked = threading.Event(), threading.Event()

    def llm(script):
        return LLM(chat=ScriptedChatModel(script=script, turn="first"),
                   model_name="scripted", structured_mode="json_object",
                   max_concurrency=2)

    async def scenario():
        async with store.saver() as saver_a, store.saver() as saver_b:
            writer_a, writer_b = SampleWriter(tmp_path / "a.jsonl"), SampleWriter(tmp_path / "b.jsonl")
            a = SeedRunner(store.registry(), "r", skill, llm(_blocking_script(release, blocked)), settings, Tally(),
                           writer_a, saver_a, owner="worker-a", lease_ttl=600)
            b = SeedRunner(store.registry(), "r", skill, llm(RagScript().reply), settings, Tally(),
                           writer_b, saver_b, owner="worker-b")
            task_a = asyncio.create_task(a.run(seed))
            while not blocked.is_set():
                await asyncio.sleep(0.02)
            assert not await b.run(seed)                    # A holds the lease: B leaves the seed alone
            # A is presumed dead: its lease ran out (as if its heartbeats had stopped reaching the store)
            registry.db.execute("update seed_leases set expires = 0 where run_id = 'r' and seed_id = ?",
                                [seed["id"]])
            registry.db.conn.commit()
            assert await b.run(seed)                        # B takes over and finishes the seed
            release.set()
            assert not await task_a                         # A comes back: its outcome is refused
            writer_a.close()
            writer_b.close()
    asyncio.run(scenario())
    samples = [sid for sid, _ in registry.samples("r")]
    assert samples and len(samples) == len(set(samples))
    assert registry.seed("r", seed["id"])["status"] == "accepted"
    assert registry.lease("r", seed["id"])["token"] == 2 and registry.lease("r", seed["id"])["owner"] == "worker-b"
    a_out = tmp_path / "a.jsonl"
    assert not a_out.exists() or a_out.read_text() == ""            # A wrote no sample
    written = [json.loads(line)["id"] for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert written == samples


def _no_db_files(home: Path) -> list[Path]:
    return [p for p in home.rglob("*") if p.suffix in (".db", ".db-wal", ".db-shm", ".sqlite")] if home.exists() else []


@pytest.mark.slow
def test_a_run_in_postgresql_writes_no_sqlite_file_and_every_command_reads_it(tmp_path, pg_url):
    home = tmp_path / "home"
    llm = LLM(chat=ScriptedChatModel(script=RagScript().reply, turn="first"),
              model_name="scripted", structured_mode="json_object",
              max_concurrency=2)
    run = teachgraph.run("rag", [SAMPLE], limit=4, rounds=1, concurrency=2, model="scripted", home=home,
                         run_id="pg1", llm=llm, store=pg_url)
    sqlite_llm = LLM(chat=ScriptedChatModel(script=RagScript().reply, turn="first"), model_name="scripted",
                     structured_mode="json_object", max_concurrency=2)
    twin = teachgraph.run("rag", [SAMPLE], limit=4, rounds=1, concurrency=2, model="scripted",
                          home=tmp_path / "sqlite-home", run_id="pg1", llm=sqlite_llm)
    assert run.status == "complete"
    assert run.counts == twin.counts                                  # the same outcomes on both backends
    assert _no_db_files(home) == []                                   # nothing in a SQLite file
    assert (home / "runs" / "pg1" / "samples.jsonl").exists()         # the samples file stays in the home

    shown = run_cli("runs", "show", "pg1", "--json", "--store", pg_url, home=home)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["counts"] == run.counts
    listed = run_cli("runs", "list", home=home, env={"TEACHGRAPH_STORE": pg_url})   # the variable works too
    assert listed.stdout.startswith("pg1\trag\tcomplete"), listed.stdout + listed.stderr
    failures = run_cli("runs", "failures", "pg1", "--store", pg_url, home=home)
    assert failures.returncode == 0 and f"({run.counts['total']} seeds)" in failures.stderr, failures.stderr
    exported = run_cli("export", "pg1", "--out", str(tmp_path / "ds"), "--format", "jsonl", "--store", pg_url,
                       home=home)
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for f in sorted((tmp_path / "ds").rglob("*.jsonl")) for line in f.read_text().splitlines()]
    assert len(rows) == run.counts["samples"]
    assert _no_db_files(home) == []                                   # reading made none either
    assert run_cli("runs", "show", "pg1", home=home).returncode == 2   # without the store: not in SQLite


RUN_SEEDS, ROUNDS, CONCURRENCY = 8, 2, 2


def _run_args(fake, run_id, store):
    return ["graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", str(RUN_SEEDS), "--rounds", str(ROUNDS),
            "--concurrency", str(CONCURRENCY), "--run-id", run_id, "--base-url", fake.base_url,
            "--model", "fake-model", "--store", store]


@pytest.mark.slow
def test_kill_9_mid_run_on_postgresql_then_resume_accounts_for_every_seed_once(tmp_path, postgres_server):
    """A full `graph run` on the fake endpoint with the store in PostgreSQL, SIGKILLed mid-refinement,
    then `graph resume`: every seed accounted for, no sample twice, only in-flight calls repeated."""
    base_store, store = postgres_server.database(), postgres_server.database()
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.02) as fake:
        base = run_cli(*_run_args(fake, "base", base_store), home=tmp_path / "base")
        assert base.returncode == 0, base.stderr
        baseline_calls = fake.request_count
    home = tmp_path / "killed"
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.05) as fake:
        proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *_run_args(fake, "k", store)], cwd=ROOT,
                                env={**os.environ, "TEACHGRAPH_HOME": str(home)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen = [agent_of_request(body) for body in fake.requests]
            if seen.count("answer") >= 5 and seen[-1] == "edit":
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        calls_before_kill = fake.request_count
        registry = open_store(store, None).registry()
        at_kill = registry.counts("k")
        assert at_kill["pending"] > 0, "the kill came too late to test anything"
        assert at_kill["accepted"] >= 1, "the kill came too early to test duplicates"
        resumed = run_cli("graph", "resume", "k", "--store", store, home=home)
        assert resumed.returncode == 0, resumed.stderr
        calls_after_resume = fake.request_count - calls_before_kill
    counts = registry.counts("k")
    assert counts["pending"] == 0 and counts["failed"] == 0
    assert counts["accepted"] + counts["rejected"] == RUN_SEEDS                     # every seed accounted for
    ids = [json.loads(line)["id"] for line in (home / "runs" / "k" / "samples.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == counts["samples"]                           # no sample twice
    assert len([sid for sid, _ in registry.samples("k")]) == counts["samples"]
    base_ids = [json.loads(line)["id"].replace("base:", "k:")
                for line in (tmp_path / "base" / "runs" / "base" / "samples.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(base_ids)
    repeated = calls_before_kill + calls_after_resume - baseline_calls
    print(f"\npostgres kill test: baseline {baseline_calls} calls; {calls_before_kill} before kill, "
          f"{calls_after_resume} after resume; repeated {repeated}")
    assert 0 <= repeated <= CONCURRENCY
    assert _no_db_files(home) == []
    # finished seeds' checkpoints are pruned from PostgreSQL too
    assert registry.db.execute("select count(*) from checkpoints where thread_id like 'k:%'").fetchone()[0] == 0


def test_gate_indexes_in_postgresql_survive_reopening(pg_url):
    """The dedup gates' indexes in the PostgreSQL store: a reopened store (another worker, a resumed
    run) still drops copies of what was kept, pointing at the kept row."""
    from teachgraph.gates import ChatSample, GateStore, Pipeline
    from tests.planted import Planter, planted

    rows, _ = planted()
    clean = [r for r in rows if r.expect is None][:40]
    store = GateStore.for_run(pg_url, Path("unused.db"), "r1")
    first = Pipeline.build(store)
    assert all(first.judge(ChatSample.from_row(r.sample, "x")).keep for r in clean)
    store.close()
    again = Pipeline.build(GateStore.for_run(pg_url, Path("unused.db"), "r1"))
    p, original = Planter(99), clean[5].sample
    exact = again.judge(ChatSample.from_row(p.exact_copy(original), "x"))
    near = again.judge(ChatSample.from_row(p.near_copy(original), "x"))
    assert (exact.gate, exact.duplicate_of) == ("exact_duplicate", original["id"])
    assert (near.gate, near.duplicate_of) == ("near_duplicate", original["id"])
    assert again.judge(ChatSample.from_row({**clean[6].sample, "id": "new"}, "x")).keep is False  # its copy


def test_a_postgresql_store_without_the_postgres_extra_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)     # as if the extra were not installed
    with pytest.raises(UsageError, match=r"pip install 'teachgraph\[postgres\]'") as caught:
        teachgraph.open_run("r", home=tmp_path, store="postgresql://u@127.0.0.1:1/db")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_review_budget_and_report_queries_give_the_same_figures_on_both_backends(tmp_path, backend, request):
    """The registry methods the review, budgets and report branches added, on one small run: node steps
    and their figures, verdicts (set twice: the second stands), the spend ledger (added to twice), the
    report's counts by task type, --target's kept samples and dealing, and the started seeds --target
    reads from the checkpointer."""
    from langgraph.checkpoint.base import empty_checkpoint

    from teachgraph.checkpoints.saver import started_seeds
    from teachgraph.client.budget import Spend

    store = _store(tmp_path, backend, request)
    registry = store.registry()
    skill = skills.load("rag")
    registry.create_run("r", "rag", {"out": str(tmp_path / "o.jsonl")})
    registry.add_corpus("r", collect([SAMPLE]), limit=3, assign=Dealer([skill]),
                        passage_chars=skill.spec.context.passage_chars)
    s1, s2, s3 = (s["id"] for s in registry.unfinished_seeds("r"))
    for seed, node, outcome, nxt, calls in ((s1, "generate", "ok", "answer", 2), (s1, "answer", "ok", None, 1),
                                            (s2, "generate", "failed", None, 1), (s3, "generate", "rejected", None, 3)):
        registry.record_step({"run_id": "r", "seed_id": seed, "skill": "rag", "node": node, "outcome": outcome,
                              "next": nxt, "llm_calls": calls, "tokens": 10 * calls, "cache_hits": 0,
                              "seconds": 0.5, "detail": json.dumps({"node": node}), "at": time.time()})
    assert [(s["node"], s["detail"]) for s in registry.steps("r", s1)] == [("generate", {"node": "generate"}),
                                                                         ("answer", {"node": "answer"})]
    figures = {row["node"]: row for row in registry.node_figures("r")}
    assert {k: figures["generate"][k] for k in ("runs", "llm_calls", "tokens", "failed", "rejected")} == \
        {"runs": 3, "llm_calls": 6, "tokens": 60, "failed": 1, "rejected": 1}
    assert figures["generate"]["mean_seconds"] == pytest.approx(0.5)
    assert registry.edge_figures("r") == [{"skill": "rag", "node": "generate", "next": "answer", "taken": 1}]

    task_type = registry.seed("r", s1)["task_type"]
    registry.finish_seed("r", s1, status="accepted", samples=[{"id": "r:a"}, {"id": "r:b"}], llm_calls=3,
                         tokens=30, input_tokens=20, output_tokens=10)
    registry.finish_seed("r", s2, status="failed", node="generate", error="boom")
    registry.finish_seed("r", s3, status="rejected", node="generate", reason="no fit")
    registry.set_review("r", "r:a", "accepted", "")
    registry.set_review("r", "r:a", "rejected", "wrong answer")      # the later verdict stands
    assert registry.reviews("r")["r:a"]["note"] == "wrong answer"
    assert registry.review_counts("r") == {"accepted": 0, "rejected": 1}

    ledger = registry.ledger("r")
    ledger.add(Spend(1, 100, 20, 0.5))
    ledger.add(Spend(2, 50, 5, 0.25))
    assert ledger.spent() == Spend(3, 150, 25, 0.75)
    counts = registry.counts("r")
    assert (counts["input_tokens"], counts["output_tokens"], counts["tokens"]) == (20, 10, 30)
    assert [row["source"] for row in registry.seeds_to_estimate("r")] == \
        [registry.seed("r", s)["source"] for s in (s1, s2, s3)]

    rows = {(row["status"], row["node"]): (row["seeds"], row["samples"]) for row in registry.outcomes_by_task_type("r")}
    assert rows == {("accepted", ""): (1, 2), ("failed", "generate"): (1, 0), ("rejected", "generate"): (1, 0)}
    assert registry.kept_samples("r", "rag") == {task_type: 2}
    registry.deal_task_type("r", s2, "other_type")
    assert registry.seed("r", s2)["task_type"] == "other_type"

    async def started() -> set[str]:
        async with store.saver() as saver:
            await saver.aput({"configurable": {"thread_id": f"r:{s2}", "checkpoint_ns": ""}}, empty_checkpoint(),
                             {}, {})
            return started_seeds(saver, "r", registry)
    assert asyncio.run(started()) == {s2}


@pytest.mark.slow
def test_every_command_works_on_a_priced_and_reviewed_run_in_postgresql(tmp_path, pg_url):
    """Issue 17: `review`, `report`, `export`, `runs show/failures`, `graph show --run` on a run whose
    whole state is in PostgreSQL (a run on the fake endpoint with prices, so spend is recorded, and a
    verdict set through the review server's API), each with --store: real figures, and no SQLite file."""
    import urllib.request

    home, store = tmp_path / "home", ["--store", pg_url]
    with FakeOpenAI(responder=RagScript().http_responder) as fake:
        ran = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "4", "--rounds", "1",
                      "--concurrency", "2", "--run-id", "p1", "--base-url", fake.base_url, "--model", "fake-model",
                      "--structured", "json_schema", "--max-cost", "5", "--price-in", "1", "--price-out", "2",
                      *store, home=home, timeout=180)
        assert ran.returncode == 0, ran.stderr
        calls = fake.request_count
    registry = open_store(pg_url, None).registry()
    counts, spent = registry.counts("p1"), registry.spent("p1")
    assert counts["accepted"] >= 1 and counts["samples"] >= 2 and spent.calls == calls == counts["llm_calls"]
    assert spent.cost == pytest.approx((spent.input_tokens + 2 * spent.output_tokens) / 1e6) and spent.cost > 0
    rejected_id = next(sid for sid, _ in registry.samples("p1"))

    review = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "review", "p1", "--port", "0", *store],
                              cwd=ROOT, env={**os.environ, "TEACHGRAPH_HOME": str(home)}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        url = review.stdout.readline().split(": ", 1)[1].split()[0].rstrip("/")
        with urllib.request.urlopen(url + "/api/run", timeout=10) as response:
            overview = json.loads(response.read())
        verdict = urllib.request.Request(f"{url}/api/samples/{rejected_id}/verdict", method="POST",
                                         data=json.dumps({"verdict": "rejected", "note": "wrong"}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(verdict, timeout=10) as response:
            assert response.status == 200
    finally:
        review.kill()
        review.wait(10)
    nodes = {row["node"]: row for row in overview["nodes"]}
    assert nodes["transform"]["runs"] == counts["total"] and sum(n["llm_calls"] for n in nodes.values()) == calls
    assert overview["counts"] == counts and overview["cost"] == pytest.approx(spent.cost)

    shown = run_cli("runs", "show", "p1", "--json", *store, home=home)
    assert shown.returncode == 0, shown.stderr
    shown = json.loads(shown.stdout)
    assert shown["reviews"] == {"accepted": 0, "rejected": 1} and shown["spent"]["calls"] == calls
    assert shown["run"]["estimate"]["seeds"] == counts["total"]          # the estimate made at collection
    text = run_cli("runs", "show", "p1", *store, home=home)
    assert text.returncode == 0 and "reviewed 0 accepted, 1 rejected" in text.stdout, text.stderr
    failures = run_cli("runs", "failures", "p1", *store, home=home)
    assert failures.returncode == 0 and f"{counts['rejected']} rejected ({counts['total']} seeds)" in failures.stderr
    report = run_cli("report", "p1", "--no-semantic", *store, home=home)
    assert report.returncode == 0, report.stderr
    assert (f"seeds {counts['total']}: {counts['accepted']} accepted, {counts['rejected']} rejected, 0 failed, "
            f"0 pending; {counts['samples']} samples") in report.stdout
    drawn = run_cli("graph", "show", "rag", "--run", "p1", "--format", "ascii", *store, home=home)
    assert drawn.returncode == 0, drawn.stderr
    assert f"[{counts['total']} runs · {nodes['transform']['llm_calls']} calls" in drawn.stdout
    exported = run_cli("export", "p1", "--out", str(tmp_path / "ds"), "--format", "jsonl", *store, home=home)
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for f in sorted((tmp_path / "ds").rglob("*.jsonl")) for line in f.read_text().splitlines()]
    assert len(rows) == counts["samples"] - 1 and rejected_id not in {r.get("id") for r in rows}
    assert "left out as rejected: 1" in exported.stderr
    assert _no_db_files(home) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_target_counts_seeds_running_on_another_worker(tmp_path, backend, request):
    """--target on several workers (Ray): each has its own Target, and a seed one of them runs counts
    for the others (through its lease in the store), so two workers do not both deal the last open
    slot of a type. A seed that ends without a sample frees its type again."""
    from teachgraph.mix import Target

    store = _store(tmp_path, backend, request)
    registry = store.registry()
    skill = skills.load("rag")
    registry.create_run("r", "rag", {"out": str(tmp_path / "o.jsonl")})
    registry.add_corpus("r", collect([SAMPLE]), limit=3, assign=Dealer([skill]),
                        passage_chars=skill.spec.context.passage_chars)
    seeds = list(registry.unfinished_seeds("r"))
    fitting = [t.name for t in skill.types_for(seeds[0]["transformation"])]
    assert len(fitting) >= 2
    for seed in seeds:                                   # all of one type: the one each would keep alone
        registry.deal_task_type("r", seed["id"], fitting[0])
    seeds = [{**registry.seed("r", s["id"]), "passages": None} for s in seeds]
    workers = [(store.registry(), f"worker-{n}") for n in range(2)]
    targets = [Target(mine, "r", 1) for mine, _ in workers]

    async def deal(n: int, seed: dict) -> str:
        mine, owner = workers[n]
        assert mine.claim_seed("r", seed["id"], owner) is not None
        return await targets[n].deal(seed, skill)
    first = asyncio.run(deal(0, seeds[0]))
    second = asyncio.run(deal(1, {**seeds[1], "transformation": seeds[0]["transformation"]}))
    assert first == fitting[0] and second != fitting[0]               # the other worker's seed counted
    assert registry.seed("r", seeds[1]["id"])["task_type"] == second  # dealt and recorded together
    registry.finish_seed("r", seeds[0]["id"], status="rejected", reason="no", lease=1)
    third = asyncio.run(deal(1, {**seeds[2], "transformation": seeds[0]["transformation"]}))
    assert third == fitting[0]                                          # rejected: its type is open again


def test_a_resumed_seed_that_ends_on_another_worker_stops_counting_for_target(tmp_path):
    """Every worker of a resumed run counts the seeds with checkpoints as running; one of them ends on
    another worker (rejected): this worker must see its type open again, not wait for it forever."""
    from teachgraph.mix import Target

    store = _store(tmp_path, "sqlite", None)
    registry = store.registry()
    skill = skills.load("rag")
    registry.create_run("r", "rag", {"out": str(tmp_path / "o.jsonl")})
    registry.add_corpus("r", collect([SAMPLE]), limit=2, assign=Dealer([skill]),
                        passage_chars=skill.spec.context.passage_chars)
    resumed, fresh = (registry.seed("r", s["id"]) for s in list(registry.unfinished_seeds("r")))
    registry.deal_task_type("r", fresh["id"], resumed["task_type"])
    target = Target(store.registry(), "r", 1, started={resumed["id"]})
    registry.finish_seed("r", resumed["id"], status="rejected", reason="no")   # ended elsewhere
    fresh = {**fresh, "task_type": resumed["task_type"], "transformation": resumed["transformation"]}
    assert store.registry().claim_seed("r", fresh["id"], "me") is not None
    dealt = asyncio.run(asyncio.wait_for(target.deal(fresh, skill), 5))
    assert dealt == resumed["task_type"]


@pytest.mark.slow
def test_target_on_a_postgresql_store_fills_every_task_type(tmp_path, pg_url):
    """--target with the whole state in PostgreSQL (kept samples, leases and dealing in its registry,
    the started seeds read from AsyncPostgresSaver's table): open_domain_qa's 12 types, 1 sample each."""
    from tests.test_coverage import corpus_of, fake_llm, kept_by_type

    corpus = corpus_of(tmp_path / "corpus", 16)
    run = teachgraph.run("open_domain_qa", [corpus], rounds=0, target=1, concurrency=4, home=tmp_path / "home",
                         run_id="tg", llm=fake_llm(), model="fake", store=pg_url)
    names = {t.name for t in skills.load("open_domain_qa").taxonomy}
    assert kept_by_type(run) == Counter({name: 1 for name in names})
    assert run.counts["accepted"] == 12 and run.counts["pending"] == 0 and run.status == "complete"
    assert len([r for r in run.registry.failures("tg") if r["node"] == "target"]) == 4
    assert _no_db_files(tmp_path / "home") == []
