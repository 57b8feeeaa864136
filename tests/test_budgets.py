"""Cost and budgets (teachgraph/client/budget.py, teachgraph/estimation.py): a run stopped by --max-cost or
--max-tokens-total spends no more than the calls in flight beyond it, stays resumable and finishes
with every seed accounted for once resumed with a higher budget; a kill -9 keeps what was spent; the
estimate comes within a stated tolerance of what a run on the fake endpoint spends; prices come from
the flags, TEACHGRAPH_HOME/prices.toml and the bundled table."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

import teachgraph
from teachgraph.checkpoints.registry import Registry
from teachgraph.client.budget import FREE, Prices, resolve_prices
from teachgraph.errors import UsageError
from teachgraph.states import RunStatus
from teachgraph.testing.fake_openai import FakeOpenAI, _message_text
from tests.conftest import ROOT, SAMPLE, run_cli
from tests.rag_script import RagScript

ENDPOINT = {"model": "fake-model", "structured": "json_schema"}   # json_schema: no probe before the run
PRICE = 1.0   # USD per million tokens, in and out: a call's cost is its tokens / 1e6


@pytest.fixture(autouse=True)
def _no_endpoint_from_the_environment(monkeypatch, no_proxy):
    for name in ("OPENAI_BASE_URL", "TEACHGRAPH_MODEL", "OPENAI_API_KEY", "TEACHGRAPH_HOME"):
        monkeypatch.delenv(name, raising=False)


class Billed:
    """RagScript's replies, each call's tokens as the fake server reports them (prompt chars / 4,
    reply chars / 4 + 1), so a test knows what every call cost."""

    def __init__(self):
        self.script, self.tokens, self.lock = RagScript(), [], threading.Lock()

    def __call__(self, body: dict):
        reply = self.script.http_responder(body)
        if reply is not None:
            with self.lock:
                self.tokens.append(len(_message_text(body.get("messages"))) // 4 + len(reply) // 4 + 1)
        return reply

    @property
    def largest_call(self) -> float:
        return max(self.tokens) * PRICE / 1e6


def spends(monkeypatch) -> list:
    """Every Spend added to any run's ledger, in order."""
    added = []
    original = Registry.add_spend

    def add_spend(self, run_id, spend):
        original(self, run_id, spend)
        added.append(spend)
    monkeypatch.setattr(Registry, "add_spend", add_spend)
    return added


def test_max_cost_stops_cleanly_then_resume_with_more_finishes(tmp_path, monkeypatch):
    home, billed, added = tmp_path / "home", Billed(), spends(monkeypatch)
    concurrency, budget = 3, 0.004
    with FakeOpenAI(responder=billed, delay=0.02) as fake:
        run = teachgraph.run("rag", [SAMPLE], limit=8, rounds=1, concurrency=concurrency, base_url=fake.base_url,
                             home=home, run_id="b1", max_cost=budget, price_in=PRICE, price_out=PRICE, **ENDPOINT)
        assert run.status == RunStatus.BUDGET_REACHED == "stopped at budget"
        assert "--max-cost" in run.stop_reason and "budget reached" in run.stop_reason
        counts, spent = run.counts, run.spent
        assert counts["pending"] > 0 and counts["accepted"] + counts["rejected"] + counts["pending"] == 8
        # every call the endpoint served is in the ledger, at what it cost
        assert spent.calls == fake.request_count == len(billed.tokens) == len(added)
        assert spent.cost == pytest.approx(sum(billed.tokens) * PRICE / 1e6)
        assert spent.input_tokens + spent.output_tokens == sum(billed.tokens) and spent.output_tokens > 0
        # no call started once the budget was spent: only those in flight then came back after it
        total, crossed = 0.0, None
        for n, spend in enumerate(added):
            total += spend.cost
            if crossed is None and total >= budget:
                crossed = n
        assert crossed is not None and len(added) - 1 - crossed <= concurrency - 1
        # the call that crossed it and the others in flight then
        assert budget <= spent.cost <= budget + concurrency * billed.largest_call

        # resuming with the budget still spent starts no call
        served = fake.request_count
        again = teachgraph.resume("b1", home=home)
        assert again.status == RunStatus.BUDGET_REACHED and fake.request_count == served
        # a higher budget finishes it: every seed accounted for, no sample twice
        done = teachgraph.resume("b1", home=home, max_cost=1.0)
        assert done.status == RunStatus.COMPLETE and done.stop_reason is None
        final = done.counts
        assert final["pending"] == 0 and final["failed"] == 0 and final["accepted"] + final["rejected"] == 8
        # each seed's tokens, split into input and output as the ledger's are
        assert final["input_tokens"] + final["output_tokens"] == final["tokens"] and final["output_tokens"] > 0
        assert done.settings.max_cost == 1.0            # the new budget is the run's now
        ids = [s["id"] for s in done.samples()]
        lines = (home / "runs" / "b1" / "samples.jsonl").read_text().splitlines()
        assert len(ids) == len(set(ids)) == len(lines) == final["samples"] > 0
        assert done.spent.calls == fake.request_count    # before and after the stop: all in the ledger


def test_max_tokens_total_stops_and_figures_show_cost(tmp_path):
    class Figures(teachgraph.Reporter):
        def __init__(self):
            self.last = None

        def figures(self, live):
            self.last = dict(live)
    reporter = Figures()
    with FakeOpenAI(responder=RagScript().http_responder) as fake:
        run = teachgraph.run("rag", [SAMPLE], limit=6, rounds=1, concurrency=2, base_url=fake.base_url,
                             home=tmp_path / "home", run_id="t1", max_tokens_total=3000, price_in=2.0, price_out=8.0,
                             reporter=reporter, **ENDPOINT)
    spent = run.spent
    assert run.status == RunStatus.BUDGET_REACHED and "--max-tokens-total 3000" in run.stop_reason
    assert 3000 <= spent.tokens < 3000 + 2 * 1500 and run.counts["pending"] > 0
    assert spent.cost == pytest.approx((2.0 * spent.input_tokens + 8.0 * spent.output_tokens) / 1e6)
    # the progress figures carry the cost (prices known) and the ledger's tokens
    assert reporter.last["cost"] == pytest.approx(spent.cost)
    assert reporter.last["input_tokens"] == spent.input_tokens


def _ledger(home) -> tuple[int, float]:
    try:
        with sqlite3.connect(home / "runs.db", timeout=5) as conn:
            row = conn.execute("select calls, cost from run_spend where run_id = 'k1'").fetchone()
    except sqlite3.Error:
        return 0, 0.0
    return row or (0, 0.0)


@pytest.mark.slow   # a killed CLI run (as tests/test_resume_kill.py): ~15 s
def test_kill_9_keeps_the_spend_and_the_resumed_run_stays_within_budget(tmp_path):
    home, billed = tmp_path / "home", Billed()
    concurrency, budget = 2, 0.006
    with FakeOpenAI(responder=billed, delay=0.15) as fake:
        env = {**os.environ, "TEACHGRAPH_HOME": str(home)}
        env.pop("OPENAI_BASE_URL", None)
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "10",
             "--rounds", "1", "--concurrency", str(concurrency), "--base-url", fake.base_url, "--model", "fake-model",
             "--structured", "json_schema", "--run-id", "k1", "--max-cost", str(budget), "--price-in", str(PRICE),
             "--price-out", str(PRICE)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while _ledger(home)[1] < budget / 3:    # part of the budget spent
                assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        calls_at_kill, spent_at_kill = _ledger(home)
        assert spent_at_kill >= budget / 3
        # what the endpoint served is in the ledger, but for the calls in flight at the kill
        assert 0 <= fake.request_count - calls_at_kill <= concurrency

        run = teachgraph.resume("k1", home=home)
        assert run.status == RunStatus.BUDGET_REACHED
        spent = run.spent
        assert spent.calls > calls_at_kill                         # it went on from what the kill left
        # the call that crossed it and the others in flight then
        assert budget <= spent.cost <= budget + concurrency * billed.largest_call
        counts = run.counts
        assert counts["pending"] > 0 and counts["failed"] == 0 and counts["total"] == 10


def test_the_estimate_is_close_to_what_a_run_on_the_fake_endpoint_spends(tmp_path):
    """Tolerance: calls within 10%, input tokens within 25% (the fake counts prompt characters / 4, as
    the estimate does without tiktoken's encoding). Output tokens are not compared: the fake's replies
    are scripted, far shorter than a model's."""
    home = tmp_path / "home"
    made = teachgraph.estimate("rag", [SAMPLE], limit=6, rounds=1, model="fake-model", base_url="http://x/v1",
                               price_in=PRICE, price_out=PRICE, home=home)
    assert made.seeds == 6 and made.tokenizer in ("characters / 4", "tiktoken cl100k_base")
    assert made.per_agent["answer"]["calls"] == 12 and made.per_agent["suggest"]["calls"] == 6
    assert made.cost == pytest.approx(made.tokens * PRICE / 1e6)
    with FakeOpenAI(responder=RagScript().http_responder) as fake:
        run = teachgraph.run("rag", [SAMPLE], limit=6, rounds=1, base_url=fake.base_url, home=home, run_id="e1",
                             price_in=PRICE, price_out=PRICE, **ENDPOINT)
    assert run.status == RunStatus.COMPLETE
    assert run.estimate == made                      # stored with the run, from the same seeds
    spent = run.spent
    assert abs(spent.calls - made.calls) <= 0.10 * made.calls
    if made.tokenizer == "characters / 4":
        assert abs(spent.input_tokens - made.input_tokens) <= 0.25 * made.input_tokens


def test_flow_skill_calls_follow_the_graph_shape(tmp_path):
    """A flow skill (a transformation agent per seed, none for the identity one; generate; the answer)
    on the fake's schema-shaped replies. Without rounds: the fake's fixed replies refine nothing, so a
    refined task would never be answered."""
    home = tmp_path / "home"
    made = teachgraph.estimate("open_domain_qa", [SAMPLE], limit=4, rounds=0, model="fake-model",
                               base_url="http://x/v1", home=home)
    assert made.per_agent["generate"]["calls"] == made.per_agent["answer"]["calls"] == 4
    with FakeOpenAI() as fake:
        # no gates: the fake's replies are one text for every prompt, which the dedup gates rightly drop
        run = teachgraph.run("open_domain_qa", [SAMPLE], limit=4, rounds=0, base_url=fake.base_url, home=home,
                             run_id="f1", cache=False, gates=False, **ENDPOINT)
    assert run.counts["accepted"] == 4
    assert run.spent.calls == made.calls == fake.request_count


def test_prices_from_flags_the_home_file_and_the_bundled_table(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert resolve_prices("gpt-4o-mini", embedded=False, home=home)[0] == Prices(0.15, 0.60)
    assert resolve_prices("gpt-4o-mini-2024-07-18", embedded=False, home=home)[0] == Prices(0.15, 0.60)  # longest
    assert resolve_prices("openai/gpt-4o", embedded=False, home=home)[0] == Prices(2.50, 10.00)   # vendor/ prefix
    assert resolve_prices("my-local-model", embedded=False, home=home) == (None, "unknown")
    assert resolve_prices("gpt-4o", embedded=True, home=home)[0] == FREE                       # the embedded model
    (home / "prices.toml").write_text('["gpt-4o-mini"]\ninput = 0.1\noutput = 0.2\n["my-local-model"]\n'
                                      'input = 0\noutput = 0\n')
    assert resolve_prices("gpt-4o-mini", embedded=False, home=home) == (Prices(0.1, 0.2), str(home / "prices.toml"))
    assert resolve_prices("my-local-model", embedded=False, home=home)[0] == FREE
    assert resolve_prices("gpt-4o-mini", embedded=False, home=home, price_in=3, price_out=4)[0] == Prices(3, 4)
    with pytest.raises(UsageError, match="both --price-in and --price-out"):
        resolve_prices("gpt-4o-mini", embedded=False, home=home, price_in=3)
    (home / "prices.toml").write_text('["m"]\ninput = "cheap"\n')
    with pytest.raises(UsageError, match=r"\[m\] needs input = and output ="):
        resolve_prices("m", embedded=False, home=home)


def test_max_cost_without_a_price_refuses_before_the_run_exists(tmp_path):
    home = tmp_path / "home"
    with FakeOpenAI() as fake:
        with pytest.raises(UsageError, match="--max-cost needs the price of 'unpriced-model'"):
            teachgraph.run("rag", [SAMPLE], limit=2, base_url=fake.base_url, home=home, run_id="u1", max_cost=1.0,
                           model="unpriced-model", structured="json_schema")
        assert fake.request_count == 0
    assert Registry(home / "runs.db").run("u1") is None


def test_cli_budget_stop_is_one_line_and_exit_3_and_estimate_prints(tmp_path):
    home = tmp_path / "home"
    with FakeOpenAI(responder=RagScript().http_responder) as fake:
        stopped = run_cli("graph", "run", "rag", "--seeds", str(SAMPLE), "--limit", "4", "--rounds", "1",
                          "--base-url", fake.base_url, "--model", "fake-model", "--structured", "json_schema",
                          "--run-id", "c1", "--max-tokens-total", "1500", "--price-in", "2", "--price-out", "4",
                          home=home, timeout=120)
    assert stopped.returncode == 3, stopped.stderr
    lines = [line for line in stopped.stderr.splitlines() if line.startswith("stopped:")]
    assert len(lines) == 1 and "--max-tokens-total 1500" in lines[0] and "graph resume c1" in lines[0]
    assert "stopped at budget" in stopped.stdout and "estimate" in stopped.stdout
    run = teachgraph.open_run("c1", home=home)
    assert run.settings.prices() == Prices(2, 4) and f"${run.spent.cost:.4f}" in stopped.stdout
    assert teachgraph.open_run("c1", home=home).spent.tokens >= 1500
    estimate = run_cli("runs", "estimate", "rag", "--seeds", str(SAMPLE), "--limit", "4", "--rounds", "1",
                       "--model", "gpt-4o-mini", "--base-url", "http://127.0.0.1:9/v1", home=home)
    assert estimate.returncode == 0, estimate.stderr
    assert "4 seeds: 24 calls" in estimate.stdout and "$" in estimate.stdout   # bundled price of gpt-4o-mini
