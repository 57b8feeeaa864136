"""Fault injection: runs of the real CLI against a fake endpoint that times out, rate-limits, errs,
drops connections and garbles or cuts its replies. Every seed must end accounted for, every
transport fault must be retried, and the recorded LLM calls must equal the replies served."""

from __future__ import annotations

import json
import re
import threading

import pytest

from tests.conftest import SAMPLE, run_cli
from teachgraph.testing.fake_openai import FakeOpenAI
from tests.rag_script import RagScript, agent_of

TRANSPORT_FAULTS = ("timeout", "429", "429-bare", "500", "503", "reset", "garbled")   # no reply reaches the client
OUTPUT_FAULTS = ("malformed", "truncated")                                           # a reply, but a bad one
FAULTS = {"timeout": 0.02, "429": 0.03, "429-bare": 0.03, "500": 0.03, "503": 0.02, "reset": 0.02,
          "garbled": 0.02, "malformed": 0.05, "truncated": 0.05}


def endpoint(fake) -> list[str]:
    return ["--base-url", fake.base_url, "--model", "fake-model", "--structured", "json_schema"]


def show(home, run_id) -> dict:
    return json.loads(run_cli("runs", "show", run_id, "--json", home=home).stdout)


@pytest.mark.slow
def test_a_run_through_injected_faults_accounts_for_every_seed(tmp_path):
    seeds = 10
    with FakeOpenAI(responder=RagScript().http_responder, delay=0.01, faults=FAULTS, seed=11,
                    retry_after="1", timeout_sleep=30) as fake:
        result = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", str(seeds), "--rounds", "2",
                         "--concurrency", "4", "--timeout", "2", "--run-id", "faulty", *endpoint(fake), home=tmp_path)
        injected = dict(fake.injected)
        requests = fake.request_count
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    shown = show(tmp_path, "faulty")
    counts = shown["counts"]
    assert counts["total"] == seeds and counts["pending"] == 0 and counts["failed"] == 0
    assert counts["accepted"] + counts["rejected"] == seeds                        # every seed accounted for
    transport = sum(injected.get(k, 0) for k in TRANSPORT_FAULTS)
    assert transport >= 10 and sum(injected.get(k, 0) for k in OUTPUT_FAULTS) >= 5, injected
    # every request that got no usable reply was retried once, and none gave up
    line = next(line for line in result.stderr.splitlines() if line.startswith("endpoint: "))
    retried = int(re.search(r"(\d+) retried", line).group(1))
    assert retried == transport and "gave up" not in line, (line, injected)
    # the calls recorded are exactly the replies the endpoint served (bad ones included)
    assert counts["llm_calls"] == requests - transport
    lines = (tmp_path / "runs" / "faulty" / "samples.jsonl").read_text().splitlines()
    ids = [json.loads(x)["id"] for x in lines]
    assert len(ids) == len(set(ids)) == counts["samples"] >= seeds
    print(f"\nfault suite: {requests} requests, faults injected {sum(injected.values())} {injected}; "
          f"{line}; seeds {counts['accepted']} accepted, {counts['rejected']} rejected, 0 failed, 0 lost; "
          f"{counts['llm_calls']} replies recorded = {requests} requests - {transport} transport faults")


class Troubled(RagScript):
    """Three seeds go wrong on purpose, told apart by the title their transform reply gives them
    (it appears only in their own passages): FAILGEN's generate gets a bad reply, then its
    correction is refused as too long for the context; FAILANSWER's second answer (the refined
    item) is refused; REJECT's generate never gives valid JSON. `fixed` ends the refusals."""

    fixed = False
    answered: dict

    def http_responder(self, body: dict):
        messages = body["messages"]
        system, user = messages[0]["content"], messages[1]["content"]
        agent = agent_of(system, user)
        if agent == "transform":
            for mark in ("failgen", "failanswer", "reject"):
                if f"{mark}.txt" in user:
                    return json.dumps({"title": f"{mark.upper()} doc", "search_query": "sorting lists"})
        too_long = {"status": 400, "content": "This model's maximum context length is 2048 tokens, "
                                              "but the messages resulted in 9000 tokens."}
        if agent == "generate" and "REJECT doc" in user:
            return "no JSON from me"
        if not self.fixed and agent == "generate" and "FAILGEN doc" in user:
            return too_long if len(messages) > 2 else "not JSON yet"
        if not self.fixed and agent == "answer" and "FAILANSWER doc" in user:
            self.answered = getattr(self, "answered", {"n": 0})
            self.answered["n"] += 1
            if self.answered["n"] == 2:
                return too_long
        return super().http_responder(body)


PARAGRAPH = ("Python lists keep their items in order. The sort method sorts a list in place and returns None, "
             "while the built-in sorted function returns a new list and leaves the original alone. ")


@pytest.mark.slow
def test_failures_are_listed_counts_add_up_and_resume_keeps_every_call(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("good1", "failgen", "failanswer", "reject", "good2"):
        (corpus / f"{name}.txt").write_text(f"{name} notes. " + PARAGRAPH * 2)
    home = tmp_path / "home"
    script = Troubled()
    lock = threading.Lock()

    def responder(body):
        with lock:
            return script.http_responder(body)

    with FakeOpenAI(responder=responder) as fake:
        # --no-gates: the five files are one paragraph with a different first word, which seed dedup
        # would (rightly) skip as near copies; this test is about failures (tests/test_gates_run.py: gates)
        run = run_cli("graph", "run", "rag", "--seeds", str(corpus), "--rounds", "1", "--run-id", "tr",
                      "--no-gates", *endpoint(fake), home=home)
        served_first = sum(1 for _ in fake.requests) - 2                  # two 400s are not replies
        assert run.returncode == 1, run.stderr                           # some seeds failed
        assert "2 seed(s) failed" in run.stderr and "Traceback" not in run.stderr
        shown = show(home, "tr")
        c = shown["counts"]
        assert (c["total"], c["accepted"], c["rejected"], c["failed"], c["pending"]) == (5, 2, 1, 2, 0)
        assert c["accepted"] + c["rejected"] + c["failed"] + c["pending"] == c["total"]
        assert c["llm_calls"] == served_first                            # failed seeds' calls counted too

        failures = run_cli("runs", "failures", "tr", home=home)
        assert failures.returncode == 0 and failures.stderr.strip() == "2 failed, 1 rejected (5 seeds)"
        rows = [line.split("\t") for line in failures.stdout.splitlines()]
        by_source = {row[2].rsplit("/", 1)[-1]: row for row in rows}
        assert [row[0] for row in rows] == ["failed", "failed", "rejected"]
        assert by_source["failgen.txt"][3] == "generate"
        assert by_source["failgen.txt"][4].startswith("prompt too long for the model's context window (400:")
        assert by_source["failanswer.txt"][3] == "answer"
        assert by_source["reject.txt"][3] == "generate" and "after 2 corrections" in by_source["reject.txt"][4]
        as_json = [json.loads(x) for x in run_cli("runs", "failures", "tr", "--json", home=home).stdout.splitlines()]
        calls = {r["source"].rsplit("/", 1)[-1]: r["llm_calls"] for r in as_json}
        assert calls["failgen.txt"] == 2          # transform + generate's first (bad) reply, before the 400
        assert calls["failanswer.txt"] == 5       # transform, generate, suggest, edit, the first answer
        text = run_cli("runs", "show", "tr", home=home).stdout
        assert "failed 2 (by node: " in text and "rejected 1 (by node: generate 1" in text

        script.fixed = True                                              # the user fixes the cause
        before = fake.request_count
        resumed = run_cli("graph", "resume", "tr", home=home)
        assert resumed.returncode == 0, resumed.stderr
        served_after = fake.request_count - before
    c = show(home, "tr")["counts"]
    assert (c["accepted"], c["rejected"], c["failed"], c["pending"]) == (4, 1, 0, 0)
    assert c["llm_calls"] == served_first + served_after                 # nothing forgotten across the resume
    # resume ran from the failed nodes on: FAILGEN generate, suggest, edit and two answers; FAILANSWER
    # its answer node again: the seed item's answer comes from the response cache (asked before the
    # failure), the refined item's is asked
    assert served_after == 5 + 1


@pytest.mark.slow
def test_a_wrong_key_mid_run_stops_it_and_resume_finishes_after_the_fix(tmp_path):
    state = {"calls": 0, "revoked": False}
    lock = threading.Lock()
    script = RagScript()

    def responder(body):
        with lock:
            state["calls"] += 1
            if state["calls"] > 12 and not state.get("renewed"):
                return {"status": 401, "content": "Incorrect API key provided"}
            return script.http_responder(body)

    home = tmp_path / "home"
    with FakeOpenAI(responder=responder) as fake:
        run = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "6", "--run-id", "key",
                      *endpoint(fake), home=home)
        assert run.returncode == 2 and "Traceback" not in run.stderr
        errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "refused the API key (401: Incorrect API key provided)" in errors[0]
        assert "python cli.py graph resume key" in run.stderr
        shown = show(home, "key")
        assert shown["run"]["status"] == "interrupted"
        assert shown["counts"]["failed"] == 0 and shown["counts"]["pending"] > 0   # stopped, not failed
        state["renewed"] = True
        resumed = run_cli("graph", "resume", "key", home=home)
        assert resumed.returncode == 0, resumed.stderr
    c = show(home, "key")["counts"]
    assert c["accepted"] == 6 and c["pending"] == 0
