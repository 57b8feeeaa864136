"""Benchmark (not a test): what the review page costs.

    python bench/review.py                  # 2,000 seeds (4,000 samples, 14,000 steps); about a minute
    python bench/review.py --seeds 10000

1. Recording: the per-node `steps` rows a run writes (checkpoints/steps.py), timed through the callback
   handler itself (start + end of a node, one committed insert), and the bytes they add to runs.db.
2. Serving: the page's requests against that store, timed through the real server on 127.0.0.1: the
   run's figures (what the page polls), the graph's SVG drawn by Graphviz and then from its cache, the
   samples list unfiltered and with a text search, and one lineage.
The registry is synthetic (written straight into runs.db, no model)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from teachgraph.checkpoints.registry import Registry  # noqa: E402
from teachgraph.checkpoints.steps import StepRecorder  # noqa: E402
from teachgraph.review.server import open_server  # noqa: E402
from teachgraph.runner import Home, Settings  # noqa: E402

RUN = "bench"
NODES = ["transform", "generate", "suggest", "edit", "suggest", "edit", "answer"]


def build(home: Home, seeds: int) -> tuple[Registry, float]:
    registry = Registry(home.registry_path)
    settings = Settings(skill="rag", seeds=["-"], out=str(home.default_out(RUN)), model="m")
    registry.create_run(RUN, "rag", settings.to_json())
    rows = [{"run_id": RUN, "id": f"s{i:06d}", "ordinal": i, "source": f"doc{i}.md", "chunk": 0, "title": f"doc {i}",
             "kind": "text", "text": "Some passage text about sorting lists in Python. " * 20, "skill": "rag",
             "transformation": None, "task_type": "comparison", "status": "pending", "reason": None, "node": None,
             "error": None, "llm_calls": 0, "tokens": 0, "samples": 0, "updated": 0.0} for i in range(seeds)]
    with registry.db.conn:
        registry.db["seeds"].insert_all(rows)
    size_before = home.registry_path.stat().st_size
    timings = []
    for i in range(seeds):
        recorder = StepRecorder(registry, RUN, f"s{i:06d}", "rag")
        for node in NODES:
            task = uuid.uuid4()
            update = {"item": {"query": f"Which behaviour differs in seed {i}?", "round": 1}, "llm_calls": 1,
                      "tokens": 420, "cache_hits": 0, "operation": "rewrite_query", "suggestion": "make it harder"}
            started = time.perf_counter()
            recorder.on_chain_start({}, {}, run_id=task, tags=["graph:step:1"], metadata={"langgraph_node": node},
                                    name=node)
            recorder.on_chain_end(update, run_id=task)
            timings.append(time.perf_counter() - started)
        samples = [{"id": f"{RUN}:s{i:06d}:r{r}", "skill": "rag", "messages": [
            {"role": "system", "content": ""}, {"role": "user", "content": f"Passages ... Query {i} round {r}"},
            {"role": "assistant", "content": '{"answer": "It says so.", "relevant_passages": [1]}'}],
            "metadata": {"seed_id": f"s{i:06d}", "task_type": "comparison", "refinement_round": r,
                         "refinements": [], "original_query": f"Query {i}"}} for r in (0, 2)]
        registry.finish_seed(RUN, f"s{i:06d}", status="accepted", samples=samples, llm_calls=7, tokens=2940)
    registry.set_run(RUN, status="complete")
    grown = home.registry_path.stat().st_size - size_before
    print(f"recording: {len(timings)} steps, {statistics.median(timings) * 1e6:.0f} us median per node "
          f"(p95 {sorted(timings)[int(len(timings) * .95)] * 1e6:.0f} us), "
          f"runs.db grew {grown / 2**20:.1f} MB with the seeds' samples and steps")
    return registry, grown


def timed(url: str, repeat: int = 5) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as response:
            size = len(response.read())
        best = min(best, time.perf_counter() - started)
    return best, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Home(Path(folder))
        build(home, args.seeds)
        server = open_server(RUN, home=home)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            base = server.url.rstrip("/")
            cold, _ = timed(base + "/api/graph/rag.svg", repeat=1)
            for label, path, repeat in [
                ("GET /api/run (the poll)", "/api/run", 5),
                ("GET /api/graph/rag.svg, cached", "/api/graph/rag.svg", 5),
                ("GET /api/samples (every item)", "/api/samples", 3),
                ("GET /api/samples?q=round 2", "/api/samples?" + urllib.parse.urlencode({"q": "round 2"}), 3),
                ("GET /api/samples/ID (a lineage)", "/api/samples/" + urllib.parse.quote(f"{RUN}:s000007:r2"), 5),
            ]:
                seconds, size = timed(base + path, repeat)
                print(f"{label:<36}{seconds * 1000:8.1f} ms  {size / 1024:8.1f} KB")
            print(f"{'GET /api/graph/rag.svg, first drawing':<36}{cold * 1000:8.1f} ms")
            print(json.dumps({"seeds": args.seeds, "samples": 2 * args.seeds, "steps": len(NODES) * args.seeds}))
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
