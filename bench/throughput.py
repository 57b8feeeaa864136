"""Throughput benchmark (issue 6): is the endpoint the only bottleneck? A benchmark, not a test.

    python bench/throughput.py               # fake endpoint: calls/s ratio, RSS, checkpoint bytes, kill+resume
    python bench/throughput.py --quick       # the same with small sizes (about 3 minutes)
    python bench/throughput.py --embedded    # the embedded llama.cpp model: generated tokens/s ratio

Default mode, against bench/fake_endpoint.py (its own process; an instant OpenAI-compatible server):
  1. the endpoint's ceiling, with a raw aiohttp client;
  2. a bare `ChatOpenAI.ainvoke` loop at concurrency C (the reference) and teachgraph (`cli.py graph
     run rag`, checkpoints and response cache on, a fresh TEACHGRAPH_HOME) over many seeds at the same
     concurrency, alternated (bare, graph, bare, graph, ..., bare); each graph run's calls/s (at the
     endpoint, first to last request) is divided by the mean of the bare runs around it, and the
     median is reported, with CPU per call (the graph run's steady part, from /proc) the same way;
  3. checkpoint database bytes (peak during the run, and after it) against the output's bytes;
  4. peak RSS of `graph run` at 1k / 5k / 20k seeds, each in a fresh process (--rounds 0);
  5. SIGKILL of `graph run` mid-run, then `graph resume`: LLM calls repeated, against the seeds in flight.
Embedded mode records the requests teachgraph sends to the embedded server (temperature 0) through a
small proxy, replays them with a bare ChatOpenAI loop, and compares generated tokens/s.

The machine is shared: `uptime` load is printed with the figures; compare ratios from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FAKE_MODEL = "fake-model"


def say(text: str = "") -> None:
    print(text, flush=True)


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} cores)"


# ---------------------------------------------------------------- corpus

def make_corpus(path: Path, seeds: int, rng_seed: int = 7, vocabulary: int = 60_000) -> Path:
    """`seeds` JSON Lines records of ~1,100 characters (one seed each, three passages), words drawn
    from a Zipf-distributed vocabulary of pseudo-words: common words are very common, as in real text."""
    rng = random.Random(rng_seed)
    syllables = "ka lo mi ra te su no ve di pa zo ri gu fe ba ly qu xe mo ti".split()
    words = list({"".join(rng.choice(syllables) for _ in range(rng.randint(2, 5))) for _ in range(vocabulary)})
    rng.shuffle(words)
    cumulative, total = [], 0.0
    for rank in range(len(words)):
        total += 1 / (rank + 1)
        cumulative.append(total)
    with path.open("w") as fh:
        for i in range(seeds):
            paragraphs = [" ".join(rng.choices(words, cum_weights=cumulative, k=40)).capitalize() + "."
                          for _ in range(3)]
            fh.write(json.dumps({"title": f"Document {i}", "text": "\n\n".join(paragraphs)}) + "\n")
    return path


# ---------------------------------------------------------------- processes

def start_fake_endpoint() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_endpoint.py")], stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        raise SystemExit(f"fake endpoint did not start: {line!r}")
    return proc, line.split()[-1]


def stats(url: str, reset: bool = False) -> dict:
    request = urllib.request.Request(url.removesuffix("/v1") + "/stats", method="POST" if reset else "GET")
    with urllib.request.urlopen(request) as reply:
        return json.loads(reply.read())


def window_rate(s: dict) -> float:
    return (s["requests"] - 1) / (s["last"] - s["first"]) if s["requests"] > 1 and s["last"] > s["first"] else 0.0


def run_measured(args: list[str], env: dict | None = None, watch=None,
                 output: list | None = None) -> tuple[int, float, resource.struct_rusage]:
    """Run a command; returns (exit code, wall seconds, rusage of that process alone). Its stdout
    goes to `output` if given."""
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as err, tempfile.TemporaryFile("w+") as out:  # pipes could fill up
        proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, text=True)
        while True:   # wait4, not poll(): poll would reap the child and lose its rusage
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if watch else 0)
            if pid:
                break
            watch(proc.pid)
            time.sleep(0.2)
        code = os.waitstatus_to_exitcode(status)
        if output is not None:
            out.seek(0)
            output.append(out.read())
        if code != 0:
            err.seek(0)
            say(f"  command failed ({code}): {' '.join(args[1:6])} ...\n{err.read()[-2000:]}")
    return code, time.monotonic() - start, usage


def cli(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), *args]


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def counts(home: Path, run_id: str) -> dict:
    from teachgraph.checkpoints.registry import Registry
    return Registry(home / "runs.db").counts(run_id)


# ---------------------------------------------------------------- client loops (run in their own process)

SYSTEM = ("You write one query for a retrieval-augmented question answering dataset. The query must be "
          "answerable from the passages given, must not mention the passage, and must read like a real user's "
          "question. ") * 3
USER = "Passages:\n\n" + "\n\n".join(f"Document Id: {i}\nTitle: Document {i}\nSnippet: " + "lorem ipsum dolor " * 22
                                     for i in range(1, 7)) + "\n\nWrite the query."


async def _loop(call, concurrency: int, calls: int) -> None:
    for _ in range(min(50, calls)):      # warm-up: connections, lazy imports
        await call()
    cpu = time.process_time()
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    print(json.dumps({"cpu_ms_per_call": 1000 * (time.process_time() - cpu) / calls}))


def client_main(kind: str, url: str, concurrency: int, calls: int) -> None:
    """`_bare` (ChatOpenAI, default client), `_bare_aiohttp` (ChatOpenAI on the aiohttp transport
    teachgraph uses) or `_raw` (a minimal aiohttp client: the endpoint's ceiling)."""
    async def main() -> None:
        if kind == "_raw":
            import aiohttp
            body = {"model": FAKE_MODEL, "messages": [{"role": "system", "content": SYSTEM},
                                                      {"role": "user", "content": USER}]}
            async with aiohttp.ClientSession() as session:
                async def call() -> None:
                    async with session.post(url + "/chat/completions", json=body) as reply:
                        await reply.read()
                await _loop(call, concurrency, calls)
            return
        from langchain_core.messages import HumanMessage, SystemMessage
        from langchain_openai import ChatOpenAI
        client = None
        if kind == "_bare_aiohttp":
            from teachgraph.client.transport import async_http_client
            client = async_http_client()
        chat = ChatOpenAI(base_url=url, api_key="bench", model=FAKE_MODEL, temperature=0.7, timeout=120,
                          max_retries=5, http_async_client=client)
        messages = [SystemMessage(SYSTEM), HumanMessage(USER)]

        async def call() -> None:
            await chat.ainvoke(messages)
        await _loop(call, concurrency, calls)
        if client is not None:
            await client.aclose()
    asyncio.run(main())


def client_run(kind: str, url: str, concurrency: int, calls: int) -> tuple[float, float]:
    """(calls/s at the endpoint, client CPU ms per call in the timed loop)."""
    stats(url, reset=True)
    output: list[str] = []
    run_measured([sys.executable, __file__, kind, url, str(concurrency), str(calls)], output=output)
    return window_rate(stats(url)), json.loads(output[0].strip().splitlines()[-1])["cpu_ms_per_call"]


# ---------------------------------------------------------------- default mode

def teachgraph_run(url: str, corpus: Path, home: Path, seeds: int, concurrency: int, rounds: int,
                   run_id: str = "bench", extra: tuple[str, ...] = (), watch=None):
    stats(url, reset=True)
    code, wall, usage = run_measured(
        cli("graph", "run", "rag", "--seeds", str(corpus), "--limit", str(seeds), "--concurrency", str(concurrency),
            "--rounds", str(rounds), "--base-url", url, "--model", FAKE_MODEL,
            "--structured", "json_schema",   # no endpoint probe: its requests would count in the window
            "--run-id", run_id, *extra),
        env={"TEACHGRAPH_HOME": str(home)}, watch=watch)
    return code, wall, usage, stats(url)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(url: str, corpus: Path, work: Path, seeds: int, concurrency: int, bare_calls: int,
               reps: int) -> Path:
    """Bare loop and teachgraph, alternated `reps` times (the machine's load drifts; alternating
    and taking medians keeps the comparison fair). Returns the last teachgraph run's home."""
    say(f"\n## 1-2. calls/s at concurrency {concurrency}: bare loop and graph run alternated {reps} times  [{load()}]")
    raw, raw_cpu = client_run("_raw", url, concurrency, max(bare_calls, 5000))
    say(f"endpoint ceiling (raw aiohttp client)                {raw:7.0f} calls/s   client CPU {raw_cpu:.2f} ms/call")
    bares, bare_cpus, tgs, tg_cpus = [], [], [], []
    for rep in range(1, reps + 1):
        rate, cpu = client_run("_bare", url, concurrency, bare_calls)
        bares.append(rate), bare_cpus.append(cpu)
        say(f"[{rep}] bare ChatOpenAI.ainvoke loop (default client)  {rate:7.0f} calls/s   "
            f"client CPU {cpu:.2f} ms/call")
        home = work / f"tg{rep}"
        samples: list[tuple[int, float]] = []
        peak = {"checkpoints": 0}

        def watch(pid: int) -> None:
            path = home / "checkpoints.db"
            if path.exists():
                peak["checkpoints"] = max(peak["checkpoints"], db_bytes(path))
            try:
                samples.append((stats(url)["requests"], process_cpu(pid)))
            except OSError:
                pass

        code, wall, usage, st = teachgraph_run(url, corpus, home, seeds, concurrency, 2, watch=watch)
        rate = window_rate(st)
        # CPU per call in the steady part of the run: between 20% and 90% of its calls, so neither
        # the start (imports, collecting seeds) nor the last seeds count
        steady = [x for x in samples if 0.2 * st["requests"] <= x[0] <= 0.9 * st["requests"]]
        cpu = 1000 * (steady[-1][1] - steady[0][1]) / max(1, steady[-1][0] - steady[0][0]) if len(steady) > 1 else 0
        tgs.append(rate), tg_cpus.append(cpu)
        c = counts(home, "bench")
        say(f"[{rep}] teachgraph graph run rag, {seeds} seeds, 2 rounds  {rate:7.0f} calls/s   process CPU {cpu:.2f} "
            f"ms/call   [{st['requests']} calls, {c['accepted']} accepted, wall {wall:.0f} s]")
    rate, cpu = client_run("_bare", url, concurrency, bare_calls)
    bares.append(rate), bare_cpus.append(cpu)
    say(f"[{reps + 1}] bare ChatOpenAI.ainvoke loop (default client)  {rate:7.0f} calls/s   "
        f"client CPU {cpu:.2f} ms/call")
    aio, aio_cpu = client_run("_bare_aiohttp", url, concurrency, bare_calls)
    say(f"(the bare loop on teachgraph's aiohttp client        {aio:7.0f} calls/s   client CPU {aio_cpu:.2f} ms/call)")
    # each teachgraph run against the mean of the bare runs just before and after it
    ratios = sorted(tgs[i] / ((bares[i] + bares[i + 1]) / 2) for i in range(reps))
    cpu_ratios = sorted(((bare_cpus[i] + bare_cpus[i + 1]) / 2) / tg_cpus[i] for i in range(reps) if tg_cpus[i])
    say(f"RATIO teachgraph / bare loop, calls/s: median {ratios[len(ratios) // 2]:.2f} (runs: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}); CPU per call: median {cpu_ratios[len(cpu_ratios) // 2]:.2f}   "
        f"(goal >= 0.90)  [{load()}]")
    say(f"(mean request body: teachgraph {st['bytes'] // max(1, st['requests'])} bytes, "
        f"bare loop {len(SYSTEM) + len(USER) + 150} bytes)")

    say("\n## 3. checkpoint database vs output, same run")
    out = db_bytes(home / "runs" / "bench" / "samples.jsonl")
    after = db_bytes(home / "checkpoints.db")
    say(f"output samples.jsonl {out:,} bytes; checkpoints.db peak during the run {peak['checkpoints']:,} bytes "
        f"({peak['checkpoints'] / out:.2f}x), after the run {after:,} bytes ({after / out:.3f}x)   (goal <= 2x)")
    say(f"(also in TEACHGRAPH_HOME: runs.db {db_bytes(home / 'runs.db'):,} bytes, "
        f"cache.db {db_bytes(home / 'cache.db'):,} bytes)")
    return home


def memory(url: str, work: Path, sizes: list[int], concurrency: int) -> None:
    say(f"\n## 4. peak RSS of graph run by number of seeds (fresh process each, --rounds 0)  [{load()}]")
    rows = []
    for size in sizes:
        corpus = make_corpus(work / f"rss{size}.jsonl", size, rng_seed=size)
        code, wall, usage, s = teachgraph_run(url, corpus, work / f"rss{size}", size, concurrency, 0)
        c = counts(work / f"rss{size}", "bench")
        rss = usage.ru_maxrss / 1024
        rows.append(rss)
        say(f"{size:>6} seeds: peak RSS {rss:6.1f} MiB   {c['accepted']} accepted, {s['requests']} calls, "
            f"{window_rate(s):.0f} calls/s, wall {wall:.0f} s")
        corpus.unlink()
    say(f"largest / smallest peak RSS = {rows[-1] / rows[0]:.2f}   (goal: flat)  [{load()}]")


def kill_resume(url: str, corpus: Path, work: Path, seeds: int, concurrency: int) -> None:
    say(f"\n## 5. SIGKILL mid-run, then resume ({seeds} seeds, 2 rounds, concurrency {concurrency})  [{load()}]")
    for label, extra in (("cache on", ()), ("--no-cache", ("--no-cache",))):
        name = label.strip("-").replace(" ", "-")
        _, _, _, s = teachgraph_run(url, corpus, work / f"kill-base-{name}", seeds, concurrency, 2, run_id="k",
                                    extra=extra)
        baseline = s["requests"]
        base_ids = sorted(json.loads(line)["id"]
                          for line in (work / f"kill-base-{name}" / "runs" / "k" / "samples.jsonl").open())
        home = work / f"kill-{name}"
        stats(url, reset=True)
        proc = subprocess.Popen(cli("graph", "run", "rag", "--seeds", str(corpus), "--limit", str(seeds),
                                    "--concurrency", str(concurrency), "--rounds", "2", "--base-url", url,
                                    "--model", FAKE_MODEL, "--structured", "json_schema", "--run-id", "k", *extra),
                                cwd=ROOT, env={**os.environ, "TEACHGRAPH_HOME": str(home)},
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while stats(url)["requests"] < baseline // 2 and proc.poll() is None:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = stats(url)["requests"]
        with sqlite3.connect(home / "checkpoints.db") as db:   # seeds started and not finished
            in_flight = db.execute("select count(distinct thread_id) from checkpoints").fetchone()[0]
        at_kill = counts(home, "k")
        stats(url, reset=True)
        code, _, _ = run_measured(cli("graph", "resume", "k", *extra), env={"TEACHGRAPH_HOME": str(home)})
        after = stats(url)["requests"]
        c = counts(home, "k")
        ids = [json.loads(line)["id"] for line in (home / "runs" / "k" / "samples.jsonl").open()]
        repeated = before + after - baseline
        say(f"{label:>10}: uninterrupted {baseline} calls; killed after {before} "
            f"({at_kill['accepted'] + at_kill['rejected']} seeds done, {in_flight} in flight); resume made {after}; "
            f"REPEATED {repeated} = {repeated / max(1, in_flight):.2f} per seed in flight   (goal <= 1)")
        say(f"{'':>10}  resume exit {code}; seeds lost {seeds - c['accepted'] - c['rejected']}; samples written "
            f"twice {len(ids) - len(set(ids))}; same sample ids as uninterrupted: {sorted(ids) == base_ids}; "
            f"cache hits {c['cache_hits']}")


def default_mode(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="teachgraph-bench-"))
    proc, url = start_fake_endpoint()
    try:
        say(f"# teachgraph throughput bench, fake endpoint {url}; work dir {work}")
        say(f"# {versions()}")
        corpus = make_corpus(work / "corpus.jsonl", max(args.seeds, args.kill_seeds))
        throughput(url, corpus, work, args.seeds, args.concurrency, args.bare_calls, args.reps)
        if args.rss:
            memory(url, work, args.rss, args.concurrency)
        kill_resume(url, corpus, work, args.kill_seeds, args.concurrency)
    finally:
        proc.terminate()
        proc.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def versions() -> str:
    from importlib.metadata import version
    from langchain_openai import ChatOpenAI
    from teachgraph.client.chat_call import Wire
    from teachgraph.client.transport import async_http_client, transport_name
    names = ["openai", "langchain-openai", "langgraph", "langgraph-checkpoint-sqlite", "aiohttp"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except Exception:
            found.append(f"{name} -")
    wire = Wire.for_chat(ChatOpenAI(base_url="http://127.0.0.1:1/v1", api_key="bench", model=FAKE_MODEL))
    transport = "the Wire (aiohttp)" if wire else f"the SDK's client ({transport_name(async_http_client())})"
    return ", ".join(found) + f"; teachgraph's model calls go out on {transport}"


# ---------------------------------------------------------------- embedded mode

class RecordingProxy:
    """Passes chat requests to the embedded server, recording each body and the window and
    completion tokens of what went through since the last reset."""

    def __init__(self, upstream: str, record: Path):
        self.upstream, self.record = upstream, record
        self.reset()

    def reset(self) -> None:
        self.first = self.last = 0.0
        self.requests = self.tokens = 0
        self.serving = 0.0   # seconds the server spent on requests; the rest of the window is the client's

    async def start(self) -> str:
        import aiohttp
        from aiohttp import web
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"

    async def handle(self, request):
        from aiohttp import web
        body = await request.read()
        started = time.monotonic()
        if request.method == "POST" and request.path.endswith("/chat/completions"):
            self.first = self.first or started
            with self.record.open("a") as fh:
                fh.write(body.decode() + "\n")
        async with self.session.request(request.method, self.upstream + request.path,
                                        data=body or None, headers={"content-type": "application/json"}) as reply:
            data = await reply.read()
            if request.method == "POST" and reply.status == 200:
                self.requests += 1
                self.tokens += json.loads(data).get("usage", {}).get("completion_tokens", 0)
                self.last = time.monotonic()
                self.serving += self.last - started
            return web.Response(body=data, status=reply.status, content_type="application/json")

    def rate(self) -> float:
        return self.tokens / (self.last - self.first) if self.last > self.first else 0.0

    def split(self) -> str:
        """Where the window went: the server answering, or the client between requests."""
        window = self.last - self.first
        return f"(server {self.serving:.1f} s, between requests {window - self.serving:.1f} s)"

    async def stop(self) -> None:
        await self.session.close()
        await self.runner.cleanup()


async def replay(url: str, record: Path) -> None:
    """The bare client loop: the recorded requests, one at a time, through ChatOpenAI."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI
    import openai
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    for line in record.read_text().splitlines():
        body = json.loads(line)
        chat = ChatOpenAI(base_url=url, api_key="bench", model=body["model"], temperature=body.get("temperature"),
                          timeout=600, max_retries=0)
        messages = [kinds[m["role"]](m["content"]) for m in body["messages"]]
        extra = {k: v for k, v in body.items() if k in ("max_tokens", "response_format")}
        try:
            await chat.ainvoke(messages, extra_body=extra)
        except openai.APIError as exc:
            say(f"  replayed request failed: {exc}")


async def embedded_main(args) -> None:
    from teachgraph import embedded
    work = Path(tempfile.mkdtemp(prefix="teachgraph-bench-embedded-"))
    say(f"# teachgraph embedded bench: {embedded.MODEL_NAME} on llama.cpp; work dir {work}")
    proc, upstream = embedded.start(work, log=say)
    proxy = RecordingProxy(upstream.removesuffix("/v1"), work / "requests.jsonl")
    url = await proxy.start()
    try:
        say(f"\n## generated tokens/s, {args.embedded_seeds} seeds, {args.embedded_rounds} round(s), "
            f"temperature 0, one request at a time  [{load()}]")

        async def teachgraph(run_id: str) -> float:
            proxy.reset()
            run = await asyncio.create_subprocess_exec(
                *cli("graph", "run", "rag", "--seeds", str(ROOT / "corpus" / "sample"), "--limit",
                     str(args.embedded_seeds), "--rounds", str(args.embedded_rounds), "--concurrency", "1",
                     "--base-url", url, "--model", embedded.MODEL_NAME, "--structured", "json_object",
                     "--temperature", "0", "--no-cache", "--run-id", run_id),
                cwd=ROOT, env={**os.environ, "TEACHGRAPH_HOME": str(work / "home")},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await run.wait()
            say(f"teachgraph graph run rag: {proxy.requests} calls, {proxy.tokens} generated tokens in "
                f"{proxy.last - proxy.first:.1f} s = {proxy.rate():.2f} tokens/s  "
                f"(exit {run.returncode})  {proxy.split()}"
                f"  [{load()}]")
            return proxy.rate()

        # One small request first: the server's first forward pass pages the model in from disk, which
        # would count against whichever run came first.
        from langchain_openai import ChatOpenAI
        await ChatOpenAI(base_url=upstream, api_key="bench", model=embedded.MODEL_NAME, max_retries=0,
                         timeout=600).ainvoke("Say hello.", extra_body={"max_tokens": 8})
        # A-B-B-A (teachgraph, bare, bare, teachgraph): a drift in the machine's speed cancels out.
        first = await teachgraph("emb1")
        recorded = work / "replay.jsonl"
        recorded.write_bytes((work / "requests.jsonl").read_bytes())
        bares = []
        for _ in range(2):
            proxy.reset()
            await replay(url, recorded)
            bares.append(proxy.rate())
            say(f"bare ChatOpenAI loop replaying the same {proxy.requests} requests: {proxy.tokens} generated tokens "
                f"in {proxy.last - proxy.first:.1f} s = {bares[-1]:.2f} tokens/s  {proxy.split()}  [{load()}]")
        second = await teachgraph("emb2")   # the same requests again (temperature 0, no cache)
        say(f"RATIO teachgraph / bare loop = {(first + second) / sum(bares):.2f}   (order teachgraph, bare, bare, "
            f"teachgraph after one warm-up request; goal >= 0.95)")
    finally:
        await proxy.stop()
        embedded.stop(proc, work)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------

def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        kind, url, concurrency, calls = sys.argv[1:5]
        client_main(kind, url, int(concurrency), int(calls))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--concurrency", type=int, default=16, help="requests (and seeds) in flight")
    parser.add_argument("--seeds", type=int, default=400, help="seeds of each graph run (8 calls each)")
    parser.add_argument("--bare-calls", type=int, default=3000, help="calls of each bare-loop run")
    parser.add_argument("--reps", type=int, default=3, help="bare loop / graph run alternations")
    parser.add_argument("--rss", default="1000,5000,20000", help="seed counts of the RSS runs ('' to skip)")
    parser.add_argument("--kill-seeds", type=int, default=200)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: 200 seeds, 2 alternations, RSS at 500/1000/2000")
    parser.add_argument("--embedded", action="store_true", help="measure against the embedded llama.cpp model")
    parser.add_argument("--embedded-seeds", type=int, default=2)
    parser.add_argument("--embedded-rounds", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.bare_calls, args.rss, args.kill_seeds, args.reps = 200, 1500, "500,1000,2000", 120, 2
    args.rss = [int(x) for x in args.rss.split(",") if x.strip()]
    if args.embedded:
        asyncio.run(embedded_main(args))
    else:
        default_mode(args)


if __name__ == "__main__":
    main()
