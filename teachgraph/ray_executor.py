"""RayExecutor: a run's seeds on a Ray cluster (`graph run SKILL --ray ADDRESS`).

An actor pool with a dispatcher on the driver, not Ray Data (README, "Running on a Ray cluster"):
- Every seed is its own remote call, so a worker (or node) that dies costs only the seeds it had in
  flight, each resumed from its last checkpoint elsewhere. Ray Data retries whole blocks, re-running
  seeds that had finished (the design study measured 158 of 240 re-processed after a node kill).
- The registry stays the queue: seeds stream from `Registry.unfinished_seeds`, as for LocalExecutor,
  so a resume needs no Ray-side job checkpoint, and every seed ends recorded by `SeedRunner`, the
  same code LocalExecutor runs.
- Samples come back to the driver with their seed's outcome and go through its SampleWriter (an id
  is never written twice), and the driver's progress bar counts seeds as they end.

Workers (`SeedWorker`, one async actor per CPU, many seeds at once, thread id = run:seed) build
their own model client, compiled graphs and checkpointer: none of them pickle. Their model is built
as LocalExecutor's is (make_llm: the judge too) and metered into the run's one ledger in the store
(run_meter), so budgets hold cluster-wide; a call the budget refuses comes back as a budget reply and
the driver stops as LocalExecutor does (no new seed; BudgetReached once those in flight stopped).

The endpoint limit stays under --concurrency cluster-wide by splitting it: each of the N workers
gets floor(C/N) requests in flight with its own AIMD limit (teachgraph/client/endpoint.py), which
never exceeds that share, and Ray runs at most one incarnation of an actor at a time, so the
requests in flight never exceed N*floor(C/N) <= C. Every worker talks to the same endpoint, so a
429 storm reaches every one of them and each halves its window: the whole cluster slows. No
shared limiter actor sits on each call's path (two round trips per call, and its restart would
forget the requests in flight)."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import secrets
import socket
import time
from collections import Counter, deque
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import ray
from ray.exceptions import ActorDiedError, RayActorError

from teachgraph.checkpoints import storage
from teachgraph.checkpoints.cache import ResponseCache
from teachgraph.checkpoints.registry import Registry
from teachgraph.checkpoints.saver import open_saver
from teachgraph.client.budget import BudgetReached
from teachgraph.client.llm import LLM, Usage
from teachgraph import skills
from teachgraph.errors import FatalRunError, UsageError
from teachgraph.runner import Home, LocalExecutor, SeedRunner, Settings, make_llm, run_meter
from teachgraph.states import SeedStatus

__all__ = ["RayExecutor", "SeedWorker", "ray_executor"]

EXECUTOR_NAME = "ray"
PROBE_INTERVAL_S = 1.0      # how often a dispatcher asks a restarting worker whether it is back
WORKERS_SAVE_INTERVAL_S = 1.0
LEASE_RETRY_S = 2.0
CONNECT_TIMEOUT_S = 10.0         # a seed leased to another worker is offered again after this long


@dataclass
class _Outcome:
    status: str | None = None
    samples: list[dict] = field(default_factory=list)


_current: contextvars.ContextVar[_Outcome] = contextvars.ContextVar("teachgraph_seed_outcome")


class _Collect:
    """SeedRunner's writer and reporter inside a worker: it keeps the outcome of the seed whose call
    is running (each actor call is its own asyncio task, so a context variable tells them apart)
    for the driver, which writes the samples."""

    def append(self, sample: dict) -> None:
        _current.get().samples.append(sample)

    def seed_done(self, status: str, samples: int) -> None:
        _current.get().status = status


class SeedWorker:
    """Runs seeds on one CPU of the cluster, many at once on its event loop. max_restarts=-1: a
    worker that dies is started again (on another node if its own is gone); max_task_retries=0:
    the calls it had in flight fail at once and the dispatcher sends those seeds elsewhere. Made an
    actor where it is used (_start_workers), not by decorating it: decorated, the name would not be
    the class and Ray would pickle the class by value instead of importing it on the worker."""

    def __init__(self, home: Home, run_id: str, settings: dict, api_key: str, share: int):
        self.home, self.run_id, self.api_key, self.share = home, run_id, api_key, share
        # the worker's own slice of the endpoint limit (see the module's docstring)
        self.settings = replace(Settings(**settings), concurrency=share)
        self.incarnation = secrets.token_hex(4)   # a restart starts counting its calls from zero
        self._runner: SeedRunner | None = None
        self._llm: LLM | None = None
        self._stack = AsyncExitStack()
        self._lock = asyncio.Lock()

    async def _ready(self) -> SeedRunner:
        async with self._lock:   # built once, on the actor's event loop (the saver binds to it)
            if self._runner is None:
                registry, saver, cache = _open_stores(self.home, self.settings.cache)
                if cache is not None:
                    self._stack.callback(cache.close)
                # the judge too (make_llm builds it from settings.judge_model), as LocalExecutor's model
                self._llm = make_llm(self.settings, self.settings.base_url, self.api_key, embedded=False,
                                     cache=cache)
                # the run's budget over its one ledger in the store: every worker adds what its replies
                # spent and reads what all of them spent before each call (client/budget.py)
                self._llm.metered(run_meter(registry, self.run_id, self.settings))
                saver = await self._stack.enter_async_context(saver)
                collect = _Collect()
                skill = None if self.settings.mix else skills.load(self.settings.skill)
                self._runner = SeedRunner(registry, self.run_id, skill, self._llm, self.settings, collect,
                                          collect, saver)
        return self._runner

    def where(self) -> str:
        context = ray.get_runtime_context()
        return f"node {context.get_node_id()[:12]}"

    async def ping(self) -> str:
        return self.where()

    async def run_seed(self, seed: dict) -> dict[str, Any]:
        """Run one seed to its recorded outcome; returns it with the samples for the driver to write.
        A storage fault or a FatalRunError comes back as {"fatal": message}: the driver stops the run."""
        try:
            runner = await self._ready()
            recorded = runner.registry.seed(self.run_id, seed["id"])
            if recorded["status"] in (SeedStatus.ACCEPTED, SeedStatus.REJECTED):
                # recorded by a call whose reply was lost (its worker died after the commit): not run
                # again; the driver's writer mends its samples from the registry at the end
                return self._reply(recorded["status"], [], already=recorded.get("samples") or 0)
            outcome = _Outcome()
            token = _current.set(outcome)
            try:
                ran = await runner.run(seed)
            except BudgetReached as exc:   # not a failure: the seed stays pending, resumable
                return {**self._reply(None, []), "budget": str(exc)}
            finally:
                _current.reset(token)
            if ran is False or outcome.status is None:
                # another worker holds the seed's lease (one presumed dead, still finishing it): ask later
                return {"skipped": True, "where": self.where()}
            return self._reply(outcome.status, outcome.samples)
        except Exception as exc:  # FatalRunError, StorageError, or a store that cannot be opened
            return {"fatal": str(storage.fault(exc) or exc), "where": self.where()}

    def _reply(self, status: str, samples: list[dict], already: int = 0) -> dict[str, Any]:
        usage = self._llm.usage if self._llm is not None else Usage()
        endpoint = self._llm.endpoint if self._llm is not None else None
        limit = endpoint.limit if endpoint is not None else None
        return {"status": status, "samples": samples, "already": already, "where": self.where(),
                "incarnation": self.incarnation, "usage": [usage.calls, usage.tokens, usage.cache_hits],
                # this worker's endpoint figures so far, for the driver's one line at the end
                "endpoint": {"stats": dict(endpoint.stats) if endpoint else {},
                             "limit": [limit.limit, limit.maximum, limit.lowest] if limit else [0, 0, 0]}}

    async def close(self) -> None:
        if self._llm is not None:
            await self._llm.aclose()
        await self._stack.aclose()


def _open_stores(home: Home, cached: bool):
    """The worker's registry, checkpointer (an async context manager, entered on the actor's loop) and
    response cache, in the store every node reaches: `home.open_store()` where the store layer
    (checkpoints/store.py: SQLite or PostgreSQL) is there, else the SQLite files under the shared home."""
    if hasattr(home, "open_store"):
        store = home.open_store()
        return store.registry(), store.saver(), store.cache() if cached else None
    return (Registry(home.registry_path), open_saver(home.checkpoints_path),
            ResponseCache(home.cache_path) if cached else None)


@dataclass
class _Slot:
    """The dispatcher's view of one worker."""

    handle: Any
    capacity: int
    in_flight: int = 0
    up: bool = True
    dead: bool = False
    usage_seen: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # incarnation -> totals
    endpoint_seen: dict[str, dict] = field(default_factory=dict)              # incarnation -> figures


@dataclass
class RayExecutor(LocalExecutor):
    """LocalExecutor's run (writer, wall time, faults) with the seeds dispatched to SeedWorkers on a
    Ray cluster. `address` as ray.init takes it: auto, HOST:PORT, ray://HOST:10001."""

    address: str = "auto"
    workers: int | None = None   # None: one per CPU of the cluster (never more than --concurrency)
    disconnect: bool = False     # ray_executor connected this process: disconnect when the run ends
    _done_where: dict[str, int] = field(init=False, default_factory=dict)
    _slots: list[_Slot] = field(init=False, default_factory=list)

    async def _execute_seeds(self) -> None:
        if not self.settings.base_url:
            raise UsageError("--ray needs --base-url: the embedded model runs on this machine only")
        if not ray.is_initialized():   # resumed through the API with a factory made earlier
            self.disconnect = connect(self.address, FatalRunError)
        run = self.registry.run(self.run_id)
        self._done_where = json.loads(run.get("workers") or "{}")
        self.registry.set_run(self.run_id, executor=EXECUTOR_NAME)
        slots = self._slots = self._start_workers()
        finished = False
        try:
            await self._dispatch(slots)
            # a seed recorded by a worker whose reply was lost has its samples only in the registry
            self.writer.reconcile(self.registry.samples(self.run_id))
            finished = True
        finally:
            self._save_where()
            await self._stop_workers(slots, close=finished)
            if self.disconnect:
                ray.shutdown()

    def _start_workers(self) -> list[_Slot]:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if not cpus:
            raise FatalRunError(f"the Ray cluster at {self.address} has no CPU for a worker: add a node "
                                "(ray start --address ...) and resume")
        count = max(1, min(self.workers or cpus or 1, self.settings.concurrency))
        share = max(1, self.settings.concurrency // count)
        seeds_each = -(-self.settings.concurrency // count)   # ceil: C seeds in flight in all, as locally
        key = self.llm.chat.openai_api_key
        key = key.get_secret_value() if key is not None else "not-needed"
        settings = self.settings.to_json()
        actor = ray.remote(max_restarts=-1, max_task_retries=0)(SeedWorker)
        return [_Slot(actor.options(num_cpus=1, max_concurrency=seeds_each + 4, scheduling_strategy="SPREAD")
                      .remote(self.home, self.run_id, settings, key, share), seeds_each)
                for _ in range(count)]

    async def _stop_workers(self, slots: list[_Slot], close: bool) -> None:
        """`close`: the run ended, let each worker close its stores; otherwise (a fatal error, Ctrl-C)
        kill them at once: the seeds they hold stay resumable from their checkpoints."""
        for slot in slots:
            if close and slot.up and not slot.dead:
                try:
                    await asyncio.wait_for(slot.handle.close.remote(), timeout=10)
                except Exception:  # it is being killed next anyway
                    pass
            ray.kill(slot.handle, no_restart=True)

    async def _dispatch(self, slots: list[_Slot]) -> None:
        seeds = iter(self.registry.unfinished_seeds(self.run_id))
        again: deque[dict] = deque()      # seeds whose worker died: first in line
        running: dict[asyncio.Task, tuple[_Slot, dict]] = {}
        probes: dict[asyncio.Task, _Slot] = {}
        held: set[asyncio.Task] = set()   # seeds whose lease another worker holds, asked again later
        budget: str | None = None         # a worker's call was refused by the budget: no seed starts now
        exhausted = waiting_said = False
        last_save = time.monotonic()
        try:
            while True:
                for slot in slots:
                    while budget is None and slot.up and not slot.dead and slot.in_flight < slot.capacity:
                        if again:
                            seed = again.popleft()
                        elif not exhausted:
                            seed = next(seeds, None)
                            if seed is None:
                                exhausted = True
                                break
                        else:
                            break
                        slot.in_flight += 1
                        running[asyncio.ensure_future(self._call(slot, seed))] = (slot, seed)
                if budget is not None and not running:   # the seeds in flight have stopped: as LocalExecutor
                    raise BudgetReached(budget)
                if not running and exhausted and not again and not held:
                    return
                if not running and not probes and not held:
                    raise FatalRunError("every Ray worker of this run is gone; resume it when the cluster is back")
                if not running and not any(slot.up for slot in slots) and not waiting_said:
                    waiting_said = True   # restarts wait for a free CPU: a node added (or autoscaled) gives one
                    self.reporter.note("no Ray worker is running: waiting for one to restart (add a node, or stop "
                                       "with Ctrl-C and resume later)")
                done, _ = await asyncio.wait([*running, *probes, *held], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task in held:
                        held.discard(task)
                        again.append(task.result())
                        continue
                    if task in probes:
                        slot = probes.pop(task)
                        if task.result():
                            slot.up, waiting_said = True, False
                        else:
                            slot.dead = True
                        continue
                    slot, seed = running.pop(task)
                    slot.in_flight -= 1
                    reply = task.result()
                    if reply is None:            # the worker died with the seed in flight
                        again.append(seed)
                        self.reporter.note(f"a Ray worker was lost with seed {seed['id']} in flight; "
                                           "it continues on another worker from its last checkpoint")
                        if slot.up:
                            slot.up = False
                            probes[asyncio.ensure_future(self._back(slot))] = slot
                        continue
                    if "budget" in reply:
                        budget = budget or reply["budget"]
                        self._count_usage(slot, reply)
                        continue
                    if reply.get("skipped"):
                        held.add(asyncio.ensure_future(asyncio.sleep(LEASE_RETRY_S, result=seed)))
                        continue
                    self._ended(slot, reply)
                if time.monotonic() - last_save > WORKERS_SAVE_INTERVAL_S:
                    self._save_where()
                    last_save = time.monotonic()
        finally:
            for task in [*running, *probes, *held]:
                task.cancel()   # the remote calls stop when _stop_workers kills their workers

    async def _call(self, slot: _Slot, seed: dict) -> dict | None:
        try:
            return await slot.handle.run_seed.remote(seed)
        except RayActorError:
            return None

    async def _back(self, slot: _Slot) -> bool:
        """Wait until a worker that died is running again (True) or gone for good (False)."""
        while True:
            try:
                await slot.handle.ping.remote()
                return True
            except ActorDiedError:
                return False
            except RayActorError:   # restarting (or its node is being declared dead): ask again
                await asyncio.sleep(PROBE_INTERVAL_S)

    def _ended(self, slot: _Slot, reply: dict) -> None:
        if "fatal" in reply:
            raise FatalRunError(f"{reply['where']}: {reply['fatal']}")
        self._count_usage(slot, reply)
        for sample in reply["samples"]:
            self.writer.append(sample)
        self._done_where[reply["where"]] = self._done_where.get(reply["where"], 0) + 1
        self.reporter.seed_done(reply["status"], len(reply["samples"]) or reply["already"])
        now = time.monotonic()
        self.registry.add_wall_time(self.run_id, now - self._clock)
        self._clock = now

    def _count_usage(self, slot: _Slot, reply: dict) -> None:
        calls, tokens, hits = reply["usage"]
        seen = slot.usage_seen.get(reply["incarnation"], (0, 0, 0))
        # each reply carries its worker's totals: add what is new since that worker's last reply
        self.llm.usage.add(Usage(max(0, calls - seen[0]), max(0, tokens - seen[1]), max(0, hits - seen[2])))
        slot.usage_seen[reply["incarnation"]] = (max(calls, seen[0]), max(tokens, seen[1]), max(hits, seen[2]))
        slot.endpoint_seen[reply["incarnation"]] = reply["endpoint"]
        self._endpoint_figures()

    def _endpoint_figures(self) -> None:
        """The driver's endpoint line shows the cluster: requests and retries of every worker summed,
        and the in-flight limits summed over the workers running now (the lowest: each one's lowest)."""
        endpoint = self.llm.endpoint
        endpoint.stats = Counter()
        limits = [0, 0, 0]
        for slot in self._slots:
            for figures in slot.endpoint_seen.values():
                endpoint.stats.update(figures["stats"])
            if slot.endpoint_seen and not slot.dead:
                latest = list(slot.endpoint_seen.values())[-1]["limit"]
                limits = [a + b for a, b in zip(limits, latest)]
        if limits[1]:
            endpoint.limit.limit, endpoint.limit.maximum, endpoint.limit.lowest = limits

    def _save_where(self) -> None:
        self.registry.set_run(self.run_id, workers=json.dumps(self._done_where, sort_keys=True))


def connect(address: str, error: type[Exception]) -> bool:
    """Join the cluster at `address`; True if this call connected. A cluster that cannot be reached is
    one line (`error`), not Ray's traceback."""
    if ray.is_initialized():
        return False
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if host and port.isdigit():
        # Ray waits minutes for a GCS that is not there; a closed port is known at once
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise error(f"cannot join the Ray cluster at {address}: {exc.strerror or exc}") from None
    try:
        ray.init(address=address, logging_level=logging.WARNING, namespace="teachgraph")
    except Exception as exc:  # ConnectionError, ValueError for a bad address, ...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise error(f"cannot join the Ray cluster at {address}: {first}") from None
    return True


def ray_executor(address: str, workers: int | None = None):
    """The executor factory `teachgraph.run(..., executor=...)` takes, for the Ray cluster at `address`,
    which it joins now: an address that does not answer is a UsageError before any run is made."""
    connected = connect(address, UsageError)

    def make(*args: Any) -> RayExecutor:
        return RayExecutor(*args, address=address, workers=workers, disconnect=connected)
    return make
