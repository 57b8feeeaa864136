"""Several servers of one model as lanes (the embedded model runs one per idle core): each seed's calls go
to one server, the seeds in flight spread over them, the response cache does not care which answered."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from langgraph.config import get_config

import teachgraph
from teachgraph import embedded
from teachgraph.client.endpoint import Endpoint, summary
from teachgraph.client.llm import LANE, LLM, Lane
from teachgraph.testing.fake_chat import ScriptedChatModel
from tests.conftest import SAMPLE
from tests.rag_script import RagScript


def two_lane_llm(script, seen: dict) -> LLM:
    def on(lane: int):
        def reply(system: str, user: str) -> str:
            seen[get_config()["configurable"]["thread_id"]].append(lane)   # the seed whose node is calling
            return script(system, user)
        return reply

    lanes = [Lane(ScriptedChatModel(script=on(i), turn="first"), None, Endpoint(f"server{i}", 1)) for i in range(2)]
    return LLM(chat=lanes[0].chat, model_name="scripted", structured_mode="json_object", max_concurrency=1,
               endpoint=lanes[0].endpoint, lanes=lanes)


def test_each_seeds_calls_go_to_one_server_and_the_seeds_in_flight_spread_over_both(tmp_path):
    seen: dict[str, list[int]] = defaultdict(list)
    llm = two_lane_llm(RagScript().reply, seen)
    run = teachgraph.run("rag", [SAMPLE], limit=8, rounds=1, concurrency=4, model="scripted",
                         home=tmp_path / "home", run_id="lanes", llm=llm, gates=False)
    assert run.counts["accepted"] == 8 and run.counts["failed"] == 0
    assert len(seen) == 8
    for seed, lanes in seen.items():
        assert len(lanes) >= 4 and len(set(lanes)) == 1, (seed, lanes)   # transform .. answer: one server
    per_lane = [sum(1 for lanes in seen.values() if lanes[0] == i) for i in (0, 1)]
    assert per_lane == [4, 4], per_lane
    assert [e.stats["requests"] for e in llm.endpoints] == [sum(len(v) for v in seen.values() if v[0] == i)
                                                              for i in (0, 1)]
    line = summary(llm.endpoints)
    assert line.startswith(f"{run.counts['llm_calls']} requests, 0 retried") and line.endswith("over 2 servers")
    assert "in-flight limit 2/2 (lowest 2)" in line


def test_a_reply_cached_from_one_server_is_served_to_a_call_on_the_other(tmp_path):
    """Two HTTP servers (make_llm's lanes, as the embedded model's): the cache key names the first one's URL
    for both, so which server answered does not split the cache."""
    from pydantic import BaseModel

    from checkpoints.cache import ResponseCache
    from teachgraph.runner import Settings, make_llm
    from teachgraph.testing.fake_openai import FakeOpenAI

    class Title(BaseModel):
        title: str

    asked: list[int] = []

    def responder(i: int):
        def reply(body: dict) -> str:
            asked.append(i)
            return '{"title": "t"}'
        return reply

    with FakeOpenAI(responder(0)) as first, FakeOpenAI(responder(1)) as second:
        settings = Settings(skill="rag", seeds=[], out="unused", model="m", structured="json_object", timeout=5)
        cache = ResponseCache(tmp_path / "cache.db")

        async def ask(lanes: list[int]) -> LLM:
            llm = make_llm(settings, [(first.base_url, None), (second.base_url, None)], "k", embedded=False,
                           cache=cache)
            try:
                for lane in lanes:
                    LANE.set(lane)
                    await llm.structured("system", "name it", Title)
            finally:
                await llm.aclose()
            return llm

        llm = asyncio.run(ask([1, 0, 1]))
    assert asked == [1]                    # asked once, on the second server; the other two calls hit the cache
    assert llm.usage.cache_hits == 2 and [e.stats["requests"] for e in llm.endpoints] == [0, 1]


def test_the_embedded_models_replies_are_cached_across_runs_whose_servers_have_new_ports(tmp_path):
    """Each run starts the embedded servers on free ports; the cache key names the model, not the URL."""
    from pydantic import BaseModel

    from checkpoints.cache import ResponseCache
    from teachgraph.runner import Settings, make_llm
    from teachgraph.testing.fake_openai import FakeOpenAI

    class Title(BaseModel):
        title: str

    asked: list[str] = []
    settings = Settings(skill="rag", seeds=[], out="unused", model="m", structured="json_object", timeout=5)
    cache = ResponseCache(tmp_path / "cache.db")

    async def one_run(server: FakeOpenAI, embedded: bool) -> LLM:
        llm = make_llm(settings, [(server.base_url, None)], "k", embedded=embedded, cache=cache)
        try:
            await llm.structured("system", "name it", Title)
        finally:
            await llm.aclose()
        return llm

    for embedded_model in (True, False):
        asked.clear()
        for run in range(2):
            with FakeOpenAI(lambda body: asked.append("x") or '{"title": "t"}') as server:   # a new port each time
                llm = asyncio.run(one_run(server, embedded_model))
        # the embedded model: asked by the first run only; an endpoint of the user's: its URL is part of the key,
        # and the second fake server is another URL
        assert len(asked) == (1 if embedded_model else 2), (embedded_model, asked)
        assert llm.usage.cache_hits == (1 if embedded_model else 0)


def test_the_server_plan_is_one_server_per_core_each_with_the_idle_cores_it_can_have(monkeypatch):
    for name in (embedded.SERVERS_ENV, embedded.SERVER_ENV, embedded.TUNING_SWITCH):
        monkeypatch.delenv(name, raising=False)
    assert embedded.server_plan(cores=2, idle=2) == (2, 1)
    assert embedded.server_plan(cores=2, idle=1) == (2, 1)       # a busy machine: still one thread each
    assert embedded.server_plan(cores=1, idle=1) == (1, 1)
    assert embedded.server_plan(cores=8, idle=8) == (embedded.MAX_SERVERS, 8 // embedded.MAX_SERVERS)
    assert embedded.server_plan(cores=8, idle=4) == (embedded.MAX_SERVERS, 1)
    assert embedded.server_plan(at_most=1, cores=2, idle=2) == (1, 2)   # one seed in flight: one server, both cores
    monkeypatch.setenv(embedded.SERVERS_ENV, "3")
    assert embedded.server_plan(cores=2, idle=2) == (3, 1)
    monkeypatch.setenv(embedded.SERVERS_ENV, "lots")
    with pytest.raises(embedded.EmbeddedError, match="whole number"):
        embedded.server_plan(cores=2, idle=2)
    monkeypatch.delenv(embedded.SERVERS_ENV)
    monkeypatch.setenv(embedded.TUNING_SWITCH, "off")             # the server as it ran before: one
    assert embedded.server_plan(cores=2, idle=2) == (1, None)
    monkeypatch.delenv(embedded.TUNING_SWITCH)
    monkeypatch.setenv(embedded.SERVER_ENV, "my-server --port {port}")   # a custom command: one, unless asked
    assert embedded.server_plan(cores=4, idle=4) == (1, None)


def test_the_servers_get_distinct_ports():
    assert len(set(embedded.free_ports(8))) == 8


def test_a_bad_server_count_is_refused_before_the_run_exists(tmp_path):
    from tests.conftest import run_cli
    home = tmp_path / "home"
    done = run_cli("graph", "run", "rag", "--limit", "1", "--run-id", "never", home=home,
                   env={embedded.SERVERS_ENV: "two"})
    assert done.returncode == 2 and f"{embedded.SERVERS_ENV}='two': give a whole number of servers" in done.stderr
    assert "never" not in run_cli("runs", "list", home=home).stdout
