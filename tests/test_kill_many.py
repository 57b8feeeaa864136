"""SIGKILL `graph run` / `graph resume` at many random moments (seeded: the seed is printed, and
TEACHGRAPH_KILL_SEED replays a sequence). After every kill the registry and the output must be
consistent; after the final resume no seed is lost, no sample is written twice, and the samples
are those of an uninterrupted run. Also: a second process resuming the same run refuses."""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from teachgraph.checkpoints.registry import Registry
from tests.conftest import ROOT, SAMPLE, run_cli
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.rag_script import RagScript

SEEDS, ROUNDS, CONCURRENCY, KILLS = 10, 1, 2, 14


def args(fake, run_id: str) -> list[str]:
    return ["graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", str(SEEDS), "--rounds", str(ROUNDS),
            "--concurrency", str(CONCURRENCY), "--run-id", run_id, "--base-url", fake.base_url,
            "--model", "fake-model", "--structured", "json_schema",
            "--no-cache"]  # every resume asks the endpoint again: the harshest case, and kills land mid-graph


def start(cmd: list[str], home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *cmd], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TEACHGRAPH_HOME": str(home), "OPENAI_BASE_URL": ""})


def output_lines(path: Path) -> tuple[list[str], bytes]:
    """Complete lines' sample ids, and the trailing partial line (b"" if none)."""
    if not path.exists():
        return [], b""
    data = path.read_bytes()
    complete, _, tail = data.rpartition(b"\n")
    ids = [json.loads(line)["id"] for line in complete.splitlines()] if complete else []
    return ids, tail


def check_consistent(home: Path, run_id: str) -> dict:
    """What must hold after any kill: the registry adds up and the file never runs ahead of it."""
    registry = Registry(home / "runs.db")
    run = registry.run(run_id)
    if run is None or run["status"] == "collecting":
        return {"phase": "before seeds" if run is None else "collecting"}
    counts = registry.counts(run_id)
    assert counts["total"] == SEEDS
    assert counts["accepted"] + counts["rejected"] + counts["failed"] + counts["pending"] == SEEDS
    assert counts["failed"] == 0, registry.outcomes(run_id, "failed")
    db = registry.db
    per_seed = dict(db.execute("select seed_id, count(*) from samples where run_id = ? group by seed_id",
                               [run_id]).fetchall())
    for seed in db.query("select id, status, samples from seeds where run_id = ?", [run_id]):
        assert per_seed.get(seed["id"], 0) == (seed["samples"] if seed["status"] == "accepted" else 0)
    committed = {sid for sid, _ in registry.samples(run_id)}
    ids, _ = output_lines(Path(run["settings"]["out"]))
    assert len(ids) == len(set(ids)), "a sample written twice"
    assert set(ids) <= committed, "the file holds a sample the registry does not"
    return {"phase": "running", **counts}


@pytest.mark.slow
def test_sigkill_at_many_random_moments_loses_and_duplicates_nothing(tmp_path):
    seed = int(os.environ.get("TEACHGRAPH_KILL_SEED") or random.SystemRandom().randrange(10**6))
    rng = random.Random(seed)
    print(f"\nkill test: TEACHGRAPH_KILL_SEED={seed}")
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.05) as fake:
        base = run_cli(*args(fake, "base"), home=tmp_path / "base")
        assert base.returncode == 0, base.stderr
        baseline_calls = fake.request_count
    base_ids = sorted(i.replace("base:", "")
                      for i in output_lines(tmp_path / "base" / "runs" / "base" / "samples.jsonl")[0])

    home = tmp_path / "killed"
    kills, launches, finished_runs, phases = 0, 0, 0, []
    run_index = 0
    run_id = f"k{run_index}"
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.05) as fake:
        while kills < KILLS:
            registry = Registry(home / "runs.db")
            cmd = args(fake, run_id) if registry.run(run_id) is None else ["graph", "resume", run_id]
            first_request = fake.request_count
            proc = start(cmd, home)
            launches += 1
            # A moment, in turns: some time after launch (start-up, collecting, any node), or just
            # after the N-th model request of this launch (inside the graph), plus a little jitter.
            if launches % 2:
                moment = ("after s", round(rng.uniform(0.2, 4.0), 2))
                deadline = time.monotonic() + moment[1]
                while time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.01)
            else:
                moment = ("after request", rng.randint(1, 30))
                while fake.request_count - first_request < moment[1] and proc.poll() is None:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0, 0.06))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                phase = check_consistent(home, run_id)["phase"]
                phases.append((moment, "mid-graph" if fake.request_count > first_request else phase))
                continue
            assert proc.returncode == 0, f"{cmd} exited {proc.returncode}"
            # This run finished before the kill: check it against the uninterrupted one, start another.
            finish(home, run_id, base_ids)
            finished_runs += 1
            run_index += 1
            run_id = f"k{run_index}"
        if Registry(home / "runs.db").run(run_id) is not None:
            resumed = run_cli("graph", "resume", run_id, home=home)
            assert resumed.returncode == 0, resumed.stderr
            finish(home, run_id, base_ids)
            finished_runs += 1
        total_calls = fake.request_count
    where = collections.Counter(phase for _, phase in phases)
    deep = where["mid-graph"]
    print(f"kill test: {kills} SIGKILLs over {launches} launches, {finished_runs} runs of {SEEDS} seeds finished; "
          f"kills by phase {dict(where)} (running = seeds collected, no model call yet in that launch); "
          f"{total_calls} model calls for {finished_runs} runs (uninterrupted: {baseline_calls} per run); "
          f"0 seeds lost, 0 duplicate samples")
    assert kills >= 10 and deep >= 5


def finish(home: Path, run_id: str, base_ids: list[str]) -> None:
    registry = Registry(home / "runs.db")
    counts = registry.counts(run_id)
    assert counts["pending"] == 0 and counts["failed"] == 0 and counts["accepted"] + counts["rejected"] == SEEDS
    ids, tail = output_lines(home / "runs" / run_id / "samples.jsonl")
    assert tail == b"", "a half line was left in the output"
    assert len(ids) == len(set(ids)) == counts["samples"]
    assert sorted(i.replace(f"{run_id}:", "base:").replace("base:", "") for i in ids) == base_ids
    with sqlite3.connect(home / "checkpoints.db") as db:
        assert db.execute("select count(*) from checkpoints where thread_id like ?", [f"{run_id}:%"]).fetchone()[0] == 0


@pytest.mark.slow
def test_a_run_killed_while_collecting_collects_again_on_resume(tmp_path):
    """The state a kill leaves mid-collection: the run row says "collecting", some seeds and passages
    are in, others not. Resume throws the partial corpus away and collects it again."""
    home = tmp_path / "home"
    with FakeOpenAI(responder=RagScript().http_responder) as fake:
        done = run_cli(*args(fake, "whole"), home=home)
        assert done.returncode == 0, done.stderr
        registry = Registry(home / "runs.db")
        settings = registry.run("whole")["settings"]
        settings["out"] = str(home / "runs" / "cut" / "samples.jsonl")
        registry.create_run("cut", "rag", settings)
        with registry.db.conn:
            for table in ("seeds", "passages"):
                rows = list(registry.db.query(f"select * from {table} where run_id = 'whole' limit 3"))
                registry.db[table].insert_all([{**r, "run_id": "cut"} for r in rows])
        assert registry.run("cut")["status"] == "collecting"
        resumed = run_cli("graph", "resume", "cut", home=home)
        assert resumed.returncode == 0, resumed.stderr
        assert "stopped while collecting its seeds; collecting them again" in resumed.stderr
    registry = Registry(home / "runs.db")
    counts = registry.counts("cut")
    assert counts["total"] == SEEDS and counts["pending"] == 0 and counts["accepted"] + counts["rejected"] == SEEDS
    passages = registry.db.execute("select count(*) from passages where run_id = 'cut'").fetchone()[0]
    assert passages == registry.db.execute("select count(*) from passages where run_id = 'whole'").fetchone()[0]
    ids, tail = output_lines(home / "runs" / "cut" / "samples.jsonl")
    assert tail == b"" and len(ids) == len(set(ids)) == counts["samples"]


@pytest.mark.slow
def test_a_second_process_resuming_the_same_run_refuses(tmp_path):
    home = tmp_path / "home"
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.3) as fake:
        first = start(args(fake, "twice"), home)
        try:
            deadline = time.monotonic() + 60
            while fake.request_count < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert first.poll() is None
            second = run_cli("graph", "resume", "twice", home=home)
            again = run_cli(*args(fake, "twice"), home=home)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert second.stderr.strip() == f"error: run twice is already being run by pid {first.pid}"
        assert again.returncode == 2 and "already" in again.stderr
        fake.delay = 0.02
        resumed = run_cli("graph", "resume", "twice", home=home)        # the holder is gone: this one runs
        assert resumed.returncode == 0, resumed.stderr
    counts = Registry(home / "runs.db").counts("twice")
    assert counts["pending"] == 0 and counts["accepted"] + counts["rejected"] == SEEDS
