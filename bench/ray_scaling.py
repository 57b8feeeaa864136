"""Ray scaling benchmark (issue 17): seeds/s of `graph run rag --ray` on 1, 2 and 3 simulated nodes, and
the LLM calls repeated after a node is killed. A benchmark, not a test.

    python bench/ray_scaling.py                  # 96 seeds, 0.3 s per call, 1-3 nodes, then a node kill
    python bench/ray_scaling.py --seeds 24 --nodes 1 2

Every node is a ray.cluster_utils.Cluster node on this machine (1 CPU each: one SeedWorker actor per
node), with a head node of 0 CPUs for the driver, so the nodes share TEACHGRAPH_HOME's SQLite store. The
endpoint is the fake OpenAI server (teachgraph/testing/fake_openai.py) with a fixed latency answering
with the rag script's replies. The concurrency grows with the nodes (--per-node seeds in flight on each),
so perfect scaling is N times the 1-node figure; on a 2-core machine the CPU every seed costs (graph,
checkpoints, registry, Ray) is where it stops. Two rates: over the run's seed phase (the registry's wall
time, Ray's start and the workers' imports included), and working: from the first graph call the endpoint
received to the last seed recorded.
The kill run removes one of 3 nodes (not gracefully: its processes are killed) once a third of the
seeds are done, and counts the endpoint's calls against the same run uninterrupted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ray.cluster_utils import Cluster  # noqa: E402

import teachgraph  # noqa: E402
from teachgraph.api import ray_executor  # noqa: E402
from teachgraph.checkpoints.registry import Registry  # noqa: E402
from teachgraph.testing.fake_openai import FakeOpenAI  # noqa: E402
from tests.rag_script import RagScript, agent_of  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}


class TimedFake(FakeOpenAI):
    """The fake endpoint, noting when the first call of a graph (not the pre-run probe) came in."""

    first_call: float | None = None

    def _handle_chat(self, h, body):
        if self.first_call is None:
            system = next((m["content"] for m in body.get("messages", []) if m["role"] == "system"), "")
            if agent_of(system) != "unknown":
                self.first_call = time.time()
        super()._handle_chat(h, body)


def corpus(folder: Path, seeds: int) -> Path:
    """`seeds` small documents, each its own seed (one chunk)."""
    folder.mkdir(parents=True)
    words = (ROOT / "corpus" / "sample" / "zen_of_python.txt").read_text().split()
    for i in range(seeds):
        text = " ".join(words[(i * 7) % len(words):] + words[:(i * 7) % len(words)])
        (folder / f"doc{i:04d}.txt").write_text(f"Document {i}.\n\n{text}\n")
    return folder


def start_cluster(nodes: int) -> tuple[Cluster, list]:
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": 80 * 2**20,
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3}})
    added = [cluster.add_node(**NODE) for _ in range(nodes)]
    cluster.wait_for_nodes()
    return cluster, added


def one_run(work: Path, name: str, seeds_dir: Path, args, nodes: int, kill_at: int | None = None) -> dict:
    cluster, added = start_cluster(nodes)
    home = work / name
    killed = {}
    try:
        with TimedFake(responder=RagScript().http_responder, delay=args.latency) as fake:
            if kill_at is not None:
                def killer():
                    deadline = time.monotonic() + 600
                    while time.monotonic() < deadline:
                        try:
                            counts = Registry(home / "runs.db").counts(name)
                            if counts["accepted"] + counts["rejected"] >= kill_at:
                                break
                        except Exception:
                            pass
                        time.sleep(0.05)
                    killed["done"] = counts["accepted"] + counts["rejected"]
                    cluster.remove_node(added[-1], allow_graceful=False)
                thread = threading.Thread(target=killer, daemon=True)
                thread.start()
            cpu0 = os.times()
            run = teachgraph.run("rag", [seeds_dir], limit=args.seeds, rounds=1, concurrency=args.per_node * nodes,
                                 base_url=fake.base_url, model="fake-model", home=home, run_id=name,
                                 executor=ray_executor(cluster.address))
            cpu1 = os.times()
            calls, first_call = fake.request_count, fake.first_call
        counts, record = run.counts, run.record
        ends = sorted(row["updated"] for row in Registry(home / "runs.db").db.query(
            "select updated from seeds where run_id = ? and status in ('accepted', 'rejected')", [name]))
        return {"nodes": nodes, "seeds": counts["accepted"] + counts["rejected"], "pending": counts["pending"],
                "failed": counts["failed"], "samples": counts["samples"], "calls": calls,
                "wall": record["wall_seconds"],
                "steady": len(ends) / (ends[-1] - first_call),
                "driver_cpu": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
                "killed_at": killed.get("done"), "workers": record.get("workers")}
    finally:
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=96)
    parser.add_argument("--latency", type=float, default=0.3, help="seconds the fake endpoint takes per call")
    parser.add_argument("--per-node", type=int, default=8, help="seeds (and calls) in flight per node")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--no-kill", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    try:
        seeds_dir = corpus(work / "corpus", args.seeds)
        print(f"rag, {args.seeds} seeds, 1 refinement round (6 calls a seed), {args.latency} s per call, "
              f"{args.per_node} seeds in flight per node; load {os.getloadavg()[0]:.1f}", flush=True)
        first = None
        for nodes in args.nodes:
            r = one_run(work, f"n{nodes}", seeds_dir, args, nodes)
            rate = r["seeds"] / r["wall"]
            first = first or r["steady"] / nodes
            print(f"{nodes} node(s): {r['seeds']} seeds ({r['pending']} pending, {r['failed']} failed), "
                  f"{r['samples']} samples, {r['calls']} calls in {r['wall']:.1f} s: {rate:.2f} seeds/s, "
                  f"{r['steady']:.2f} seeds/s working ({r['steady'] / first:.2f}x the 1-node figure; ideal {nodes}x); "
                  f"driver CPU {r['driver_cpu']:.1f} s; "
                  f"per node {r['workers']}; load {os.getloadavg()[0]:.1f}", flush=True)
            if nodes == 3:
                clean = r
        if not args.no_kill and 3 in args.nodes:
            r = one_run(work, "kill", seeds_dir, args, 3, kill_at=args.seeds // 3)
            print(f"3 nodes, one killed at {r['killed_at']} seeds done: {r['seeds']} seeds ({r['pending']} pending, "
                  f"{r['failed']} failed), {r['samples']} samples, {r['calls']} calls "
                  f"(uninterrupted: {clean['calls']}): {r['calls'] - clean['calls']} repeated; {r['wall']:.1f} s; "
                  f"per node {r['workers']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
