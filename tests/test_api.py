"""The library API (teachgraph/api.py): a run through `teachgraph.run` against the fake server, its
counts and samples, resume of a run a fatal error stopped, `open_run`, `skills()`, the async form
inside a running event loop, and that what it raises is the TeachgraphError hierarchy's."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

import teachgraph
from teachgraph.states import RunStatus
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.conftest import SAMPLE
from tests.rag_script import RagScript

ENDPOINT = {"model": "fake-model", "structured": "json_schema"}   # json_schema: no probe before the run
COUNT_KEYS = {"total", "accepted", "rejected", "failed", "pending", "samples", "llm_calls", "tokens"}


@pytest.fixture(autouse=True)
def _no_endpoint_from_the_environment(monkeypatch, no_proxy):
    for name in ("OPENAI_BASE_URL", "TEACHGRAPH_MODEL", "OPENAI_API_KEY", "TEACHGRAPH_HOME"):
        monkeypatch.delenv(name, raising=False)


class Recorder(teachgraph.Reporter):
    def __init__(self):
        self.events: list[tuple] = []

    def run_started(self, run_id):
        self.events.append(("run_started", run_id))

    def note(self, message):
        self.events.append(("note", message))

    def seed_done(self, status, samples):
        self.events.append(("seed_done", status, samples))

    def figures(self, live):
        self.events.append(("figures", dict(live)))


def test_a_run_its_counts_samples_and_open_run(tmp_path, capsys):
    home = tmp_path / "home"
    reporter = Recorder()
    with FakeOpenAI(responder=RagScript().http_responder) as fake:
        run = teachgraph.run("rag", seeds=[SAMPLE], limit=3, rounds=1, base_url=fake.base_url, home=home,
                             run_id="api1", reporter=reporter, **ENDPOINT)
        served = fake.request_count
    assert run.id == "api1" and run.status == RunStatus.COMPLETE == "complete"
    counts = run.counts
    assert COUNT_KEYS <= set(counts)
    assert counts["total"] == 3 and counts["accepted"] + counts["rejected"] == 3 and counts["pending"] == 0
    assert counts["llm_calls"] == served > 0              # every chat reply the endpoint served
    samples = list(run.samples())
    assert len(samples) == counts["samples"] >= counts["accepted"] > 0
    lines = [json.loads(line) for line in (home / "runs" / "api1" / "samples.jsonl").read_text().splitlines()]
    assert samples == lines                               # the dicts of the JSON Lines output
    assert all(s["messages"] and s["id"] for s in samples)
    # the library printed nothing: everything went to the reporter
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""
    assert reporter.events[0] == ("run_started", "api1")
    assert sum(1 for e in reporter.events if e[0] == "seed_done") == 3
    assert any(e[0] == "note" and e[1].startswith("collecting seeds from") for e in reporter.events)
    last = [e[1] for e in reporter.events if e[0] == "figures"][-1]
    assert last["llm_calls"] == counts["llm_calls"] and last["samples"] == counts["samples"]

    again = teachgraph.open_run("api1", home=home)
    assert again.counts == counts and again.settings.limit == 3 and list(again.samples()) == samples
    assert teachgraph.resume("api1", home=home).counts == counts     # a finished run is left as it is


def test_a_fatal_error_midway_stops_the_run_resumable_and_resume_finishes_it(tmp_path):
    home = tmp_path / "home"
    script, denied, answers = RagScript(), {"on": False}, {"n": 0}

    def responder(body):
        if denied["on"]:
            return {"status": 401, "content": "Incorrect API key provided"}
        answers["n"] += 1
        if answers["n"] == 6:          # midway: the key is revoked
            denied["on"] = True
        return script.http_responder(body)

    with FakeOpenAI(responder=responder) as fake:
        with pytest.raises(teachgraph.RunStopped) as stopped:
            teachgraph.run("rag", seeds=[SAMPLE], limit=4, rounds=1, concurrency=1, base_url=fake.base_url,
                           home=home, run_id="api2", **ENDPOINT)
        assert isinstance(stopped.value, teachgraph.FatalRunError)
        assert isinstance(stopped.value, teachgraph.TeachgraphError) and stopped.value.exit_code == 2
        assert stopped.value.run_id == "api2" and "Incorrect API key provided" in str(stopped.value)
        run = teachgraph.open_run("api2", home=home)
        assert run.status == "interrupted" and run.counts["pending"] > 0 and run.counts["failed"] == 0
        done_before = run.counts["accepted"] + run.counts["rejected"]

        denied["on"] = False
        resumed = teachgraph.resume("api2", home=home)
    counts = resumed.counts
    assert resumed.status == "complete" and counts["pending"] == 0 and counts["total"] == 4
    assert counts["accepted"] + counts["rejected"] == 4 >= done_before
    ids = [s["id"] for s in resumed.samples()]
    assert len(ids) == len(set(ids)) == counts["samples"]   # nothing written twice


def test_skills_lists_every_skill_loaded():
    names = [skill.name for skill in teachgraph.skills()]
    assert "rag" in names and "reading_comprehension" in names and len(names) == 17
    assert all(skill.taxonomy for skill in teachgraph.skills())


def test_the_async_form_runs_inside_a_running_event_loop(tmp_path):
    home = tmp_path / "home"

    async def main():
        ticks = 0

        async def other_work():     # the caller's loop keeps running while the run goes on
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        worker = asyncio.create_task(other_work())
        with FakeOpenAI(responder=RagScript().http_responder, delay=0.02) as fake:
            run = await teachgraph.arun("rag", [SAMPLE], limit=2, rounds=0, base_url=fake.base_url, home=home,
                                        run_id="api3", **ENDPOINT)
            again = await teachgraph.aresume("api3", home=home)
        worker.cancel()
        return run, again, ticks

    run, again, ticks = asyncio.run(main())
    assert run.status == "complete" and run.counts["total"] == 2 and run.counts["pending"] == 0
    assert again.counts == run.counts
    assert ticks > 5, "the run blocked the caller's event loop"


def test_cancelling_arun_interrupts_the_run_resumably(tmp_path):
    home = tmp_path / "home"
    started = threading.Event()
    script = RagScript()

    def responder(body):
        started.set()
        return script.http_responder(body)

    async def main(fake):
        task = asyncio.create_task(teachgraph.arun("rag", [SAMPLE], limit=4, rounds=2, concurrency=1,
                                                   base_url=fake.base_url, home=home, run_id="api4", **ENDPOINT))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with FakeOpenAI(responder=responder, delay=0.05) as fake:
        asyncio.run(main(fake))
        run = teachgraph.open_run("api4", home=home)
        assert run.status == "interrupted" and run.counts["pending"] > 0
        assert teachgraph.resume("api4", home=home).status == "complete"


def test_errors_are_the_hierarchys(tmp_path, monkeypatch):
    home = tmp_path / "home"
    with pytest.raises(teachgraph.SkillError) as unknown:
        teachgraph.run("no_such_skill", home=home, base_url="http://127.0.0.1:9/v1", model="m")
    assert isinstance(unknown.value, teachgraph.UsageError) and isinstance(unknown.value, ValueError)
    with pytest.raises(teachgraph.UsageError, match="seed path not found"):
        teachgraph.run("rag", seeds=[tmp_path / "missing"], home=home, base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(teachgraph.UsageError, match="bad run id"):
        teachgraph.run("rag", run_id="../x", home=home, base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(teachgraph.UsageError, match="must not carry credentials"):
        teachgraph.run("rag", home=home, base_url="http://u:p@127.0.0.1:9/v1", model="m")
    with pytest.raises(teachgraph.EndpointError, match="cannot reach the endpoint"):
        teachgraph.run("rag", home=home, base_url="http://127.0.0.1:9/v1", model="m", structured="json_schema",
                       timeout=1)
    with pytest.raises(teachgraph.UsageError, match="no run 'nope'"):
        teachgraph.open_run("nope", home=home)
    with pytest.raises(teachgraph.UsageError, match="no run 'nope'"):
        teachgraph.resume("nope", home=home)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "runs.db").write_bytes(b"this is not a database, just text" * 100)
    with pytest.raises(teachgraph.StorageError):
        teachgraph.open_run("x", home=tmp_path / "bad")
    for error in (teachgraph.StorageError, teachgraph.EndpointError, teachgraph.SkillError, teachgraph.EmbeddedError,
                  teachgraph.ExportError, teachgraph.RunStopped, teachgraph.RunInterrupted, teachgraph.UsageError):
        assert issubclass(error, teachgraph.TeachgraphError)
    assert teachgraph.RunInterrupted("r").exit_code == 130 and teachgraph.UsageError("x").exit_code == 2


def test_one_options_object_holds_the_defaults():
    import inspect

    from teachgraph.cli import graph_run
    from teachgraph.runner import Settings
    defaults = teachgraph.DEFAULTS
    assert (defaults.concurrency, defaults.max_tokens, defaults.timeout, defaults.retries, defaults.temperature,
            defaults.structured, defaults.cache) == (4, 384, 120.0, 10, 0.7, "auto", True)
    settings = Settings(skill="rag", seeds=[], out="-")
    cli_options = {name: p.default.default for name, p in inspect.signature(graph_run).parameters.items()
                   if hasattr(p.default, "default")}
    api_args = {name: p.default for name, p in inspect.signature(teachgraph.run).parameters.items()}
    for name in ("concurrency", "max_tokens", "timeout", "retries", "temperature", "structured"):
        assert getattr(settings, name) == cli_options[name] == api_args[name] == getattr(defaults, name), name
    assert api_args["cache"] == settings.cache == (not cli_options["no_cache"]) == defaults.cache
