"""Running a skill graph over a run's seeds: one LangGraph thread per seed, every outcome recorded in
the registry before its samples reach the output file.

Two parts, so that seeds can run elsewhere: an `Executor` decides which seeds run where and when
(`LocalExecutor`: concurrently on this process's event loop, bounded), and `SeedRunner` runs one
seed's graph and records its outcome, whichever executor called it."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import secrets
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

from langchain_openai import ChatOpenAI

from teachgraph.checkpoints import storage
from teachgraph.checkpoints.registry import LEASE_TTL_S, LeaseLost, Registry
from teachgraph.checkpoints.saver import forget_thread, started_seeds, thread_id
from teachgraph.checkpoints.steps import StepRecorder
from teachgraph.checkpoints.store import Store, open_store
from teachgraph.nodes.agent import NodeFailed
from teachgraph.client.chat_call import Wire
from teachgraph.checkpoints.cache import ResponseCache
from teachgraph.gates.run import RunFlags, RunGates
from teachgraph.gates.store import GateStore
from teachgraph.nodes.context import RunContext
from teachgraph.client.budget import BudgetReached, Meter, Prices
from teachgraph.client.endpoint import Endpoint, EndpointError, EndpointFatal, RetryPolicy, ServerWatch
from teachgraph.client.llm import LANE, LLM, Lane, Usage
from teachgraph import skills
from teachgraph.mix import Target
from teachgraph.skills import Skill
from teachgraph.output import SampleWriter
from teachgraph.client.transport import async_http_client
from teachgraph.errors import FatalRunError
from teachgraph.options import DEFAULTS
from teachgraph.states import LIVE, RunStatus, SeedStatus

__all__ = ["Executor", "FatalRunError", "Home", "LocalExecutor", "Reporter", "RunLock", "SeedRunner", "Settings",
           "default_rounds", "make_judge", "make_llm", "new_run_id", "run_meter", "run_status", "shown_status"]


@dataclass
class Settings:
    """What a run needs to be resumed. Never holds the API key (that stays in the environment)."""

    skill: str                           # a skill name, or "all" with `mix`
    seeds: list[str]
    out: str
    limit: int | None = None
    rounds: int | None = DEFAULTS.rounds  # None: each skill's own default
    concurrency: int = DEFAULTS.concurrency
    base_url: str | None = None          # None: the embedded llama.cpp server
    model: str = DEFAULTS.model
    structured: str = DEFAULTS.structured  # auto | json_schema | json_object | tools | prompt
    temperature: float = DEFAULTS.temperature
    max_tokens: int = DEFAULTS.max_tokens
    timeout: float = DEFAULTS.timeout    # seconds per request attempt
    retries: int = DEFAULTS.retries      # attempts per request for transient endpoint errors
    cache: bool = DEFAULTS.cache         # the LLM response cache (TEACHGRAPH_HOME/cache.db)
    mix: dict[str, float] | None = None  # skill -> weight, for multi-skill runs
    # the budget (client/budget.py): resume may raise it; prices in USD per million tokens, None: unknown
    max_tokens_total: int | None = None
    max_cost: float | None = None
    price_in: float | None = None
    price_out: float | None = None
    judge_model: str | None = None       # the LLM judge (--judge-model); None: no judge
    judge_base_url: str | None = None    # its endpoint; None: the generator's
    judge_structured: str | None = None  # its response mode; None: the generator's
    target: int | None = None            # --target N: run seeds until every task type has N kept samples
    focus: list[str] | None = None       # with target: only these task types (teach --repair's weakest)
    fresh_after: list[str] | None = None  # with target: leave unused the seeds these runs had
    avoid_seeds: list[str] | None = None  # with target: never deal these seed ids (a student's held-out ones)
    # the quality gates (teachgraph/gates/run.py). False by default only for runs made before gates
    # existed, so that they resume as they began; a new run takes DEFAULTS.gates.
    gates: bool = False
    decontaminate: list[str] = field(default_factory=list)   # evaluation files (absolute paths)
    semantic: bool = False
    dedup_against: list[str] = field(default_factory=list)   # earlier runs whose kept samples count as seen

    def gate_flags(self) -> RunFlags:
        return RunFlags(enabled=self.gates, decontaminate=tuple(self.decontaminate), semantic=self.semantic)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def prices(self) -> Prices | None:
        return Prices(self.price_in, self.price_out) if self.price_in is not None else None


@dataclass
class Home:
    """Everything a run writes lives under TEACHGRAPH_HOME, but its state may live in a PostgreSQL
    store (`store`: a postgresql:// URL, from --store or TEACHGRAPH_STORE; None: SQLite files here)."""

    root: Path
    store: str | None = None

    @classmethod
    def from_env(cls, store: str | None = None) -> "Home":
        # Empty counts as unset (as XDG says): Path("") is the current folder.
        default = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "teachgraph"
        return cls(Path(os.environ.get("TEACHGRAPH_HOME") or default).expanduser(),
                   store or os.environ.get("TEACHGRAPH_STORE") or None)

    def open_store(self) -> Store:
        return open_store(self.store, self.root)

    def registry(self) -> Registry:
        return self.open_store().registry()

    @property
    def registry_path(self) -> Path:
        return self.root / "runs.db"

    @property
    def checkpoints_path(self) -> Path:
        return self.root / "checkpoints.db"

    @property
    def cache_path(self) -> Path:
        return self.root / "cache.db"

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def gates_path(self, run_id: str) -> Path:
        """The run's gate state: the dedup indexes of the samples it kept (teachgraph/gates/store.py)."""
        return self.run_dir(run_id) / "gates.db"

    def default_out(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "samples.jsonl"


def new_run_id(skill: str) -> str:
    return f"{skill}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class RunLock:
    """One process per run: a second `resume` of the same run refuses instead of corrupting it.
    flock is released by the kernel when the holder dies, even by SIGKILL."""

    def __init__(self, home: Home, run_id: str):
        self.path = home.run_dir(run_id) / "lock"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = None

    def __enter__(self) -> "RunLock":
        self._fh = self.path.open("a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "another process"
            self._fh.close()
            raise FatalRunError(f"run {self.path.parent.name} is already being run by pid {holder}") from None
        try:   # who holds it, for the message a second process gives
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.write(str(os.getpid()))
            self._fh.flush()
        except OSError as exc:   # a full disk: one line naming the file, not a traceback
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
            raise storage.describe_os(self.path, exc) from None
        return self

    def __exit__(self, *exc) -> None:
        if self._fh:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()

    @staticmethod
    def held(home: Home, run_id: str) -> bool:
        """Is a live process running this run? (A killed process holds no lock.)"""
        path = home.run_dir(run_id) / "lock"
        if not path.exists():
            return False
        with path.open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False


def shown_status(home: Home, run: dict) -> str:
    """The registry says "running" until the process says otherwise; a killed one never does."""
    if run["status"] in LIVE and not RunLock.held(home, run["id"]):
        return RunStatus.INTERRUPTED
    return run["status"]


class Reporter(Protocol):
    """What the executor tells as seeds end (teachgraph.api.Reporter is the full set of events)."""

    def seed_done(self, status: str, samples: int) -> None: ...


Servers = Sequence[tuple[str, "ServerWatch | None"]]   # (base URL, the supervisor of its process or None)


def make_llm(settings: Settings, servers: str | Servers, api_key: str, embedded: bool,
             cache: ResponseCache | None = None) -> LLM:
    """`servers`: the endpoint's base URL, or every server of the model with its supervisor when this
    process runs them (the embedded model: one lane per server, teachgraph/embedded.py)."""
    servers = [(servers, None)] if isinstance(servers, str) else list(servers)
    structured = settings.structured
    if structured == "auto":
        # llama-cpp-python's server rejects json_schema but constrains json_object+schema.
        # (`graph run` resolves auto for other endpoints by probing them: teachgraph/probe.py.)
        structured = "json_object" if embedded else "json_schema"
    # llama-cpp-python's server generates one reply at a time: more requests in flight only queue
    # there, each burning its own client timeout. Seeds still interleave; model calls take turns.
    concurrency = 1 if embedded else settings.concurrency
    lanes = []
    for base_url, server in servers:
        # max_retries=0: nodes/endpoint.py owns retries, so its in-flight limit sees every 429.
        chat = ChatOpenAI(base_url=base_url, api_key=api_key, model=settings.model,
                          temperature=settings.temperature, timeout=settings.timeout, max_retries=0,
                          http_async_client=async_http_client())
        endpoint = Endpoint(base_url, concurrency, RetryPolicy(attempts=settings.retries, timeout=settings.timeout),
                            secrets=[api_key], server=server)
        lanes.append(Lane(chat, Wire.for_chat(chat, own_client=True), endpoint))
    # the cache key's endpoint: the embedded model's name (its ports change every run), or with several
    # servers the first one's URL (which of them answers does not change the reply)
    cache_endpoint = f"embedded:{settings.model}" if embedded else servers[0][0] if len(servers) > 1 else None
    llm = LLM(chat=lanes[0].chat, model_name=settings.model, structured_mode=structured,
              max_concurrency=concurrency, max_tokens=settings.max_tokens, cache=cache, lanes=lanes,
              cache_endpoint=cache_endpoint)
    if settings.judge_model:
        llm.judge = make_judge(settings, llm, api_key, cache)
    return llm


def make_judge(settings: Settings, generator: LLM, api_key: str, cache: ResponseCache | None) -> LLM:
    """The LLM judge's model: on its own endpoint (judge_base_url) or on the generator's servers, sharing
    their in-flight limits and retries (the embedded server answers one request at a time). Its calls
    count in the run's figures with the generator's. Temperature 0: a verdict should not be drawn."""
    own = settings.judge_base_url is not None

    def chat_at(base_url: str) -> ChatOpenAI:
        return ChatOpenAI(base_url=base_url, api_key=api_key, model=settings.judge_model, temperature=0.0,
                          timeout=settings.timeout, max_retries=0, http_async_client=async_http_client())

    if own:
        chat = chat_at(settings.judge_base_url)
        endpoint = Endpoint(settings.judge_base_url, settings.concurrency,
                            RetryPolicy(attempts=settings.retries, timeout=settings.timeout), secrets=[api_key])
        lanes = [Lane(chat, Wire.for_chat(chat, own_client=True), endpoint)]
    else:
        lanes = []
        for lane in generator.lanes:
            chat = chat_at(str(lane.chat.openai_api_base))
            lanes.append(Lane(chat, Wire.for_chat(chat, own_client=True), lane.endpoint))
    return LLM(chat=lanes[0].chat, model_name=settings.judge_model,
               structured_mode=settings.judge_structured or generator.structured_mode,
               max_concurrency=settings.concurrency if own else generator.max_concurrency,
               max_tokens=settings.max_tokens, cache=cache, usage=generator.usage, lanes=lanes,
               # on the generator's servers, keyed as its calls are (the judge's model is in the body)
               cache_endpoint=None if own else generator.cache_endpoint)


def run_meter(registry: Registry, run_id: str, settings: Settings) -> Meter:
    """The run's budget and spend over its ledger in the store, for `LLM.metered`: every executor's
    model (this process's, or each worker's) gets one, and they all read and add to the same ledger."""
    return Meter(registry.ledger(run_id), settings.prices(), settings.max_tokens_total, settings.max_cost)


class RunCorpus:
    """The Corpus nodes see: this run's seeds and passage search, with a small seed cache."""

    def __init__(self, registry: Registry, run_id: str):
        self.registry = registry
        self.run_id = run_id
        self._cache: dict[str, dict] = {}

    def seed(self, seed_id: str) -> dict:
        if seed_id not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[seed_id] = self.registry.seed(self.run_id, seed_id)
        return self._cache[seed_id]

    def search(self, query: str, *, exclude_seed: str, limit: int, exclude_texts=frozenset()) -> list[dict]:
        return self.registry.search(self.run_id, query, exclude_seed=exclude_seed, limit=limit,
                                    exclude_texts=exclude_texts)


def _error_text(error: BaseException) -> str:
    # EndpointErrors are already one clear line; for anything else the type helps.
    text = str(error) if isinstance(error, EndpointError) else f"{type(error).__name__}: {error}"
    return text if len(text) <= 500 else text[:497] + "..."


def default_rounds(skill: Skill) -> int:
    return skill.spec.refinement.rounds


def step_limit(skill: Skill, rounds: int) -> int:
    """LangGraph's recursion_limit for one seed: the most node runs its graph can make. A fixed
    limit (200) failed every seed from --rounds 99 on. The graphs run transform [extend] generate
    once, suggest + edit once per round, then answer each item (the seed task and the refined
    one): each answer may be corrected, and between answers come follow-up turns or tool results."""
    attempts = skill.spec.response.corrections + 1
    turns = skill.spec.response.turns
    per_item = (turns + 1) * attempts + turns
    return 3 + 2 * rounds + 2 * per_item + 10   # 10: room for a node added without updating this


class Executor(Protocol):
    """Runs a run's unfinished seeds, each through `SeedRunner.run`, and returns when every one has
    ended or a fatal error (FatalRunError, StorageError) stopped them all (then it raises it; seeds
    in flight stay resumable, as after Ctrl-C). A seed that raises BudgetReached stays pending: then
    no further seed starts, the seeds in flight run on until their next call is refused, and the
    executor raises BudgetReached once they have all stopped. `LocalExecutor` is the one in this process; an
    executor on other machines (Ray, issue 17) is built with the same arguments."""

    async def run(self) -> None: ...


class SeedRunner:
    """Runs one seed's graph from its last checkpoint and records its outcome (accepted with its
    samples, rejected with the reason, failed with the node and the error) with the calls it spent:
    the per-seed part every executor uses."""

    def __init__(self, registry: Registry, run_id: str, skill: Skill | None, llm: LLM, settings: Settings,
                 reporter: Reporter, writer: SampleWriter, saver, gates: RunGates | None = None,
                 owner: str | None = None,
                 lease_ttl: float = LEASE_TTL_S):
        """`gates`: the run's quality gates (open_gates), shared by every seed this process runs; `owner`:
        who holds the seeds' leases (a worker id; default host:pid:random)."""
        self.registry, self.run_id, self.skill, self.llm = registry, run_id, skill, llm
        self.settings, self.reporter, self.writer, self.saver = settings, reporter, writer, saver
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.lease_ttl = lease_ttl
        self._token: dict[str, int] = {}   # seed id -> the fencing token of the lease held on it
        self.gates = gates
        self._corpus = RunCorpus(registry, run_id)
        self._graphs: dict[str, tuple[Any, RunContext]] = {}
        self.target = None
        if settings.target:
            used = registry.seed_ids(settings.fresh_after or ())
            avoid = set(settings.avoid_seeds or ())
            if used and not registry.seed_ids([run_id]) - used - avoid:
                # every seed of the corpus was an earlier run's: new task types on them beat no data at all
                used = set()
            self.target = Target(registry, run_id, settings.target, started_seeds(saver, run_id, registry),
                                 focus=settings.focus or (), used=used, avoid=avoid)

    def _graph_for(self, name: str | None) -> tuple[Any, RunContext]:
        """The compiled graph and context of a seed's skill, built on first use."""
        name = name or self.skill.name
        if name not in self._graphs:
            skill = self.skill if self.skill and self.skill.name == name else skills.load(name)
            ctx = RunContext(run_id=self.run_id, skill=skill, llm=self.llm, corpus=self._corpus, gates=self.gates)
            if self.gates is not None:   # --dedup-against: the earlier runs' samples, before any seed's
                pipeline = self.gates.pipeline(skill.name, skill.spec.gates)
                for earlier in self.settings.dedup_against:
                    self.gates.learn_run(pipeline, earlier, self.registry.samples(earlier))
            self._graphs[name] = (skill.build_graph().compile(checkpointer=self.saver), ctx)
        return self._graphs[name]

    async def run(self, seed: dict) -> bool:
        """Run `seed` to its outcome, holding its lease. Raises only what should stop the whole run
        (FatalRunError, a storage fault); any other error fails this seed, recorded. False if the seed
        was not run or its outcome not recorded here: another worker holds (or took over) its lease."""
        token = self.registry.claim_seed(self.run_id, seed["id"], self.owner, self.lease_ttl)
        if token is None:
            return False
        self._token[seed["id"]] = token
        heartbeat = asyncio.create_task(self._renew(seed["id"], token))
        try:
            await self._run_leased(seed)
            return True
        except LeaseLost as exc:   # presumed dead and taken over: the other worker's outcome stands
            logging.getLogger(__name__).warning("%s", exc)
            return False
        finally:
            heartbeat.cancel()
            del self._token[seed["id"]]

    async def _renew(self, seed_id: str, token: int) -> None:
        """Keep the lease while the seed runs; a lost one is found out when the outcome is committed."""
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:   # on the loop's thread, as every registry write (one short statement)
                if not self.registry.renew_seed(self.run_id, seed_id, token, self.lease_ttl):
                    return
            except Exception:  # the next renewal, or the commit, says what is wrong
                pass

    async def _run_leased(self, seed: dict) -> None:
        try:
            graph, ctx = self._graph_for(seed.get("skill"))
            await self._run_seed(graph, ctx, seed)
        except (FatalRunError, BudgetReached, LeaseLost):
            raise
        except Exception as exc:  # our bug: the seed still ends accounted for
            fault = storage.fault(exc)
            if fault is not None:
                raise fault from None
            try:
                self.registry.finish_seed(self.run_id, seed["id"], status=SeedStatus.FAILED, node="runner",
                                          error=self._error_text(exc), lease=self._token.get(seed["id"]))
            except LeaseLost:
                raise
            except Exception as record_exc:  # runs.db itself fails: stop, do not spill
                raise (storage.fault(record_exc) or record_exc) from None
            self.reporter.seed_done(SeedStatus.FAILED, 0)
        finally:  # its outcome is recorded: a seed waiting for a type to fill can look again
            if self.target is not None:
                self.target.ended(seed["id"])

    async def _run_seed(self, graph, ctx: RunContext, seed: dict) -> None:
        thread = thread_id(self.run_id, seed["id"])
        rounds = default_rounds(ctx.skill) if self.settings.rounds is None else self.settings.rounds
        config = {"configurable": {"thread_id": thread}, "recursion_limit": step_limit(ctx.skill, rounds),
                  "callbacks": [StepRecorder(self.registry, self.run_id, seed["id"], ctx.skill.name)]}
        snapshot = await graph.aget_state(config)
        started = snapshot.metadata is not None  # the thread has a checkpoint
        # A seed that failed before keeps the calls its failed attempts spent (they are not in its
        # checkpointed state): carry them, so its final figures count every call made for it.
        carry = Usage()
        if seed.get("status") == SeedStatus.FAILED:
            values = snapshot.values or {}
            carry = Usage(*(max(0, (seed.get(key) or 0) - values.get(key, 0))
                            for key in ("llm_calls", "tokens", "cache_hits", "input_tokens", "output_tokens")))
        # get_state leaves out of `next` the tasks whose writes are already saved, so "no next" alone
        # does not mean finished: a kill between a node's writes and the next checkpoint looks the
        # same. Finished means no next node and no task at all.
        if not started and self.target is not None:
            task_type = await self.target.deal(seed, ctx.skill)
            if task_type is None:            # every task type it fits is full: left unused, said why
                self.registry.finish_seed(self.run_id, seed["id"], status=SeedStatus.REJECTED, node="target",
                                          reason=self.target.unused_reason(ctx.skill, seed))
                self.reporter.seed_done(SeedStatus.REJECTED, 0)
                return
            if task_type != seed["task_type"]:  # Target.deal has recorded it in the store
                seed = {**seed, "task_type": task_type}
        elif self.target is not None:
            self.target.running[seed["id"]] = (ctx.skill.name, seed["task_type"])   # resumed: it counts
        if started and not snapshot.next and not snapshot.tasks:
            final = snapshot.values          # finished before a kill, outcome not yet recorded
        else:
            start = None if started else {
                "seed_id": seed["id"], "task_type": seed["task_type"], "max_rounds": rounds,
                "round": 0, "llm_calls": 0, "tokens": 0}
            if start and ctx.skill.transformations:  # None: the skill cannot use this seed's kind
                start["transformation"] = seed.get("transformation")
            try:
                final = await graph.ainvoke(start, config, context=ctx, durability="sync")
            except BudgetReached:
                raise
            except NodeFailed as exc:
                if isinstance(exc.error, BudgetReached):   # not a failure: the seed stays pending
                    raise exc.error from None
                # No retry can fix it (bad key, unknown model, endpoint down): stop the whole run,
                # seeds stay resumable, instead of failing every seed alike.
                if isinstance(exc.error, EndpointFatal):
                    raise FatalRunError(f"{exc.node}: {self._error_text(exc.error)}") from None
                if storage.fault(exc) is not None:  # a file we keep failed, not the seed: stop the run
                    raise
                exc.usage.add(carry)
                await self._fail(graph, config, seed, exc.node, exc.error, exc.usage)
                return
            except Exception as exc:  # a bug in a node or in LangGraph: record it, keep going
                if storage.fault(exc) is not None:  # checkpoints.db failed under LangGraph: stop the run
                    raise
                state = await graph.aget_state(config)
                await self._fail(graph, config, seed, ",".join(state.next) or "graph", exc, carry)
                return
        samples = final.get("samples") or []
        dropped = final.get("dropped") or []
        calls, tokens = final.get("llm_calls", 0) + carry.calls, final.get("tokens", 0) + carry.tokens
        hits = final.get("cache_hits", 0) + carry.cache_hits
        split = {"input_tokens": final.get("input_tokens", 0) + carry.input_tokens,
                 "output_tokens": final.get("output_tokens", 0) + carry.output_tokens}
        if final.get("rejected") or not samples:
            self.registry.finish_seed(self.run_id, seed["id"], status=SeedStatus.REJECTED,
                                      node=final.get("rejected_by"),
                                      reason=final.get("rejected") or "no sample produced",
                                      llm_calls=calls, tokens=tokens, cache_hits=hits, **split, dropped=dropped,
                                      lease=self._token.get(seed["id"]))
            self.reporter.seed_done(SeedStatus.REJECTED, 0)
        else:
            # an accepted seed's reason, if any, says why its refined task got no sample
            self.registry.finish_seed(self.run_id, seed["id"], status=SeedStatus.ACCEPTED, samples=samples,
                                      reason=final.get("refined_rejected"),
                                      llm_calls=calls, tokens=tokens, cache_hits=hits, **split, dropped=dropped,
                                      lease=self._token.get(seed["id"]))
            for sample in samples:
                self.writer.append(sample)
            self.reporter.seed_done(SeedStatus.ACCEPTED, len(samples))
        await forget_thread(self.saver, thread)

    def _error_text(self, error: BaseException) -> str:
        return self.llm.endpoint.redact(_error_text(error))  # whatever the error quotes, never the key

    async def _fail(self, graph, config, seed: dict, node: str, error: BaseException, spent: Usage) -> None:
        """`spent`: calls not in the checkpointed state (the failed node's, earlier failed attempts')."""
        values = (await graph.aget_state(config)).values or {}
        self.registry.finish_seed(self.run_id, seed["id"], status=SeedStatus.FAILED, node=node,
                                  error=self._error_text(error),
                                  llm_calls=values.get("llm_calls", 0) + spent.calls,
                                  tokens=values.get("tokens", 0) + spent.tokens,
                                  cache_hits=values.get("cache_hits", 0) + spent.cache_hits,
                                  input_tokens=values.get("input_tokens", 0) + spent.input_tokens,
                                  output_tokens=values.get("output_tokens", 0) + spent.output_tokens,
                                  lease=self._token.get(seed["id"]))
        self.reporter.seed_done(SeedStatus.FAILED, 0)


@contextmanager
def open_gates(home: Home, run_id: str, settings: Settings) -> Iterator[RunGates | None]:
    """The run's gates over its gate state in the store (None when the run has --no-gates). One
    process runs a run at a time (RunLock), so one connection owns the file."""
    if not settings.gates:
        yield None
        return
    gates = RunGates.open(GateStore.for_run(home.store, home.gates_path(run_id), run_id), settings.gate_flags())
    try:
        yield gates
    finally:
        gates.close()


@dataclass
class LocalExecutor:
    """The executor in this process: up to `settings.concurrency` seeds at once on the event loop."""

    registry: Registry
    home: Home
    run_id: str
    skill: Skill | None                  # the run's skill; None for a multi-skill run
    llm: LLM
    settings: Settings
    reporter: Reporter
    writer: SampleWriter = field(init=False)
    _clock: float = field(init=False, default=0.0)

    async def run(self) -> None:
        """Run the unfinished seeds. A fatal error (FatalRunError, or a StorageError: a file that
        cannot be written or read) stops the run at once: seeds in flight are cancelled and stay
        resumable, as after Ctrl-C; no seed is marked failed for it."""
        self._clock = time.monotonic()  # wall time is added up to here as seeds finish
        self.writer = SampleWriter(Path(self.settings.out))
        try:
            self.writer.reconcile(self.registry.samples(self.run_id))
            # this process holds the run's lock: leases left by a process that died are void now
            self.registry.expire_leases(self.run_id)
            await self._execute_seeds()
        except BaseException as exc:
            try:  # best effort: the run is stopping on an error already
                self.registry.add_wall_time(self.run_id, time.monotonic() - self._clock)
                self.writer.close()
            except (storage.StorageError, sqlite3.Error):
                pass
            fault = storage.fault(exc) if isinstance(exc, Exception) else None
            if fault is None or fault is exc:
                raise
            raise fault from None
        try:
            self.registry.add_wall_time(self.run_id, time.monotonic() - self._clock)
            self.writer.close()
        except sqlite3.Error as exc:
            raise storage.fault(exc) or exc from None

    async def _execute_seeds(self) -> None:
        """Run every unfinished seed; the part another executor replaces (teachgraph/ray_executor.py),
        keeping the writer, wall time and fault handling of `run` around it."""
        with open_gates(self.home, self.run_id, self.settings) as gates:
            async with self.home.open_store().saver() as saver:
                await self._run_seeds(SeedRunner(self.registry, self.run_id, self.skill, self.llm, self.settings,
                                                 self.reporter, self.writer, saver, gates=gates))

    async def _run_seeds(self, runner: SeedRunner) -> None:
        slots = asyncio.Semaphore(self.settings.concurrency)
        # each seed in flight takes the LANE with the fewest seeds on it: with several servers (the embedded
        # model's) a seed's calls all go to one, and the seeds in flight spread evenly over them
        on_lane = [0] * len(runner.llm.lanes)
        running: set[asyncio.Task] = set()
        fatal: list[BaseException] = []
        budget: list[BudgetReached] = []   # no new seed starts; those in flight stop at their next call

        def stop(exc: BaseException) -> None:
            fatal.append(exc)
            for task in running:
                if task is not asyncio.current_task():
                    task.cancel()

        async def one(seed: dict, lane: int) -> None:
            LANE.set(lane)   # this task's own context: the seeds in flight do not see each other's
            try:
                await runner.run(seed)
                now = time.monotonic()
                self.registry.add_wall_time(self.run_id, now - self._clock)
                self._clock = now
            except BudgetReached as exc:
                budget.append(exc)
            except Exception as exc:  # FatalRunError or a storage fault: the whole run stops
                stop(storage.fault(exc) or exc)
            finally:
                on_lane[lane] -= 1
                slots.release()

        try:
            for seed in self.registry.unfinished_seeds(self.run_id):
                await slots.acquire()
                if fatal or budget:
                    slots.release()
                    break
                lane = on_lane.index(min(on_lane))
                on_lane[lane] += 1
                task = asyncio.create_task(one(seed, lane))
                running.add(task)
                task.add_done_callback(running.discard)
        except Exception as exc:  # reading the next seeds failed (runs.db): stop the seeds in flight too
            stop(exc)
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        if fatal:
            raise fatal[0]
        if budget:
            raise budget[0]


def run_status(counts: dict[str, int]) -> RunStatus:
    """The status a run that stopped running has, from its seeds' counts."""
    if counts["pending"]:
        return RunStatus.INTERRUPTED
    return RunStatus.FINISHED_WITH_FAILURES if counts["failed"] else RunStatus.COMPLETE

