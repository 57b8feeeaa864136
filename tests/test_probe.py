"""`endpoint probe`: what each kind of server honours, the strategy picked, the cache `graph run
--structured auto` reads, and a run in the weakest strategy that still has structure (tool calls)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from teachgraph.client import probe
from tests.conftest import SAMPLE, run_cli
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.rag_script import RagScript


def like_llama_cpp_python(body):
    """llama-cpp-python's server: json_schema is a 500, json_object+schema is enforced by a grammar,
    and the object form of tool_choice is ignored (it answers in text)."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return {"status": 500, "content": "Unknown response_format type: json_schema"}
    if body.get("tools"):
        return "Sure! Here is a color: blue."
    return None


def ignores_everything(body):
    return "Hello! How can I help you today?"


def tools_only(body):
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return {"status": 400, "content": "response_format json_schema is not supported"}
    if fmt.get("type") == "json_object":
        return '{"note": "any json at all"}'      # json mode without the schema
    return None                                     # forced tool calls work (the fake's default)


@pytest.mark.parametrize("responder, strategy, outcomes", [
    (None, "json_schema", ["works", "works", "works", "works"]),
    (like_llama_cpp_python, "json_object", ["works", "refused", "works", "ignored"]),
    (tools_only, "tools", ["works", "refused", "ignored", "works"]),
    (ignores_everything, "prompt", ["works", "ignored", "ignored", "ignored"]),
])
def test_probe_picks_the_strongest_strategy_the_endpoint_enforces(responder, strategy, outcomes):
    with FakeOpenAI(responder=responder) as fake:
        result = asyncio.run(probe.probe(fake.base_url, "k", "fake-model", timeout=5))
    assert [c.mode for c in result.checks] == ["prompt", "json_schema", "json_object", "tools"]
    assert [c.outcome for c in result.checks] == outcomes, result.checks
    assert result.strategy == strategy


@pytest.mark.slow
def test_probe_of_a_wrong_key_stops_in_one_line(tmp_path):
    with FakeOpenAI(responder=lambda b: {"status": 401, "content": "invalid api key"}) as fake:
        result = run_cli("endpoint", "probe", "--base-url", fake.base_url, "--model", "m", home=tmp_path)
        run = run_cli("graph", "run", "rag", "--limit", "1", "--base-url", fake.base_url, "--model", "m",
                      "--run-id", "r", home=tmp_path)
    assert result.returncode == 2 and "refused the API key (401: invalid api key)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert run.returncode == 2 and "refused the API key" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.splitlines()[0] == "run id: r" and run.stderr.splitlines()[-1].startswith("error:")
    assert run_cli("runs", "list", home=tmp_path).stdout == ""   # no half-made run


def as_tool_calls(script: RagScript):
    """A server that only gives structure through tool calls: the rag agents' JSON comes back as
    the forced function's arguments."""
    def responder(body):
        fmt = (body.get("response_format") or {}).get("type")
        if fmt == "json_schema":
            return {"status": 400, "content": "json_schema not supported"}
        if fmt == "json_object":
            return '{"note": "any json at all"}'
        content = script.http_responder(body)
        if content is None or not body.get("tools"):
            return content
        name = body["tool_choice"]["function"]["name"]
        return {"content": None, "finish_reason": "tool_calls",
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": name, "arguments": content}}]}
    return responder


@pytest.mark.slow
def test_probe_result_is_cached_and_graph_run_uses_it(tmp_path):
    home = tmp_path / "home"
    with FakeOpenAI(responder=as_tool_calls(RagScript())) as fake:
        probed = run_cli("endpoint", "probe", "--base-url", fake.base_url, "--model", "fake-model", home=home)
        assert probed.returncode == 0, probed.stderr
        lines = probed.stdout.splitlines()
        assert [line.split()[:2] for line in lines[:4]] == [["prompt", "works"], ["json_schema", "refused"],
                                                            ["json_object", "ignored"], ["tools", "works"]]
        assert lines[4].startswith("strategy: tools")
        probes = fake.request_count
        run = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "2", "--rounds", "1",
                      "--run-id", "t", "--base-url", fake.base_url, "--model", "fake-model", home=home)
        assert run.returncode == 0, run.stderr
        assert "structured output: tools (probed" in run.stderr
        run_requests = fake.requests[probes:]
        assert all(body.get("tools") and "response_format" not in body for body in run_requests)  # no re-probe
    shown = json.loads(run_cli("runs", "show", "t", "--json", home=home).stdout)
    assert shown["counts"]["accepted"] == 2 and shown["counts"]["samples"] == 4
    assert shown["run"]["settings"]["structured"] == "tools"
    assert shown["counts"]["llm_calls"] == len(run_requests)


@pytest.mark.slow
def test_a_burst_of_500s_while_probing_is_not_taken_for_a_refusal(tmp_path):
    """Six 500s right after the plain check: json_schema fails its attempts, and so does the plain
    request that would confirm a refusal. Nothing may be cached; a later probe finds json_schema."""
    count = {"n": 0}

    def burst(body):
        count["n"] += 1
        return {"status": 500, "content": "internal server error"} if 2 <= count["n"] <= 7 else None

    with FakeOpenAI(responder=burst) as fake:
        args = ("endpoint", "probe", "--base-url", fake.base_url, "--model", "fake-model")
        first = run_cli(*args, home=tmp_path)
        assert first.returncode == 2, first.stdout + first.stderr
        assert "nothing was cached" in first.stderr and len(first.stderr.strip().splitlines()) == 1
        from teachgraph.checkpoints.registry import Registry
        assert Registry(tmp_path / "runs.db").probe_result(fake.base_url, "fake-model") is None
        second = run_cli(*args, home=tmp_path)
    assert second.returncode == 0 and "strategy: json_schema" in second.stdout, second.stdout + second.stderr


def test_the_probe_says_so_first_and_honours_the_runs_timeout_and_retries(tmp_path):
    """Against an endpoint that hangs, `--timeout 1 --retries 1` gives up after one 1 s attempt."""
    with FakeOpenAI(faults={"timeout": 1.0}, timeout_sleep=120) as fake:
        started = time.monotonic()
        run = run_cli("graph", "run", "rag", "--limit", "1", "--run-id", "h", "--base-url", fake.base_url,
                      "--model", "fake-model", "--timeout", "1", "--retries", "1", home=tmp_path, timeout=100)
        took = time.monotonic() - started
        sent = fake.request_count
    lines = run.stderr.strip().splitlines()
    # (the CLI's start-up is most of `took`: seconds, more on a loaded machine; the probe used to take minutes)
    assert run.returncode == 2 and took < 60, (took, run.stderr)
    assert lines[0] == "run id: h" and lines[1].startswith(f"probing the endpoint {fake.base_url} ")
    assert len(lines) == 3 and "no reply within 1 s" in lines[2] and sent == 1
    assert run_cli("runs", "list", home=tmp_path).stdout == ""      # no half-made run
