"""`graph run/resume --ray`: the seeds on a local multi-node Ray cluster (ray.cluster_utils.Cluster, every
node on this machine, so they share TEACHGRAPH_HOME's SQLite store), against the fake endpoint with a fixed
latency. A worker node killed mid-run and a driver killed mid-run: no seed lost, no sample written twice,
finished seeds not generated again (the endpoint's calls counted against an uninterrupted run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from teachgraph.checkpoints.registry import Registry  # noqa: E402
from teachgraph.testing.fake_openai import FakeOpenAI  # noqa: E402
from tests.conftest import ROOT, SAMPLE, run_cli, run_in_process  # noqa: E402
from tests.rag_script import RagScript  # noqa: E402

SEEDS, ROUNDS, CONCURRENCY = 12, 1, 3
SMALL = {"num_cpus": 1, "object_store_memory": 80 * 2**20}


@pytest.fixture(scope="module")
def cluster():
    """A head that runs no seeds (0 CPUs: the driver's node) and worker nodes of 1 CPU each, added
    per test; node death is noticed within ~2 s instead of Ray's default 15."""
    made = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": 80 * 2**20,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3}})
    yield made
    made.shutdown()


def workers(cluster, count):
    for node in list(cluster.worker_nodes):
        cluster.remove_node(node)
    nodes = [cluster.add_node(**SMALL) for _ in range(count)]
    cluster.wait_for_nodes()
    return nodes


def worker_pid(node) -> int:
    """The pid of the SeedWorker actor process on `node` (a child of its raylet)."""
    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    return next(p.pid for p in raylet.children(recursive=True) if "SeedWorker" in " ".join(p.cmdline()))


def run_args(fake, run_id, *extra):
    return ["graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", str(SEEDS), "--rounds", str(ROUNDS),
            "--concurrency", str(CONCURRENCY), "--run-id", run_id, "--base-url", fake.base_url,
            "--model", "fake-model", *extra]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The same run, on this process's LocalExecutor, uninterrupted: its calls and sample ids."""
    tmp_path = tmp_path_factory.mktemp("baseline")
    with FakeOpenAI(responder=RagScript().http_responder) as fake:
        done = run_cli(*run_args(fake, "base"), home=tmp_path / "base")
        assert done.returncode == 0, done.stderr
        calls = fake.request_count
    ids = sorted(json.loads(line)["id"].removeprefix("base:")
                 for line in (tmp_path / "base" / "runs" / "base" / "samples.jsonl").read_text().splitlines())
    return calls, ids


def finished(home, run_id):
    try:
        counts = Registry(home / "runs.db").counts(run_id)
    except Exception:  # not made yet
        return 0
    return counts["accepted"] + counts["rejected"]


def check_complete(home, run_id, base_ids):
    registry = Registry(home / "runs.db")
    counts = registry.counts(run_id)
    why = {"rejected": registry.outcomes(run_id, "rejected"), "failed": registry.outcomes(run_id, "failed")}
    assert counts["pending"] == 0 and counts["failed"] == 0, why
    assert counts["accepted"] + counts["rejected"] == SEEDS                          # no seed lost
    ids = [json.loads(line)["id"] for line in (home / "runs" / run_id / "samples.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == counts["samples"]                            # none written twice
    assert sorted(i.removeprefix(f"{run_id}:") for i in ids) == base_ids, why        # the same samples
    shown = json.loads(run_cli("runs", "show", run_id, "--json", home=home).stdout)
    assert shown["executor"] == "ray"
    return shown


@pytest.mark.slow
def test_a_worker_process_and_a_worker_node_killed_mid_run_lose_and_regenerate_nothing(cluster, baseline, tmp_path):
    base_calls, base_ids = baseline
    nodes = workers(cluster, 3)
    home = tmp_path / "ray"
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.15) as fake:
        killed = {}

        def wait_for(done):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and finished(home, "k") < done:
                time.sleep(0.05)
            return finished(home, "k")

        def kill_when_some_are_done():
            killed["process_at"] = wait_for(3)
            os.kill(worker_pid(nodes[0]), signal.SIGKILL)          # a worker process: Ray restarts it
            killed["done_at_kill"] = wait_for(6)
            cluster.remove_node(nodes[1], allow_graceful=False)   # a whole node, its worker mid-graph

        killer = threading.Thread(target=kill_when_some_are_done)
        killer.start()
        ran = run_cli(*run_args(fake, "k", "--ray", cluster.address), home=home, timeout=240)
        killer.join()
        calls = fake.request_count
    assert ran.returncode == 0, ran.stderr
    assert 3 <= killed["process_at"] and 6 <= killed["done_at_kill"] < SEEDS, "a kill came too late"
    moved = [line for line in ran.stderr.splitlines() if "a Ray worker was lost with seed" in line]
    assert len(moved) == 2, ran.stderr                    # each killed worker's one seed went elsewhere
    shown = check_complete(home, "k", base_ids)
    assert sum(shown["workers"].values()) == SEEDS       # each seed ended once, on one node
    assert len(shown["workers"]) >= 2
    repeated = calls - base_calls
    print(f"\nworker process + node kill: baseline {base_calls} calls, with the kill {calls}: repeated {repeated}; "
          f"per node {shown['workers']}")
    # Only the calls in flight in the killed workers are made again (one seed each, one call at a time);
    # finished seeds and finished graph steps are not.
    assert 0 <= repeated <= 2


@pytest.mark.slow
def test_a_killed_driver_is_resumed_on_the_cluster_without_loss_or_duplicates(cluster, baseline, tmp_path):
    base_calls, base_ids = baseline
    workers(cluster, 2)
    home = tmp_path / "ray"
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.15) as fake:
        proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), *run_args(fake, "d", "--ray", cluster.address)],
                                cwd=ROOT, env={**os.environ, "TEACHGRAPH_HOME": str(home)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and finished(home, "d") < 4:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        at_kill = finished(home, "d")
        assert 4 <= at_kill < SEEDS, "the kill came too late to test anything"
        time.sleep(1.0)   # Ray ends a dead driver's workers when it sees its socket close
        calls_before = fake.request_count
        resumed = run_cli("graph", "resume", "d", "--ray", cluster.address, home=home, timeout=240)
        assert resumed.returncode == 0, resumed.stderr
        calls = fake.request_count
    check_complete(home, "d", base_ids)
    repeated = calls - base_calls
    print(f"\ndriver kill: baseline {base_calls} calls; {calls_before} before the kill ({at_kill} seeds done), "
          f"{calls} in all: repeated {repeated}")
    assert 0 <= repeated <= CONCURRENCY


def test_ray_needs_an_endpoint_every_node_can_reach(tmp_path):
    done = run_cli("graph", "run", "rag", "--limit", "1", "--ray", "auto", home=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--ray needs --base-url: the embedded model runs on "
                                                         "this machine only")


class CountingFake(FakeOpenAI):
    """The fake endpoint, counting the most chat requests it held at once (429s included)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.now = self.most = 0
        self._count = threading.Lock()

    def _handle_chat(self, h, body):
        with self._count:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            super()._handle_chat(h, body)
        finally:
            with self._count:
                self.now -= 1


@pytest.mark.slow
def test_a_429_storm_slows_every_worker_and_the_cluster_stays_under_concurrency(cluster, baseline, tmp_path):
    base_calls, base_ids = baseline
    workers(cluster, 2)
    home = tmp_path / "ray"
    with CountingFake(responder=RagScript().http_responder, delay=0.05, faults={"429": 0.25},
                      retry_after="0") as fake:
        args = run_args(fake, "s", "--ray", cluster.address, "--retries", "10")
        args[args.index("--concurrency") + 1] = "4"    # 2 workers, 2 requests in flight each at most
        ran = run_cli(*args, home=home, timeout=240)
    assert ran.returncode == 0, ran.stderr
    check_complete(home, "s", base_ids)
    assert 2 <= fake.most <= 4, fake.most                  # the cluster-wide limit held
    line = next(x for x in ran.stderr.splitlines() if x.startswith("endpoint:"))
    print(f"\n429 storm: most in flight {fake.most}; {line}")
    assert fake.injected["429"] > 0 and "429:" in line     # the workers' retries are counted
    # every worker halved its window (2 -> 1): the lowest windows summed over the 2 workers is 2
    assert line.endswith("(lowest 2)"), line


def test_a_ray_address_nothing_answers_is_one_line_before_any_run_is_made(tmp_path):
    done = run_cli("graph", "run", "rag", "--limit", "1", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                   "--ray", "127.0.0.1:1", home=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: cannot join the Ray cluster at 127.0.0.1:1: Connection refused"]
    assert not (tmp_path / "runs").exists()    # no run was made


def test_runs_show_says_a_run_on_this_process_ran_locally(tmp_path):
    run_in_process(tmp_path, RagScript().reply, limit=1, rounds=0)
    shown = json.loads(run_cli("runs", "show", "t1", "--json", home=tmp_path / "home").stdout)
    assert shown["executor"] == "local" and shown["workers"] == {}


@pytest.mark.slow
def test_a_ray_run_stops_cleanly_at_its_token_budget_and_resumes_to_completion(cluster, baseline, tmp_path):
    """--max-tokens-total on Ray: every worker's replies go into the run's one ledger and every worker
    reads it before a call, so the run stops as a local one does ('stopped at budget', exit 3, seeds
    pending, no call started after the budget beyond those in flight) and `graph resume` with a higher
    budget finishes it with the same samples, none twice. The workers record node steps (the review
    page's per-node figures) and pass the same ledger test as LocalExecutor: calls served == calls in it."""
    base_calls, base_ids = baseline
    workers(cluster, 2)
    home, budget = tmp_path / "ray", 20000     # about half of what the 12 seeds take (~510 tokens a call)
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.05) as fake:
        stopped = run_cli(*run_args(fake, "b", "--ray", cluster.address, "--max-tokens-total", str(budget),
                                    "--price-in", "1", "--price-out", "2", "--structured", "json_schema"),
                          home=home, timeout=240)   # json_schema: no probe, so every request is the graph's
        assert stopped.returncode == 3, stopped.stderr
        registry = Registry(home / "runs.db")
        run, counts, spent = registry.run("b"), registry.counts("b"), registry.spent("b")
        assert run["status"] == "stopped at budget" and f"--max-tokens-total {budget}" in run["stop_reason"]
        assert counts["pending"] > 0 and counts["accepted"] >= 1, (counts, spent)
        assert spent.calls == fake.request_count        # every worker's replies are in the ledger
        # the call that crossed it and those in flight then (3 at most, one per seed in flight)
        assert budget <= spent.tokens < budget + CONCURRENCY * 1500
        assert spent.cost == pytest.approx((spent.input_tokens + 2 * spent.output_tokens) / 1e6)
        calls_at_stop = fake.request_count
        resumed = run_cli("graph", "resume", "b", "--ray", cluster.address, "--max-tokens-total", "10000000",
                          home=home, timeout=240)
        assert resumed.returncode == 0, resumed.stderr
        calls = fake.request_count
    check_complete(home, "b", base_ids)
    final = registry.counts("b")
    assert registry.run("b")["status"] == "complete" and registry.spent("b").calls == calls
    # the node steps of every seed that ended, recorded by the workers
    ended = [row["seed"] for row in registry.failures("b")] + [
        s for s, in registry.db.execute("select id from seeds where run_id = 'b' and status = 'accepted'").fetchall()]
    assert len(ended) == SEEDS and all(registry.steps("b", seed) for seed in ended)
    figures = {row["node"]: row["runs"] for row in registry.node_figures("b")}
    assert figures.get("answer", 0) >= 1 and sum(figures.values()) >= SEEDS * 3, figures
    print(f"\nray budget: stopped after {calls_at_stop} calls ({spent.tokens} tokens of {budget}), "
          f"{counts['pending']} seeds pending; resumed: {calls} calls in all, {final['llm_calls']} in the seeds' "
          f"figures (baseline {base_calls} with its probe); steps per node {figures}")
    # only the calls of nodes the stop cut short are made again (one node per seed in flight)
    assert 0 <= calls - final["llm_calls"] <= CONCURRENCY


@pytest.mark.slow
def test_a_ray_run_in_a_postgresql_store_records_everything_there(cluster, baseline, tmp_path, pg_url):
    """--ray with --store postgresql://: the workers open the same PostgreSQL store (registry, leases,
    LangGraph checkpoints, spend, node steps), the driver writes the samples file; nothing goes to a
    SQLite file, and the run is what the local one is."""
    base_calls, base_ids = baseline
    workers(cluster, 2)
    home = tmp_path / "ray"
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.02) as fake:
        ran = run_cli(*run_args(fake, "p", "--ray", cluster.address, "--store", pg_url), home=home, timeout=240)
        calls = fake.request_count
    assert ran.returncode == 0, ran.stderr
    from teachgraph.checkpoints.store import open_store
    registry = open_store(pg_url, None).registry()
    counts = registry.counts("p")
    assert counts["pending"] == counts["failed"] == 0 and counts["accepted"] + counts["rejected"] == SEEDS
    ids = [json.loads(line)["id"] for line in (home / "runs" / "p" / "samples.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == counts["samples"]
    assert sorted(i.removeprefix("p:") for i in ids) == base_ids
    assert registry.run("p")["executor"] == "ray" and sum(json.loads(registry.run("p")["workers"]).values()) == SEEDS
    assert calls == base_calls                                    # nothing repeated
    assert registry.spent("p").calls == counts["llm_calls"] > 0  # the workers' spend (the probe's calls are not in it)
    assert sum(row["runs"] for row in registry.node_figures("p")) >= SEEDS * 5
    assert [p for p in home.rglob("*.db")] == []
