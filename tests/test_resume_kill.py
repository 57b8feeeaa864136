"""SIGKILL a real `graph run` mid-refinement, resume it, and prove nothing was lost, nothing was
written twice, and finished LLM work was not redone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from teachgraph.checkpoints.registry import Registry
from tests.conftest import ROOT, SAMPLE, run_cli
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.rag_script import RagScript, agent_of_request

SEEDS, ROUNDS, CONCURRENCY = 8, 2, 2


def run_args(fake, run_id):
    return ["graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", str(SEEDS), "--rounds", str(ROUNDS),
            "--concurrency", str(CONCURRENCY), "--run-id", run_id, "--base-url", fake.base_url,
            "--model", "fake-model"]


def agents(fake):
    return [agent_of_request(body) for body in fake.requests]


@pytest.mark.slow
def test_kill_mid_refinement_then_resume_loses_and_repeats_nothing(tmp_path):
    # Baseline: the same run, uninterrupted.
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.02) as fake:
        base = run_cli(*run_args(fake, "base"), home=tmp_path / "base")
        assert base.returncode == 0, base.stderr
        baseline_calls = fake.request_count

    home = tmp_path / "killed"
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.05) as fake:
        proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *run_args(fake, "k")], cwd=ROOT,
                                env={**os.environ, "TEACHGRAPH_HOME": str(home)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        # Kill once some seeds are finished and another is mid-refinement (an edit call in flight).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            seen = agents(fake)
            if seen.count("answer") >= 5 and seen[-1] == "edit":
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        calls_before_kill = fake.request_count
        registry = Registry(home / "runs.db")
        at_kill = registry.counts("k")
        assert at_kill["pending"] > 0, "the kill came too late to test anything"
        assert at_kill["accepted"] >= 1, "the kill came too early to test duplicates"
        assert at_kill["total"] == SEEDS

        listed = run_cli("runs", "list", home=home).stdout
        assert listed.startswith("k\trag\tinterrupted")        # not "running": its process is gone
        resumed = run_cli("graph", "resume", "k", home=home)
        assert resumed.returncode == 0, resumed.stderr
        calls_after_resume = fake.request_count - calls_before_kill

    registry = Registry(home / "runs.db")
    counts = registry.counts("k")
    why = {"rejected": registry.outcomes("k", "rejected"), "failed": registry.outcomes("k", "failed")}
    assert counts["pending"] == 0 and counts["failed"] == 0, why
    assert counts["accepted"] + counts["rejected"] == SEEDS                     # no seed lost
    lines = (home / "runs" / "k" / "samples.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines]                            # no half line either
    assert len(ids) == len(set(ids)) == counts["samples"]                       # none written twice
    base_ids = [json.loads(line)["id"].replace("base:", "k:")
                for line in (tmp_path / "base" / "runs" / "base" / "samples.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(base_ids), why                                 # same samples as uninterrupted
    repeated = calls_before_kill + calls_after_resume - baseline_calls
    # Only calls in flight at the kill are repeated: at most one per running seed. A node cut off
    # after some of its calls (the answer node makes two) finds their replies in the response cache.
    print(f"\nkill test: baseline {baseline_calls} calls; {calls_before_kill} before kill "
          f"({at_kill['accepted'] + at_kill['rejected']} seeds done), {calls_after_resume} after resume; "
          f"repeated {repeated}")
    assert 0 <= repeated <= CONCURRENCY
    # Finished seeds' checkpoints are pruned: nothing of this run is left in the checkpoint database.
    import sqlite3
    with sqlite3.connect(home / "checkpoints.db") as db:
        assert db.execute("select count(*) from checkpoints where thread_id like 'k:%'").fetchone()[0] == 0
