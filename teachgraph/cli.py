"""teachgraph's command line: `python cli.py graph run rag`, `graph resume RUN_ID`, `graph show rag`,
`runs list`, `runs show RUN_ID`, `runs failures RUN_ID`, `endpoint probe`, `export RUN_ID... --out DIR`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import sys
import time
import urllib.parse
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from teachgraph import skills
from teachgraph.checkpoints import storage
from teachgraph.checkpoints.registry import OutputInUse, Registry
from teachgraph.checkpoints.saver import check_store
from teachgraph.checkpoints.cache import ResponseCache
from teachgraph.client.endpoint import EndpointError, redact
from teachgraph.client.llm import STRUCTURED_MODES
from teachgraph import embedded, export
from teachgraph.client import probe
from teachgraph.mix import Dealer, load_mix
from teachgraph.runner import (Execution, FatalRunError, Home, RunLock, Settings, default_rounds, make_llm,
                               new_run_id, run_status, shown_status)
from teachgraph.output import SampleWriter, output_problem
from teachgraph.seeds import Skipped, abbreviate, collect, file_problem

SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "sample"  # in a source checkout

app = typer.Typer(help="Synthetic fine-tuning data from raw documents and code (AgentInstruct flows as LangGraph graphs).",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
graph_app = typer.Typer(help="List, run, resume and draw skill graphs.", no_args_is_help=True)
runs_app = typer.Typer(help="Inspect runs.", no_args_is_help=True)
endpoint_app = typer.Typer(help="Check an OpenAI-compatible endpoint.", no_args_is_help=True)
app.add_typer(graph_app, name="graph")
app.add_typer(runs_app, name="runs")
app.add_typer(endpoint_app, name="endpoint")

console = Console()
err = Console(stderr=True)


# C0 and C1 controls (ESC starts CSI/OSC sequences; U+009B is an 8-bit CSI), DEL, line and paragraph
# separators, and the bidi overrides that reorder what a terminal shows
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def shown(value: object) -> str:
    """Text from a user, a seed or an endpoint as it may reach a terminal, on one line: a tab or line
    break becomes a space and every other control character its escape (ESC -> \\x1b), so no value
    can retitle, clear or recolour the terminal or forge lines. Every display path uses it; it is
    never parsed as markup either (print with markup=False, or inside a rich Text)."""
    return _CONTROL.sub(lambda m: " " if m.group() in "\t\n\r" else
                        (f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"),
                        str(value))


def print_error(message: str) -> None:
    # messages quote paths and server text: never read as markup, never raw control characters
    err.print(Text.assemble(("error:", "red"), " ", shown(message)), highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    print_error(message)
    raise typer.Exit(code)


def fail_stopped(run_id: str, exc: BaseException) -> None:
    """A run that stopped on an error no retry fixes (endpoint, storage): it can be resumed."""
    fail(f"{storage.fault(exc) or exc}\nThe run stopped; fix the cause, then: python cli.py graph resume {run_id}")


def say(message: str) -> None:
    """A line of data (paths, reasons, model output) for stderr, printed as is."""
    err.print(shown(message), highlight=False, markup=False, soft_wrap=True)


def load_skill(name: str) -> skills.Skill:
    try:
        return skills.load(name)
    except skills.SkillError as exc:
        fail(str(exc))


# ---------------------------------------------------------------- graph

@graph_app.command("list")
def graph_list() -> None:
    """One skill per line: name, public split, task types, what it makes."""
    for name in skills.available():
        skill = load_skill(name)
        print(f"{skill.name}\t{skill.split}\t{len(skill.taxonomy)} task types\t{skill.description}")


@graph_app.command("show")
def graph_show(skill_name: str = typer.Argument(..., metavar="SKILL", help="a skill name or alias (graph list)"),
               format: str = typer.Option("mermaid", "--format", "-f", help="mermaid | ascii | png"),
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="write here instead of stdout")) -> None:
    """Draw a skill's graph, offline."""
    graph = load_skill(skill_name).build_graph().compile().get_graph()
    if format == "mermaid":
        text = graph.draw_mermaid()
    elif format == "ascii":
        try:
            text = graph.draw_ascii()
        except Exception:  # grandalf's layout fails on some loops: an edge list still shows the graph
            text = "\n".join(f"{e.source} -> {e.target}" + (" (conditional)" if e.conditional else "")
                             for e in graph.edges)
    elif format == "png":
        out = out or Path(f"{skill_name}.png")
        _make_parent(out)
        try:
            graph.draw_png(str(out))  # Graphviz via pygraphviz: no web service involved
        except ImportError:
            fail("--format png needs Graphviz: apt-get install graphviz libgraphviz-dev && pip install pygraphviz")
        except OSError as exc:
            fail(str(storage.describe_os(out, exc)))
        console.print(f"wrote {shown(out)}", markup=False, highlight=False)
        return
    else:
        fail(f"unknown format {format!r} (mermaid, ascii or png)")
    if out:
        _make_parent(out)
        try:
            out.write_text(text)
        except OSError as exc:
            fail(str(storage.describe_os(out, exc)))
        console.print(f"wrote {shown(out)}", markup=False, highlight=False)
    else:
        print(text)


def _make_parent(out: Path) -> None:
    """--out into a folder that does not exist yet creates it, as `graph run --out` does."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"--out {out}: cannot create its folder ({exc.strerror or exc})")


def api_key() -> str:
    """OPENAI_API_KEY, stripped of surrounding whitespace: a key read from a secret file often ends
    in a newline, which no HTTP header can carry and no key holds (HTTP drops whitespace around a
    header value anyway), so stripping sends exactly what the server would see. A key that still
    holds control or non-ASCII characters cannot be sent at all: one line, never quoting it."""
    key = (os.environ.get("OPENAI_API_KEY") or "").strip()
    if not key.isascii():
        fail("OPENAI_API_KEY holds non-ASCII characters, which an HTTP header cannot carry; check how it was set")
    if not key.isprintable():
        fail("OPENAI_API_KEY holds control characters, which an HTTP header cannot carry; check how it was set")
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
        fail(f"--base-url is not a URL ({exc})")   # not quoted: it may hold credentials
    if without_credentials(base_url) != base_url:
        fail(f"--base-url {without_credentials(base_url)} must not carry credentials (user:password@): they "
             f"would be stored and shown; remove them and put the key in OPENAI_API_KEY")
    return base_url


def without_credentials(url: str) -> str:
    """`url` with any user:password@ removed (also for showing runs recorded before they were refused)."""
    return _URL_CREDENTIALS.sub(r"\1", url)


_URL_CREDENTIALS = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")   # userinfo ends at the authority's last @


def _endpoint(settings: Settings) -> tuple[Optional[str], str]:
    return settings.base_url, api_key()


def _preflight(base_url: str, api_key: str, timeout: float = 15.0) -> None:
    """Fail in one clear line if the endpoint cannot be reached at all (within 15 s, or --timeout if shorter)."""
    try:
        httpx.get(f"{base_url.rstrip('/')}/models", headers={"Authorization": f"Bearer {api_key}"},
                  timeout=min(15.0, timeout))
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        # httpx quotes the request (headers included) in some errors: never the key
        fail(redact(f"cannot reach the endpoint {base_url}: {type(exc).__name__}: {exc}", [api_key]))


class ProgressReporter:
    def __init__(self, progress: Progress, task, counts: dict):
        self.progress, self.task, self.samples = progress, task, counts["samples"]
        # failed seeds are retried by this run, so they start uncounted
        self.done = {"accepted": counts["accepted"], "rejected": counts["rejected"], "failed": 0}

    def seed_done(self, status: str, samples: int) -> None:
        self.done[status] += 1
        self.samples += samples
        self.progress.advance(self.task)


@contextmanager
def run_lock(home: Home, run_id: str) -> Iterator[None]:
    """Held from before a run's seeds are collected until it stops: a second process refuses."""
    lock = RunLock(home, run_id)
    try:
        lock.__enter__()
    except FatalRunError as exc:
        fail(str(exc))
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


@contextmanager
def endpoint_for(settings: Settings, home: Home, run_id: str) -> Iterator[tuple[str, str, bool, object]]:
    """(base URL, API key, embedded?, the embedded server's supervisor or None)."""
    base_url, api_key = _endpoint(settings)
    if base_url:
        _preflight(base_url, api_key, settings.timeout)
        yield base_url, api_key, False, None
        return
    try:
        with embedded.embedded_server(home.root, log=say) as (url, server):
            yield url, api_key, True, server
    except embedded.EmbeddedError as exc:
        fail(f"{exc}\nThe run stopped; fix the cause, then: python cli.py graph resume {run_id}")


def execute(home: Home, registry: Registry, run_id: str, no_cache: bool = False) -> None:
    """Run the run's unfinished seeds. The caller holds the run's lock (run_lock)."""
    run = registry.run(run_id)
    settings = Settings(**run["settings"])
    skill = None if settings.mix else load_skill(settings.skill)
    counts = registry.counts(run_id)
    with ExitStack() as stack:
        base_url, api_key, is_embedded, server = stack.enter_context(endpoint_for(settings, home, run_id))
        # the cache is optional: a damaged cache.db is said once and the run goes on without it
        cache = None if no_cache or not settings.cache else ResponseCache(home.cache_path, on_fault=say)
        if cache is not None:
            stack.callback(cache.close)
        llm = make_llm(settings, base_url, api_key, is_embedded, cache=cache, server=server)
        registry.set_run(run_id, status="running")
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("seeds | {task.fields[stats]}"), TimeElapsedColumn(),
                            console=err, transient=False)
        task = progress.add_task(settings.skill, total=counts["total"],
                                 completed=counts["total"] - counts["pending"] - counts["failed"], stats="")
        reporter = ProgressReporter(progress, task, counts)
        calls0, tokens0, hits0 = counts["llm_calls"], counts["tokens"], counts["cache_hits"]

        def show_stats() -> None:
            d = reporter.done
            progress.update(task, stats=(
                f"{reporter.samples} samples | {d['accepted']} ok {d['rejected']} rejected {d['failed']} failed | "
                f"{calls0 + llm.usage.calls} LLM calls | {tokens0 + llm.usage.tokens} tokens"
                + (f" | {hits0 + llm.usage.cache_hits} cached" if hits0 + llm.usage.cache_hits else "")))

        async def main() -> None:
            async def tick() -> None:
                while True:
                    show_stats()
                    await asyncio.sleep(0.5)
            ticker = asyncio.create_task(tick())
            try:
                await Execution(registry, home, run_id, skill, llm, settings, reporter).run()
            finally:
                ticker.cancel()
                await llm.aclose()
                show_stats()  # the last frame shows the final figures

        interrupted = False
        # SIGTERM (a scheduler, `timeout`, `kill`) stops the run like Ctrl-C: checkpoints are kept,
        # the embedded server is stopped, and the run can be resumed.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            with progress:
                asyncio.run(main())
        except KeyboardInterrupt:
            interrupted = True
        except (FatalRunError, storage.StorageError) as exc:
            try:
                registry.set_run(run_id, status="interrupted")
            except sqlite3.Error:
                pass  # runs.db is what failed; the run shows as interrupted anyway (its lock is released)
            say(f"endpoint: {llm.endpoint.summary()}")
            fail_stopped(run_id, exc)
        say(f"endpoint: {llm.endpoint.summary()}")
        counts = registry.counts(run_id)
        status = run_status(counts)
        registry.set_run(run_id, status=status)
    _print_summary(registry, run_id, settings)
    if interrupted:
        err.print(f"interrupted. Resume with: python cli.py graph resume {run_id}")
        raise typer.Exit(130)
    if counts["pending"]:  # only possible if recording an outcome itself failed: say so, loudly
        err.print(f"{counts['pending']} seed(s) were left unfinished (see the errors above); "
                  f"`graph resume {run_id}` runs them.")
        raise typer.Exit(1)
    if counts["failed"]:
        err.print(f"{counts['failed']} seed(s) failed (see: python cli.py runs show {run_id}); "
                  f"`graph resume {run_id}` retries them.")
        raise typer.Exit(1)


@graph_app.command("run")
def graph_run(
    skill_name: str = typer.Argument(..., metavar="SKILL", help="a skill (graph list), or all with --mix"),
    mix: Optional[str] = typer.Option(None, "--mix", help="with SKILL=all: orca (default) | uniform | FILE of skill = weight"),
    seeds: List[Path] = typer.Option([], "--seeds", "-s", help="files or folders of seed documents (repeatable); default: the bundled sample corpus"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="use at most N seed chunks"),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=0, help="refinement rounds (default: the skill's, 2 for rag)"),
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, help="seeds (and LLM calls) in flight"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON Lines output (default: TEACHGRAPH_HOME/runs/RUN_ID/samples.jsonl)"),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="name the run (default: generated)"),
    base_url: Optional[str] = typer.Option(None, "--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible endpoint (default: the embedded model)"),
    model: Optional[str] = typer.Option(None, "--model", envvar="TEACHGRAPH_MODEL", help="model name at that endpoint"),
    structured: str = typer.Option("auto", "--structured", help="how to ask for JSON: auto (probe the endpoint) | json_schema | json_object | tools | prompt"),
    max_tokens: int = typer.Option(384, "--max-tokens", min=16, help="cap on every model reply (agents may set lower caps in prompts.toml)"),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0, max=2.0),
    timeout: float = typer.Option(120.0, "--timeout", min=0.1, help="seconds one model request may take before it is retried"),
    retries: int = typer.Option(10, "--retries", min=1, help="attempts per model request on transient errors (timeouts, 429, 5xx)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="always ask the model: no replies from (or to) the response cache"),
) -> None:
    """Run SKILL's graph over seed documents and write (prompt, response) samples."""
    if skill_name == "all":
        try:
            weights = load_mix(mix or "orca")
        except skills.SkillError as exc:
            fail(str(exc))
        dealt = [load_skill(name) for name in weights]
    elif mix:
        fail("--mix goes with `graph run all`")
    else:
        weights, dealt = None, [load_skill(skill_name)]
    run_skill = "all" if weights else dealt[0].name
    if structured not in ("auto", *STRUCTURED_MODES):
        fail(f"unknown --structured {structured!r} (auto, {', '.join(STRUCTURED_MODES)})")
    paths = [p for p in seeds] or [SAMPLE_CORPUS]
    for path in paths:
        if not path.exists():  # a symlink loop or a broken symlink "exists" as a link: say which
            problem = file_problem(path) if os.path.lexists(path) else None
            fail(f"seed path {path}: {problem}" if problem else f"seed path not found: {path}")
    home = Home.from_env()
    run_id = run_id or new_run_id(run_skill)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", run_id):
        fail(f"bad run id {run_id!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    problem = output_problem(out if out is not None else home.default_out(run_id))
    if problem:
        fail(problem)
    registry = Registry(home.registry_path)
    check_store(home.checkpoints_path)  # a damaged checkpoints.db stops us here, not after the run is made
    settings = Settings(
        skill=run_skill, seeds=[str(p.resolve()) for p in paths],
        out=str((out or home.default_out(run_id)).resolve()), limit=limit,
        rounds=default_rounds(dealt[0]) if rounds is None and not weights else rounds,
        concurrency=concurrency, base_url=checked_base_url(base_url), model=model or embedded.MODEL_NAME,
        structured=structured, max_tokens=max_tokens, temperature=temperature, timeout=timeout, retries=retries,
        mix=weights, cache=not no_cache)
    if base_url and not model:
        fail("--model (or TEACHGRAPH_MODEL) is required with --base-url / OPENAI_BASE_URL")
    if registry.run(run_id):
        fail(f"run {run_id} already exists (resume it with: python cli.py graph resume {run_id})")
    if not base_url:
        try:
            embedded.check_available(home.root)  # before the run exists, as for an endpoint
        except embedded.EmbeddedError as exc:
            fail(str(exc))
    key = api_key()
    err.print(f"run id: [bold]{run_id}[/bold]", highlight=False)   # first, whatever comes next
    if base_url:  # before the run exists: a wrong URL, key or model must not leave a half-made run behind
        _preflight(base_url, key, settings.timeout)
        if structured == "auto":
            settings.structured = _structured_strategy(registry, base_url, key, settings)
    with run_lock(home, run_id):
        if registry.run(run_id):  # created by another process since the check above
            fail(f"run {run_id} already exists (resume it with: python cli.py graph resume {run_id})")
        try:
            registry.create_run(run_id, run_skill, settings.to_json())
        except OutputInUse as exc:
            fail(str(exc))
        try:
            _collect_seeds(registry, run_id, settings, paths)
            execute(home, registry, run_id)
        except (storage.StorageError, sqlite3.Error) as exc:  # e.g. runs.db filled the disk
            fail_stopped(run_id, exc)


def _collect_seeds(registry: Registry, run_id: str, settings: Settings, paths: List[Path]) -> None:
    if settings.mix:
        dealer = Dealer([load_skill(name) for name in settings.mix], settings.mix)
    else:
        dealer = Dealer([load_skill(settings.skill)])
    # passages feed rag's retrieval of distractors, so they are cut to rag's size
    passage_chars = skills.load("rag").spec.context.passage_chars
    shown = ", ".join(map(str, paths))
    say(f"collecting seeds from {shown} ...")
    started = time.monotonic()
    try:
        with err.status("collecting seeds ...") as status:   # drawn only on a terminal
            def counted(items):
                seen, last = 0, 0.0
                for item in items:
                    if not isinstance(item, Skipped):
                        seen += 1
                        if time.monotonic() - last > 0.2:
                            last = time.monotonic()
                            status.update(f"collecting seeds: {seen} from {escape(abbreviate(item.source, 80))}")
                    yield item
            total = registry.add_corpus(run_id, counted(collect(paths)), limit=settings.limit, assign=dealer,
                                        passage_chars=passage_chars,
                                        on_skip=lambda s: say(f"skipped {abbreviate(s.source)}: {s.reason}"))
    finally:  # collecting is part of the run's time (a large corpus takes a while)
        registry.add_wall_time(run_id, time.monotonic() - started)
    if total == 0:
        registry.set_run(run_id, status="empty")
        fail(f"no usable seed text in {shown}")
    say(f"{total} seeds from {shown}; output: {settings.out}")


def _structured_strategy(registry: Registry, base_url: str, api_key: str, settings: Settings) -> str:
    """--structured auto: what `endpoint probe` found for this endpoint and model, probing it now
    (within the run's --timeout and --retries) if need be. Says where the strategy came from."""
    known = registry.probe_result(base_url, settings.model)
    if known is not None:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(known.probed))
        say(f"structured output: {known.strategy} (probed {when}; python cli.py endpoint probe re-probes)")
        return known.strategy
    say(f"probing the endpoint {base_url} for the structured output it enforces ...")
    try:
        known = asyncio.run(probe.probe(base_url, api_key, settings.model, timeout=settings.timeout,
                                        attempts=settings.retries))
    except EndpointError as exc:
        fail(str(exc))
    registry.remember_probe(known)
    say(f"structured output: {known.strategy} (probed the endpoint just now; cached for later runs)")
    return known.strategy


@graph_app.command("resume")
def graph_resume(run_id: str = typer.Argument(..., metavar="RUN_ID"),
                 no_cache: bool = typer.Option(False, "--no-cache", help="always ask the model, this time")) -> None:
    """Finish an interrupted run: unfinished seeds continue from their last checkpoint."""
    home = Home.from_env()
    registry = Registry(home.registry_path)
    run = registry.run(run_id)
    if run is None:
        fail(f"no run {run_id!r} in {home.root} (see: python cli.py runs list)")
    with run_lock(home, run_id):
        run = registry.run(run_id)  # as it is now that no other process runs it
        settings = Settings(**run["settings"])
        if run["status"] == "empty":
            fail(f"run {run_id} found no usable seed text; start a new run with other --seeds")
        if run["status"] == "collecting":
            # Killed while collecting: no seed has run yet, so collecting again from scratch is safe
            # (add_corpus forgets what the cut-short collection stored).
            say(f"run {run_id} was stopped while collecting its seeds; collecting them again")
            try:
                _collect_seeds(registry, run_id, settings, [Path(p) for p in settings.seeds])
            except (storage.StorageError, sqlite3.Error) as exc:
                fail_stopped(run_id, exc)
        counts = registry.counts(run_id)
        if counts["total"] and not counts["pending"] and not counts["failed"]:
            # A kill between the last seed's commit and its line in the file is mended here.
            writer = SampleWriter(Path(settings.out))
            writer.reconcile(registry.samples(run_id))
            writer.close()
            registry.set_run(run_id, status=run_status(counts))  # it may have stopped on a failed write
            console.print(f"run {run_id} is already complete: nothing to do.")
            _print_summary(registry, run_id, settings)
            return
        say(f"resuming {run_id}: {counts['pending']} pending, {counts['failed']} failed seeds")
        try:
            execute(home, registry, run_id, no_cache=no_cache)
        except (storage.StorageError, sqlite3.Error) as exc:
            fail_stopped(run_id, exc)


# ---------------------------------------------------------------- runs

@runs_app.command("list")
def runs_list() -> None:
    """Every run in TEACHGRAPH_HOME, newest first."""
    home = Home.from_env()
    registry = Registry(home.registry_path)
    for run in registry.runs():
        c = registry.counts(run["id"])
        print(f"{run['id']}\t{run['skill']}\t{shown_status(home, run)}\t{c['total']} seeds\t{c['accepted']} accepted\t"
              f"{c['rejected']} rejected\t{c['failed']} failed\t{c['samples']} samples\t"
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(run['created']))}")


def _print_summary(registry: Registry, run_id: str, settings: Settings) -> None:
    run = registry.run(run_id)
    c = registry.counts(run_id)
    table = Table(show_header=False, box=None)
    for key, value in [
        ("run", run_id), ("skill", run["skill"]), ("status", shown_status(Home.from_env(), run)),
        ("seeds", f"{c['total']} total: {c['accepted']} accepted, {c['rejected']} rejected, "
                  f"{c['failed']} failed, {c['pending']} pending"),
        ("samples", c["samples"]), ("LLM calls", c["llm_calls"]), ("cache hits", c["cache_hits"]),
        ("tokens", c["tokens"]),
        ("wall time", f"{run['wall_seconds']:.1f} s"), ("model", settings.model),
        ("endpoint", without_credentials(settings.base_url) if settings.base_url else "embedded llama.cpp"),
        ("output", settings.out),
    ]:
        table.add_row(f"[bold]{key}[/bold]", Text(shown(value)))   # user values are never markup
    console.print(table)
    if settings.mix:
        per_skill = Table("skill", "seeds", "accepted", "rejected", "failed", "pending", "samples", "LLM calls",
                          box=None)
        for row in registry.by_skill(run_id):
            per_skill.add_row(*(Text(shown(row[k] or 0)) for k in ("skill", "seeds", "accepted", "rejected", "failed",
                                                           "pending", "samples", "llm_calls")))
        console.print(per_skill)


@runs_app.command("show")
def runs_show(run_id: str = typer.Argument(..., metavar="RUN_ID"),
              as_json: bool = typer.Option(False, "--json", help="machine-readable")) -> None:
    """Counts, LLM usage and wall time of a run, with rejection and failure reasons."""
    registry = Registry(Home.from_env().registry_path)
    run = registry.run(run_id)
    if run is None:
        fail(f"no run {run_id!r} (see: python cli.py runs list)")
    if as_json:
        run["status"] = shown_status(Home.from_env(), run)
        print(json.dumps({"run": run, "counts": registry.counts(run_id),
                          "rejected": registry.outcomes(run_id, "rejected"),
                          "failed": registry.outcomes(run_id, "failed"),
                          "task_types": registry.task_types(run_id),
                          "skills": registry.by_skill(run_id),
                          "skipped": registry.skipped(run_id)}, indent=2))
        return
    _print_summary(registry, run_id, Settings(**run["settings"]))
    for status in ("rejected", "failed"):
        rows = registry.outcomes(run_id, status)
        if rows:
            by_node: dict[str, int] = {}
            for row in rows:
                by_node[row["node"] or "-"] = by_node.get(row["node"] or "-", 0) + row["seeds"]
            nodes = ", ".join(f"{node} {n}" for node, n in sorted(by_node.items(), key=lambda kv: -kv[1]))
            console.print(f"\n[bold]{status}[/bold] {sum(by_node.values())} (by node: {escape(nodes)}; "
                          f"seeds, node: reason)", highlight=False)
            for row in rows:
                console.print(shown(f"  {row['seeds']:>4}  {row['node'] or '-'}: {row['reason']}"), highlight=False,
                              markup=False)
        if rows and status == "failed":
            console.print(f"  see every seed: python cli.py runs failures {run_id}", highlight=False, markup=False)
    skipped = registry.skipped(run_id)
    if skipped:
        console.print(f"\n[bold]skipped inputs[/bold] ({len(skipped)})")
        for row in skipped:
            console.print(shown(f"  {row['source']}: {row['reason']}"), highlight=False, markup=False)


@runs_app.command("failures")
def runs_failures(run_id: str = typer.Argument(..., metavar="RUN_ID"),
                  as_json: bool = typer.Option(False, "--json", help="one JSON object per line")) -> None:
    """Every seed that ended failed or rejected, one per line: status, seed id, source, node, error or reason."""
    registry = Registry(Home.from_env().registry_path)
    if registry.run(run_id) is None:
        fail(f"no run {run_id!r} (see: python cli.py runs list)")
    tally = {"failed": 0, "rejected": 0}
    for row in registry.failures(run_id):
        tally[row["status"]] += 1
        if as_json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            print("\t".join(shown(row[k] if row[k] is not None else "-")
                            for k in ("status", "seed", "source", "node", "why")))
    say(f"{tally['failed']} failed, {tally['rejected']} rejected ({registry.counts(run_id)['total']} seeds)")


# ---------------------------------------------------------------- endpoint

@endpoint_app.command("probe")
def endpoint_probe(
    base_url: Optional[str] = typer.Option(None, "--base-url", envvar="OPENAI_BASE_URL", help="OpenAI-compatible endpoint (default: the embedded model)"),
    model: Optional[str] = typer.Option(None, "--model", envvar="TEACHGRAPH_MODEL", help="model name at that endpoint"),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help="seconds each probe request may take"),
) -> None:
    """Find the structured output an endpoint honours (json_schema, json_object with a schema, tool calls, or the prompt alone).

    `graph run --structured auto` uses the result, cached per endpoint and model."""
    if base_url and not model:
        fail("--model (or TEACHGRAPH_MODEL) is required with --base-url / OPENAI_BASE_URL")
    home = Home.from_env()
    base_url, key = checked_base_url(base_url), api_key()

    def run_probe(url: str, name: str):
        try:
            return asyncio.run(probe.probe(url, key, name, timeout=timeout))
        except EndpointError as exc:
            fail(str(exc))

    if base_url:
        _preflight(base_url, key, timeout)
        result = run_probe(base_url, model)
        Registry(home.registry_path).remember_probe(result)
        where = f"{base_url} {model}"
    else:
        for line in embedded.build_report():
            print(line)
        try:
            with embedded.embedded_server(home.root, log=say) as (url, _):
                result = run_probe(url, embedded.MODEL_NAME)
        except embedded.EmbeddedError as exc:
            fail(str(exc))
        where = f"the embedded model ({embedded.MODEL_NAME}; runs on it always use json_object)"
    for check in result.checks:
        print(f"{check.mode:<12}{check.outcome:<9}{shown(check.detail)}")
    print(f"strategy: {result.strategy}  <- {where}")


# ---------------------------------------------------------------- filter

@app.command("filter")
def filter_command(
    source: Path = typer.Argument(..., metavar="IN.jsonl", help="chat samples: id + messages, one JSON object a line"),
    out: Path = typer.Option(..., "--out", help="the kept rows, byte for byte"),
    rejected: Optional[Path] = typer.Option(None, "--rejected", help="each dropped row, with a rejection object"),
    decontaminate: List[Path] = typer.Option([], "--decontaminate", help="an evaluation set (JSONL, Parquet, datasets folder); repeatable"),
    semantic: bool = typer.Option(False, "--semantic", help="also drop paraphrases (sentence embeddings; the `semantic` extra)"),
) -> None:
    """Apply the quality gates to any JSON Lines file of chat samples: every row ends in OUT or REJECTED."""
    try:  # the gates are the `gates` extra: import them only for this command
        from teachgraph.gates import filter_file
        from teachgraph.gates.decontaminate import EvalFileError
    except ImportError as exc:
        fail(f"filter needs the gates extra ({exc.name} is missing): pip install 'teachgraph[gates]'")
    if not source.is_file():
        fail(f"{source}: no such file")
    if {source.resolve()} & {p.resolve() for p in (out, rejected) if p is not None}:
        fail("--out and --rejected must not be the input file")
    started = time.monotonic()
    try:
        counts = filter_file(source, out, rejected, decontaminate=decontaminate, semantic=semantic)
    except EvalFileError as exc:
        fail(str(exc))
    except ImportError as exc:
        fail(f"--semantic needs the semantic extra ({exc.name} is missing): pip install 'teachgraph[semantic]'")
    print(f"{counts.rows} rows: {counts.kept} kept, {sum(counts.dropped.values())} rejected "
          f"({time.monotonic() - started:.1f} s)")
    for gate, n in counts.dropped.most_common():
        print(f"  {gate:<20}{n}")
# ---------------------------------------------------------------- export

@app.command("export")
def export_runs(
    run_ids: List[str] = typer.Argument(..., metavar="RUN_ID...", help="runs to export into one dataset (deduplicated by sample id)"),
    out: Path = typer.Option(..., "--out", "-o", help="a new (or empty) folder to write"),
    format: str = typer.Option("hf", "--format", "-f", help="hf (card + Parquet per skill) | orca | sharegpt | jsonl"),
    include_rejected: bool = typer.Option(False, "--include-rejected", help="keep samples a check, gate or review rejected (with their verdicts)"),
    license: Optional[str] = typer.Option(None, "--license", help="the card's license id, e.g. cc-by-4.0 (default: unknown, and the card says so)"),
    language: str = typer.Option("en", "--language", help="the card's language code"),
    push: Optional[str] = typer.Option(None, "--push", metavar="REPO_ID", help="then upload to this Hub dataset repo (token from HF_TOKEN)"),
) -> None:
    """Export runs as a dataset: a Hub-ready folder, orca-agentinstruct's layout, ShareGPT or JSON Lines."""
    try:
        if push:
            export.hub_token()  # no token: refuse before the work, not after it
        result = export.export(Registry(Home.from_env().registry_path), run_ids, out, format=format,
                               include_rejected=include_rejected, license=license, language=language)
        for skill, stats in sorted(result.skills.items()):
            print(f"{skill}\t{stats.rows} rows")
        say(f"wrote {result.rows} rows ({result.format}) to {out} in {result.seconds:.1f} s"
            + (f"; left out as rejected: {sum(result.dropped.values())}" if result.dropped else "")
            + ("" if license or format == "jsonl" else "; no --license given: the card says unknown"))
        if push:
            say(f"pushed: {export.push(out, push)}")
    except export.ExportError as exc:
        fail(str(exc))


def main() -> None:
    """The entry point: app(), except that usage errors are one line too (typer draws a box of several)."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # click's usage errors: unknown option, bad value ...
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is printed already
            sys.exit(2)
        ctx = getattr(exc, "ctx", None)
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        print_error(exc.format_message() + where)
        sys.exit(getattr(exc, "exit_code", 2))
    except (storage.StorageError, sqlite3.Error) as exc:  # a file we keep: one line naming it, what to do
        print_error(str(storage.fault(exc) or storage.describe(None, exc)))
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
