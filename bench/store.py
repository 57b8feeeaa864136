"""What the store costs per seed, SQLite vs PostgreSQL (issue 17). A benchmark, not a test.

    python bench/store.py            # 400 seeds of store work, then a whole run of the sample corpus
    python bench/store.py --quick    # 100 seeds

1. The store's work for one seed, as the runner does it, without any model: claim the seed's lease, run a
   five-node LangGraph graph (a refinement loop of two rounds: 9 checkpoints, ~2 KB of state per node, as
   a rag seed has) with the store's checkpointer and durability "sync", then commit the outcome with two
   samples under the lease and delete the thread. Run with `concurrency` seeds at once. The same graph
   with LangGraph's InMemorySaver and no registry is the baseline: store CPU = (CPU - baseline) / seeds.
   For PostgreSQL the server's CPU (postmaster and its backends, from /proc) is counted too: a store on
   another machine still spends it, just elsewhere.
2. A whole `teachgraph.run` of the rag skill over the sample corpus with a scripted model (no HTTP): CPU
   per seed of the run process (and the server), each backend.

The server is the one the tests use (teachgraph/testing/postgres.py: fsync off, on this machine). The
machine is shared: the load is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import TypedDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402

from teachgraph.checkpoints.saver import thread_id  # noqa: E402
from teachgraph.checkpoints.store import open_store  # noqa: E402
from teachgraph.testing.postgres import PostgresServer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} cores)"


def server_cpu(server: PostgresServer | None) -> float:
    """CPU seconds of the PostgreSQL server so far: the postmaster with the backends it reaped, and the
    live ones."""
    if server is None:
        return 0.0
    postmaster = int((server.dir / "data" / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, utime, stime, cutime, cstime = int(fields[1]), *map(int, fields[11:15])
        if int(pid) == postmaster:
            total += utime + stime + cutime + cstime
        elif ppid == postmaster:
            total += utime + stime
    return total / TICK


class State(TypedDict, total=False):
    text: str
    item: str
    suggestion: str
    answer: str
    round: int


def _text(n: int = 2000) -> str:
    return "".join(random.choices(string.ascii_letters + " ", k=n))


def build():
    async def transform(s): return {"text": _text()}
    async def generate(s): return {"item": _text(), "round": 0}
    async def suggest(s): return {"suggestion": _text(500)}
    async def edit(s): return {"item": _text(), "round": s["round"] + 1}
    async def answer(s): return {"answer": _text()}
    g = StateGraph(State)
    for name, fn in [("transform", transform), ("generate", generate), ("suggest", suggest), ("edit", edit),
                     ("answer", answer)]:
        g.add_node(name, fn)
    g.add_edge(START, "transform")
    g.add_edge("transform", "generate")
    g.add_edge("generate", "suggest")
    g.add_edge("suggest", "edit")
    g.add_conditional_edges("edit", lambda s: "suggest" if s["round"] < 2 else "answer")
    g.add_edge("answer", END)
    return g


async def store_work(store, seeds: int, concurrency: int, run_id: str) -> None:
    """`store` None: the baseline (InMemorySaver, no registry)."""
    registry = store.registry() if store is not None else None
    if registry is not None:
        registry.create_run(run_id, "bench", {"out": f"/nonexistent/{run_id}"})
        registry.db["seeds"].insert_all([{"run_id": run_id, "id": f"s{i}", "ordinal": i, "status": "pending",
                                          "llm_calls": 0, "tokens": 0, "samples": 0} for i in range(seeds)])
    saver_cm = store.saver() if store is not None else None
    saver = await saver_cm.__aenter__() if saver_cm is not None else InMemorySaver()
    graph = build().compile(checkpointer=saver)
    slots = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with slots:
            seed = f"s{i}"
            config = {"configurable": {"thread_id": thread_id(run_id, seed)}}
            token = registry.claim_seed(run_id, seed, "bench") if registry is not None else None
            final = await graph.ainvoke({"text": ""}, config, durability="sync")
            if registry is not None:
                samples = [{"id": f"{run_id}:{seed}:{k}", "body": final["answer"]} for k in range(2)]
                registry.finish_seed(run_id, seed, status="accepted", samples=samples, llm_calls=9, lease=token)
                await saver.adelete_thread(config["configurable"]["thread_id"])
    await asyncio.gather(*(one(i) for i in range(seeds)))
    if saver_cm is not None:
        await saver_cm.__aexit__(None, None, None)


def measure(label: str, fn, server: PostgresServer | None, seeds: int) -> tuple[float, float]:
    cpu0, srv0, wall0 = time.process_time(), server_cpu(server), time.perf_counter()
    fn()
    cpu, srv, wall = time.process_time() - cpu0, server_cpu(server) - srv0, time.perf_counter() - wall0
    print(f"  {label:<34} {1000 * cpu / seeds:7.2f} ms CPU/seed in the process, {1000 * srv / seeds:6.2f} ms in "
          f"the server; {seeds / wall:6.1f} seeds/s", flush=True)
    return cpu, srv


def whole_run(home: Path, store_url: str | None, run_id: str) -> dict:
    import teachgraph
    from teachgraph.client.llm import LLM
    from teachgraph.testing.fake_chat import ScriptedChatModel
    from tests.rag_script import RagScript

    llm = LLM(chat=ScriptedChatModel(script=RagScript().reply), model_name="scripted", structured_mode="json_object",
              max_concurrency=4)
    run = teachgraph.run("rag", [ROOT / "corpus" / "sample"], rounds=2, concurrency=4, model="scripted",
                         home=home, run_id=run_id, llm=llm, store=store_url)
    return run.counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    seeds = args.seeds or (100 if args.quick else 400)
    random.seed(7)
    print(f"bench/store.py: {seeds} seeds, concurrency {args.concurrency}; {load()}")
    with tempfile.TemporaryDirectory() as tmp, PostgresServer() as server:
        tmp = Path(tmp)
        sqlite_store, pg_store = open_store(None, tmp / "home"), open_store(server.database("bench"), None)
        pg_store.check()   # tables made before measuring (the driver's setup, once per store)
        sqlite_store.registry()
        print("1. the store's work per seed (lease, 9 checkpoints, outcome + 2 samples, thread deleted)")
        base, _ = measure("baseline (InMemorySaver)", lambda: asyncio.run(store_work(None, seeds, args.concurrency,
                                                                                        "b")), None, seeds)
        lite, _ = measure("SQLite", lambda: asyncio.run(store_work(sqlite_store, seeds, args.concurrency, "s")),
                          None, seeds)
        pg, pg_server = measure("PostgreSQL", lambda: asyncio.run(store_work(pg_store, seeds, args.concurrency,
                                                                              "p")), server, seeds)
        print(f"  store CPU per seed: SQLite {1000 * (lite - base) / seeds:.2f} ms; PostgreSQL "
              f"{1000 * (pg - base) / seeds:.2f} ms in the process + {1000 * pg_server / seeds:.2f} ms in the server "
              f"= {1000 * (pg - base + pg_server) / seeds:.2f} ms")
        print("2. a whole run: rag over corpus/sample (18 seeds), scripted model, rounds 2, concurrency 4")
        counts = {}
        for label, url, srv in (("SQLite", None, None), ("PostgreSQL", server.database("run"), server)):
            counts[label] = None
            measure(label, lambda: counts.__setitem__(label, whole_run(tmp / f"home-{label}", url, "r")), srv, 18)
        same = counts["SQLite"] == counts["PostgreSQL"]
        print(f"  same counts on both: {same} ({counts['PostgreSQL']['samples']} samples)")
    print(f"done; {load()}")


if __name__ == "__main__":
    main()
