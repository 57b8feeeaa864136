"""teachgraph's command line: `python cli.py graph run rag`, `graph resume RUN_ID`, `graph show rag`,
`runs list`, `runs show RUN_ID`, `runs failures RUN_ID`, `endpoint probe`, `export RUN_ID... --out DIR`."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from teachgraph import api, embedded, export, skills
from teachgraph.api import without_credentials
from teachgraph.checkpoints import storage
from teachgraph.checkpoints.registry import Registry
from teachgraph.estimation import Estimate, share
from teachgraph.errors import RunInterrupted, RunStopped, TeachgraphError
from teachgraph.options import DEFAULTS
from teachgraph.runner import Home, Settings, shown_status
from teachgraph.states import RunStatus, SeedStatus
from teachgraph.seeds import abbreviate
from teachgraph.teach import EMBEDDED_STUDENT
from teachgraph.review import data as review_data, diagram

app = typer.Typer(help="Synthetic fine-tuning data from raw documents and code "
                       "(AgentInstruct flows as LangGraph graphs).",
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


def say(message: str) -> None:
    """A line of data (paths, reasons, model output) for stderr, printed as is."""
    err.print(shown(message), highlight=False, markup=False, soft_wrap=True)


def store_option():
    """--store on every command that opens a store (the run's state: registry, checkpoints, cache)."""
    return typer.Option(None, "--store", envvar="TEACHGRAPH_STORE", metavar="URL",
                        help="postgresql://USER@HOST:PORT/DB to keep runs in PostgreSQL "
                             "(default: SQLite files in TEACHGRAPH_HOME)")


# ---------------------------------------------------------------- graph

@graph_app.command("list")
def graph_list() -> None:
    """One skill per line: name, public split, task types, what it makes."""
    for name in skills.available():   # one by one: a broken skill stops the list where it is
        skill = skills.load(name)
        print(f"{skill.name}\t{skill.split}\t{len(skill.taxonomy)} task types\t{skill.description}")


@graph_app.command("show")
def graph_show(skill_name: str = typer.Argument(..., metavar="SKILL", help="a skill name or alias (graph list)"),
               format: str = typer.Option("mermaid", "--format", "-f", help="mermaid | ascii | png"),
               out: Optional[Path] = typer.Option(None, "--out", "-o", help="write here instead of stdout"),
               run_id: Optional[str] = typer.Option(None, "--run", metavar="RUN_ID",
                                                    help="annotate nodes and edges with this run's figures"),
               store: Optional[str] = store_option()) -> None:
    """Draw a skill's graph, offline: nodes labelled by agent, edges by their condition."""
    skill = skills.load(skill_name)
    figures: tuple[list, list] = ([], [])
    if run_id:
        registry = Home.from_env(store).registry()
        if registry.run(run_id) is None:
            fail(f"no run {run_id!r} (see: python cli.py runs list)")
        ran = review_data.run_skills(registry, run_id)
        if skill.name not in ran:
            fail(f"run {run_id} has no {skill.name} seeds (it ran {', '.join(ran)})")
        figures = (registry.node_figures(run_id), registry.edge_figures(run_id))
    drawn = diagram.diagram(skill, *figures)
    if format == "mermaid":
        text = diagram.to_mermaid(drawn)
    elif format == "ascii":
        try:
            boxes = skill.build_graph().compile().get_graph().draw_ascii()
        except Exception:  # grandalf's layout fails on some loops: the edge list below still shows the graph
            boxes = None
        text = diagram.to_ascii(drawn, boxes)
    elif format == "png":
        out = out or Path(f"{skill_name}.png")
        _make_parent(out)
        try:
            out.write_bytes(diagram.render(drawn, "png"))  # Graphviz via pygraphviz: no web service involved
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


class ConsoleReporter(api.Reporter):
    """The run's events on stderr: notes, the collecting status, the progress bar and its figures."""

    def __init__(self) -> None:
        self.status = None
        self.progress: Progress | None = None
        self.task = None

    def run_started(self, run_id: str) -> None:
        err.print(f"run id: [bold]{run_id}[/bold]", highlight=False)   # run ids are [A-Za-z0-9._-]: no markup

    def note(self, message: str) -> None:
        say(message)

    def collect_started(self) -> None:
        self.status = err.status("collecting seeds ...")   # drawn only on a terminal
        self.status.__enter__()

    def collect_progress(self, seen: int, source: str) -> None:
        self.status.update(f"collecting seeds: {seen} from {escape(abbreviate(source, 80))}")

    def collect_ended(self) -> None:
        self.status.__exit__(None, None, None)

    def seeds_started(self, label: str, total: int, done: int) -> None:
        # SIGTERM (a scheduler, `timeout`, `kill`) stops the run like Ctrl-C: checkpoints are kept,
        # the embedded server is stopped, and the run can be resumed.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("seeds | {task.fields[stats]}"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=False)
        self.task = self.progress.add_task(label, total=total, completed=done, stats="")
        self.progress.start()

    def seed_done(self, status: str, samples: int) -> None:
        self.progress.advance(self.task)

    def figures(self, live: dict[str, int]) -> None:
        self.progress.update(self.task, stats=(
            f"{live['samples']} samples | {live['accepted']} ok {live['rejected']} rejected {live['failed']} failed"
            f" | {live['llm_calls']} LLM calls | {live['tokens']} tokens"
            + (f" | {live['cache_hits']} cached" if live["cache_hits"] else "")
            + (f" | {money(live['cost'])}" if live.get("cost") is not None else "")))

    def seeds_ended(self) -> None:
        self.progress.stop()

    def build_report(self, lines: list[str]) -> None:
        for line in lines:
            print(line)

    def nothing_to_do(self, run_id: str) -> None:
        console.print(f"run {run_id} is already complete: nothing to do.")


def money(usd: float) -> str:
    return f"${usd:.4f}" if usd < 1 else f"${usd:,.2f}"


def _ended(run: api.Run) -> None:
    """The summary of a run that stopped running, and its exit code (README: Command line)."""
    _print_summary(run.registry, run.id, run.settings)
    if run.status == RunStatus.BUDGET_REACHED:   # stopped on purpose, resumable: exit 3
        say(f"stopped: {run.stop_reason}; `graph resume {run.id} --max-cost USD` (or --max-tokens-total N) "
            f"continues it")
        raise typer.Exit(3)
    counts = run.counts
    if counts["pending"]:  # only possible if recording an outcome itself failed: say so, loudly
        err.print(f"{counts['pending']} seed(s) were left unfinished (see the errors above); "
                  f"`graph resume {run.id}` runs them.")
        raise typer.Exit(1)
    if counts["failed"]:
        err.print(f"{counts['failed']} seed(s) failed (see: python cli.py runs show {run.id}); "
                  f"`graph resume {run.id}` retries them.")
        raise typer.Exit(1)


def _interrupted(exc: RunInterrupted) -> None:
    run = api.open_run(exc.run_id)
    _print_summary(run.registry, run.id, run.settings)
    err.print(f"interrupted. Resume with: python cli.py graph resume {run.id}")
    raise typer.Exit(exc.exit_code)


# The LLM judge's options, the same on `graph run` and `filter`.
JUDGE_MODEL = typer.Option(None, "--judge-model", help="score every answer 1-10 with this model against the "
                                                         "skill's rubric; below the skill's threshold it is dropped")
JUDGE_BASE_URL = typer.Option(None, "--judge-base-url",
                              help="the judge's OpenAI-compatible endpoint (default: the generator's)")


RAY_HELP = "run the seeds on the Ray cluster at ADDRESS (auto | HOST:PORT | ray://HOST:10001)"


def _executor(ray_address: Optional[str]) -> dict:
    return {"executor": api.ray_executor(ray_address)} if ray_address else {}


@graph_app.command("run")
def graph_run(
    skill_name: str = typer.Argument(..., metavar="SKILL", help="a skill (graph list), or all with --mix"),
    mix: Optional[str] = typer.Option(None, "--mix",
                                      help="with SKILL=all: orca (default) | uniform | FILE of skill = weight"),
    seeds: List[Path] = typer.Option([], "--seeds", "-s",
                                     help="files or folders of seed documents (repeatable); "
                                          "default: the bundled sample corpus"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="use at most N seed chunks"),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=0,
                                         help="refinement rounds (default: the skill's, 2 for rag)"),
    concurrency: int = typer.Option(DEFAULTS.concurrency, "--concurrency", "-c", min=1,
                                    help="seeds (and LLM calls) in flight"),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="JSON Lines output (default: TEACHGRAPH_HOME/runs/RUN_ID/samples.jsonl)"),
    run_id: Optional[str] = typer.Option(None, "--run-id", help="name the run (default: generated)"),
    base_url: Optional[str] = typer.Option(None, "--base-url", envvar="OPENAI_BASE_URL",
                                           help="OpenAI-compatible endpoint (default: the embedded model)"),
    model: Optional[str] = typer.Option(None, "--model", envvar="TEACHGRAPH_MODEL", help="model name at that endpoint"),
    structured: str = typer.Option(DEFAULTS.structured, "--structured",
                                   help="how to ask for JSON: auto (probe the endpoint) | json_schema | "
                                        "json_object | tools | prompt"),
    max_tokens: int = typer.Option(DEFAULTS.max_tokens, "--max-tokens", min=16,
                                   help="cap on every model reply (agents may set lower caps in prompts.toml)"),
    temperature: float = typer.Option(DEFAULTS.temperature, "--temperature", min=0.0, max=2.0),
    timeout: float = typer.Option(DEFAULTS.timeout, "--timeout", min=0.1,
                                  help="seconds one model request may take before it is retried"),
    retries: int = typer.Option(DEFAULTS.retries, "--retries", min=1,
                                help="attempts per model request on transient errors (timeouts, 429, 5xx)"),
    no_cache: bool = typer.Option(not DEFAULTS.cache, "--no-cache",
                                  help="always ask the model: no replies from (or to) the response cache"),
    max_tokens_total: Optional[int] = typer.Option(None, "--max-tokens-total", min=1,
                                                   help="stop cleanly (resumable, exit 3) once the run's calls "
                                                        "spent this many tokens"),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", min=0.0, help="stop cleanly once this many USD "
                                             "are spent (needs the model's prices)"),
    price_in: Optional[float] = typer.Option(None, "--price-in", min=0.0,
                                             help="USD per million input tokens (default: TEACHGRAPH_HOME/prices.toml"
                                                  " or the bundled table)"),
    price_out: Optional[float] = typer.Option(None, "--price-out", min=0.0, help="USD per million output tokens"),
    judge_model: Optional[str] = JUDGE_MODEL,
    judge_base_url: Optional[str] = JUDGE_BASE_URL,
    target: Optional[int] = typer.Option(None, "--target", min=1,
                                         help="run unused seeds until every task type has N kept samples "
                                              "(or the seeds run out: `report RUN_ID` says which fell short)"),
    store: Optional[str] = store_option(),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP),
    decontaminate: List[Path] = typer.Option([], "--decontaminate", metavar="FILE",
                                             help="drop samples sharing a long n-gram with this evaluation set "
                                                  "(JSONL, Parquet, datasets folder); repeatable"),
    semantic: bool = typer.Option(False, "--semantic",
                                  help="also drop paraphrased samples (sentence embeddings; the `semantic` extra)"),
    dedup_against: List[str] = typer.Option([], "--dedup-against", metavar="RUN_ID",
                                            help="drop samples that duplicate this earlier run's; repeatable"),
    no_gates: bool = typer.Option(not DEFAULTS.gates, "--no-gates",
                                  help="no quality gates: keep duplicate seeds and samples, degenerate replies"),
) -> None:
    """Run SKILL's graph over seed documents and write (prompt, response) samples."""
    if ray and not base_url:
        fail("--ray needs --base-url: the embedded model runs on this machine only")
    try:
        run = api.run(skill_name, seeds, mix=mix, limit=limit, rounds=rounds, concurrency=concurrency, out=out,
                      run_id=run_id, base_url=base_url, model=model, structured=structured, max_tokens=max_tokens,
                      temperature=temperature, timeout=timeout, retries=retries, cache=not no_cache,
                      reporter=ConsoleReporter(), max_tokens_total=max_tokens_total, max_cost=max_cost,
                      price_in=price_in, price_out=price_out, judge_model=judge_model,
                      judge_base_url=judge_base_url, target=target, store=store, gates=not no_gates,
                      decontaminate=decontaminate, semantic=semantic, dedup_against=dedup_against,
                      **_executor(ray))
    except RunInterrupted as exc:
        _interrupted(exc)
    _ended(run)


@graph_app.command("resume")
def graph_resume(run_id: str = typer.Argument(..., metavar="RUN_ID"),
                 no_cache: bool = typer.Option(False, "--no-cache", help="always ask the model, this time"),
                 max_tokens_total: Optional[int] = typer.Option(None, "--max-tokens-total", min=1,
                                                                help="the run's new token budget (its spend counts)"),
                 max_cost: Optional[float] = typer.Option(None, "--max-cost", min=0.0,
                                                          help="the run's new budget in USD (all it spent counts)"),
                 store: Optional[str] = store_option(),
                 ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help=RAY_HELP)) -> None:
    """Finish an interrupted run: unfinished seeds continue from their last checkpoint."""
    reporter = ConsoleReporter()
    try:
        run = api.resume(run_id, no_cache=no_cache, reporter=reporter, max_tokens_total=max_tokens_total,
                         max_cost=max_cost, store=store, **_executor(ray))
    except RunInterrupted as exc:
        _interrupted(exc)
    _ended(run)


# ---------------------------------------------------------------- runs

@runs_app.command("list")
def runs_list(store: Optional[str] = store_option()) -> None:
    """Every run in TEACHGRAPH_HOME (or the --store), newest first."""
    home = Home.from_env(store)
    registry = home.registry()
    for run in registry.runs():
        c = registry.counts(run["id"])
        print(f"{run['id']}\t{run['skill']}\t{shown_status(home, run)}\t{c['total']} seeds\t{c['accepted']} accepted\t"
              f"{c['rejected']} rejected\t{c['failed']} failed\t{c['samples']} samples\t"
              f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(run['created']))}")


def _gates_line(settings: Settings) -> str:
    if not settings.gates:
        return "off"
    files = ", ".join(Path(f).name for f in settings.decontaminate)
    extra = [f"decontaminate {files}"] if files else []
    extra += ["semantic"] if settings.semantic else []
    extra += [f"dedup against {', '.join(settings.dedup_against)}"] if settings.dedup_against else []
    return "on" + (f" ({'; '.join(extra)})" if extra else "")


def _print_summary(registry: Registry, run_id: str, settings: Settings) -> None:
    run = registry.run(run_id)
    c = registry.counts(run_id)
    table = Table(show_header=False, box=None)
    for key, value in [
        ("run", run_id), ("skill", run["skill"]), ("status", shown_status(Home.from_env(), run)),
        ("seeds", f"{c['total']} total: {c['accepted']} accepted, {c['rejected']} rejected, "
                  f"{c['failed']} failed, {c['pending']} pending"),
        ("samples", f"{c['samples']} (and {c['dropped_samples']} dropped by gates)" if c["dropped_samples"]
         else c["samples"]),
        ("gates", _gates_line(settings)),
        ("LLM calls", c["llm_calls"]), ("cache hits", c["cache_hits"]),
        ("tokens", f"{c['tokens']} ({c['input_tokens']} input, {c['output_tokens']} output)"
                   if c["input_tokens"] or c["output_tokens"] else c["tokens"]),
        *_spend_rows(registry, run, settings),
        ("wall time", f"{run['wall_seconds']:.1f} s"), ("model", settings.model),
        ("endpoint", without_credentials(settings.base_url) if settings.base_url else "embedded llama.cpp"),
        ("output", settings.out),
        *([("workers", ", ".join(f"{k}: {v}" for k, v in json.loads(run["workers"] or "{}").items()))]
          if run.get("executor") == "ray" else []),
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


def _spend_rows(registry: Registry, run: dict, settings: Settings) -> list[tuple[str, str]]:
    """What the run's calls spent (the ledger: every reply, also of seeds a kill cut short), its
    budget and why it stopped, and how the estimate made before it ran compares."""
    spent = registry.spent(run["id"])
    priced = settings.price_in is not None
    rows = [("spent", f"{spent.calls} calls, {spent.input_tokens} input + {spent.output_tokens} output tokens"
                      + (f", {money(spent.cost)}" if priced else ", cost unknown (no price for the model)"))]
    if settings.max_tokens_total is not None or settings.max_cost is not None:
        limits = [f"{settings.max_tokens_total} tokens" if settings.max_tokens_total is not None else "",
                  money(settings.max_cost) if settings.max_cost is not None else ""]
        rows.append(("budget", " or ".join(filter(None, limits))))
    if run.get("stop_reason"):
        rows.append(("stopped", run["stop_reason"]))
    if run.get("estimate"):
        made = Estimate.from_json(json.loads(run["estimate"]))
        cost = f", {money(made.cost)}" if made.cost is not None else ""
        spent_cost = f", cost {share(made.cost, spent.cost)}" if made.cost is not None else ""
        rows.append(("estimate", f"{made.calls} calls, {made.tokens} tokens ({made.input_tokens} input, "
                                 f"{made.output_tokens} output){cost}; spent so far: calls "
                                 f"{share(made.calls, spent.calls)}, tokens {share(made.tokens, spent.tokens)} "
                                 f"(input {share(made.input_tokens, spent.input_tokens)}, output "
                                 f"{share(made.output_tokens, spent.output_tokens)}){spent_cost} of it "
                                 f"(tokens counted as {made.tokenizer})"))
    return rows


@runs_app.command("estimate")
def runs_estimate(
    skill_name: str = typer.Argument(..., metavar="SKILL", help="a skill (graph list), or all with --mix"),
    seeds: List[Path] = typer.Option([], "--seeds", "-s", help="files or folders (default: the sample corpus)"),
    mix: Optional[str] = typer.Option(None, "--mix", help="with SKILL=all: orca | uniform | FILE"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="at most N seed chunks"),
    rounds: Optional[int] = typer.Option(None, "--rounds", min=0, help="refinement rounds (default: the skill's)"),
    base_url: Optional[str] = typer.Option(None, "--base-url", envvar="OPENAI_BASE_URL",
                                           help="the endpoint the run would use (default: the embedded model)"),
    model: Optional[str] = typer.Option(None, "--model", envvar="TEACHGRAPH_MODEL", help="prices are looked up by it"),
    max_tokens: int = typer.Option(DEFAULTS.max_tokens, "--max-tokens", min=16, help="cap on every model reply"),
    price_in: Optional[float] = typer.Option(None, "--price-in", min=0.0, help="USD per million input tokens"),
    price_out: Optional[float] = typer.Option(None, "--price-out", min=0.0, help="USD per million output tokens"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable"),
) -> None:
    """The calls, tokens and cost a run would take, from the graph's shape and its prompts on the seeds."""
    made = api.estimate(skill_name, seeds, mix=mix, limit=limit, rounds=rounds, model=model, base_url=base_url,
                        max_tokens=max_tokens, price_in=price_in, price_out=price_out)
    if as_json:
        print(json.dumps({**made.to_json(), "tokens": made.tokens}, indent=2))
        return
    table = Table("agent", "calls", "input tokens", "output tokens", box=None)
    for agent, figures in made.per_agent.items():
        table.add_row(agent, str(figures["calls"]), str(figures["input_tokens"]), str(figures["output_tokens"]))
    console.print(table)
    cost = money(made.cost) if made.cost is not None else "unknown (no price for the model: --price-in/--price-out)"
    print(f"{made.seeds} seeds: {made.calls} calls, {made.tokens} tokens ({made.input_tokens} input, "
          f"{made.output_tokens} output), cost {cost}")
    say(f"tokens counted as {made.tokenizer}; output taken as half of each agent's reply cap, with no corrections "
        f"or rejections (teachgraph/estimation.py)")


@runs_app.command("show")
def runs_show(run_id: str = typer.Argument(..., metavar="RUN_ID"),
              as_json: bool = typer.Option(False, "--json", help="machine-readable"),
              store: Optional[str] = store_option()) -> None:
    """Counts, LLM usage and wall time of a run, with rejection and failure reasons."""
    registry = Home.from_env(store).registry()
    run = registry.run(run_id)
    if run is None:
        fail(f"no run {run_id!r} (see: python cli.py runs list)")
    if as_json:
        run["status"] = shown_status(Home.from_env(), run)
        run["estimate"] = json.loads(run["estimate"]) if run.get("estimate") else None
        print(json.dumps({"run": run, "executor": run.get("executor") or "local",
                          "workers": json.loads(run.get("workers") or "{}"), "counts": registry.counts(run_id),
                          "spent": vars(registry.spent(run_id)),
                          "rejected": registry.outcomes(run_id, SeedStatus.REJECTED),
                          "failed": registry.outcomes(run_id, SeedStatus.FAILED),
                          "task_types": registry.task_types(run_id),
                          "skills": registry.by_skill(run_id),
                          "skipped": registry.skipped(run_id),
                          "reviews": registry.review_counts(run_id),
                          "gates": {"dropped": registry.gate_counts(run_id),
                                    "reasons": registry.rejections(run_id, samples=True)}}, indent=2))
        return
    _print_summary(registry, run_id, Settings(**run["settings"]))
    reviews = registry.review_counts(run_id)
    if any(reviews.values()):
        console.print(f"\n[bold]reviewed[/bold] {reviews['accepted']} accepted, {reviews['rejected']} rejected "
                      f"(export leaves the rejected out)", highlight=False)
    for status in (SeedStatus.REJECTED, SeedStatus.FAILED):
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
        if rows and status == SeedStatus.FAILED:
            console.print(f"  see every seed: python cli.py runs failures {run_id}", highlight=False, markup=False)
    dropped = registry.gate_counts(run_id)
    if dropped:
        per_gate = ", ".join(f"{gate} {n}" for gate, n in dropped.items())
        console.print(f"\n[bold]samples dropped by gates[/bold] {sum(dropped.values())} ({escape(per_gate)}; "
                      f"samples, gate: reason)", highlight=False)
        for row in registry.rejections(run_id, samples=True)[:20]:
            console.print(shown(f"  {row['samples']:>4}  {row['gate']}: {row['reason']}"), highlight=False,
                          markup=False)
        console.print(f"  see every sample: python cli.py runs failures {run_id}", highlight=False, markup=False)
    skipped = registry.skipped(run_id)
    if skipped:
        console.print(f"\n[bold]skipped inputs[/bold] ({len(skipped)})")
        for row in skipped:
            console.print(shown(f"  {row['source']}: {row['reason']}"), highlight=False, markup=False)


@runs_app.command("failures")
def runs_failures(run_id: str = typer.Argument(..., metavar="RUN_ID"),
                  as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
                  store: Optional[str] = store_option()) -> None:
    """Every seed that ended failed or rejected, one per line: status, seed id, source, node, error or reason;
    then every sample a gate dropped: `dropped`, sample id, seed id, gate, reason, duplicate_of."""
    registry = Home.from_env(store).registry()
    if registry.run(run_id) is None:
        fail(f"no run {run_id!r} (see: python cli.py runs list)")
    tally = {SeedStatus.FAILED: 0, SeedStatus.REJECTED: 0}
    for row in registry.failures(run_id):
        tally[row["status"]] += 1
        if as_json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            print("\t".join(shown(row[k] if row[k] is not None else "-")
                            for k in ("status", "seed", "source", "node", "why")))
    dropped = 0
    for row in registry.dropped_samples(run_id):
        dropped += 1
        row = {"status": "dropped", **{k: v for k, v in row.items() if k != "body"}}
        if as_json:
            print(json.dumps(row, ensure_ascii=False))
        else:
            print("\t".join(shown(row[k] if row[k] is not None else "-")
                            for k in ("status", "sample_id", "seed_id", "gate", "reason", "duplicate_of")))
    say(f"{tally['failed']} failed, {tally['rejected']} rejected ({registry.counts(run_id)['total']} seeds)"
        + (f"; {dropped} samples dropped by gates" if dropped else ""))


@app.command("report")
def report_command(run_id: str = typer.Argument(..., metavar="RUN_ID"),
                   html: Optional[Path] = typer.Option(None, "--html", help="also write one self-contained HTML "
                                                       "page with plots (works offline)"),
                   semantic: Optional[bool] = typer.Option(None, "--semantic/--no-semantic",
                                                           help="embedding dispersion (default: when the "
                                                                "`semantic` extra is installed)"),
                   store: Optional[str] = store_option()) -> None:
    """A run's quality report (Markdown): per skill and task type what was kept and dropped, taxonomy
    coverage, diversity, near-duplicates, lengths and what refinement changed."""
    from teachgraph import quality
    made = api.report(run_id, home=Home.from_env(store), semantic=semantic)
    if html is not None:
        _make_parent(html)
        try:
            html.write_text(quality.html(made), encoding="utf-8")
        except OSError as exc:
            fail(str(storage.describe_os(html, exc)))
    # Markdown as text, each line shown: sample text never reaches the terminal as control characters
    print("\n".join(shown(line) for line in quality.markdown(made).splitlines()))
    if html is not None:
        say(f"wrote {html}")


# ---------------------------------------------------------------- endpoint

@endpoint_app.command("probe")
def endpoint_probe(
    base_url: Optional[str] = typer.Option(None, "--base-url", envvar="OPENAI_BASE_URL",
                                           help="OpenAI-compatible endpoint (default: the embedded model)"),
    model: Optional[str] = typer.Option(None, "--model", envvar="TEACHGRAPH_MODEL", help="model name at that endpoint"),
    timeout: float = typer.Option(DEFAULTS.probe_timeout, "--timeout", min=0.1,
                                  help="seconds each probe request may take"),
    store: Optional[str] = store_option(),
) -> None:
    """Find the structured output an endpoint honours (json_schema, json_object with a schema, tool calls,
    or the prompt alone).

    `graph run --structured auto` uses the result, cached per endpoint and model."""
    result = api.probe_endpoint(base_url, model, timeout=timeout, reporter=ConsoleReporter(), store=store)
    where = (f"{base_url} {model}" if base_url else
             f"the embedded model ({embedded.MODEL_NAME}; runs on it always use json_object)")
    for check in result.checks:
        print(f"{check.mode:<12}{check.outcome:<9}{shown(check.detail)}")
    print(f"strategy: {result.strategy}  <- {where}")


# ---------------------------------------------------------------- filter

@app.command("filter")
def filter_command(
    source: Path = typer.Argument(..., metavar="IN.jsonl", help="chat samples: id + messages, one JSON object a line"),
    out: Path = typer.Option(..., "--out", help="the kept rows, byte for byte"),
    rejected: Optional[Path] = typer.Option(None, "--rejected", help="each dropped row, with a rejection object"),
    decontaminate: List[Path] = typer.Option([], "--decontaminate",
                                             help="an evaluation set (JSONL, Parquet, datasets folder); repeatable"),
    semantic: bool = typer.Option(False, "--semantic",
                                  help="also drop paraphrases (sentence embeddings; the `semantic` extra)"),
    judge_model: Optional[str] = JUDGE_MODEL,
    judge_base_url: Optional[str] = JUDGE_BASE_URL,
) -> None:
    """Apply the quality gates to any JSON Lines file of chat samples: every row ends in OUT or REJECTED."""
    try:  # the gates are the `gates` extra: import them only for this command
        from teachgraph.gates.decontaminate import EvalFileError
    except ImportError as exc:
        fail(f"filter needs the gates extra ({exc.name} is missing): pip install 'teachgraph[gates]'")
    if not source.is_file():
        fail(f"{source}: no such file")
    if {source.resolve()} & {p.resolve() for p in (out, rejected) if p is not None}:
        fail("--out and --rejected must not be the input file")
    started = time.monotonic()
    try:
        counts = api.filter_samples(source, out, rejected, decontaminate=decontaminate, semantic=semantic,
                                    judge_model=judge_model, judge_base_url=judge_base_url, reporter=ConsoleReporter())
    except EvalFileError as exc:
        fail(str(exc))
    except ImportError as exc:
        fail(f"--semantic needs the semantic extra ({exc.name} is missing): pip install 'teachgraph[semantic]'")
    print(f"{counts.rows} rows: {counts.kept} kept, {sum(counts.dropped.values())} rejected "
          f"({time.monotonic() - started:.1f} s)")
    for gate, n in counts.dropped.most_common():
        print(f"  {gate:<20}{n}")
    for gate, n in counts.flagged.most_common():
        print(f"  {gate:<20}{n} kept, flagged")
# ---------------------------------------------------------------- export

@app.command("export")
def export_runs(
    run_ids: List[str] = typer.Argument(..., metavar="RUN_ID...",
                                        help="runs to export into one dataset (deduplicated by sample id)"),
    out: Path = typer.Option(..., "--out", "-o", help="a new (or empty) folder to write"),
    format: str = typer.Option("hf", "--format", "-f", help="hf (card + Parquet per skill) | orca | sharegpt | jsonl"),
    include_rejected: bool = typer.Option(False, "--include-rejected",
                                          help="keep samples a check, gate or review rejected (with their verdicts)"),
    license: Optional[str] = typer.Option(None, "--license",
                                          help="the card's license id, e.g. cc-by-4.0 "
                                               "(default: unknown, and the card says so)"),
    language: str = typer.Option("en", "--language", help="the card's language code"),
    push: Optional[str] = typer.Option(None, "--push", metavar="REPO_ID",
                                       help="then upload to this Hub dataset repo (token from HF_TOKEN)"),
    store: Optional[str] = store_option(),
) -> None:
    """Export runs as a dataset: a Hub-ready folder, orca-agentinstruct's layout, ShareGPT or JSON Lines."""
    try:
        if push:
            export.hub_token()  # no token: refuse before the work, not after it
        result = export.export(Home.from_env(store).registry(), run_ids, out, format=format,
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


# ---------------------------------------------------------------- review

@app.command("review")
def review(run_id: str = typer.Argument(..., metavar="RUN_ID"),
           port: int = typer.Option(8765, "--port", min=0, max=65535, help="0: any free port"),
           host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (default: loopback)"),
           store: Optional[str] = store_option()) -> None:
    """Serve a local page to review a run: its graphs with per-node figures, its samples and their lineage,
    and verdicts (stored in the run's store; export leaves rejected samples out). Works while the run goes."""
    from teachgraph.review.server import open_server
    server = open_server(run_id, host=host, port=port, home=Home.from_env(store))
    if host not in ("127.0.0.1", "localhost", "::1"):
        say(f"note: listening on {host}: anyone who can reach this address can read the run and record verdicts")
    print(f"review of run {run_id}: {server.url}  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ---------------------------------------------------------------- teach

@app.command("teach")
def teach(run_ids: List[str] = typer.Argument(..., metavar="RUN_ID...", help="runs whose accepted samples to learn"),
          out: Path = typer.Option(..., "--out", help="folder for model/ (Hugging Face format) and report.json"),
          student: str = typer.Option(EMBEDDED_STUDENT, "--student",
                                      help=f"{EMBEDDED_STUDENT} (the embedded GGUF) or a Hugging Face model folder"),
          steps: int = typer.Option(60, "--steps", help="optimizer steps"),
          lora: bool = typer.Option(True, "--lora/--no-lora",
                                    help="LoRA adapters (merged on save) or full fine-tuning"),
          heldout: float = typer.Option(0.2, "--heldout", help="share of seeds held out for evaluation"),
          max_length: int = typer.Option(1024, "--max-length", help="samples longer than this (tokens) are left out"),
          batch_size: int = typer.Option(2, "--batch-size"),
          learning_rate: Optional[float] = typer.Option(None, "--learning-rate", help="default 2e-4 LoRA, 2e-5 full"),
          max_new_tokens: int = typer.Option(160, "--max-new-tokens",
                                             help="length of the student's checked answers"),
          store: Optional[str] = store_option(),
          repair: bool = typer.Option(False, "--repair", help="then generate for the weakest task types, teach "
                                      "again, and compare with as many samples of random task types"),
          rounds_of_repair: int = typer.Option(1, "--rounds-of-repair", min=1, help="repair rounds (with --repair)"),
          repair_types: int = typer.Option(3, "--repair-types", min=1, help="weakest task types a round aims at"),
          repair_target: int = typer.Option(4, "--repair-target", min=1,
                                            help="kept samples per aimed task type (the new run's --target)"),
          base_url: Optional[str] = typer.Option(None, "--base-url", help="generator for the repair runs "
                                                 "(default: the first run's)"),
          model: Optional[str] = typer.Option(None, "--model")) -> None:
    """Fine-tune a student on runs' samples (split by seed) and compare it before and after, per task type."""
    from teachgraph.teach import TeachError, TeachSettings, teach as teach_student  # torch: only for this command
    settings = TeachSettings(student=student, steps=steps, lora=lora, heldout=heldout, max_length=max_length,
                             batch_size=batch_size, learning_rate=learning_rate, max_new_tokens=max_new_tokens)
    home = Home.from_env(store)
    registry = home.registry()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err) as bars:
        def progress(label: str, total: int):
            task = bars.add_task(label, total=total)
            return lambda n: bars.advance(task, n)
        try:
            if repair:
                from teachgraph.repair import RepairSettings, repair as repair_student
                repaired = repair_student(run_ids, out, settings, RepairSettings(
                    rounds=rounds_of_repair, types=repair_types, per_type=repair_target, base_url=base_url,
                    model=model), home=home, progress=progress, reporter=ConsoleReporter())
            else:
                result = teach_student(registry, run_ids, out, settings, progress=progress)
        except TeachError as exc:
            fail(str(exc))
    if repair:
        _show_repair(repaired, out)
        return
    report = result.report()
    table = Table(title=f"held-out: {report['heldout_samples']} samples, {len(report['heldout_seeds'])} seeds "
                        f"(trained on {report['train_samples']} samples, {settings.steps} steps)")
    for column in ("skill", "task type", "n", "loss before", "loss after", "pass before", "pass after"):
        table.add_column(column, justify="left" if column in ("skill", "task type") else "right")
    def figure(v):
        return "-" if v is None else f"{v:.3f}"
    for row in [*report["per_task_type"], {"skill": "all", "task_type": "", "n": report["heldout_samples"],
                                           "before": report["before"], "after": report["after"]}]:
        table.add_row(row["skill"], row["task_type"], str(row["n"]), figure(row["before"]["loss"]),
                      figure(row["after"]["loss"]), figure(row["before"]["pass_rate"]),
                      figure(row["after"]["pass_rate"]))
    console.print(table)
    console.print(f"model: {out / 'model'}  report: {out / 'report.json'}"
                  + (f"  gguf: {result.gguf}" if result.gguf else ""), highlight=False, markup=False)


def _show_repair(report: dict, out: Path) -> None:
    def figure(v):
        return "-" if v is None else f"{v:.3f}"
    for done in report["rounds"]:
        table = Table(title=f"repair round {done['round']}: aimed at {', '.join(done['aimed'])} "
                            f"({done['new_samples']['repair']} new samples; control: "
                            f"{done['new_samples']['control']} for {', '.join(done['control_types'])})")
        for column in ("task type", "loss before", "after repair", "after control"):
            table.add_column(column, justify="left" if column == "task type" else "right")
        for row in done["aimed_types"]:
            table.add_row(row["task_type"], *(figure((row[k] or {}).get("loss"))
                                              for k in ("before", "after_repair", "after_control")))
        console.print(table)
        drop = done["mean_loss_drop_on_aimed"]
        verdict = "helped more" if done["repair_helped_more"] else "did not help more"
        console.print(f"mean held-out loss drop on the aimed types: repair {figure(drop['repair'])}, control "
                      f"{figure(drop['control'])}: repair {verdict}", highlight=False, markup=False)
    console.print(f"report: {out / 'repair.json'}", highlight=False, markup=False)


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
    except RunStopped as exc:  # the run was made: it can be resumed once the cause is fixed
        print_error(f"{exc}\nThe run stopped; fix the cause, then: python cli.py graph resume {exc.run_id}")
        sys.exit(exc.exit_code)
    except (storage.StorageError, sqlite3.Error) as exc:  # a file we keep: one line naming it, what to do
        print_error(str(storage.fault(exc) or storage.describe(None, exc)))
        sys.exit(2)
    except TeachgraphError as exc:  # every other error teachgraph raises on purpose: one line, its exit code
        print_error(str(exc))
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
